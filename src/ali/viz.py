"""Image grids: samples, reconstructions (Figures 2b-5b) and interpolations (Figure 6)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .model import GenerativeModel


def grid(images: Tensor, nrow: int, pad: int = 2, pad_value: float = 1.0) -> np.ndarray:
    """Tile images (N, C, H, W) in [0, 1] into one uint8 array (H', W', C) with ``nrow`` per row."""
    n, c, h, w = images.shape
    rows = math.ceil(n / nrow)
    out = np.full((rows * (h + pad) + pad, nrow * (w + pad) + pad, c), pad_value, np.float32)
    imgs = images.detach().float().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()
    for i in range(n):
        r, k = divmod(i, nrow)
        y, x = pad + r * (h + pad), pad + k * (w + pad)
        out[y:y + h, x:x + w] = imgs[i]
    return (out * 255 + 0.5).astype(np.uint8)


def save_grid(images: Tensor, path: Path | str, nrow: int, scale: int = 1) -> Path:
    """Write :func:`grid` as a PNG (grey for one channel), optionally enlarged ``scale`` times."""
    from PIL import Image

    arr = grid(images, nrow)
    img = Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


@torch.no_grad()
def sample_grid(model: GenerativeModel, n: int = 100) -> Tensor:
    """n samples x_tilde = G(z), z ~ p(z): (n, C, H, W)."""
    return model.sample(n)


@torch.no_grad()
def reconstruction_grid(model: GenerativeModel, x: Tensor, y: Tensor | None = None) -> Tensor:
    """Originals and their reconstructions G(z_hat), z_hat ~ q(z|x), interleaved: tiled with
    an even number of images per row, odd columns are originals and even columns their
    reconstructions (as the paper's figures). ``y``: the originals' conditions (conditional
    models)."""
    rec = model.reconstruct(x, y)
    return torch.stack([x, rec], dim=1).flatten(0, 1)      # (2N, C, H, W)


@torch.no_grad()
def interpolation_grid(model: GenerativeModel, x1: Tensor, x2: Tensor, steps: int = 10,
                       y1: Tensor | None = None, y2: Tensor | None = None) -> Tensor:
    """For each pair (x1[i], x2[i]): x1, decodings of z interpolated from z_hat(x1) to
    z_hat(x2), then x2 (Figure 6). Returns rows of ``steps + 2`` images: (N * (steps+2), C, H, W).
    ``y1``, ``y2``: the pairs' conditions (conditional models)."""
    path = model.interpolate(x1, x2, steps, y1, y2)         # (steps, N, C, H, W)
    rows = torch.cat([x1.unsqueeze(1), path.transpose(0, 1), x2.unsqueeze(1)], dim=1)
    return rows.flatten(0, 1)


def held_out(dataset, n: int, offset: int = 0) -> Tensor:
    """``n`` held-out images as floats in [0, 1] (the training set where there is no test set)."""
    from .data.images import ImageSource

    x = dataset.test if dataset.test is not None else dataset.train
    if isinstance(x, ImageSource):
        x = x.select(slice(offset, offset + n)).load_all()
    else:
        x = x[offset:offset + n]
    return x.float() / 255 if x.dtype == torch.uint8 else x.float()


def held_out_labels(dataset, n: int, offset: int = 0) -> Tensor:
    """The labels of :func:`held_out`'s images."""
    y = dataset.test_labels if dataset.test is not None else dataset.train_labels
    if y is None:
        raise ValueError(f"dataset {dataset.name!r} has no labels")
    return y[offset:offset + n]


def grid_scale(images: Tensor) -> int:
    """Enlarge small images so a grid is comfortable to look at."""
    return max(1, 64 // images.shape[-1])


@torch.no_grad()
def write_run_images(model: GenerativeModel, dataset, run_dir: Path, step: int,
                     n: int = 100, nrow: int = 10) -> list[Path]:
    """samples.png and reconstructions.png in ``run_dir`` (and step-stamped copies in
    ``run_dir/images``), with the model in evaluation mode."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    x = held_out(dataset, n // 2).to(device)
    y = y_s = None
    if model.conditional:
        y = held_out_labels(dataset, n // 2).to(device)
        # attributes: those of held-out images; classes: the model's default (one per column)
        y_s = held_out_labels(dataset, n).to(device) if model.attributes else None
    s = model.sample(n, y_s)
    r = reconstruction_grid(model, x, y)
    model.train(was_training)
    out = []
    for name, imgs in (("samples", s), ("reconstructions", r)):
        out.append(save_grid(imgs, run_dir / f"{name}.png", nrow, grid_scale(imgs)))
        save_grid(imgs, run_dir / "images" / f"{name}-{step:08d}.png", nrow, grid_scale(imgs))
    return out
