"""Small synthetic datasets written in the official file formats, for smoke runs.

``ali experiment NAME --scale smoke`` without ``--data-root`` writes one of these so that the
whole pipeline (reading the official files, training, evaluation, figures) can be checked in
minutes before downloading gigabytes. Each class is a fixed random blob pattern plus pixel
noise, so that encoder features and classifiers have something to find; nothing about the
real datasets' statistics is imitated.
"""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import DataError

CLASSES = 10
NOISE = 40.0
"""Std of the pixel noise added to each class pattern, in uint8 units."""


def _images(n: int, shape: tuple[int, int, int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, H, W, C) uint8 images and their labels 0..9 in turn."""
    rng = np.random.default_rng(seed)
    h, w, c = shape
    coarse = rng.random((CLASSES, (h + 3) // 4, (w + 3) // 4, c))    # one pattern per class
    patterns = coarse.repeat(4, 1).repeat(4, 2)[:, :h, :w] * 255.0
    labels = np.arange(n) % CLASSES
    noise = rng.normal(0.0, NOISE, (n, h, w, c))
    return np.clip(patterns[labels] + noise, 0, 255).astype(np.uint8), labels


def _write_idx(path: Path, a: np.ndarray) -> None:
    head = bytes([0, 0, 0x08, a.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in a.shape)
    with gzip.open(path, "wb") as f:
        f.write(head + a.astype(np.uint8).tobytes())


def write_mnist(root: Path, n_train: int = 600, n_test: int = 200, seed: int = 0) -> Path:
    """MNIST's four idx files (``train-*``, ``t10k-*``)."""
    for i, (prefix, n) in enumerate((("train", n_train), ("t10k", n_test))):
        x, y = _images(n, (28, 28, 1), seed + i)
        _write_idx(root / f"{prefix}-images-idx3-ubyte.gz", x[..., 0])
        _write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", y)
    return root


def write_svhn(root: Path, n_train: int = 600, n_test: int = 200, seed: int = 0) -> Path:
    """SVHN's ``train_32x32.mat``, ``test_32x32.mat`` and ``extra_32x32.mat`` (X: (32, 32, 3,
    N) uint8; y: 1..10, 10 standing for the digit 0)."""
    try:
        import scipy.io
    except ImportError:
        raise DataError("writing SVHN files needs scipy: pip install 'ali[svhn]'") from None
    for i, (split, n) in enumerate((("train", n_train), ("test", n_test), ("extra", n_train))):
        x, y = _images(n, (32, 32, 3), seed + i)
        scipy.io.savemat(root / f"{split}_32x32.mat",
                         {"X": x.transpose(1, 2, 3, 0), "y": np.where(y == 0, 10, y)[:, None]})
    return root


def write_cifar10(root: Path, n_train: int = 600, n_test: int = 200, seed: int = 0) -> Path:
    """CIFAR-10's python batches: ``cifar-10-batches-py/data_batch_1..5`` and ``test_batch``
    (pickled dicts of (N, 3072) uint8 ``data``, planes R, G, B, and ``labels``)."""
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True, exist_ok=True)
    per = max(1, n_train // 5)
    names = [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]
    for i, name in enumerate(names):
        x, y = _images(n_test if name == "test_batch" else per, (32, 32, 3), seed + i)
        data = x.transpose(0, 3, 1, 2).reshape(len(x), -1)
        with open(d / name, "wb") as f:
            pickle.dump({b"data": data, b"labels": [int(v) for v in y]}, f, protocol=2)
    return root


CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose "
    "Black_Hair Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses "
    "Goatee Gray_Hair Heavy_Makeup High_Cheekbones Male Mouth_Slightly_Open Mustache "
    "Narrow_Eyes No_Beard Oval_Face Pale_Skin Pointy_Nose Receding_Hairline Rosy_Cheeks "
    "Sideburns Smiling Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat Wearing_Lipstick "
    "Wearing_Necklace Wearing_Necktie Young").split()
"""CelebA's 40 attribute names, in the order of its ``list_attr_celeba.txt``."""


def write_celeba(root: Path, n_train: int = 600, n_test: int = 200, seed: int = 0) -> Path:
    """Aligned CelebA: ``img_align_celeba/NNNNNN.jpg`` (178 x 218 JPEGs), ``list_attr_celeba.txt``
    (the 40 attributes as -1 / 1) and ``list_eval_partition.txt`` (0 train, 1 valid, 2 test:
    ``n_train``, then ``n_test`` each). Each attribute that is on adds its own coarse pattern."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    n = n_train + 2 * n_test
    k = len(CELEBA_ATTRIBUTES)
    attrs = rng.random((n, k)) < 0.3
    patterns = rng.random((k, 14, 12, 3))
    folder = root / "img_align_celeba"
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"{i + 1:06d}.jpg" for i in range(n)]
    for i, name in enumerate(names):
        on = attrs[i]
        small = patterns[on].mean(0) if on.any() else np.full((14, 12, 3), 0.5)
        img = Image.fromarray((small * 255).astype(np.uint8)).resize((178, 218), Image.BILINEAR)
        a = np.asarray(img, dtype=np.float64) + rng.normal(0.0, NOISE / 4, (218, 178, 3))
        Image.fromarray(a.clip(0, 255).astype(np.uint8)).save(folder / name, quality=90)
    rows = [f"{name} " + " ".join("1" if v else "-1" for v in a) for name, a in zip(names, attrs)]
    (root / "list_attr_celeba.txt").write_text(
        f"{n}\n{' '.join(CELEBA_ATTRIBUTES)}\n" + "\n".join(rows) + "\n")
    part = [0] * n_train + [1] * n_test + [2] * n_test
    (root / "list_eval_partition.txt").write_text(
        "".join(f"{name} {p}\n" for name, p in zip(names, part)))
    return root


def write_imagenet64(root: Path, n_train: int = 600, n_test: int = 200, seed: int = 0) -> Path:
    """Downsampled ImageNet 64 x 64: ``Imagenet64_train_part1.npz`` and ``val_data.npz``
    (``data``: (N, 3 * 64 * 64) uint8, planes R, G, B; ``labels``: 1-based, here 1..10)."""
    for i, (name, n) in enumerate((("Imagenet64_train_part1.npz", n_train),
                                   ("val_data.npz", n_test))):
        x, y = _images(n, (64, 64, 3), seed + i)
        np.savez(root / name, data=x.transpose(0, 3, 1, 2).reshape(n, -1), labels=y + 1)
    return root


WRITERS: dict[str, Callable[..., Path]] = {
    "mnist": write_mnist, "svhn": write_svhn, "cifar10": write_cifar10, "celeba": write_celeba,
    "imagenet64": write_imagenet64}
"""The datasets this module can write, by ``data.name``."""


def write(name: str, root: Path | str, n_train: int = 600, n_test: int = 200,
          seed: int = 0) -> Path:
    """Write synthetic dataset ``name`` into ``root`` (created) in its official format: what
    ``data.root`` then points at. A one-line error for a dataset it cannot write."""
    if name not in WRITERS:
        raise DataError(f"no synthetic {name} data (available: {', '.join(WRITERS)})")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    return WRITERS[name](root, n_train, n_test, seed)
