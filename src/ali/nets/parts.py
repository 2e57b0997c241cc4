"""The parts every model is assembled from, around the network families' layer stacks.

:class:`StochasticEncoder` (q(z | x)), :class:`JointDiscriminator` (D(x, z)),
:class:`MarginalDiscriminator` (a GAN's D(x)), :class:`ConditionedNet` and
:class:`Conditioning` (how conditional ALI, Eq. 7, hands y to a network),
:class:`Standardize` (the feature-vector models' input scaling). This package is a
leaf: the model code imports it, never the reverse.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch
from torch import Tensor, nn

from ..errors import ConditionError, one_line


class StochasticEncoder(nn.Module):
    """q(z | x) around an encoder network.

    kind ``gaussian``: the net outputs ``2L`` features along ``dim``, mu then log sigma, and
    ``z_hat = mu + exp(log_sigma) * eps`` with one ``eps ~ N(0, 1)`` per latent unit (Eq. 2).
    kind ``deterministic``: ``z_hat = net(x)`` (BiGAN).
    kind ``noise``: ``z_hat = net(concat(x, eps))``, the original code's toy encoder, whose
    posterior is implicit.
    """

    def __init__(self, net: nn.Module, kind: str, latent_dim: int, noise_dim: int = 0,
                 dim: int = -1) -> None:
        super().__init__()
        self.net, self.kind, self.latent_dim, self.noise_dim, self.dim = (
            net, kind, latent_dim, noise_dim, dim)

    def _noise_input(self, x: Tensor, eps: Tensor | None) -> Tensor:
        if eps is None:
            shape = list(x.shape)
            shape[self.dim] = self.noise_dim
            eps = torch.randn(shape, device=x.device, dtype=x.dtype)
        return torch.cat([x, eps], dim=self.dim)

    def stats(self, x: Tensor, *c: Tensor) -> tuple[Tensor, Tensor]:
        """(mu, log_sigma) of a Gaussian encoder (``c``: the embedded condition, if any)."""
        if self.kind != "gaussian":
            raise TypeError(f"a {self.kind} encoder has no (mu, log_sigma)")
        mu, log_sigma = self.net(x, *c).chunk(2, dim=self.dim)
        return mu, log_sigma

    def forward(self, x: Tensor, *c: Tensor) -> Tensor:
        """A sample z_hat ~ q(z | x) (or q(z | x, y) given the embedded condition ``c``)."""
        if self.kind == "gaussian":
            mu, log_sigma = self.stats(x, *c)
            return mu + log_sigma.exp() * torch.randn_like(mu)
        if self.kind == "noise":
            return self.net(self._noise_input(x, None), *c)
        return self.net(x, *c)

    def mean(self, x: Tensor, *c: Tensor) -> Tensor:
        """A point estimate of z given x: mu for a Gaussian encoder, E(concat(x, 0)) for the
        noise-input encoder (eps at its mean), E(x) for a deterministic one."""
        if self.kind == "gaussian":
            return self.stats(x, *c)[0]
        if self.kind == "noise":
            shape = list(x.shape)
            shape[self.dim] = self.noise_dim
            return self.net(self._noise_input(x, x.new_zeros(shape)), *c)
        return self.net(x, *c)


def condition_vector(y: Tensor, label_dim: int) -> Tensor:
    """y as a float (B, K) vector: class indices (B,) one-hot, 0/1 attributes (B, K) as they are."""
    if y.dim() == 1:
        if y.is_floating_point():
            raise TypeError("class labels must be integers")
        # scatter rather than one_hot: no host sync for a range check in the training step
        out = torch.zeros(len(y), label_dim, device=y.device)
        return out.scatter_(1, y.long().unsqueeze(1), 1.0)
    if y.dim() != 2 or y.shape[1] != label_dim:
        raise ValueError(f"a condition must be (B,) class indices or (B, {label_dim}) attributes; "
                         f"got shape {tuple(y.shape)}")
    return y.float()


class ConditionedNet(nn.Module):
    """``head(concat(body(x), c))`` along the channel dim: how conditional ALI (Eq. 7) hands the
    embedded condition ``c`` (B, E, 1, 1) to a network. Without ``c`` it is ``head(body(x))``."""

    def __init__(self, body: nn.Module, head: nn.Module, dim: int = 1) -> None:
        super().__init__()
        self.body, self.head, self.dim = body, head, dim

    def forward(self, x: Tensor, c: Tensor | None = None) -> Tensor:
        h = self.body(x)                                 # (B, C, H, W)
        if c is not None:
            # (B, C + E, H, W): the condition is constant over space
            h = torch.cat([h, c.expand(-1, -1, *h.shape[2:])], dim=self.dim)
        return self.head(h)


class JointDiscriminator(nn.Module):
    """D(x, z) = D_xz(concat(D_x(x), D_z(z))): logits, one per pair (and per run), or K per pair
    for a K+1 discriminator.

    Conditional ALI: D(x, z, y) = D_xz(concat(D_x(x), D_z(z), embed(y))); the discriminator
    owns its embedding ``embed``, so the generator's loss never moves what D sees of y.
    """

    def __init__(self, d_x: nn.Module, d_z: nn.Module, d_xz: nn.Module, cat_dim: int = 1,
                 embed: nn.Module | None = None) -> None:
        super().__init__()
        self.d_x, self.d_z, self.d_xz, self.cat_dim = d_x, d_z, d_xz, cat_dim
        self.embed = embed

    def forward(self, x: Tensor, z: Tensor, y: Tensor | None = None) -> Tensor:
        parts = [self.d_x(x), self.d_z(z)]              # (B, Cx, 1, 1), (B, Cz, 1, 1)
        if self.embed is not None:
            if y is None:
                raise ConditionError("this discriminator is conditional: give y")
            e = self.embed(y)                            # (B, E)
            parts.append(e.view(*e.shape, *([1] * (parts[0].dim() - 2))))
        h = torch.cat(parts, dim=self.cat_dim)
        return self.d_xz(h).flatten(1)  # (B, runs) or (B, K): logits per pair


class MarginalDiscriminator(nn.Module):
    """D(x) of a GAN: the same D_x features followed by a head. Ignores z."""

    def __init__(self, d_x: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.d_x, self.head = d_x, head

    def forward(self, x: Tensor, z: Tensor | None = None) -> Tensor:
        return self.head(self.d_x(x)).flatten(1)  # (B, runs)


class Conditioning(nn.Linear):
    """Conditional ALI's linear embedding of y (K -> E), and what y may be.

    ``attributes``: y is K 0/1 attributes (CelebA) of shape (B, K); else a class index in
    0..K-1 of shape (B,). :meth:`vector` makes either a float (B, K) vector, :meth:`embed`
    the (B, E, 1, ..., 1) map a network concatenates to its input, and :meth:`default` the y of
    a sampling grid when the user gives none.
    """

    def __init__(self, label_dim: int, embed_dim: int, attributes: bool = False) -> None:
        super().__init__(label_dim, embed_dim)
        self.label_dim, self.attributes = label_dim, attributes

    def check(self, y: Any, n: int | None = None) -> Tensor:
        """``y`` as a tensor on the embedding's device, or a one-line
        :class:`~ali.errors.ConditionError`: class indices (n,) in 0..K-1 (class-conditional
        models only) or (n, K) vectors in [0, 1] (0/1 attributes, one-hot classes, or the
        blends :meth:`~ali.model.GenerativeModel.interpolate` decodes).

        For the public methods only: the range check waits for the device, and :meth:`vector`
        would otherwise index out of bounds, or embed any number, without a word."""
        try:
            y = torch.as_tensor(y, device=self.weight.device)
        except (TypeError, ValueError, RuntimeError) as e:
            raise ConditionError(f"y must be a tensor of labels; {one_line(e)}") from None
        k = self.label_dim
        if y.dim() == 1 and not self.attributes:
            if y.is_floating_point() or y.is_complex():
                raise ConditionError(f"class labels y must be integers; got {y.dtype}")
            lo, hi = (int(v) for v in torch.aminmax(y)) if len(y) else (0, 0)
            if not (lo >= 0 and hi < k):
                raise ConditionError(f"class labels y must be in 0..{k - 1} ({k} classes); "
                                     f"got values in [{lo}, {hi}]")
        elif y.dim() == 2 and y.shape[1] == k and not y.is_complex():
            # written so that NaN fails too
            lo, hi = (float(v) for v in torch.aminmax(y)) if len(y) else (0.0, 0.0)
            if not (lo >= 0 and hi <= 1):
                raise ConditionError(f"y's {k} entries per example must be in [0, 1] (0/1 "
                                     f"attributes); got values in [{lo:.4g}, {hi:.4g}]")
        else:
            form = "" if self.attributes else f"class indices (B,) in 0..{k - 1} or "
            raise ConditionError(f"this model takes y as {form}(B, {k}) 0/1 "
                                 f"{'attributes' if self.attributes else 'vectors'}; got shape "
                                 f"{tuple(y.shape)} ({y.dtype})")
        if n is not None and len(y) != n:
            raise ConditionError(f"y holds {len(y)} labels for {n} examples")
        return y

    def vector(self, y: Tensor) -> Tensor:
        """y as a float (B, K) vector (see :func:`condition_vector`)."""
        return condition_vector(y, self.label_dim)

    def embed(self, v: Tensor, spatial_dims: int) -> Tensor:
        """The embedding of condition vectors ``v`` (B, K) as (B, E, 1, ..., 1), with
        ``spatial_dims`` trailing ones."""
        e = self(v)                                                  # (B, E)
        return e.view(*e.shape, *([1] * spatial_dims))

    def default(self, n: int, device: torch.device) -> Tensor:
        """Classes 0..K-1 in turn, one per row of ``n`` samples; an attribute-conditional
        model has no default (every attribute vector is as good as another)."""
        if self.attributes:
            raise ConditionError("an attribute-conditional model needs y: (n, K) 0/1 attributes "
                                 "(every attribute vector is as good a default as another)")
        return torch.arange(n, device=device) % self.label_dim


MIN_STD = 1e-8
"""A feature whose training std is below this is constant: it is centred, not scaled."""


class Standardize(nn.Module):
    """``(x - mean) / std`` per feature, with the training split's statistics held as buffers
    (saved with the weights, so new data is scored in the units the model was trained in): how
    a model on feature vectors (the ``mlp`` family) sees its input."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    @torch.no_grad()
    def fit_(self, x: Tensor) -> None:
        """Set the statistics from training data ``x`` (N, D)."""
        x = x.to(self.mean.device, torch.float64)
        std = x.std(0) if len(x) > 1 else torch.zeros_like(x[0])
        self.mean.copy_(x.mean(0))
        self.std.copy_(torch.where(std > MIN_STD, std, torch.ones_like(std)))

    def forward(self, x: Tensor) -> Tensor:
        # x: (B, D) in the data's units -> (B, D) standardised
        return (x - self.mean.to(x.device)) / self.std.to(x.device)

    def inverse(self, x: Tensor) -> Tensor:
        """Standardised (B, D) back to the data's units (e.g. the model's samples)."""
        return x * self.std.to(x.device) + self.mean.to(x.device)


