"""Reconstruction error on held-out data.

- ``mse``: mean over images and pixels of ``(x - G(z_hat))^2``, pixels in [0, 1], z_hat ~ q(z|x)
  (the paper's reconstructions; ``mean=True`` uses mu instead).
- ``ratio``: the mean of ``||x - G(E(x))||`` over the held-out images divided by the mean
  distance ``||x_i - x_j||`` between random pairs of distinct held-out images (BiGAN's
  normalisation: 1 means a reconstruction is as far from its original as a random image).
- ``class_agreement`` (where a classifier is given): the fraction of reconstructions it assigns
  to the original's label.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from ..model import GenerativeModel, evaluating
from ..errors import AliError
from .features import batches, conditions


@torch.no_grad()
def reconstructions(model: GenerativeModel, data: Any, mean: bool = False,
                    device: str | torch.device = "cpu", batch_size: int = 500,
                    labels: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(originals, reconstructions), float in [0, 1] on the CPU, the model in eval mode
    (feature vectors: both standardised as the model sees them, :meth:`standardized`).

    ``labels``: the examples' labels, which a conditional model encodes and decodes each
    example with (other models ignore them)."""
    if model.encoder is None:
        raise AliError(f"a {type(model).__name__} has no encoder: it cannot reconstruct")
    ys = conditions(model, labels, None, len(data))
    xs, rs = [], []
    with evaluating(model):
        for i, x in enumerate(batches(data, size=batch_size)):
            x = model.standardized(x.to(device))
            y = None if ys is None else ys[i * batch_size:(i + 1) * batch_size].to(device)
            z = model.encode_mean(x, y) if mean else model.encode(x, y)
            xs.append(x.cpu())
            rs.append(model.decode(z, y).float().cpu())
    return torch.cat(xs), torch.cat(rs)


def pair_distance(x: Tensor, generator: torch.Generator | None = None) -> float:
    """Mean ``||x_i - x_pi(i)||`` over a random derangement-like pairing (pi(i) != i)."""
    n = len(x)
    if n < 2:
        return float("nan")
    shift = torch.randint(1, n, (1,), generator=generator).item()
    perm = torch.randperm(n, generator=generator)
    partner = perm.roll(shift)                      # perm[i] is paired with perm[i - shift]
    return float((x[perm] - x[partner]).flatten(1).double().norm(dim=1).mean())


def scores(x: Tensor, rec: Tensor, seed: int = 0,
           classify: Callable[[Tensor], Tensor] | None = None,
           labels: Tensor | None = None) -> dict[str, Any]:
    """``mse``, ``ratio`` and, with a classifier and labels, ``class_agreement``."""
    diff = (x - rec).flatten(1).double()
    g = torch.Generator().manual_seed(seed)
    out: dict[str, Any] = {"mse": float(diff.pow(2).mean()),
                           "recon_distance": float(diff.norm(dim=1).mean()),
                           "pair_distance": pair_distance(x, g), "n": len(x)}
    out["ratio"] = out["recon_distance"] / out["pair_distance"]
    if classify is not None and labels is not None:
        out["class_agreement"] = float((classify(rec) == labels.cpu()).double().mean())
    return out
