"""Image grids: samples, reconstructions (Figures 2b-5b) and interpolations (Figure 6)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .errors import AliError
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
    from .data import take

    x = dataset.test if dataset.test is not None else dataset.train
    return take(x, slice(offset, offset + n))


def held_out_labels(dataset, n: int, offset: int = 0) -> Tensor:
    """The labels of :func:`held_out`'s images."""
    y = dataset.test_labels if dataset.test is not None else dataset.train_labels
    if y is None:
        raise AliError(f"this model is conditional and dataset {dataset.name!r} has no labels "
                       "here to condition on")
    return y[offset:offset + n]


def sample_conditions(model: GenerativeModel, labels: Tensor | None, n: int,
                      generator: torch.Generator | None = None) -> Tensor | None:
    """The y to draw ``n`` samples of ``model`` with: None for an unconditional model; classes
    0..K-1 in turn for a class-conditional one (its default); for an attribute-conditional one,
    attribute vectors of real examples, rows of ``labels`` ((N, K) 0/1): drawn at random with
    ``generator``, or without one the first rows in turn (no randomness)."""
    if not model.conditional:
        return None
    device = next(model.parameters()).device
    if not model.attributes:
        return torch.arange(n, device=device) % model.label_dim
    if labels is None or labels.dim() != 2 or len(labels) == 0:
        raise AliError("an attribute-conditional model samples with real attribute vectors, "
                       "and the data here has none")
    if labels.shape[1] != model.label_dim:
        raise AliError(f"the model is conditional on {model.label_dim} attributes; the data "
                       f"has {labels.shape[1]}")
    rows = (torch.randint(len(labels), (n,), generator=generator) if generator is not None
            else torch.arange(n) % len(labels))
    return labels[rows].to(device)


def parse_labels(text: str, names: list[str] | None, k: int, what: str) -> list[int]:
    """Comma-separated indices or names (as the dataset names its classes or attributes)."""
    out = []
    for token in (t.strip() for t in text.split(",")):
        if token.isdigit() and int(token) < k:
            out.append(int(token))
        elif names and token in names:
            out.append(names.index(token))
        else:
            known = f" (known: {', '.join(names)})" if names else f" (0..{k - 1})"
            raise AliError(f"unknown {what} {token!r}{known}")
    return out


@torch.no_grad()
def condition_grid(model: GenerativeModel, condition: str = "all", vary: str | None = None,
                   rows: int = 10, names: list[str] | None = None) -> tuple[Tensor, int, str]:
    """Samples of a conditional model laid out by condition: (images, images per row,
    what the grid shows).

    Classes: one column per class of ``condition`` ("all" or comma-separated indices or
    ``names``) and one row per z (``rows`` of them). Attributes (Figure 7): ONE fixed z; row r
    turns on ``condition``'s r-th attribute, column c > 0 also turns on ``vary``'s c-th
    (column 0: the row's attribute alone).
    """
    if not model.conditional:
        raise AliError("a grid by condition needs a conditional model (model.conditional=true)")
    k = model.label_dim
    device = next(model.parameters()).device
    if not model.attributes:
        if vary:
            raise AliError("--vary applies to attribute-conditional runs; a class-conditional "
                           "grid has one column per class and one row per z")
        classes = list(range(k)) if condition == "all" else parse_labels(
            condition, names, k, "class")
        z = model.sample_prior(rows).repeat_interleave(len(classes), 0)
        y = torch.tensor(classes * rows, device=device)
        return model.decode(z, y), len(classes), f"{rows} z x {len(classes)} classes"
    on = list(range(k)) if condition == "all" else parse_labels(condition, names, k, "attribute")
    cols = parse_labels(vary, names, k, "attribute") if vary else []
    y = torch.zeros(len(on), len(cols) + 1, k, device=device)
    for i, r in enumerate(on):
        y[i, :, r] = 1
        for j, c in enumerate(cols):
            y[i, j + 1, c] = 1
    y = y.flatten(0, 1)
    z = model.sample_prior(1).expand(len(y), *model.latent_shape)
    return (model.decode(z, y), len(cols) + 1,
            f"one z, {len(on)} attribute rows x {len(cols) + 1} columns")


