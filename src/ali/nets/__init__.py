"""Network families, one module per dataset family.

A family module exports ``encoder(cfg)``, ``decoder(cfg)``, ``discriminator(cfg, joint)``,
``latent_shape(cfg)`` and ``data_shape(cfg)``, where ``cfg`` is a
:class:`~ali.config.ModelConfig`.

Families: ``toy`` (section 4.5's 2-D networks); ``mlp`` (the same MLPs on feature vectors of
``model.data_dim`` features, for tabular data); the paper's image models ``cifar10``, ``svhn``,
``celeba`` and ``imagenet64`` (Tables 3-6, as the original code built them); ``mnist`` (our own
small design) and ``tiny`` (for tests). The image families are tables of layers built by
:mod:`ali.nets.conv`; :func:`init_decoder_bias_` sets their decoder's per-pixel output bias from
data. :func:`ali.build.build_model` assembles a model from a family's networks: this package is
a leaf that the model code imports, never the reverse.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from torch import nn

from ..config import ModelConfig
from ..errors import ConfigError
from .conv import condition_embedding, init_decoder_bias_

__all__ = ["FAMILIES", "condition_embedding", "family", "init_decoder_bias_", "nearest_family",
           "pair_discriminator"]

FAMILIES = ("toy", "mlp", "cifar10", "svhn", "celeba", "imagenet64", "mnist", "tiny")
PAIR_SIDES = ("x", "z")


def family(name: str) -> ModuleType:
    """The network family module ``ali.nets.<name>``."""
    if name == "auto":
        raise ConfigError("model.nets=auto picks the network family from the data when "
                          f"training starts; set model.nets (one of {', '.join(FAMILIES)}) to "
                          "build the networks without data")
    if name not in FAMILIES:
        raise ConfigError(f"model.nets must be one of {', '.join(FAMILIES)}; got {name!r}")
    return importlib.import_module(f"{__name__}.{name}")


def nearest_family(shape: tuple[int, int, int], names: tuple[str, ...]) -> str:
    """Of the image families ``names``, the one for images of ``shape`` (C, H, W): the same
    channels where one has them (else any), then the nearest image size on a log scale (a
    factor of 2 up or down counts the same)."""
    import math

    def shape_of(n: str) -> tuple[int, ...]:
        return tuple(importlib.import_module(f"{__name__}.{n}").FAMILY.image_shape)

    same = [n for n in names if shape_of(n)[0] == shape[0]] or list(names)
    side = max(shape[1], shape[2])
    return min(same, key=lambda n: abs(math.log(shape_of(n)[1] / side)))


def pair_discriminator(cfg: ModelConfig, on: str) -> nn.Module:
    """ALAD's D_xx (``on="x"``) or D_zz (``on="z"``) of the family ``cfg.nets``: its module's
    ``pair_discriminator(cfg, on)``, or its ``FAMILY`` table's; a one-line
    :class:`~ali.errors.ConfigError` for a family that has neither."""
    if on not in PAIR_SIDES:
        raise ValueError(f"on must be one of {PAIR_SIDES}; got {on!r}")
    fam = family(cfg.nets)
    build = getattr(fam, "pair_discriminator", None)
    if build is not None:
        return build(cfg, on)
    table = getattr(fam, "FAMILY", None)
    if table is None:
        raise ConfigError(f"model.alad: the {cfg.nets} networks have no D_xx / D_zz")
    return table.build_pair_discriminator(cfg, on)
