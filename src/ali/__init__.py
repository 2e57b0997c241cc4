"""Adversarially Learned Inference (Dumoulin et al., 2016) in PyTorch.

The model is :class:`ali.ALI`; baselines live in :mod:`ali.baselines`; configs in
:mod:`ali.config`; the training engine is :func:`ali.train.train`.
"""

__version__ = "0.1.0"

from .model import ALI, GenerativeModel, JointDiscriminator, Losses, StochasticEncoder  # noqa: E402

__all__ = ["ALI", "GenerativeModel", "JointDiscriminator", "Losses", "StochasticEncoder",
           "__version__"]
