"""The 2-D Gaussian mixtures of section 4.5 and of later papers.

- ``grid``: 25 components centred on {-4, -2, 0, 2, 4}^2, std 0.05, equal weights (the paper).
- ``ring``: 8 components evenly spaced on the circle of radius 1, std 0.01.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

DEFAULT_STD = {"grid": 0.05, "ring": 0.01}
NAMES = tuple(DEFAULT_STD)


def centres(name: str) -> Tensor:
    """The mixture's component means, shape (K, 2)."""
    if name == "grid":
        v = torch.arange(-4.0, 4.1, 2.0)
        return torch.cartesian_prod(v, v)
    if name == "ring":
        a = torch.arange(8) * (2 * math.pi / 8)
        return torch.stack([a.cos(), a.sin()], dim=1)
    raise ValueError(f"unknown 2-D dataset {name!r}")


def sample(name: str, n: int, std: float, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """n points of the mixture and the index of the component each came from."""
    c = centres(name)
    labels = torch.randint(len(c), (n,), generator=generator)
    x = c[labels] + std * torch.randn(n, 2, generator=generator)
    return x, labels
