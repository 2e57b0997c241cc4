"""``ali data download NAME --root PATH``: the official files, checked against their md5.

Each file is fetched to ``NAME.part`` with a progress bar, checked, then renamed, so an
interrupted download never leaves a file that looks complete. Files already present with the
right checksum are not fetched again.
"""

from __future__ import annotations

import shutil
import tarfile
import urllib.request
from pathlib import Path

from ..errors import DataError
from .images import md5
from .readers import CIFAR10_DIR, CIFAR10_MD5, MNIST_MD5, SVHN_MD5

MNIST_MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/",
                 "http://yann.lecun.com/exdb/mnist/")
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"
SVHN_URL = "http://ufldl.stanford.edu/housenumbers/"

MANUAL = {
    "celeba": "CelebA has no direct public download: get img_align_celeba.zip, "
              "list_attr_celeba.txt and list_eval_partition.txt from "
              "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html (Google Drive), unzip the "
              "images into {root}/img_align_celeba and put the two .txt files in {root}",
    "imagenet64": "Downsampled ImageNet needs an image-net.org account: download "
                  "Imagenet64_train_part1..10.npz and val_data.npz from "
                  "https://image-net.org/download-images (\"Downsampled ImageNet 64x64\") "
                  "into {root}",
    "folder": "data.name=folder reads your own folder of images; there is nothing to download",
    "npz": "data.name=npz reads your own .npz file; there is nothing to download",
    "grid": "the 2-D datasets are generated; there is nothing to download",
    "ring": "the 2-D datasets are generated; there is nothing to download",
}
NAMES = ("mnist", "cifar10", "svhn")


def fetch(url: str, dest: Path) -> None:
    """Download ``url`` to ``dest`` with a progress bar (replaced in tests)."""
    from tqdm import tqdm

    with urllib.request.urlopen(url, timeout=60) as r:
        total = int(r.headers.get("Content-Length") or 0) or None
        with open(dest, "wb") as f, tqdm(total=total, unit="B", unit_scale=True,
                                         desc=dest.name.removesuffix(".part")) as bar:
            while block := r.read(1 << 20):
                f.write(block)
                bar.update(len(block))


def _get(urls: list[str], dest: Path, expected: str) -> bool:
    """Fetch ``dest`` from the first URL that works; False when it was already there."""
    if dest.is_file() and md5(dest) == expected:
        return False
    part = dest.with_name(dest.name + ".part")
    errors = []
    for url in urls:
        try:
            fetch(url, part)
        except Exception as e:  # network errors come in many types
            errors.append(f"{url}: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
            continue
        got = md5(part)
        if got != expected:
            part.unlink(missing_ok=True)
            errors.append(f"{url}: md5 {got}, expected {expected}")
            continue
        part.replace(dest)
        return True
    part.unlink(missing_ok=True)
    raise DataError(f"could not download {dest.name} ({'; '.join(errors)})")


def download(name: str, root: str | Path, svhn_extra: bool = True) -> list[Path]:
    """Download dataset ``name`` into ``root``; the paths of the dataset's files."""
    if name in MANUAL:
        raise DataError(MANUAL[name].format(root=root))
    if name not in NAMES:
        raise DataError(f"unknown dataset {name!r} (downloadable: {', '.join(NAMES)})")
    root = Path(root).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    if name == "mnist":
        for f, h in MNIST_MD5.items():
            _get([m + f for m in MNIST_MIRRORS], root / f, h)
        return [root / f for f in MNIST_MD5]
    if name == "svhn":
        files = [f for f in SVHN_MD5 if svhn_extra or not f.startswith("extra")]
        for f in files:
            _get([SVHN_URL + f], root / f, SVHN_MD5[f])
        return [root / f for f in files]
    # cifar10: the archive, extracted and checked file by file
    out = [root / CIFAR10_DIR / f for f in CIFAR10_MD5]
    if all(p.is_file() and md5(p) == CIFAR10_MD5[p.name] for p in out):
        return out
    archive = root / "cifar-10-python.tar.gz"
    _get([CIFAR10_URL], archive, CIFAR10_ARCHIVE_MD5)
    try:
        with tarfile.open(archive) as tar:
            members = [m for m in tar.getmembers()
                       if m.name.startswith(CIFAR10_DIR + "/") and m.isfile()]
            for m in members:
                target = root / CIFAR10_DIR / Path(m.name).name
                target.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(m) as src, open(target, "wb") as dst:   # by base name:
                    shutil.copyfileobj(src, dst)                           # no path tricks
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DataError(f"{archive} is not a readable archive ({e})") from None
    for p in out:
        if not p.is_file() or md5(p) != CIFAR10_MD5[p.name]:
            raise DataError(f"{p} is missing or corrupted after extracting {archive}")
    return out

