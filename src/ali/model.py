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

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from . import losses as L


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

    def stats(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(mu, log_sigma) of a Gaussian encoder."""
        if self.kind != "gaussian":
            raise TypeError(f"a {self.kind} encoder has no (mu, log_sigma)")
        mu, log_sigma = self.net(x).chunk(2, dim=self.dim)
        return mu, log_sigma

    def forward(self, x: Tensor) -> Tensor:
        """A sample z_hat ~ q(z | x)."""
        if self.kind == "gaussian":
            mu, log_sigma = self.stats(x)
            return mu + log_sigma.exp() * torch.randn_like(mu)
        if self.kind == "noise":
            return self.net(self._noise_input(x, None))
        return self.net(x)

    def mean(self, x: Tensor) -> Tensor:
        """A point estimate of z given x: mu for a Gaussian encoder, E(concat(x, 0)) for the
        noise-input encoder (eps at its mean), E(x) for a deterministic one."""
        if self.kind == "gaussian":
            return self.stats(x)[0]
        if self.kind == "noise":
            shape = list(x.shape)
            shape[self.dim] = self.noise_dim
            return self.net(self._noise_input(x, x.new_zeros(shape)))
        return self.net(x)


class JointDiscriminator(nn.Module):
    """D(x, z) = D_xz(concat(D_x(x), D_z(z))): logits, one per pair (and per run)."""

    def __init__(self, d_x: nn.Module, d_z: nn.Module, d_xz: nn.Module, cat_dim: int = 1) -> None:
        super().__init__()
        self.d_x, self.d_z, self.d_xz, self.cat_dim = d_x, d_z, d_xz, cat_dim

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        h = torch.cat([self.d_x(x), self.d_z(z)], dim=self.cat_dim)
        return self.d_xz(h).flatten(1)  # (B, runs): one logit per pair


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
                 gen_loss: str = "nonsaturating", runs: int = 1) -> None:
        super().__init__()
        self.runs = runs
        self.decoder = decoder
        self.encoder = encoder
        self.discriminator = discriminator
        self.latent_shape = tuple(latent_shape)
        self.gen_loss = gen_loss

    # ------------------------------------------------------------------ parameters
    def parameters_d(self) -> list[nn.Parameter]:
        """Parameters the discriminator loss ``d`` updates."""
        return [] if self.discriminator is None else list(self.discriminator.parameters())

    def parameters_g(self) -> list[nn.Parameter]:
        """Parameters the generator loss ``g`` updates (encoder and decoder)."""
        d = {id(p) for p in self.parameters_d()}
        return [p for p in self.parameters() if id(p) not in d]

    def schedule(self, step: int, total: int) -> None:
        """Called by the engine before each step; models with phases switch here."""

    # ------------------------------------------------------------------ p(x, z)
    def sample_prior(self, n: int) -> Tensor:
        """z ~ p(z) = N(0, I), shape (n, *latent_shape)."""
        p = next(self.parameters())
        return torch.randn((n, *self.latent_shape), device=p.device, dtype=p.dtype)

    def decode(self, z: Tensor) -> Tensor:
        """x_tilde = G(z)."""
        return self.decoder(z)

    @torch.no_grad()
    def sample(self, n: int) -> Tensor:
        """n samples x_tilde ~ p(x)."""
        return self.decode(self.sample_prior(n))

    # ------------------------------------------------------------------ q(x, z)
    def _need_encoder(self) -> StochasticEncoder:
        if self.encoder is None:
            raise TypeError(f"{type(self).__name__} has no encoder")
        return self.encoder

    def encode(self, x: Tensor) -> Tensor:
        """z_hat ~ q(z | x), reparametrised so gradients reach the encoder."""
        return self._need_encoder()(x)

    def encode_mean(self, x: Tensor) -> Tensor:
        """A point estimate of z given x (mu for a Gaussian encoder)."""
        return self._need_encoder().mean(x)

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """G(z_hat) with z_hat ~ q(z | x): the paper's reconstructions (Figures 2b-5b)."""
        return self.decode(self.encode(x))

    @torch.no_grad()
    def interpolate(self, x1: Tensor, x2: Tensor, steps: int) -> Tensor:
        """Decode ``steps`` points on the line from z_hat(x1) to z_hat(x2) (Figure 6).

        Returns shape (steps, *x1.shape): ``out[0]`` decodes z_hat(x1), ``out[-1]`` z_hat(x2).
        """
        if steps < 2:
            raise ValueError("interpolate needs steps >= 2")
        z1, z2 = self.encode(x1), self.encode(x2)
        t = torch.linspace(0, 1, steps, device=z1.device, dtype=z1.dtype)
        t = t.view(steps, *([1] * z1.dim()))
        z = (1 - t) * z1 + t * z2                       # (steps, B, *latent)
        x = self.decode(z.flatten(0, 1))                # (steps * B, *data)
        return x.view(steps, *x1.shape)

    # ------------------------------------------------------------------ training
    def losses(self, x: Tensor, z: Tensor) -> Losses:
        raise NotImplementedError

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
        recon_weight: beyond the paper, the weight of ALICE's explicit cycle term
            ``||x - G(z_hat)||^2`` in the generator loss (Li et al., 2017); 0 (default) is ALI.
    """

    def __init__(self, encoder: StochasticEncoder, decoder: nn.Module,
                 discriminator: JointDiscriminator, latent_shape: tuple[int, ...],
                 gen_loss: str = "nonsaturating", runs: int = 1,
                 recon_weight: float = 0.0) -> None:
        super().__init__(decoder, latent_shape, encoder=encoder, discriminator=discriminator,
                         gen_loss=gen_loss, runs=runs)
        self.recon_weight = recon_weight

    def losses(self, x: Tensor, z: Tensor) -> Losses:
        # x: (B, *data), z: (B, *latent) drawn from p(z)
        z_hat = self.encode(x)                          # (B, *latent) ~ q(z | x)
        if self.recon_weight:
            # One decoder pass for G(z) and G(z_hat): (2B, *data)
            x_tilde, x_rec = self.decode(torch.cat([z, z_hat])).chunk(2)
        else:
            x_tilde = self.decode(z)                    # (B, *data)   ~ p(x | z)
        logits = self.discriminator(torch.cat([x, x_tilde]), torch.cat([z_hat, z]))  # (2B, R)
        s_q, s_p = logits.chunk(2)                      # (B, R) each
        out = self._adversarial(s_q, s_p)
        if self.recon_weight:
            cycle = L.batch_mean_run_sum(L.per_example_sum((x - x_rec).pow(2), self.runs))
            out.g = out.g + self.recon_weight * cycle
            out.stats["recon_sse"] = cycle.detach() / self.runs
        return out
