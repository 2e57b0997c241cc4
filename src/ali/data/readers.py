"""Readers of the official files of each image dataset.

Each reader takes a :class:`~ali.config.DataConfig` and returns a :class:`Spec`: the dataset's
splits, each a function that reads it (so only the splits a run uses are read: MNIST works with
only the t10k files when only the test split is used), plus what is known about the data.
A split is ``(images, labels)``: images a uint8 (N, C, H, W) tensor or a streamed
:class:`~ali.data.images.ImageSource`, labels an int64 tensor (N,) or (N, K), or None.
"""

from __future__ import annotations

import functools
import gzip
import io
import math
import pickle
import re
import struct
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from ..config import DataConfig
from ..errors import ConfigError, DataError
from .images import (IMAGE_EXTENSIONS, ArrayImages, FileImages, ImageSource, hwc, image_info,
                     need, one_line, verify)
from .inputs import check_features, read_csv_table, read_npz

Part = tuple[Any, Tensor | None]


@dataclass
class Spec:
    splits: dict[str, Callable[[], Part]]
    num_classes: int | None = None
    stream: bool = False
    """Whether ``data.stream=auto`` streams this dataset."""
    label_names: list[str] | None = None
    aliases: dict[str, str] = field(default_factory=dict)
    hint: str = ""
    """Where split ``{name}`` would come from, for the message naming a missing one."""


def _root(cfg: DataConfig) -> Path:
    if not cfg.root:
        raise ConfigError(f"data.name={cfg.name} needs data.root (the folder of its files; "
                          f"README, \"Datasets\")")
    root = Path(cfg.root).expanduser()
    if not root.exists():
        raise DataError(f"data.root={cfg.root} does not exist")
    return root


def _cached(fn: Callable[[], Part]) -> Callable[[], Part]:
    return functools.lru_cache(maxsize=None)(fn)


# --------------------------------------------------------------------------- MNIST

MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path, md5: str | None = None, check: bool = True) -> np.ndarray:
    """An IDX file (gzip-compressed if its name ends in .gz) as an array."""
    verify(path, md5, check)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                raw = f.read()
        else:
            raw = path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise DataError(f"{path} is truncated or not a gzip file ({one_line(e)})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise DataError(f"{path} is not an IDX file (bad magic number)")
    ndim = raw[3]
    head = 4 + 4 * ndim
    if len(raw) < head:
        raise DataError(f"{path} is truncated (header cut short)")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", ndim, 4))
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    size = int(np.prod(dims)) * dtype.itemsize
    if len(raw) != head + size:
        what = "truncated" if len(raw) < head + size else "longer than its header says"
        raise DataError(f"{path} is {what}: {len(raw) - head} data bytes for shape {dims}, "
                        f"expected {size}")
    return np.frombuffer(raw, dtype, offset=head).reshape(dims)


def _find(root: Path, name: str) -> Path:
    """``root/name``, or its uncompressed version, or a DataError naming it."""
    for p in (root / name, root / name.removesuffix(".gz")):
        if p.is_file():
            return p
    raise DataError(f"missing file {root / name} (download it with: ali data download mnist "
                    f"--root {root})")


def mnist(cfg: DataConfig) -> Spec:
    root = _root(cfg)

    def split(name: str) -> Part:
        fi, fl = MNIST_FILES[name]
        pi, pl = _find(root, fi), _find(root, fl)
        x = read_idx(pi, MNIST_MD5[fi] if pi.name == fi else None, cfg.verify)
        y = read_idx(pl, MNIST_MD5[fl] if pl.name == fl else None, cfg.verify)
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y) or x.dtype != np.uint8:
            raise DataError(f"{pi} and {pl} do not hold N images and N labels (shapes {x.shape}"
                            f" and {y.shape})")
        if y.size and y.max() > 9:
            raise DataError(f"{pl} holds labels outside 0..9")
        return hwc(x.copy()), torch.from_numpy(y.astype(np.int64))

    return Spec({n: _cached(functools.partial(split, n)) for n in MNIST_FILES}, num_classes=10)


# --------------------------------------------------------------------------- CIFAR-10

CIFAR10_DIR = "cifar-10-batches-py"
CIFAR10_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck"]


