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

from ..errors import ConfigError
from .conv import condition_embedding, init_decoder_bias_

__all__ = ["FAMILIES", "condition_embedding", "family", "init_decoder_bias_"]

FAMILIES = ("toy", "mlp", "cifar10", "svhn", "celeba", "imagenet64", "mnist", "tiny")


def family(name: str) -> ModuleType:
    """The network family module ``ali.nets.<name>``."""
    if name not in FAMILIES:
        raise ConfigError(f"model.nets must be one of {', '.join(FAMILIES)}; got {name!r}")
    return importlib.import_module(f"{__name__}.{name}")

