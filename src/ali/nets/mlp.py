"""MLPs for feature vectors (tabular data, ``data.name=table``): the toy family's networks
(:mod:`ali.nets.toy`) on ``model.data_dim`` features instead of 2.

``model.data_dim`` is the width of one feature vector; left at 0 it is filled in from the data
when training starts (as a conditional model's ``label_dim``), and a saved model's config
holds it. The model standardises its input with the training split's per-feature mean and std
(:class:`ali.model.Standardize`, buffers saved with the weights), so the networks, the losses and
the anomaly scores all work in standardised units.
"""

from __future__ import annotations

from torch import nn

from ..config import ModelConfig
from ..errors import ConfigError
from . import toy
from .parts import JointDiscriminator, StochasticEncoder

STANDARDIZED = True
"""The model standardises x before these networks see it (:func:`ali.build.build_model`)."""

NOTES = ("every layer output has a run axis first: (runs, features)",
         "D(x) and D(z) are identities; D(x, z) acts on concat(x, z)",
         "x is standardised with the training split's statistics before the networks see it")


def _dim(cfg: ModelConfig) -> int:
    if cfg.data_dim < 1:
        raise ConfigError("model.data_dim is 0: it is filled in from the data when training "
                          "starts; set it (the number of features) to build the networks "
                          "without data")
    return cfg.data_dim


def encoder(cfg: ModelConfig) -> StochasticEncoder:
    """q(z | x): an MLP on the ``data_dim`` features (and noise, for the noise encoder)."""
    return toy.build_encoder(cfg, _dim(cfg))


def decoder(cfg: ModelConfig) -> nn.Module:
    """p(x | z): four hidden layers of ``model.width``, ``data_dim`` outputs."""
    return toy.build_decoder(cfg, _dim(cfg))


def discriminator(cfg: ModelConfig, joint: bool = True) -> nn.Module:
    """D(x, z) on concat(x, z) (``joint``), or the GAN's D(x): maxout stacks."""
    return toy.build_discriminator(cfg, _dim(cfg), joint)


def pair_discriminator(cfg: ModelConfig, on: str) -> JointDiscriminator:
    """ALAD's D_xx (``on="x"``) or D_zz (``on="z"``)."""
    return toy.build_pair_discriminator(cfg, _dim(cfg), on)


def latent_shape(cfg: ModelConfig) -> tuple[int, ...]:
    return toy.latent_shape(cfg)


def data_shape(cfg: ModelConfig) -> tuple[int, ...]:
    return toy.shape_of(cfg, _dim(cfg))