class _SafeUnpickler(pickle.Unpickler):
    """Only what a pickled dict of numpy arrays needs: no arbitrary code from a data file."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name}")
        return super().find_class(module, name)


def read_cifar_batch(path: Path, check: bool) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python batch: uint8 (N, 3, 32, 32) images and int64 labels."""
    # The download extracts into ROOT/cifar-10-batches-py, which the reader finds from
    # data.root=ROOT and reads from a data.root that names that folder itself.
    into = path.parent.parent if path.parent.name == CIFAR10_DIR else path.parent
    need(path, f"download it with: ali data download cifar10 --root {into}")
    verify(path, CIFAR10_MD5.get(path.name), check)
    try:
        with open(path, "rb") as f:
            d = _SafeUnpickler(f, encoding="bytes").load()
    except Exception as e:
        raise DataError(f"{path} is truncated or not a CIFAR-10 batch ({one_line(e)})") from None
    if not isinstance(d, dict):
        raise DataError(f"{path} is not a CIFAR-10 batch (not a dict)")
    d = {k.decode() if isinstance(k, bytes) else k: v for k, v in d.items()}
    if "data" not in d or "labels" not in d:
        raise DataError(f"{path} is not a CIFAR-10 batch (no 'data' and 'labels')")
    x, y = np.asarray(d["data"]), np.asarray(d["labels"], dtype=np.int64)
    if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3072 or len(x) != len(y):
        raise DataError(f"{path}: 'data' must be uint8 (N, 3072) with N labels; got "
                        f"{x.dtype} {x.shape} and {y.shape[0]} labels")
    if y.size and (y.min() < 0 or y.max() > 9):
        raise DataError(f"{path} holds labels outside 0..9")
    return x.reshape(-1, 3, 32, 32), y


def cifar10(cfg: DataConfig) -> Spec:
    root = _root(cfg)
    if (root / CIFAR10_DIR).is_dir():
        root = root / CIFAR10_DIR

    @_cached
    def trainval() -> Part:
        xs, ys = zip(*(read_cifar_batch(root / f"data_batch_{i}", cfg.verify)
                       for i in range(1, 6)))
        return torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys))

    def train() -> Part:   # the authors: the first 45,000 (of 50,000) train, the rest valid
        x, y = trainval()
        n = len(x) - len(x) // 10
        return x[:n], y[:n]

    def valid() -> Part:
        x, y = trainval()
        n = len(x) - len(x) // 10
        return x[n:], y[n:]

    def test() -> Part:
        x, y = read_cifar_batch(root / "test_batch", cfg.verify)
        return torch.from_numpy(x), torch.from_numpy(y)

    return Spec({"train": train, "valid": valid, "trainval": trainval, "test": _cached(test)},
                num_classes=10, label_names=CIFAR10_CLASSES)


# --------------------------------------------------------------------------- SVHN

SVHN_MD5 = {   # not published by the SVHN site; the values every loader (torchvision) uses
    "train_32x32.mat": "e26dedcc434d2e4c54c9b2d4a06d8373",
    "test_32x32.mat": "eb5a983be6a315427106f1b164d9cef3",
    "extra_32x32.mat": "a93ce644f1a588dc4d68dda5feec44a7",
}


# MAT v5 element types (data type code -> bytes per value) and the numeric array classes.
_MI_SIZES = {1: 1, 2: 1, 3: 2, 4: 2, 5: 4, 6: 4, 7: 4, 9: 8, 12: 8, 13: 8}
_MI_MATRIX, _MI_COMPRESSED = 14, 15
_MX_NUMERIC = range(6, 16)     # double, single, int8 ... uint64


def _mat_tag(buf: bytes, at: int) -> tuple[int, int, int]:
    """(data type, byte count, offset of the data) of the MAT v5 element tag at ``at``."""
    if at + 8 > len(buf):
        raise ValueError("an element tag runs past the end")
    kind, n = struct.unpack_from("<2I", buf, at)
    if kind >> 16:                                    # the small-element format: 4-byte tag
        return kind & 0xFFFF, kind >> 16, at + 4
    return kind, n, at + 8