@contextlib.contextmanager
def evaluating(module: nn.Module) -> Iterator[nn.Module]:
    """``module`` in evaluation mode for the ``with`` block, then back in the mode it was in
    (also when the block raises): how evaluation code borrows a model that may be training."""
    was = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was)


@contextlib.contextmanager
def batch_stats_only(module: nn.Module) -> Iterator[nn.Module]:
    """``module``'s batch-norm layers leave their running statistics alone for the ``with``
    block: in training mode they still normalise with each batch's own statistics, in
    evaluation mode with the running ones. For a pass whose inputs are not what the running
    statistics should describe (the decoder on encoder codes, for the cycle term)."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
             and m.track_running_stats]
    for m in norms:
        m.track_running_stats = False
    try:
        yield module
    finally:
        for m in norms:
            m.track_running_stats = True


_FOLDABLE = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)


def inference_copy(module: nn.Module) -> nn.Module:
    """A copy of ``module`` in evaluation mode, made for fast forward passes: the same function
    up to float rounding (about 1e-7 relative). Never train it.

    - Each batch norm that follows a conv or linear layer in an ``nn.Sequential`` (evaluation-
      mode dropout between them aside) is folded into that layer's weight and bias: in
      evaluation mode it is a fixed affine map, so its pass over the activations goes.
    - ReLU and LeakyReLU run in place (no gradient to keep their inputs for).
    - On a CPU, image networks are channels-last, the layout oneDNN's convolutions are fastest
      in (docs/anomaly.md, "Scoring speed").

    Layers under a parametrisation (spectral normalisation) and batch norms without running
    statistics are left as they are.
    """
    import copy

    from torch.nn.utils import parametrize
    from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

    out = copy.deepcopy(module).eval()
    for seq in [m for m in out.modules() if isinstance(m, nn.Sequential)]:
        # the last child that computed something (dropout and folded norms pass x through)
        last: tuple[str, nn.Module] | None = None
        for name, child in list(seq.named_children()):
            if isinstance(child, (nn.Dropout, nn.Identity)):
                continue
            if (last is not None and isinstance(last[1], _FOLDABLE)
                    and type(child) in (nn.BatchNorm1d, nn.BatchNorm2d)
                    and child.running_mean is not None
                    and not parametrize.is_parametrized(last[1])):
                layer = last[1]
                fused = (fuse_linear_bn_eval(layer, child) if isinstance(layer, nn.Linear)
                         else fuse_conv_bn_eval(layer, child,
                                                transpose=isinstance(layer, nn.ConvTranspose2d)))
                setattr(seq, last[0], fused)
                setattr(seq, name, nn.Identity())
                last = (last[0], fused)
                continue
            # in place only on a tensor this Sequential made, never on its own input
            if isinstance(child, (nn.ReLU, nn.LeakyReLU)) and last is not None and isinstance(
                    last[1], (*_FOLDABLE, nn.modules.batchnorm._BatchNorm)):
                child.inplace = True
            last = (name, child)
    device = next(out.parameters(), torch.empty(0)).device
    if device.type == "cpu" and any(isinstance(m, nn.Conv2d | nn.ConvTranspose2d)
                                    for m in out.modules()):
        out = out.to(memory_format=torch.channels_last)
    return out
