"""The paper's baselines, sharing ALI's interface (:class:`~ali.model.GenerativeModel`).

- :class:`GAN`: the same decoder, a discriminator on x alone (Goodfellow et al., 2014).
- :class:`GANInverse`: a GAN plus an encoder trained to invert it, minimising
  ``||z - E(G(z))||^2`` on the GAN's own samples (section 2.2, "learned inverse mapping").
- :class:`GANPostHoc`: a GAN trained first; then its decoder is frozen and an encoder and a
  joint discriminator are trained with the ALI game (section 2.2, "post-hoc learned inference").
- :class:`VAE`: the same encoder and decoder trained by maximising the evidence lower bound.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from . import losses as L
from .model import GenerativeModel, JointDiscriminator, Losses, StochasticEncoder


class GAN(GenerativeModel):
    """A GAN: decoder G(z) and discriminator D(x); no inference."""

    def __init__(self, decoder: nn.Module, discriminator: nn.Module,
                 latent_shape: tuple[int, ...], gen_loss: str = "nonsaturating",
                 runs: int = 1, r1_weight: float = 0.0, r1_every: int = 1,
                 freeze_decoder_bn_at: float = 1.0) -> None:
        super().__init__(decoder, latent_shape, discriminator=discriminator, gen_loss=gen_loss,
                         runs=runs, r1_weight=r1_weight, r1_every=r1_every,
                         freeze_decoder_bn_at=freeze_decoder_bn_at)

    def _gan_losses(self, x: Tensor, z: Tensor) -> tuple[Losses, Tensor]:
        x_tilde = self.decode(z)                                    # (B, *data)
        x_d = self._real_input(x)
        logits = self.discriminator(torch.cat([x_d, x_tilde]))      # (2B, R)
        s_q, s_p = logits.chunk(2)
        return self._with_r1(self._adversarial(s_q, s_p), s_q, [x_d]), x_tilde

    def losses(self, x: Tensor, z: Tensor) -> Losses:
        return self._gan_losses(x, z)[0]


class GANInverse(GAN):
    """A GAN whose encoder learns the inverse mapping z -> E(G(z)) on GAN samples.

    The encoder's regression loss is added to the generator loss; G's samples are detached
    there, so the decoder is trained by the GAN game alone and the encoder by regression alone.
    """

    def __init__(self, encoder: StochasticEncoder, decoder: nn.Module,
                 discriminator: nn.Module, latent_shape: tuple[int, ...],
                 gen_loss: str = "nonsaturating", runs: int = 1, r1_weight: float = 0.0,
                 r1_every: int = 1, freeze_decoder_bn_at: float = 1.0) -> None:
        super().__init__(decoder, discriminator, latent_shape, gen_loss, runs, r1_weight,
                         r1_every, freeze_decoder_bn_at)
        self.encoder = encoder

    def losses(self, x: Tensor, z: Tensor) -> Losses:
        out, x_tilde = self._gan_losses(x, z)
        z_rec = self.encode(x_tilde.detach())                       # (B, *latent)
        inverse = L.batch_mean_run_sum(L.per_example_sum((z - z_rec).pow(2), self.runs))
        out.g = out.g + inverse
        out.stats["inverse_mse"] = inverse.detach() / self.runs
        return out


class GANPostHoc(GAN):
    """A GAN, then inference learned post hoc with the ALI game against its frozen decoder.

    For the first ``posthoc_fraction`` of training this is a plain GAN. Afterwards the decoder
    is frozen (evaluation mode, no gradients) and the encoder plays the ALI game against a new
    joint discriminator; the GAN's own discriminator is no longer updated.
    """

    def __init__(self, encoder: StochasticEncoder, decoder: nn.Module,
                 discriminator: nn.Module, joint_discriminator: JointDiscriminator,
                 latent_shape: tuple[int, ...], gen_loss: str = "nonsaturating",
                 runs: int = 1, posthoc_fraction: float = 0.5, r1_weight: float = 0.0,
                 r1_every: int = 1, freeze_decoder_bn_at: float = 1.0) -> None:
        super().__init__(decoder, discriminator, latent_shape, gen_loss, runs, r1_weight,
                         r1_every, freeze_decoder_bn_at)
        self.encoder = encoder
        self.joint_discriminator = joint_discriminator
        self.posthoc_fraction = posthoc_fraction
        self.posthoc = False  # set by schedule() before every step, so resuming restores it

    def parameters_d(self) -> list[nn.Parameter]:
        return [*self.discriminator.parameters(), *self.joint_discriminator.parameters()]

    def schedule(self, step: int, total: int) -> None:
        super().schedule(step, total)
        posthoc = step >= int(self.posthoc_fraction * total)
        if posthoc != self.posthoc:
            self.posthoc = posthoc
            self.train(self.training)

    def _frozen_in_training(self) -> list[nn.Module]:
        # Post hoc, the decoder is frozen whole: population statistics, as it will be sampled.
        return [self.decoder] if self.posthoc else super()._frozen_in_training()

    def losses(self, x: Tensor, z: Tensor) -> Losses:
        if not self.posthoc:
            return self._gan_losses(x, z)[0]
        with torch.no_grad():
            x_tilde = self.decode(z)                                # (B, *data)
        z_hat = self.encode(x)                                      # (B, *latent)
        x_d = self._real_input(x)
        logits = self.joint_discriminator(torch.cat([x_d, x_tilde]), torch.cat([z_hat, z]))
        s_q, s_p = logits.chunk(2)
        return self._with_r1(self._adversarial(s_q, s_p), s_q, [x_d, z_hat])


class VAE(GenerativeModel):
    """A variational autoencoder with ALI's encoder (Gaussian) and decoder.

    ``likelihood`` is ``gaussian`` (a learned per-dimension output scale; the 2-D experiment) or
    ``bernoulli`` (images in [0, 1]). Samples and reconstructions are the decoder's mean.
    """

    def __init__(self, encoder: StochasticEncoder, decoder: nn.Module,
                 latent_shape: tuple[int, ...], data_shape: tuple[int, ...],
                 likelihood: str = "gaussian", runs: int = 1,
                 freeze_decoder_bn_at: float = 1.0) -> None:
        if encoder.kind != "gaussian":
            raise ValueError("a VAE needs a Gaussian encoder")
        super().__init__(decoder, latent_shape, encoder=encoder, runs=runs,
                         freeze_decoder_bn_at=freeze_decoder_bn_at)
        self.likelihood = likelihood
        self.log_sigma_x = nn.Parameter(torch.zeros(data_shape)) if likelihood == "gaussian" else None

    def losses(self, x: Tensor, z: Tensor | None = None) -> Losses:
        mu, log_sigma = self._need_encoder().stats(x)               # (B, *latent) each
        z_hat = mu + log_sigma.exp() * torch.randn_like(mu)
        x_mean = self.decode(z_hat)                                 # (B, *data)
        if self.log_sigma_x is not None:
            nll = L.gaussian_nll(x, x_mean, self.log_sigma_x)
        else:
            nll = L.bernoulli_nll(x, x_mean)
        rec = L.batch_mean_run_sum(L.per_example_sum(nll, self.runs))
        kl = L.batch_mean_run_sum(L.per_example_sum(L.gaussian_kl(mu, log_sigma), self.runs))
        return Losses(g=rec + kl, stats={"nll": rec.detach() / self.runs,
                                         "kl": kl.detach() / self.runs})