FIGURE7_ROWS = ({"Male": 1, "Attractive": 1, "Young": 1}, {"Male": 1, "Attractive": 1, "Young": 0},
                {"Male": 0, "Attractive": 1, "Young": 1}, {"Male": 0, "Attractive": 1, "Young": 0})
"""Figure 7's rows I-IV: male, attractive, young / older; female, attractive, young / older."""
FIGURE7_COLUMNS = (
    (), ("Black_Hair",), ("Brown_Hair",), ("Blond_Hair",), ("Black_Hair", "Wavy_Hair"),
    ("Blond_Hair", "Bangs"), ("Blond_Hair", "Receding_Hairline"), ("Blond_Hair", "Bald"),
    ("Black_Hair", "Smiling"), ("Black_Hair", "Smiling", "Mouth_Slightly_Open"),
    ("Black_Hair", "Smiling", "Mouth_Slightly_Open", "Eyeglasses"),
    ("Black_Hair", "Smiling", "Mouth_Slightly_Open", "Eyeglasses", "Wearing_Hat"))
"""Figure 7's columns: (a) the row's attributes alone, then (b)-(l) as the caption lists them."""


def figure7_conditions(names: list[str]) -> Tensor:
    """The attribute vectors of Figure 7, (rows x columns, K) 0/1, row-major; every attribute
    the figure does not name is off."""
    wanted = {a for r in FIGURE7_ROWS for a in r} | {a for c in FIGURE7_COLUMNS for a in c}
    missing = sorted(wanted - set(names))
    if missing:
        raise AliError(f"Figure 7 needs CelebA's attributes; the data lacks {', '.join(missing)}")
    y = torch.zeros(len(FIGURE7_ROWS), len(FIGURE7_COLUMNS), len(names))
    for i, row in enumerate(FIGURE7_ROWS):
        for j, col in enumerate(FIGURE7_COLUMNS):
            for a, v in {**row, **dict.fromkeys(col, 1)}.items():
                y[i, j, names.index(a)] = v
    return y.flatten(0, 1)


@torch.no_grad()
def figure7_grid(model: GenerativeModel, names: list[str] | None) -> Tensor:
    """Figure 7: ONE fixed z decoded under each of :func:`figure7_conditions` (4 rows of 12)."""
    if not (model.conditional and model.attributes):
        raise AliError("Figure 7 needs an attribute-conditional model (celeba_conditional)")
    if not names or len(names) != model.label_dim:
        raise AliError("Figure 7 needs the data's attribute names (CelebA's 40)")
    y = figure7_conditions(names).to(next(model.parameters()).device)
    z = model.sample_prior(1).expand(len(y), *model.latent_shape)
    return model.decode(z, y)


def grid_scale(images: Tensor) -> int:
    """Enlarge small images so a grid is comfortable to look at."""
    return max(1, 64 // images.shape[-1])


@torch.no_grad()
def write_run_images(model: GenerativeModel, dataset, run_dir: Path, step: int,
                     n: int = 100, nrow: int = 10) -> list[Path]:
    """samples.png and reconstructions.png (for a model with an encoder) in ``run_dir``, and
    step-stamped copies in ``run_dir/images``, with the model in evaluation mode."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    x = held_out(dataset, n // 2).to(device)
    y = y_s = None
    if model.conditional:
        y = held_out_labels(dataset, n // 2).to(device)
        # attributes: those of held-out images; classes: the model's default (one per column)
        y_s = (sample_conditions(model, held_out_labels(dataset, n), n) if model.attributes
               else None)
    grids = {"samples": model.sample(n, y_s)}
    if model.encoder is not None:
        grids["reconstructions"] = reconstruction_grid(model, x, y)
    model.train(was_training)
    out = []
    for name, imgs in grids.items():
        out.append(save_grid(imgs, run_dir / f"{name}.png", nrow, grid_scale(imgs)))
        save_grid(imgs, run_dir / "images" / f"{name}-{step:08d}.png", nrow, grid_scale(imgs))
    return out
