"""Frechet Inception Distance (Heusel et al., 2017) and Kernel Inception Distance (Binkowski et
al., 2018) between two sets of features, and the feature networks that produce them.

- FID: ``||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2))`` of the features' means and
  covariances (ddof 1), in float64; ``tr((S1 S2)^(1/2))`` is computed as the sum of the square
  roots of the eigenvalues of the symmetric ``S1^(1/2) S2 S1^(1/2)``.
- KID: the unbiased estimate of the squared MMD with the polynomial kernel
  ``k(a, b) = (a . b / d + 1)^3``, over ``subsets`` random subsets of ``subset_size`` items of
  each set; its mean and standard deviation over the subsets.

A feature network maps float images (B, C, H, W) in [0, 1] to (B, D) features:
``inception`` (the standard pool3 features of pytorch-fid's InceptionV3 weights, see
:mod:`ali.eval.inception`), ``classifier`` (the penultimate layer of the project's pixel
classifier, :mod:`ali.eval.pixel_classifier`) or the path of a TorchScript file.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from ..errors import AliError
from .features import batches

FeatureNet = Callable[[Tensor], Tensor]


def statistics(f: np.ndarray | Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(mean (D,), covariance (D, D)) of features (N, D), float64."""
    f = np.asarray(f, dtype=np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise AliError(f"FID needs at least 2 feature vectors; got shape {f.shape}")
    return f.mean(0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


def _sqrt_psd(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((s + s.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray) -> float:
    """The Frechet distance between N(mu1, s1) and N(mu2, s2)."""
    r1 = _sqrt_psd(s1)
    m = r1 @ s2 @ r1
    tr_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum()
    d = float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt)
    return max(d, 0.0)


def fid(f1: np.ndarray | Tensor, f2: np.ndarray | Tensor) -> float:
    """FID between two sets of features (N1, D) and (N2, D)."""
    return frechet_distance(*statistics(f1), *statistics(f2))


def _mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    d = x.shape[1]
    kxx, kyy, kxy = ((a @ b.T / d + 1) ** 3 for a, b in ((x, x), (y, y), (x, y)))
    m = len(x)
    off = lambda k: (k.sum() - np.trace(k)) / (m * (m - 1))  # noqa: E731
    return float(off(kxx) + off(kyy) - 2 * kxy.mean())


def kid(f1: np.ndarray | Tensor, f2: np.ndarray | Tensor, subsets: int = 100,
        subset_size: int = 1000, seed: int = 0) -> tuple[float, float]:
    """(mean, std) of the unbiased polynomial-kernel MMD^2 over ``subsets`` random subsets of
    ``min(subset_size, N1, N2)`` items of each set."""
    x, y = np.asarray(f1, dtype=np.float64), np.asarray(f2, dtype=np.float64)
    m = min(subset_size, len(x), len(y))
    if m < 2 or subsets < 1:
        raise AliError(f"KID needs subsets of at least 2 items and --subsets >= 1; got {m} "
                       f"and {subsets}")
    rng = np.random.default_rng(seed)
    vals = [_mmd2_unbiased(x[rng.choice(len(x), m, replace=False)],
                           y[rng.choice(len(y), m, replace=False)]) for _ in range(subsets)]
    return float(np.mean(vals)), float(np.std(vals))


@torch.no_grad()
def embed(net: FeatureNet, data: Any, batch_size: int = 200,
          device: str | torch.device = "cpu") -> Tensor:
    """``net``'s features (N, D) of images ``data`` (float tensor in [0, 1], uint8 tensor or
    ImageSource), float64 on the CPU."""
    out = []
    for x in batches(data, size=batch_size):
        f = net(x.to(device))
        # a custom network may return anything: (B, D...) features only, finite
        if not isinstance(f, Tensor) or f.dim() < 2 or len(f) != len(x):
            got = tuple(f.shape) if isinstance(f, Tensor) else type(f).__name__
            raise AliError(f"the feature network returned {got} for {len(x)} images; it must "
                           "return (B, D) features")
        out.append(f.flatten(1).double().cpu())
    feats = torch.cat(out)
    if not torch.isfinite(feats).all():
        raise AliError(f"the feature network returned {int((~torch.isfinite(feats)).sum())} "
                       "NaN or infinite features")
    return feats


def load_feature_net(path: str | Path, device: str | torch.device = "cpu") -> FeatureNet:
    """A saved network as a feature network (images in [0, 1] -> (B, D)): a TorchScript file
    (``torch.jit.save``) or a ``torch.export`` program (``torch.export.save``, ending ``.pt2``;
    export it with a dynamic batch dimension)."""
    path = Path(path)
    if not path.is_file():
        raise AliError(f"--feature-net {path}: no such file (give inception, classifier or the "
                       "path of a TorchScript or torch.export file)")
    try:
        if path.suffix == ".pt2":
            net = torch.export.load(str(path)).module().to(device)
        else:
            with warnings.catch_warnings():  # TorchScript is deprecated in recent PyTorch
                warnings.simplefilter("ignore", DeprecationWarning)
                net = torch.jit.load(str(path), map_location=device)
                net.eval()
    except Exception as e:
        raise AliError(f"--feature-net {path} is not a TorchScript or torch.export file "
                       f"({type(e).__name__})") from None
    return net
