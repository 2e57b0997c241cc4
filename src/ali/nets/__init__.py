"""Network families, one module per dataset family, and :func:`build_model`.

A family module exports ``encoder(cfg)``, ``decoder(cfg)``, ``discriminator(cfg, joint)``,
``latent_shape(cfg)`` and ``data_shape(cfg)``, where ``cfg`` is a
:class:`~ali.config.ModelConfig`.

Families: ``toy`` (section 4.5's 2-D networks); the paper's image models ``cifar10``, ``svhn``,
``celeba`` and ``imagenet64`` (Tables 3-6, as the original code built them); ``mnist`` (our own
small design) and ``tiny`` (for tests). The image families are tables of layers built by
:mod:`ali.nets.conv`; :func:`init_decoder_bias_` sets their decoder's per-pixel output bias from
data.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from ..baselines import GAN, VAE, GANInverse, GANPostHoc
from ..config import Config
from ..errors import ConfigError
from ..model import ALI, GenerativeModel
from .conv import condition_embedding, init_decoder_bias_

__all__ = ["FAMILIES", "build_model", "family", "init_decoder_bias_"]

FAMILIES = ("toy", "cifar10", "svhn", "celeba", "imagenet64", "mnist", "tiny")


def family(name: str) -> ModuleType:
    """The network family module ``ali.nets.<name>``."""
    if name not in FAMILIES:
        raise ConfigError(f"model.nets must be one of {', '.join(FAMILIES)}; got {name!r}")
    return importlib.import_module(f"{__name__}.{name}")


def build_model(cfg: Config) -> GenerativeModel:
    """The model ``cfg.model.kind`` with the networks of ``cfg.model.nets``; the model keeps
    ``cfg.model`` as its ``config``, which is all :func:`ali.load` needs to rebuild it."""
    model = _build(cfg.model)
    model.config = cfg.model
    return model


def _build(m) -> GenerativeModel:
    nets = family(m.nets)
    lat = nets.latent_shape(m)
    common = dict(gen_loss=m.gen_loss, runs=m.runs, r1_weight=m.r1_weight,
                  r1_every=m.r1_every, freeze_decoder_bn_at=m.freeze_decoder_bn_at)
    if m.kind == "ali":
        embed = condition_embedding(m) if m.conditional else None
        return ALI(nets.encoder(m), nets.decoder(m), nets.discriminator(m, joint=True), lat,
                   recon_weight=m.recon_weight, semi_supervised=m.semi_supervised, embed=embed,
                   label_dim=m.label_dim, attributes=m.attributes, **common)
    if m.kind == "gan":
        return GAN(nets.decoder(m), nets.discriminator(m, joint=False), lat, **common)
    if m.kind == "gan_inverse":
        return GANInverse(nets.encoder(m), nets.decoder(m), nets.discriminator(m, joint=False),
                          lat, **common)
    if m.kind == "gan_posthoc":
        return GANPostHoc(nets.encoder(m), nets.decoder(m), nets.discriminator(m, joint=False),
                          nets.discriminator(m, joint=True), lat,
                          posthoc_fraction=m.posthoc_fraction, **common)
    if m.kind == "vae":
        likelihood = "gaussian" if m.nets == "toy" else "bernoulli"
        return VAE(nets.encoder(m), nets.decoder(m), lat, nets.data_shape(m),
                   likelihood=likelihood, runs=m.runs,
                   freeze_decoder_bn_at=m.freeze_decoder_bn_at)
    raise ConfigError(f"unknown model.kind {m.kind!r}")
