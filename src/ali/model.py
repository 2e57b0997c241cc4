"""Adversarially Learned Inference (Dumoulin et al., 2016), Algorithm 1.

Notation follows the paper: ``x ~ q(x)`` is data, ``z ~ p(z) = N(0, I)`` is the prior,
``z_hat ~ q(z | x)`` is the encoder's sample ``E(x)`` and ``x_tilde ~ p(x | z)`` is the decoder's
sample ``G(z)``. The discriminator ``D(x, z)`` is built from three parts, ``D(x)``, ``D(z)`` and
``D(x, z)``, and scores the encoder pairs ``(x, z_hat)`` and the decoder pairs ``(x_tilde, z)``
as one batch of ``2B`` so that its batch norm and dropout see both halves.

Every model in the project (ALI and the baselines in :mod:`ali.baselines`) is a
:class:`GenerativeModel`: the training engine only calls :meth:`GenerativeModel.losses`, and the
experiments only call ``sample``, ``encode``, ``reconstruct`` and friends.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from . import losses as L


PRETRAINED_WEIGHTS = "model.safetensors"
PRETRAINED_CONFIG = "config.json"
PRETRAINED_FORMAT = "ali-pretrained-1"


@dataclass
class Losses:
    """What one forward pass produces for the training engine.

    ``d`` is minimised w.r.t. the discriminator's parameters only and ``g`` w.r.t. the
    generator's (encoder and decoder) only; ``stats`` are detached scalars for logging.
    """

    g: Tensor
    d: Tensor | None = None
    stats: dict[str, Tensor] = field(default_factory=dict)


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
                raise ValueError("this discriminator is conditional: give y")
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


class GenerativeModel(nn.Module):
    """The interface every model of the project shares.

    Subclasses set ``self.decoder`` and optionally ``self.encoder`` and ``self.discriminator``,
    and implement :meth:`losses`.
    """

    encoder: StochasticEncoder | None
    discriminator: nn.Module | None

    def __init__(self, decoder: nn.Module, latent_shape: tuple[int, ...],
                 encoder: StochasticEncoder | None = None,
                 discriminator: nn.Module | None = None,
                 gen_loss: str = "nonsaturating", runs: int = 1,
                 embed: nn.Module | None = None, label_dim: int = 0,
                 attributes: bool = False, r1_weight: float = 0.0, r1_every: int = 1,
                 freeze_decoder_bn_at: float = 1.0) -> None:
        super().__init__()
        self.runs = runs
        self.r1_weight = r1_weight
        """Adversarial models: gamma of the R1 penalty on the discriminator (0: none)."""
        self.r1_every = r1_every
        """Lazy R1: the penalty applies on one step in ``r1_every``, weighted by ``r1_every``."""
        self._r1_now = True  # set by schedule() before every step, so resuming restores it
        self.freeze_decoder_bn_at = freeze_decoder_bn_at
        """From this fraction of training on, the decoder's batch norm uses its running
        statistics, frozen (1: never); see :meth:`schedule`."""
        self._decoder_bn_frozen = False  # set by schedule(), so resuming restores it
        self.decoder = decoder
        self.encoder = encoder
        self.discriminator = discriminator
        self.latent_shape = tuple(latent_shape)
        self.gen_loss = gen_loss
        self.embed = embed
        """Conditional models: the generator's linear embedding of y (None: unconditional)."""
        self.label_dim = label_dim
        self.attributes = attributes
        """Conditional models: y is ``label_dim`` 0/1 attributes, else a class index."""

    @property
    def conditional(self) -> bool:
        return self.embed is not None

    def _cond(self, y: Tensor | None) -> tuple[Tensor, ...]:
        """The generator's embedded condition as (B, E, 1, ..., 1), or () when unconditional."""
        if self.embed is None:
            if y is not None:
                raise ValueError(f"{type(self).__name__} is not conditional: y must be None")
            return ()
        if y is None:
            raise ValueError("this model is conditional: give y (class indices or attributes)")
        e = self.embed(condition_vector(y, self.label_dim))          # (B, E)
        return (e.view(*e.shape, *([1] * (len(self.latent_shape) - 1))),)

    def default_condition(self, n: int) -> Tensor | None:
        """The y of :meth:`sample` when none is given: classes 0..K-1 in turn (class-conditional
        models); None for unconditional ones. Attribute-conditional models need an explicit y."""
        if self.embed is None:
            return None
        if self.attributes:
            raise ValueError("an attribute-conditional model needs y: (n, K) 0/1 attributes")
        p = next(self.parameters())
        return torch.arange(n, device=p.device) % self.label_dim

    config: object = None
    """The :class:`~ali.config.ModelConfig` the model was built from (set by
    :func:`ali.nets.build_model`)."""

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``model.safetensors`` (the weights) and ``config.json`` (the model's own
        config) into ``directory``; :func:`ali.load` rebuilds the model from them alone,
        without the dataset or the training config."""
        from safetensors.torch import save_file

        from . import __version__

        if self.config is None:
            raise TypeError("this model was not built by ali.nets.build_model: it has no config")
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()},
                  str(out / PRETRAINED_WEIGHTS))
        meta = {"format": PRETRAINED_FORMAT, "ali": __version__,
                "model": dataclasses.asdict(self.config)}
        (out / PRETRAINED_CONFIG).write_text(json.dumps(meta, indent=2) + "\n")
        return out

    # ------------------------------------------------------------------ parameters
    def parameters_d(self) -> list[nn.Parameter]:
        """Parameters the discriminator loss ``d`` updates."""
        return [] if self.discriminator is None else list(self.discriminator.parameters())

    def parameters_g(self) -> list[nn.Parameter]:
        """Parameters the generator loss ``g`` updates (encoder and decoder)."""
        d = {id(p) for p in self.parameters_d()}
        return [p for p in self.parameters() if id(p) not in d]

    def schedule(self, step: int, total: int) -> None:
        """Called by the engine before each step; models with phases switch here (subclasses
        call this first)."""
        self._r1_now = step % self.r1_every == 0
        frozen = step >= int(self.freeze_decoder_bn_at * total)
        if frozen != self._decoder_bn_frozen:
            self._decoder_bn_frozen = frozen
            self.train(self.training)

    def _frozen_in_training(self) -> list[nn.Module]:
        """The modules :meth:`train` keeps in evaluation mode: the decoder's batch norm once
        :meth:`schedule` has frozen it (subclasses with phases add their own)."""
        if not self._decoder_bn_frozen:
            return []
        return [m for m in self.decoder.modules()
                if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    def train(self, mode: bool = True) -> "GenerativeModel":
        """``nn.Module.train``, keeping the modules the schedule has frozen in evaluation mode
        (batch norm on running statistics, not updated)."""
        super().train(mode)
        if mode:
            for m in self._frozen_in_training():
                m.eval()
        return self

    # ------------------------------------------------------------------ p(x, z)
    def sample_prior(self, n: int) -> Tensor:
        """z ~ p(z) = N(0, I), shape (n, *latent_shape)."""
        p = next(self.parameters())
        return torch.randn((n, *self.latent_shape), device=p.device, dtype=p.dtype)

    def decode(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """x_tilde = G(z), or G(z, y) for a conditional model."""
        return self.decoder(z, *self._cond(y))

    @torch.no_grad()
    def sample(self, n: int, y: Tensor | None = None) -> Tensor:
        """n samples x_tilde ~ p(x) (p(x | y) for a conditional model; y defaults to
        :meth:`default_condition`)."""
        if y is None:
            y = self.default_condition(n)
        return self.decode(self.sample_prior(n), y)

    def log_ratio(self, x: Tensor, z: Tensor, y: Tensor | None = None) -> Tensor:
        """The discriminator's logit on pairs (x, z): at its optimum the log density ratio of the
        "real" to the "fake" side, log q(x, z) / p(x, z) for ALI (log p_data(x) / p(x) for a
        GAN, whose discriminator ignores z). Shape (B,), or (B, runs) for run-batched models."""
        if self.discriminator is None:
            raise TypeError(f"{type(self).__name__} has no discriminator")
        s = self.discriminator(x, z)                                # (B, runs)
        return s.squeeze(1) if self.runs == 1 else s

    @torch.no_grad()
    def sample_resampled(self, n: int, y: Tensor | None = None, oversample: int = 10,
                         chunk: int = 1024) -> Tensor:
        """n samples by sampling-importance-resampling with the discriminator (beyond the
        paper; the density-ratio view of discriminator rejection sampling, Azadi et al. 2019):
        each output is one of ``oversample`` ancestral pairs (G(z), z), drawn with probability
        proportional to exp(:meth:`log_ratio`). With an exact ratio the pairs then follow
        q(x, z), whose x-marginal is the data's; ``oversample`` -> infinity makes the
        resampling exact. Runs of a run-batched model are resampled independently. The
        candidates are decoded ``chunk * oversample`` at a time."""
        if oversample < 1 or chunk < 1:
            raise ValueError(f"oversample and chunk must be >= 1; got {oversample}, {chunk}")
        if y is None:
            y = self.default_condition(n)
        if n > chunk:
            return torch.cat([self.sample_resampled(min(chunk, n - i),
                                                    None if y is None else y[i:i + chunk],
                                                    oversample, chunk)
                              for i in range(0, n, chunk)])
        y_k = None if y is None else y.repeat_interleave(oversample, dim=0)
        z = self.sample_prior(n * oversample)                       # (nK, *latent)
        x = self.decode(z, y_k)                                     # (nK, *data)
        logits = L.full(self.log_ratio(x, z, y_k)).reshape(n, oversample, -1)  # (n, K, R)
        pick = torch.multinomial(logits.transpose(1, 2).reshape(-1, oversample).softmax(-1), 1)
        pick = pick.view(n, 1, -1, 1)                               # (n, 1, R, 1)
        runs = pick.shape[2]
        cand = x.reshape(n, oversample, runs, -1)                   # (n, K, R, F)
        out = cand.gather(1, pick.expand(n, 1, runs, cand.shape[-1]))
        return out.reshape(n, *x.shape[1:])                         # (n, *data)

    @torch.no_grad()
    def sample_chain(self, n: int, steps: int, y: Tensor | None = None) -> Tensor:
        """n samples from ``steps`` rounds of the decode-encode Markov chain x -> z_hat ~ q(z|x)
        -> G(z_hat), started at ancestral samples (beyond the paper; Creswell et al., 2016):
        it moves samples drawn where the prior's mass lies outside q(z) onto the encoder's
        latent distribution, which the decoder was trained on. It inherits the reconstructions'
        biases: with ALICE's cycle term they are narrower than the data, and so are its modes."""
        if steps < 0:
            raise ValueError(f"steps must be >= 0; got {steps}")
        if y is None:
            y = self.default_condition(n)
        x = self.sample(n, y)
        for _ in range(steps):
            x = self.decode(self.encode(x, y), y)
        return x

    # ------------------------------------------------------------------ q(x, z)
    def _need_encoder(self) -> StochasticEncoder:
        if self.encoder is None:
            raise TypeError(f"{type(self).__name__} has no encoder")
        return self.encoder

    def encode(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """z_hat ~ q(z | x) (q(z | x, y) when conditional), reparametrised so gradients reach
        the encoder."""
        return self._need_encoder()(x, *self._cond(y))

    def encode_mean(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """A point estimate of z given x (mu for a Gaussian encoder)."""
        return self._need_encoder().mean(x, *self._cond(y))

    @torch.no_grad()
    def reconstruct(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """G(z_hat) with z_hat ~ q(z | x): the paper's reconstructions (Figures 2b-5b)."""
        return self.decode(self.encode(x, y), y)

    @torch.no_grad()
    def interpolate(self, x1: Tensor, x2: Tensor, steps: int, y1: Tensor | None = None,
                    y2: Tensor | None = None) -> Tensor:
        """Decode ``steps`` points on the line from z_hat(x1) to z_hat(x2) (Figure 6); a
        conditional model decodes each point with the condition vector interpolated alike.

        Returns shape (steps, *x1.shape): ``out[0]`` decodes z_hat(x1), ``out[-1]`` z_hat(x2).
        """
        if steps < 2:
            raise ValueError("interpolate needs steps >= 2")
        z1, z2 = self.encode(x1, y1), self.encode(x2, y2)
        t = torch.linspace(0, 1, steps, device=z1.device, dtype=z1.dtype)
        z = torch.lerp(z1, z2, t.view(steps, *([1] * z1.dim())))           # (steps, B, *latent)
        y = None
        if self.conditional:
            v1, v2 = (condition_vector(v, self.label_dim) for v in (y1, y2))
            y = torch.lerp(v1, v2, t.view(steps, 1, 1)).flatten(0, 1)     # (steps * B, K)
        x = self.decode(z.flatten(0, 1), y)             # (steps * B, *data)
        return x.view(steps, *x1.shape)

    # ------------------------------------------------------------------ training
    def losses(self, x: Tensor, z: Tensor, y: Tensor | None = None,
               labelled: tuple[Tensor, Tensor] | None = None) -> Losses:
        """The losses of one step on data ``x`` and prior draws ``z``; conditional models get the
        batch's conditions ``y``, semi-supervised ones a labelled batch ``(x_l, y_l)``.

        A training loop calls :meth:`schedule` before each step (the engine does): phases and
        lazy R1 follow the step number given there."""
        raise NotImplementedError

    def _real_input(self, x: Tensor) -> Tensor:
        """The discriminator's own view of real data: a leaf that records gradients when the R1
        penalty needs d D / d x (kept apart from the encoder's input, so the penalty sees the
        discriminator's gradient only, not a path through E)."""
        return x.detach().requires_grad_(True) if self._r1_active() else x

    def _r1_active(self) -> bool:
        return bool(self.r1_weight) and self._r1_now

    def _with_r1(self, out: Losses, s_q: Tensor, inputs: list[Tensor]) -> Losses:
        """Add gamma/2 * R1 on the real ``inputs`` of logits ``s_q`` to the discriminator loss
        (on the steps lazy R1 picks, times ``r1_every``)."""
        if self._r1_active():
            penalty = L.r1_penalty(s_q, inputs, self.runs)
            out.d = out.d + 0.5 * self.r1_weight * self.r1_every * penalty
            # Reported times r1_every, so its mean over the logging interval stays the penalty's.
            out.stats["r1"] = penalty.detach() * self.r1_every / self.runs
        return out

    def _adversarial(self, s_q: Tensor, s_p: Tensor) -> Losses:
        """Algorithm 1's losses on logits for the 'real' pairs s_q and the 'fake' pairs s_p,
        in fp32 whatever the precision of the forward pass."""
        s_q, s_p = L.full(s_q), L.full(s_p)
        return Losses(
            d=L.discriminator_loss(s_q, s_p),
            g=L.generator_loss(s_q, s_p, self.gen_loss),
            stats=L.discriminator_accuracy(s_q, s_p),
        )


class ALI(GenerativeModel):
    """ALI: an encoder q(z|x), a decoder p(x|z) and a joint discriminator D(x, z).

    Args:
        encoder: the :class:`StochasticEncoder` G_z.
        decoder: the decoder network G_x, mapping z of shape ``(B, *latent_shape)`` to x.
        discriminator: a :class:`JointDiscriminator`.
        latent_shape: shape of one z, e.g. ``(64, 1, 1)`` for the image models.
        runs: independent copies trained side by side (toy networks only); z then has shape
            ``(B, runs, L)``.
        gen_loss: ``nonsaturating`` (Eq. 4, default) or ``saturating`` (Eq. 1).
        r1_weight: beyond the paper, gamma of the R1 gradient penalty on D at the real pairs
            (x, z_hat) (Mescheder et al., 2018); 0 (default) is ALI.
        r1_every: lazy R1 (Karras et al., 2020): the penalty on one step in ``r1_every``,
            weighted by ``r1_every``.
        freeze_decoder_bn_at: beyond the paper, from this fraction of training on the decoder's
            batch norm normalises with its running statistics, frozen (1, the default: never).
        recon_weight: beyond the paper, the weight of ALICE's explicit cycle term
            ``||x - G(z_hat)||^2`` in the generator loss (Li et al., 2017); 0 (default) is ALI.
        semi_supervised: the discriminator outputs K logits per pair (a K+1 discriminator whose
            "fake" logit is fixed at 0, Salimans et al. 2016) and :meth:`losses` takes a labelled
            batch.
        embed, label_dim, attributes: conditional ALI (Eq. 7): the generator's linear embedding
            of y, given to the encoder and the decoder (the discriminator has its own), the size
            K of y, and whether y is K 0/1 attributes (else a class index in 0..K-1).
    """

    def __init__(self, encoder: StochasticEncoder, decoder: nn.Module,
                 discriminator: JointDiscriminator, latent_shape: tuple[int, ...],
                 gen_loss: str = "nonsaturating", runs: int = 1,
                 recon_weight: float = 0.0, semi_supervised: bool = False,
                 embed: nn.Module | None = None, label_dim: int = 0,
                 attributes: bool = False, r1_weight: float = 0.0, r1_every: int = 1,
                 freeze_decoder_bn_at: float = 1.0) -> None:
        super().__init__(decoder, latent_shape, encoder=encoder, discriminator=discriminator,
                         gen_loss=gen_loss, runs=runs, embed=embed, label_dim=label_dim,
                         attributes=attributes, r1_weight=r1_weight, r1_every=r1_every,
                         freeze_decoder_bn_at=freeze_decoder_bn_at)
        self.recon_weight = recon_weight
        self.semi_supervised = semi_supervised

    def _discriminate(self, x: Tensor, z: Tensor, v: Tensor | None) -> Tensor:
        """D's logits; ``v``: the (B, K) condition vectors of a conditional model."""
        return self.discriminator(x, z, v) if v is not None else self.discriminator(x, z)

    def log_ratio(self, x: Tensor, z: Tensor, y: Tensor | None = None) -> Tensor:
        """D's logit on pairs (x, z), its estimate of log q(x, z) / p(x, z): for a K+1
        discriminator logsumexp of the class logits (the fake logit is fixed at 0); for a
        conditional model, of the pairs under condition y."""
        v = condition_vector(y, self.label_dim) if y is not None and self.conditional else y
        s = L.full(self._discriminate(x, z, v))                     # (B, runs) or (B, K)
        if self.semi_supervised:
            return s.logsumexp(1)
        return s.squeeze(1) if self.runs == 1 else s

    @torch.no_grad()
    def classify(self, x: Tensor) -> Tensor:
        """Class logits (B, K) of a semi-supervised model: its K+1 discriminator on the pair
        (x, mu(x)), the encoder's mean standing in for the sampled z_hat."""
        if not self.semi_supervised:
            raise TypeError("only a semi-supervised model (model.semi_supervised=true) classifies")
        return self.discriminator(x, self.encode_mean(x))

    def losses(self, x: Tensor, z: Tensor, y: Tensor | None = None,
               labelled: tuple[Tensor, Tensor] | None = None) -> Losses:
        # x: (B, *data), z: (B, *latent) drawn from p(z), y: (B,) or (B, K) conditions
        if self.semi_supervised:
            if labelled is None:
                raise ValueError("a semi-supervised model needs a labelled batch")
            return self._semi_supervised_losses(x, z, *labelled)
        # Conditional: y as a (B, K) vector and its embedding (B, E, 1, 1), each made once.
        v = condition_vector(y, self.label_dim) if y is not None and self.conditional else y
        c = self._cond(v)                               # () when unconditional
        z_hat = self._need_encoder()(x, *c)             # (B, *latent) ~ q(z | x)
        if self.recon_weight:
            # One decoder pass for G(z) and G(z_hat): (2B, *data)
            x_tilde, x_rec = self.decoder(torch.cat([z, z_hat]),
                                          *(torch.cat([e, e]) for e in c)).chunk(2)
        else:
            x_tilde = self.decoder(z, *c)               # (B, *data)   ~ p(x | z)
        vv = None if v is None else torch.cat([v, v])   # the conditions of both halves
        x_d = self._real_input(x)
        logits = self._discriminate(torch.cat([x_d, x_tilde]), torch.cat([z_hat, z]), vv)  # (2B, R)
        s_q, s_p = logits.chunk(2)                      # (B, R) each
        out = self._with_r1(self._adversarial(s_q, s_p), s_q, [x_d, z_hat])
        if self.recon_weight:
            cycle = L.batch_mean_run_sum(L.per_example_sum((x - L.full(x_rec)).pow(2),
                                                           self.runs))
            out.g = out.g + self.recon_weight * cycle
            out.stats["recon_sse"] = cycle.detach() / self.runs
        return out

    def _semi_supervised_losses(self, x: Tensor, z: Tensor, x_l: Tensor, y_l: Tensor) -> Losses:
        # x: (B, *data) unlabelled, x_l: (Bl, *data) labelled with classes y_l: (Bl,)
        b = len(x)
        z_hat = self.encode(torch.cat([x, x_l]))        # (B + Bl, *latent): one encoder pass
        x_tilde = self.decode(z)                        # (B, *data)
        logits = L.full(self.discriminator(torch.cat([x, x_tilde, x_l]),
                                           torch.cat([z_hat[:b], z, z_hat[b:]])))  # (2B+Bl, K)
        l_q, l_p, l_l = logits.split([b, b, len(x_l)])
        # With the fake logit fixed at 0, D(x, z) = sigmoid(logsumexp(l)): the usual ALI game on
        # s = logsumexp(l), and the classes come for free.
        s_q, s_p = l_q.logsumexp(1, keepdim=True), l_p.logsumexp(1, keepdim=True)   # (B, 1)
        out = self._adversarial(s_q, s_p)
        out.d = L.k_plus_one_discriminator_loss(l_q, l_p, l_l, y_l)
        out.stats["acc_lab"] = (l_l.detach().argmax(1) == y_l).float().mean()
        return out


