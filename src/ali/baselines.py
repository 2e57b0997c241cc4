"""The paper's baselines, sharing ALI's interface (:class:`~ali.model.GenerativeModel`).

- :class:`GAN`: the same decoder, a discriminator on x alone (Goodfellow et al., 2014).
- :class:`GANInverse`: a GAN plus an encoder trained to invert it, minimising
  ``||z - E(G(z))||^2`` on the GAN's own samples (section 2.2, "learned inverse mapping").
- :class:`GANPostHoc`: a GAN trained first; then its decoder is frozen and an encoder and a
  joint discriminator are trained with the ALI game (section 2.2, "post-hoc learned inference").
- :class:`VAE`: the same encoder and decoder trained by maximising the evidence lower bound.

Their losses are terms of :mod:`ali.objectives` (each class defaults to its plain objective);
these classes only hold the networks.
"""

from __future__ import annotations

import torch
from torch import nn

from .model import GenerativeModel, JointDiscriminator, Objective, StochasticEncoder
from .objectives import ELBO, GEN_LOSS, InverseMapping, MarginalGame, PostHoc


class GAN(GenerativeModel):
    """A GAN: decoder G(z) and discriminator D(x); no inference."""

    def __init__(self, decoder: nn.Module, discriminator: nn.Module,
                 latent_shape: tuple[int, ...], objective: Objective | None = None, runs: int = 1) -> None:
        objective = objective or Objective([MarginalGame(GEN_LOSS)])
        super().__init__(decoder, latent_shape, objective, discriminator=discriminator, runs=runs)


class GANInverse(GAN):
    """A GAN whose encoder learns the inverse mapping z -> E(G(z)) on GAN samples
    (:class:`~ali.objectives.InverseMapping`)."""

    def __init__(self, encoder: StochasticEncoder, decoder: nn.Module,
                 discriminator: nn.Module, latent_shape: tuple[int, ...],
                 objective: Objective | None = None, runs: int = 1) -> None:
        objective = objective or Objective([MarginalGame(GEN_LOSS), InverseMapping()])
        super().__init__(decoder, discriminator, latent_shape, objective, runs)
        self.encoder = encoder


class GANPostHoc(GAN):
    """A GAN, then inference learned post hoc with the ALI game against its frozen decoder
    (:class:`~ali.objectives.PostHoc`); ``joint_discriminator`` plays that second game."""

    def __init__(self, encoder: StochasticEncoder, decoder: nn.Module,
                 discriminator: nn.Module, joint_discriminator: JointDiscriminator,
                 latent_shape: tuple[int, ...], objective: Objective | None = None,
                 runs: int = 1) -> None:
        objective = objective or Objective([PostHoc(GEN_LOSS, 0.5)])
        super().__init__(decoder, discriminator, latent_shape, objective, runs)
        self.encoder = encoder
        self.joint_discriminator = joint_discriminator

    def parameters_d(self) -> list[nn.Parameter]:
        return [*self.discriminator.parameters(), *self.joint_discriminator.parameters()]


class VAE(GenerativeModel):
    """A variational autoencoder with ALI's encoder (Gaussian) and decoder
    (:class:`~ali.objectives.ELBO`).

    ``likelihood`` is ``gaussian`` (a learned per-dimension output scale ``log_sigma_x``; the
    2-D experiment) or ``bernoulli`` (images in [0, 1]). Samples and reconstructions are the
    decoder's mean.
    """

    def __init__(self, encoder: StochasticEncoder, decoder: nn.Module,
                 latent_shape: tuple[int, ...], data_shape: tuple[int, ...],
                 objective: Objective | None = None, likelihood: str = "gaussian", runs: int = 1) -> None:
        if encoder.kind != "gaussian":
            raise ValueError("a VAE needs a Gaussian encoder")
        objective = objective or Objective([ELBO()])
        super().__init__(decoder, latent_shape, objective, encoder=encoder, runs=runs)
        self.likelihood = likelihood
        self.log_sigma_x = nn.Parameter(torch.zeros(data_shape)) if likelihood == "gaussian" else None