def _check_mat_array(buf: bytes, size: int | None) -> None:
    """The header of one miMATRIX element's content ``buf``: a real, non-sparse numeric array
    whose data holds exactly prod(dims) values (checked against ``size``, the element's byte
    count, when it is known)."""
    kind, n, at = _mat_tag(buf, 0)
    if kind != 6 or n != 8 or at + 8 > len(buf):
        raise ValueError("bad array flags")
    (flags,) = struct.unpack_from("<I", buf, at)
    if flags & 0xFF not in _MX_NUMERIC or flags & 0x800:
        raise ValueError("not a real numeric array")
    kind, n, at = _mat_tag(buf, at + 8)
    if kind != 5 or n < 8 or n % 4 or at + n > len(buf):
        raise ValueError("bad dimensions")
    dims = struct.unpack_from(f"<{n // 4}i", buf, at)
    if min(dims) < 0:
        raise ValueError("negative dimensions")
    kind, n, at = _mat_tag(buf, at + (n + 7) // 8 * 8)
    if kind != 1:
        raise ValueError("bad array name")
    at += (n + 3) // 4 * 4 if at % 8 else (n + 7) // 8 * 8
    kind, n, at = _mat_tag(buf, at)
    if kind not in _MI_SIZES or n != math.prod(dims) * _MI_SIZES[kind]:
        raise ValueError("the data does not match the dimensions")
    if size is not None and at + n > size:
        raise ValueError("the data runs past its element")


def check_mat5(path: Path) -> None:
    """Reject a MAT v5 file whose arrays are not what the SVHN files hold (real numeric arrays
    with as much data as their dimensions say) before scipy reads it: scipy's reader crashes the
    interpreter on some damaged files (a wrong array class or data type) instead of raising."""
    with open(path, "rb") as f:
        end = f.seek(0, 2)
        at = 128                                      # the text header
        while at + 8 <= end:
            f.seek(at)
            kind, n, data = _mat_tag(f.read(8), 0)
            data += at
            if kind not in (_MI_MATRIX, _MI_COMPRESSED) or data + n > end:
                raise ValueError(f"bad top-level element at byte {at}")
            f.seek(data)
            if kind == _MI_MATRIX:
                _check_mat_array(f.read(min(n, 4096)), n)
                at = data + (n + 7) // 8 * 8
            else:                                     # zlib-compressed: its first bytes suffice
                head = zlib.decompressobj().decompress(f.read(min(n, 65536)), 4096)
                inner_kind, _, inner = _mat_tag(head, 0)
                if inner_kind != _MI_MATRIX:
                    raise ValueError(f"bad compressed element at byte {at}")
                _check_mat_array(head[inner:], None)
                at = data + n                         # compressed elements are not padded


def read_svhn(path: Path, check: bool) -> Part:
    need(path, f"download it with: ali data download svhn --root {path.parent}")
    verify(path, SVHN_MD5.get(path.name), check)
    try:
        import scipy.io
    except ImportError:
        raise DataError("data.name=svhn needs scipy to read .mat files: "
                        "pip install 'ali[svhn]'") from None
    try:
        check_mat5(path)
        d = scipy.io.loadmat(str(path), variable_names=("X", "y"))
    except Exception as e:
        raise DataError(f"{path} is truncated or not a MATLAB file ({one_line(e)})") from None
    if "X" not in d or "y" not in d:
        raise DataError(f"{path} has no 'X' and 'y' variables")
    x, y = d["X"], np.asarray(d["y"]).reshape(-1).astype(np.int64)
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[2] != 3 or x.shape[3] != len(y):
        raise DataError(f"{path}: 'X' must be uint8 (H, W, 3, N) with N labels; got {x.dtype} "
                        f"{x.shape} and {len(y)} labels")
    if y.size and (y.min() < 1 or y.max() > 10):
        raise DataError(f"{path} holds labels outside 1..10")
    y[y == 10] = 0   # SVHN writes the digit 0 as label 10
    return torch.from_numpy(np.ascontiguousarray(x.transpose(3, 2, 0, 1))), torch.from_numpy(y)


def svhn(cfg: DataConfig) -> Spec:
    root = _root(cfg)
    return Spec({n: _cached(functools.partial(read_svhn, root / f"{n}_32x32.mat", cfg.verify))
                 for n in ("train", "test", "extra")}, num_classes=10)


# --------------------------------------------------------------------------- CelebA

CELEBA_IMAGES = "img_align_celeba"


def _first(root: Path, *names: str) -> Path | None:
    for n in names:
        if (root / n).exists():
            return root / n
    return None


def read_celeba_attrs(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    """list_attr_celeba.txt: file names, the 40 attribute names and a (N, 40) 0/1 array."""
    need(path)
    try:
        lines = path.read_text().splitlines()
        n = int(lines[0].strip())
    except (UnicodeDecodeError, ValueError, IndexError) as e:
        raise DataError(f"{path} is not a CelebA attribute list ({one_line(e)})") from None
    if len(lines) < 2:
        raise DataError(f"{path} is truncated (no attribute names)")
    names = lines[1].split()
    rows = [l.split() for l in lines[2:] if l.strip()]
    if len(rows) != n:
        raise DataError(f"{path} is truncated: {len(rows)} images listed, the header says {n}")
    files, values = [], []
    for i, r in enumerate(rows):
        if len(r) != len(names) + 1 or any(v not in ("1", "-1") for v in r[1:]):
            raise DataError(f"{path} line {i + 3} is malformed: expected a file name and "
                            f"{len(names)} values of -1 or 1")
        files.append(r[0])
        values.append([v == "1" for v in r[1:]])
    return files, names, np.array(values, dtype=np.int64).reshape(n, len(names))


def celeba(cfg: DataConfig) -> Spec:
    root = _root(cfg)
    attr = _first(root, "list_attr_celeba.txt", "Anno/list_attr_celeba.txt")
    if attr is None:
        raise DataError(f"missing file {root / 'list_attr_celeba.txt'}")
    folder = _first(root, CELEBA_IMAGES, f"Img/{CELEBA_IMAGES}")
    if folder is None or not folder.is_dir():
        raise DataError(f"missing folder {root / CELEBA_IMAGES} (the aligned CelebA images)")
    files, names, attrs = read_celeba_attrs(attr)
    size, channels = cfg.image_size or 64, cfg.channels or 3
    base = FileImages([folder / f for f in files], size, channels, crop="celeba")
    source = ImageSource(base, np.arange(len(files)), (channels, size, size))
    labels = torch.from_numpy(attrs)

    def part(idx: np.ndarray) -> Part:
        return source.select(idx), labels[torch.from_numpy(idx)]

    splits: dict[str, Callable[[], Part]] = {"all": lambda: (source, labels)}
    part_file = _first(root, "list_eval_partition.txt", "Eval/list_eval_partition.txt")
    if part_file is not None:
        where = {}
        for i, line in enumerate(part_file.read_text().splitlines()):
            r = line.split()
            if not r:
                continue
            if len(r) != 2 or r[1] not in ("0", "1", "2"):
                raise DataError(f"{part_file} line {i + 1} is malformed: expected a file name "
                                f"and 0, 1 or 2")
            where[r[0]] = int(r[1])
        missing = [f for f in files if f not in where]
        if missing:
            raise DataError(f"{part_file} does not list {missing[0]} (of {attr})")
        code = np.array([where[f] for f in files])
        for k, name in enumerate(("train", "valid", "test")):
            splits[name] = functools.partial(part, np.flatnonzero(code == k))
    return Spec(splits, stream=True, label_names=names)


# --------------------------------------------------------------------------- folders

def _images_in(d: Path) -> list[Path]:
    return sorted(p for p in d.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS
                  and p.is_file())


SPLIT_DIRS = {"train": "train", "valid": "valid", "val": "valid", "test": "test"}


def _scan_folder(root: Path) -> tuple[dict[str, tuple[list[Path], list[str | None]]], list[str]]:
    """Splits of a folder: {split: (files, class name of each or None)} and the class names.

    Subfolders named train/valid/val/test are splits; otherwise the whole folder is the split
    ``train`` (also called ``all``). Inside a split, subfolders are classes.
    """
    split_dirs = {SPLIT_DIRS[p.name]: p for p in sorted(root.iterdir())
                  if p.is_dir() and p.name in SPLIT_DIRS}
    if not split_dirs:
        split_dirs = {"train": root}
    out: dict[str, tuple[list[Path], list[str | None]]] = {}
    classes: set[str] = set()
    for split, d in split_dirs.items():
        subdirs = sorted(p for p in d.iterdir() if p.is_dir())
        files, names = [], []
        if subdirs:
            for s in subdirs:
                f = _images_in(s)
                files += f
                names += [s.name] * len(f)
                if f:
                    classes.add(s.name)
        loose = sorted(p for p in d.iterdir() if p.is_file()
                       and p.suffix.lower() in IMAGE_EXTENSIONS)
        if loose and subdirs and files:
            raise DataError(f"{d} holds both images and class subfolders; put every image in "
                            f"a class subfolder or none")
        files += loose
        names += [None] * len(loose)
        if not files:
            raise DataError(f"{d} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
        out[split] = (files, names)
    return out, sorted(classes)


def folder(cfg: DataConfig, stream_over: int = 20_000) -> Spec:
    root = _root(cfg)
    if not root.is_dir():
        raise DataError(f"data.root={cfg.root} is not a folder")
    scanned, classes = _scan_folder(root)
    first = (scanned.get("train") or next(iter(scanned.values())))[0][0]
    w, h, mode = image_info(first)
    channels = cfg.channels or (1 if mode in ("1", "L", "LA", "I", "I;16", "F") else 3)
    size = cfg.image_size
    if not size and w != h:
        raise DataError(f"{first} is {w}x{h}, not square; set data.image_size to resize and "
                        f"centre-crop the images")
    shape = (channels, size or h, size or w)
    index = {c: i for i, c in enumerate(classes)}
    splits: dict[str, Callable[[], Part]] = {}
    for split, (files, names) in scanned.items():
        base = FileImages(files, size, channels)
        labels = (torch.tensor([index[n] for n in names]) if classes and None not in names
                  else None)
        splits[split] = functools.partial(
            lambda b, n, y: (ImageSource(b, np.arange(n), shape), y), base, len(files), labels)
    if set(scanned) == {"train"}:
        splits["all"] = splits["train"]
    # A valid/ subfolder without a test/ one is the held-out split.
    aliases = {"test": "valid"} if "valid" in scanned and "test" not in scanned else {}
    total = sum(len(f) for f, _ in scanned.values())
    return Spec(splits, num_classes=len(classes) or None, stream=total > stream_over,
                label_names=classes or None, aliases=aliases)


# --------------------------------------------------------------------------- ImageNet 64x64

def _npz_array(path: Path, key: str, mmap: bool) -> np.ndarray:
    """``key`` of an .npz file, memory-mapped when the member is stored uncompressed."""
    try:
        with zipfile.ZipFile(path) as zf:
            info = zf.getinfo(f"{key}.npy")
            if mmap and info.compress_type == zipfile.ZIP_STORED:
                with open(path, "rb") as f:
                    f.seek(info.header_offset)
                    local = f.read(30)
                    name_len, extra_len = (int.from_bytes(local[26:28], "little"),
                                           int.from_bytes(local[28:30], "little"))
                    f.seek(info.header_offset + 30 + name_len + extra_len)
                    version = np.lib.format.read_magic(f)
                    read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                            else np.lib.format.read_array_header_2_0)
                    shape, fortran, dtype = read(f)
                    if fortran or dtype.hasobject:
                        raise ValueError("unsupported array layout")
                    return np.memmap(path, dtype=dtype, mode="r", offset=f.tell(), shape=shape)
            with zf.open(info) as m:
                return np.lib.format.read_array(io.BufferedReader(m), allow_pickle=False)
    except KeyError:
        raise DataError(f"{path} has no array {key!r}") from None
    except Exception as e:
        raise DataError(f"{path} is truncated or not an .npz file ({one_line(e)})") from None


class LazyMemmap:
    """An array that re-opens its memory map in each process (a DataLoader worker pickles
    this small description, not the data)."""

    def __init__(self, path: Path, key: str) -> None:
        self.path, self.key, self._a = path, key, None

    @property
    def array(self) -> np.ndarray:
        if self._a is None:
            self._a = _npz_array(self.path, self.key, mmap=True)
        return self._a

    def __len__(self) -> int:
        return len(self.array)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.array[i]

    def __getstate__(self) -> dict:
        return {"path": self.path, "key": self.key, "_a": None}


def _part_number(p: Path) -> int:
    m = re.search(r"(\d+)\.npz$", p.name)
    return int(m.group(1)) if m else 0


def imagenet64(cfg: DataConfig) -> Spec:
    root = _root(cfg)
    parts = sorted(root.glob("Imagenet64_train_part*.npz"), key=_part_number)
    val = root / "val_data.npz"
    if not parts and not val.exists():
        if any(p.is_dir() for p in root.iterdir()):
            spec = folder(cfg if cfg.image_size else _with(cfg, image_size=64), stream_over=0)
            if "valid" in spec.splits:
                spec.aliases["test"] = "valid"
            return spec
        raise DataError(f"{root} holds neither Imagenet64_train_part*.npz / val_data.npz nor "
                        f"class subfolders of images")
    size, channels = cfg.image_size or 64, cfg.channels or 3
    splits: dict[str, Callable[[], Part]] = {}
    for name, files in (("train", parts), ("valid", [val] if val.exists() else [])):
        if not files:
            continue
        arrays, labels = [], []
        for p in files:
            a = LazyMemmap(p, "data")
            if a.array.ndim != 2 or a.array.dtype != np.uint8 or a.array.shape[1] % 3:
                raise DataError(f"{p}: 'data' must be uint8 (N, 3*S*S); got {a.array.dtype} "
                                f"{a.array.shape}")
            y = _npz_array(p, "labels", mmap=False).astype(np.int64).reshape(-1)
            if len(y) != len(a.array):
                raise DataError(f"{p}: {len(a.array)} images but {len(y)} labels")
            if y.size and (y.min() < 1 or y.max() > 1000):
                raise DataError(f"{p} holds labels outside 1..1000")
            if not isinstance(a.array, np.memmap):   # compressed: keep it in memory
                a = a.array
            arrays.append(a)
            labels.append(y - 1)   # the release's labels are 1-based
        side = int(round((len(arrays[0][0]) // 3) ** 0.5))
        if 3 * side * side != len(arrays[0][0]):
            raise DataError(f"{files[0]}: rows of {len(arrays[0][0])} values are not 3xSxS images")
        base = ArrayImages(arrays, (3, side, side), size, channels)
        y = torch.from_numpy(np.concatenate(labels))
        source = ImageSource(base, np.arange(len(y)), (channels, size, size))
        splits[name] = functools.partial(lambda s, t: (s, t), source, y)
    return Spec(splits, num_classes=1000, stream=True, aliases={"test": "valid"})


def _with(cfg: DataConfig, **changes: Any) -> DataConfig:
    import dataclasses

    return dataclasses.replace(cfg, **changes)


# --------------------------------------------------------------------------- one .npz file

def npz(cfg: DataConfig) -> Spec:
    path = _root(cfg)
    need(path)
    arrays = read_npz(path)

    def split(name: str) -> Part:
        key = f"x_{name}"
        if key not in arrays:
            raise DataError(f"{path} has no array {key!r} (it has: {', '.join(arrays)})")
        x = arrays[key]
        if x.dtype != np.uint8 or x.ndim not in (3, 4) or (x.ndim == 4 and x.shape[3] not in
                                                            (1, 3, 4)):
            raise DataError(f"{path}: {key!r} must be uint8 (N, H, W) or (N, H, W, C); got "
                            f"{x.dtype} {x.shape}")
        y = arrays.get(f"y_{name}")
        if y is not None:
            # (N,) class indices, or (N, K) 0/1 attributes (as CelebA's)
            if (not np.issubdtype(y.dtype, np.integer) or y.ndim not in (1, 2)
                    or len(y) != len(x) or (y.ndim == 2 and not np.isin(y, (0, 1)).all())):
                raise DataError(f"{path}: 'y_{name}' must hold {len(x)} integer labels (N,) or "
                                f"0/1 attributes (N, K); got {y.dtype} {y.shape}")
            y = torch.from_numpy(y.astype(np.int64))
        x = hwc(x)
        return (x[:, :3] if x.shape[1] == 4 else x), y

    ys = [arrays[k] for k in ("y_train", "y_test") if k in arrays and arrays[k].ndim == 1]
    k = int(max(int(y.max()) for y in ys if y.size) + 1) if any(y.size for y in ys) else None
    names = [k.removeprefix("x_") for k in arrays if k.startswith("x_")]
    return Spec({n: _cached(functools.partial(split, n)) for n in names}, num_classes=k,
                hint=f"{path.name} has no array 'x_{{name}}'")


# --------------------------------------------------------------------------- feature vectors

TABLE_SPLITS = ("train", "valid", "test")
"""The files of a table folder (``NAME.csv``) and the arrays of a table npz (``x_NAME``,
``y_NAME``); a single CSV, or an npz of ``x`` (and ``y``), is the split ``all`` (also called
``train``): carve a held-out part with ``data.train_range`` / ``data.test_range``."""


def _table_arrays(cfg: DataConfig, path: Path) -> dict[str, tuple[np.ndarray, Any]]:
    """{split: (features (N, D) float64, labels: (N,) ints, N label names, or None)}."""

    if path.is_dir():
        files = {n: path / f"{n}.csv" for n in TABLE_SPLITS if (path / f"{n}.csv").is_file()}
        if not files:
            raise DataError(f"{path} holds none of {', '.join(f'{n}.csv' for n in TABLE_SPLITS)}")
        return {n: read_csv_table(f, cfg.label_column) for n, f in files.items()}
    if path.suffix.lower() == ".csv":
        return {"all": read_csv_table(path, cfg.label_column)}
    if path.suffix.lower() != ".npz":
        raise DataError(f"data.root={cfg.root}: a table is a .csv or .npz file, or a folder of "
                        f"train.csv and test.csv")
    if cfg.label_column:
        raise ConfigError("data.label_column is for CSV tables; an npz table's labels are its "
                          "y, y_train, y_test arrays")
    arrays = read_npz(path)
    names = {n: (f"x_{n}", f"y_{n}") for n in TABLE_SPLITS} if "x" not in arrays else {
        "all": ("x", "y")}
    out = {}
    for split, (kx, ky) in names.items():
        if kx not in arrays:
            continue
        x = arrays[kx]
        check_features(x, path, repr(kx))
        x = x.astype(np.float64)
        if not np.isfinite(x).all():
            raise DataError(f"{path}: {kx!r} has {int((~np.isfinite(x)).sum())} NaN or "
                            "infinite values")
        y = arrays.get(ky)
        if y is not None and (y.ndim != 1 or len(y) != len(x)
                              or not np.issubdtype(y.dtype, np.integer) or (y < 0).any()):
            raise DataError(f"{path}: {ky!r} must hold {len(x)} class indices >= 0; got "
                            f"{y.dtype} {list(y.shape)}")
        out[split] = (x, y)
    if not out:
        raise DataError(f"{path} has no array 'x' or 'x_train' (it has: {', '.join(arrays)})")
    return out


def _integer(text: str) -> int | None:
    """``text`` as an integer class ("3", "3.0"), or None for a class name."""
    try:
        v = float(text)
    except ValueError:
        return None
    return int(v) if v.is_integer() else None


def table(cfg: DataConfig) -> Spec:
    """Feature vectors (N, D) as float32, from a CSV file (``data.label_column`` names its
    labels), an npz file (``x``/``y``, or ``x_train``/``y_train`` and ``x_test``/``y_test``)
    or a folder of ``train.csv``, ``valid.csv``, ``test.csv``. Text labels are numbered in
    sorted order (``label_names``); every split must have the same width."""
    path = _root(cfg)
    arrays = _table_arrays(cfg, path)
    widths = {n: a[0].shape[1] for n, a in arrays.items()}
    if len(set(widths.values())) != 1:
        raise DataError(f"{path}: the splits have different widths "
                        f"({', '.join(f'{n}: {w}' for n, w in widths.items())})")
    labels = [a[1] for a in arrays.values() if a[1] is not None]
    names = None
    if labels and len(labels) != len(arrays):
        raise DataError(f"{path}: some splits have labels and some do not")
    if any(isinstance(y, list) for y in labels):
        texts = [v for y in labels for v in y]
        numbers = [_integer(v) for v in texts]
        if None not in numbers:                           # integer classes ("3", "3.0")
            if min(numbers, default=0) < 0:
                raise DataError(f"{path}: class labels must be >= 0")
            labels = [np.array([_integer(v) for v in y], dtype=np.int64) for y in labels]
        else:
            names = sorted(set(texts))
            index = {v: i for i, v in enumerate(names)}
            labels = [np.array([index[v] for v in y], dtype=np.int64) for y in labels]
    if names:
        k: int | None = len(names)
    else:
        k = (int(max(y.max() for y in labels if y.size)) + 1 if any(y.size for y in labels)
             else None)
    parts = {n: (torch.from_numpy(x.astype(np.float32)),
                 None if not labels else torch.from_numpy(labels[i].astype(np.int64)))
             for i, (n, (x, _)) in enumerate(arrays.items())}
    splits: dict[str, Callable[[], Part]] = {
        n: functools.partial(lambda p: p, p) for n, p in parts.items()}
    return Spec(splits, num_classes=k, label_names=names,
                aliases={"train": "all"} if "all" in parts else {})


READERS: dict[str, Callable[[DataConfig], Spec]] = {
    "mnist": mnist, "cifar10": cifar10, "svhn": svhn, "celeba": celeba,
    "imagenet64": imagenet64, "folder": folder, "npz": npz, "table": table,
}
