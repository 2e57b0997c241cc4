"""Shared machinery of the image datasets: file checks, resizing, streamed sources.

Images are uint8 tensors (N, C, H, W). A dataset small enough for memory is one such tensor; a
large one is an :class:`ImageSource`, a map-style ``torch.utils.data.Dataset`` that decodes one
image at a time (in DataLoader workers) and returns ``(uint8 (C, H, W) tensor, error)``. A
worker never raises: a file that cannot be read comes back as its one-line error message, which
the sampler raises as a :class:`DataError` in the training process.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")


# --------------------------------------------------------------------------- files

def md5(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def need(path: Path, hint: str = "") -> Path:
    """``path`` if it is a file, else a one-line DataError naming it."""
    if not path.is_file():
        raise DataError(f"missing file {path}" + (f" ({hint})" if hint else ""))
    return path


def verify(path: Path, expected: str | None, enabled: bool) -> None:
    """A DataError when the file's md5 is not the published one."""
    if not enabled or expected is None:
        return
    got = md5(path)
    if got != expected:
        raise DataError(f"{path} is corrupted or not the official file: md5 {got}, expected "
                        f"{expected} (download it again, or set data.verify=false)")


def one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


# --------------------------------------------------------------------------- tensors

def convert(x: Tensor, size: int = 0, channels: int = 0, chunk: int = 2048) -> Tensor:
    """uint8 (N, C, H, W) images with ``channels`` channels, resized (shorter side) and
    centre-cropped to ``size`` x ``size``; 0 keeps the images' own."""
    if channels and x.shape[1] != channels:
        if channels == 3:
            x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x[:, :3]
        else:   # ITU-R 601-2 luma, as PIL's convert("L")
            w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
            x = torch.cat([(x[i:i + chunk, :3].float() * w).sum(1, keepdim=True).round()
                           .clamp_(0, 255).to(torch.uint8) for i in range(0, len(x), chunk)])
    if size and tuple(x.shape[2:]) != (size, size):
        h, w = x.shape[2:]
        s = size / min(h, w)
        nh, nw = max(size, round(h * s)), max(size, round(w * s))
        top, left = (nh - size) // 2, (nw - size) // 2
        out = []
        for i in range(0, len(x), chunk):
            y = F.interpolate(x[i:i + chunk].float(), size=(nh, nw), mode="bilinear",
                              antialias=True, align_corners=False)
            out.append(y[:, :, top:top + size, left:left + size].round().clamp_(0, 255)
                       .to(torch.uint8))
        x = torch.cat(out)
    return x.contiguous()


def hwc(a: np.ndarray) -> Tensor:
    """uint8 (N, H, W) or (N, H, W, C) array as a uint8 (N, C, H, W) tensor."""
    a = np.asarray(a)
    if a.ndim == 3:
        a = a[:, :, :, None]
    return torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))


# --------------------------------------------------------------------------- PIL images

def _pil() -> Any:
    try:
        from PIL import Image
    except ImportError:
        raise DataError("reading image files needs Pillow: pip install Pillow") from None
    return Image


def pil_fit(img: Any, size: int) -> Any:
    """Resize the shorter side to ``size`` and keep the centre square."""
    Image = _pil()

    w, h = img.size
    if (w, h) == (size, size):
        return img
    s = size / min(w, h)
    nw, nh = max(size, round(w * s)), max(size, round(h * s))
    img = img.resize((nw, nh), Image.BICUBIC)
    left, top = (nw - size) // 2, (nh - size) // 2
    return img.crop((left, top, left + size, top + size))


def celeba_crop(img: Any, size: int = 64) -> Any:
    """The authors' CelebA crop: resize to 64 (w) x 78 (h), keep rows 7..70 (64 rows).

    Other sizes scale the same box: width ``size``, height round(size * 78 / 64), rows from
    round(size * 7 / 64).
    """
    Image = _pil()

    h = round(size * 78 / 64)
    top = round(size * 7 / 64)
    return img.resize((size, h), Image.BICUBIC).crop((0, top, size, top + size))


def pil_tensor(img: Any, channels: int) -> Tensor:
    img = img.convert("L" if channels == 1 else "RGB")
    a = np.asarray(img, dtype=np.uint8)
    if a.ndim == 2:
        a = a[:, :, None]
    return torch.from_numpy(a.transpose(2, 0, 1).copy())


def eight_bit(img: Any) -> Any:
    """A 16-bit greyscale image as 8-bit ("L"): Pillow's ``convert`` clips such pixels at 255
    (every non-black pixel would turn white) instead of scaling them; other images unchanged."""
    if img.mode not in ("I;16", "I;16L", "I;16B", "I"):
        return img
    Image = _pil()
    a = np.asarray(img, dtype=np.float64) / 257               # 65535 -> 255
    return Image.fromarray(np.clip(a.round(), 0, 255).astype(np.uint8), "L")


