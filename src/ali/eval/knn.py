"""1-nearest-neighbour accuracy on features (BiGAN's protocol, Donahue et al., 2016): every
test item gets the label of its nearest labelled training item."""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import AliError

DISTANCES = ("cosine", "euclidean")


@torch.no_grad()
def nearest(train: Tensor, test: Tensor, distance: str = "cosine", chunk: int = 1024) -> Tensor:
    """Index into ``train`` (N, D) of the nearest neighbour of each row of ``test`` (M, D)."""
    if distance not in DISTANCES:
        raise AliError(f"unknown distance {distance!r} (known: {', '.join(DISTANCES)})")
    a, b = train.double(), test.double()
    if distance == "cosine":
        a = torch.nn.functional.normalize(a, dim=1)
        b = torch.nn.functional.normalize(b, dim=1)
    out = []
    for start in range(0, len(b), chunk):
        q = b[start:start + chunk]
        if distance == "cosine":
            out.append((q @ a.T).argmax(dim=1))
        else:  # ||q - a||^2 up to ||q||^2, which does not change the argmin
            out.append(((a * a).sum(1) - 2 * q @ a.T).argmin(dim=1))
    return torch.cat(out)


def accuracy(train: Tensor, train_labels: Tensor, test: Tensor, test_labels: Tensor,
             distance: str = "cosine") -> float:
    """Fraction of ``test`` rows whose nearest ``train`` row has the same label."""
    keep = train_labels >= 0
    if not bool(keep.any()):
        raise AliError("1-NN needs labelled training items")
    train, train_labels = train[keep], train_labels[keep]
    pred = train_labels[nearest(train, test, distance)]
    return float((pred == test_labels).double().mean())
