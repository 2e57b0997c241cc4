"""Adversarially Learned Inference (Dumoulin et al., 2016) in PyTorch.

The model is :class:`ali.ALI`; baselines live in :mod:`ali.baselines`; configs in
:mod:`ali.config`; the training engine is :func:`ali.train.train`; :func:`ali.load` reloads a
trained model (a folder written by ``model.save_pretrained`` or a run folder) and
:func:`ali.features` gives its encoder features.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["ALI", "GenerativeModel", "JointDiscriminator", "Losses", "StochasticEncoder",
           "__version__", "features", "load"]

if TYPE_CHECKING:
    from .model import ALI, GenerativeModel, JointDiscriminator, Losses, StochasticEncoder
    from .pretrained import features, load

# Resolved on first use, so `import ali` (and every `ali` command, which reads __version__)
# does not pay for importing torch until a model is needed.
_LAZY = {"ALI": "model", "GenerativeModel": "model", "JointDiscriminator": "model",
         "Losses": "model", "StochasticEncoder": "model", "load": "pretrained", "features": "pretrained"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