def read_image(path: Path, size: int, channels: int, crop: str = "fit") -> Tensor:
    """One image file as a uint8 (C, H, W) tensor; a DataError naming the file if unreadable."""
    Image = _pil()

    try:
        with Image.open(path) as img:
            img.load()
            img = eight_bit(img)
            if crop == "celeba":
                img = celeba_crop(img, size or 64)
            elif size:
                img = pil_fit(img, size)
            return pil_tensor(img, channels)
    except FileNotFoundError:
        raise DataError(f"missing file {path}") from None
    except Exception as e:  # PIL raises many types for a bad file
        raise DataError(f"{path} is not a readable image ({one_line(e)})") from None


def image_info(path: Path) -> tuple[int, int, str]:
    """(width, height, mode) of an image file, reading only its header."""
    Image = _pil()

    try:
        with Image.open(path) as img:
            return img.size[0], img.size[1], img.mode
    except Exception as e:
        raise DataError(f"{path} is not a readable image ({one_line(e)})") from None


# --------------------------------------------------------------------------- streamed sources

class ImageSource(torch.utils.data.Dataset):
    """Images decoded one at a time: ``index`` selects items of ``base``.

    ``base(i)`` returns item i as a uint8 (C, H, W) tensor. ``__getitem__`` returns
    ``(image, "")`` or ``(empty tensor, error message)`` and never raises (see module doc).
    """

    def __init__(self, base: Callable[[int], Tensor], index: np.ndarray,
                 shape: tuple[int, int, int]) -> None:
        self.base, self.index, self.shape = base, np.asarray(index, dtype=np.int64), shape

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> tuple[Tensor, str]:
        try:
            x = self.base(int(self.index[i]))
            if tuple(x.shape) != self.shape:
                j = int(self.index[i])
                what = self.base.paths[j] if hasattr(self.base, "paths") else f"item {j}"
                raise DataError(f"{what} has shape {tuple(x.shape)}, expected {self.shape} "
                                f"(set data.image_size to resize)")
            return x, ""
        except DataError as e:
            return torch.empty(0, dtype=torch.uint8), str(e)
        except Exception as e:
            return torch.empty(0, dtype=torch.uint8), one_line(e)

    def select(self, idx: np.ndarray | Tensor | slice) -> "ImageSource":
        idx = idx.numpy() if isinstance(idx, Tensor) else idx
        return ImageSource(self.base, self.index[idx], self.shape)

    def load_all(self) -> Tensor:
        """Every item decoded now, as one uint8 (N, C, H, W) tensor."""
        if hasattr(self.base, "gather"):            # a decode-once cache: one gather
            return torch.from_numpy(self.base.gather(self.index))
        out = torch.empty((len(self), *self.shape), dtype=torch.uint8)
        for i in range(len(self)):
            x, err = self[i]
            if err:
                raise DataError(err)
            out[i] = x
        return out


def collate(items: list[tuple[Tensor, str]]) -> Tensor | str:
    """Stack a batch; the first error message instead if any item failed."""
    for _, err in items:
        if err:
            return err
    return torch.stack([x for x, _ in items])


class FileImages:
    """Picklable ``base`` of an :class:`ImageSource`: image files read with PIL."""

    def __init__(self, paths: list[Path], size: int, channels: int, crop: str = "fit") -> None:
        self.paths, self.size, self.channels, self.crop = paths, size, channels, crop

    def __call__(self, i: int) -> Tensor:
        return read_image(self.paths[i], self.size, self.channels, self.crop)


class ArrayImages:
    """Picklable ``base`` of an :class:`ImageSource`: rows of (memory-mapped) uint8 arrays,
    each row an image stored as (C, H, W) flattened, converted to ``size``/``channels``."""

    def __init__(self, arrays: list[np.ndarray], shape: tuple[int, int, int], size: int,
                 channels: int) -> None:
        self.arrays, self.shape, self.size, self.channels = arrays, shape, size, channels
        self.offsets = np.cumsum([0] + [len(a) for a in arrays])

    def __call__(self, i: int) -> Tensor:
        k = int(np.searchsorted(self.offsets, i, side="right") - 1)
        row = np.asarray(self.arrays[k][i - self.offsets[k]], dtype=np.uint8)
        x = torch.from_numpy(row.reshape(self.shape).copy())[None]
        return convert(x, self.size, self.channels)[0]
