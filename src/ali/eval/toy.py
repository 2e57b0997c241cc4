"""Metrics of the 2-D experiment (section 4.5).

- ``modes``: the paper's count. Each sample is assigned to the mixture component of highest
  responsibility; with equal weights and one shared isotropic std that is the nearest centre.
  A mode is covered if any sample is assigned to it.
- ``hq``: the fraction of samples within 3 std of their nearest centre ("high quality"), and
  ``modes_hq``: the number of components that receive at least one high-quality sample (the
  stricter protocol of later papers).
- ``spread``: how wide the modes are, the root-mean-square offset of the high-quality samples
  from their centre per coordinate, in units of the data's std (about 0.97 for data, whose
  offsets are cut at 3 std too; below 1: narrower than the data). ``hq`` cannot see modes
  that are too narrow, this can.
- ``mode_kl``: KL(share of samples per component || the mixture's equal weights), in nats:
  0 for perfectly balanced modes (about (K - 1) / 2N from sampling alone).
- ``recon_mode``: the fraction of held-out points whose reconstruction is assigned to the same
  component as the point itself.
"""

from __future__ import annotations

import torch
from torch import Tensor

HQ_STDS = 3.0


def assign(x: Tensor, centres: Tensor) -> tuple[Tensor, Tensor]:
    """(index of the nearest centre, distance to it) for each point of x: (N, 2)."""
    d = torch.cdist(x.double(), centres.double().to(x.device))     # (N, K)
    dist, idx = d.min(dim=1)
    return idx, dist


def mode_metrics(samples: Tensor, centres: Tensor, std: float) -> dict[str, float | None]:
    """``modes``, ``modes_hq``, ``hq``, ``spread`` (None without a high-quality sample) and
    ``mode_kl`` of samples (N, 2) from one model."""
    idx, dist = assign(samples, centres)
    good = dist <= HQ_STDS * std
    share = torch.bincount(idx, minlength=len(centres)).double() / len(idx)
    kl = torch.special.xlogy(share, share * len(centres)).sum()       # 0 log 0 = 0
    spread = (dist[good].pow(2).mean() / samples.shape[1]).sqrt() / std if good.any() else None
    return {
        "modes": int(idx.unique().numel()),
        "modes_hq": int(idx[good].unique().numel()),
        "hq": float(good.double().mean()),
        "spread": None if spread is None else float(spread),
        "mode_kl": float(kl),
    }


def recon_mode(x: Tensor, x_rec: Tensor, centres: Tensor) -> float:
    """Fraction of points whose reconstruction lands in the component of the original."""
    return float((assign(x, centres)[0] == assign(x_rec, centres)[0]).double().mean())
