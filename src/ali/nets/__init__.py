"""Network families, one module per dataset family.

A family module exports ``encoder(cfg)``, ``decoder(cfg)``, ``discriminator(cfg, joint)``,
``latent_shape(cfg)`` and ``data_shape(cfg)``, where ``cfg`` is a
:class:`~ali.config.ModelConfig`.

Families: ``toy`` (section 4.5's 2-D networks); the paper's image models ``cifar10``, ``svhn``,
``celeba`` and ``imagenet64`` (Tables 3-6, as the original code built them); ``mnist`` (our own
small design) and ``tiny`` (for tests). The image families are tables of layers built by
:mod:`ali.nets.conv`; :func:`init_decoder_bias_` sets their decoder's per-pixel output bias from
data. :func:`ali.build.build_model` assembles a model from a family's networks: this package is
a leaf that the model code imports, never the reverse.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from ..errors import ConfigError
from .conv import condition_embedding, init_decoder_bias_

__all__ = ["FAMILIES", "condition_embedding", "family", "init_decoder_bias_", "nearest_family"]

FAMILIES = ("toy", "cifar10", "svhn", "celeba", "imagenet64", "mnist", "tiny")


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
