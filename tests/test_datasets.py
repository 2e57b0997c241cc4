"""Image datasets: tiny synthetic files in each official format (never the network)."""

import gzip
import os
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from ali.cli import main
from ali.config import get_config
from ali.data import (ImageSampler, StreamSampler, TensorSampler, load_dataset, make_sampler)
from ali.data import download as dl
from ali.data.images import ImageSource, md5
from ali.data.readers import MNIST_MD5
from ali.errors import ConfigError, DataError


def data_cfg(name, root, *overrides):
    return get_config("toy", [f"data.name={name}", f"data.root={root}", "data.verify=false",
                              "data.workers=0", *overrides]).data


def one_line_error(exc_info, *needles):
    msg = str(exc_info.value)
    assert "\n" not in msg, msg
    for n in needles:
        assert str(n) in msg, msg
    return msg


# --------------------------------------------------------------------------- writers

def write_idx(path, a):
    a = np.asarray(a, dtype=np.uint8)
    head = bytes([0, 0, 0x08, a.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in a.shape)
    with gzip.open(path, "wb") as f:
        f.write(head + a.tobytes())


def make_mnist(root, n_train=12, n_test=10, train=True):
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    sets = {"t10k": n_test, **({"train": n_train} if train else {})}
    for prefix, n in sets.items():
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    return root


def make_cifar(root, per_batch=10):
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        x = np.zeros((per_batch, 3072), np.uint8)
        x[:, :1024], x[:, 1024:2048], x[:, 2048:] = 10, 20, 30     # R, G, B planes
        x[:, 0] = i * per_batch + np.arange(per_batch)               # the image's number
        with open(d / name, "wb") as f:
            pickle.dump({b"data": x, b"labels": list(np.arange(per_batch) % 10)}, f, protocol=2)
    return root


def make_svhn(root, n=6, splits=("train", "test", "extra")):
    import scipy.io

    root.mkdir(parents=True, exist_ok=True)
    for s in splits:
        x = np.zeros((32, 32, 3, n), np.uint8)
        x[0, 1, 2, :] = np.arange(n)           # row 0, column 1, blue channel
        y = (np.arange(n) % 10 + 1).reshape(n, 1)   # 1..10, 10 = digit 0
        scipy.io.savemat(root / f"{s}_32x32.mat", {"X": x, "y": y})
    return root


def make_celeba(root, n=4, partition=(0, 0, 1, 2), size=(178, 218)):
    from PIL import Image

    d = root / "img_align_celeba"
    d.mkdir(parents=True)
    names = [f"{i + 1:06d}.jpg" for i in range(n)]
    w, h = size
    rows = np.linspace(0, 255, h).astype(np.uint8)[:, None].repeat(w, 1)   # value grows by row
    for name in names:
        Image.fromarray(np.stack([rows] * 3, -1)).save(d / name, quality=100)
    attrs = [f"Attr{k}" for k in range(40)]
    lines = [str(n), " ".join(attrs)]
    for i, name in enumerate(names):
        lines.append(name + " " + " ".join("1" if (i + k) % 2 else "-1" for k in range(40)))
    (root / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    if partition is not None:
        (root / "list_eval_partition.txt").write_text(
            "".join(f"{f} {p}\n" for f, p in zip(names, partition)))
    return root


# --------------------------------------------------------------------------- MNIST

def test_mnist_shapes_labels_and_ranges(tmp_path):
    root = make_mnist(tmp_path / "m")
    d = load_dataset(data_cfg("mnist", root))
    assert d.train.shape == (12, 1, 28, 28) and d.train.dtype == torch.uint8
    assert d.test.shape == (10, 1, 28, 28) and d.data_shape == (1, 28, 28)
    assert d.num_classes == 10 and d.train_labels.tolist() == [i % 10 for i in range(12)]
    d = load_dataset(data_cfg("mnist", root, "data.train_split=test", "data.train_range=0:7",
                              "data.test_range=7:", "data.image_size=32", "data.channels=3"))
    assert d.train.shape == (7, 3, 32, 32) and d.test.shape == (3, 3, 32, 32)
    assert d.test_labels.tolist() == [7, 8, 9]
    d = load_dataset(data_cfg("mnist", root, "data.train_split=train+test",
                              "data.train_range=-5:", "data.test_split="))
    assert len(d.train) == 5 and d.test is None and d.train_labels.tolist() == [5, 6, 7, 8, 9]


def test_labels_kept_class_balanced(tmp_path):
    root = make_mnist(tmp_path / "m", n_train=16)     # train labels 0..9, 0..5
    d = load_dataset(data_cfg("mnist", root, "data.labels=10"))
    kept = d.train_labels[d.train_labels >= 0]
    assert sorted(kept.tolist()) == list(range(10)) and (d.train_labels == -1).sum() == 6
    assert (load_dataset(data_cfg("mnist", root, "data.labels=16")).train_labels >= 0).all()
    with pytest.raises(DataError) as e:
        load_dataset(data_cfg("mnist", root, "data.labels=12", "data.train_range=3:"))
    one_line_error(e, "class 0 has only 1")
    with pytest.raises(ConfigError) as e:
        load_dataset(data_cfg("mnist", root, "data.labels=15", "data.train_range=:5"))
    one_line_error(e, "more than the 5 training examples")


def test_mnist_test_files_only(tmp_path):
    root = make_mnist(tmp_path / "m", train=False)
    d = load_dataset(data_cfg("mnist", root, "data.train_split=test", "data.train_range=:8",
                              "data.test_range=8:"))
    assert len(d.train) == 8 and len(d.test) == 2
    with pytest.raises(DataError) as e:     # the default train split needs the train files
        load_dataset(data_cfg("mnist", root))
    one_line_error(e, "train-images-idx3-ubyte.gz", "missing")


@pytest.mark.parametrize("damage, needle", [
    (lambda b: b[: len(b) // 2], "truncated"),
    (lambda b: b"not a gzip file at all", "truncated or not a gzip file"),
])
def test_mnist_damaged_files(tmp_path, damage, needle):
    root = make_mnist(tmp_path / "m", train=False)
    p = root / "t10k-images-idx3-ubyte.gz"
    p.write_bytes(damage(p.read_bytes()))
    with pytest.raises(DataError) as e:
        load_dataset(data_cfg("mnist", root, "data.train_split=test"))
    one_line_error(e, p.name, needle)


def test_mnist_idx_errors_and_checksum(tmp_path):
    root = make_mnist(tmp_path / "m", train=False)
    p = root / "t10k-labels-idx1-ubyte.gz"
    with gzip.open(p, "wb") as f:                       # a header that promises more data
        f.write(bytes([0, 0, 8, 1]) + (20).to_bytes(4, "big") + bytes(10))
    with pytest.raises(DataError) as e:
        load_dataset(data_cfg("mnist", root, "data.train_split=test"))
    one_line_error(e, p.name, "truncated")
    with gzip.open(p, "wb") as f:
        f.write(b"\x12\x34\x56\x78")
    with pytest.raises(DataError) as e:
        load_dataset(data_cfg("mnist", root, "data.train_split=test"))
    one_line_error(e, p.name, "bad magic")
    with pytest.raises(DataError) as e:             # synthetic files are not the official ones
        load_dataset(data_cfg("mnist", root, "data.train_split=test", "data.verify=true"))
    one_line_error(e, "t10k-images-idx3-ubyte.gz", "md5", MNIST_MD5["t10k-images-idx3-ubyte.gz"])


def _real_mnist() -> Path | None:
    env = os.environ.get("ALI_MNIST_DIR")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "mnist")
    candidates.append(Path("/work/shared/data/mnist"))
    for c in candidates:
        if (c / "t10k-images-idx3-ubyte.gz").is_file():
            return c
    return None


@pytest.mark.skipif(_real_mnist() is None, reason="the real MNIST t10k files are not here")
def test_real_mnist_test_set():
    root = _real_mnist()
    for f in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        assert md5(root / f) == MNIST_MD5[f]
    d = load_dataset(data_cfg("mnist", root, "data.verify=true", "data.train_split=test",
                              "data.train_range=0:9000", "data.test_range=9000:"))
    assert d.train.shape == (9000, 1, 28, 28) and d.test.shape == (1000, 1, 28, 28)
    assert d.train.dtype == torch.uint8 and int(d.train.max()) == 255
    assert d.train_labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert torch.bincount(torch.cat([d.train_labels, d.test_labels])).sum() == 10_000


# --------------------------------------------------------------------------- CIFAR-10

def test_cifar10_splits_and_layout(tmp_path):
    root = make_cifar(tmp_path)
    d = load_dataset(data_cfg("cifar10", root))
    assert d.train.shape == (45, 3, 32, 32) and d.test.shape == (10, 3, 32, 32)
    assert d.train[:, 0, 0, 0].tolist() == list(range(45))       # the first 45 of 50
    assert d.train[0, :, 5, 5].tolist() == [10, 20, 30]           # channel planes R, G, B
    v = load_dataset(data_cfg("cifar10", root / "cifar-10-batches-py", "data.train_split=valid"))
    assert v.train[:, 0, 0, 0].tolist() == list(range(45, 50))    # the last 5 are valid
    assert d.label_names[0] == "airplane" and d.num_classes == 10


def test_cifar10_bad_files(tmp_path):
    root = make_cifar(tmp_path)
    p = root / "cifar-10-batches-py" / "data_batch_3"
    p.write_bytes(p.read_bytes()[:100])
    with pytest.raises(DataError) as e:
        load_dataset(data_cfg("cifar10", root))
    one_line_error(e, "data_batch_3", "truncated")
    with open(p, "wb") as f:
        pickle.dump({b"data": np.zeros((2, 10), np.uint8), b"labels": [0, 1]}, f)
    with pytest.raises(DataError) as e:
        load_dataset(data_cfg("cifar10", root))
    one_line_error(e, "data_batch_3", "(N, 3072)")
    with open(p, "wb") as f:                            # a pickle that would run code
        pickle.dump({b"data": os.getcwd}, f)
    with pytest.raises(DataError) as e:
        load_dataset(data_cfg("cifar10", root))
    one_line_error(e, "data_batch_3")
    p.unlink()
    with pytest.raises(DataError) as e:
        load_dataset(data_cfg("cifar10", root))
    one_line_error(e, "missing file", "data_batch_3")


@pytest.mark.parametrize("name, make, inner", [
    ("cifar10", make_cifar, ""), ("cifar10", make_cifar, "cifar-10-batches-py"),
    ("mnist", make_mnist, ""), ("svhn", make_svhn, "")])
def test_a_missing_file_hint_downloads_where_data_root_reads(tmp_path, name, make, inner):
    # The hint's --root is where `ali data download` puts the files (make writes the same
    # layout): with them there, the same data.root loads.
    if name == "svhn":
        pytest.importorskip("scipy")
    root = tmp_path / "data" / inner
    root.mkdir(parents=True)
    with pytest.raises(DataError) as e:
        load_dataset(data_cfg(name, root))
    one_line_error(e, "missing file", f"ali data download {name} --root")
    into = Path(re.search(r"--root (\S+)\)", str(e.value)).group(1))
    make(into)
    assert len(load_dataset(data_cfg(name, root)).train) > 0


# --------------------------------------------------------------------------- SVHN

def test_svhn_layout_labels_and_extra(tmp_path):
    pytest.importorskip("scipy")
    root = make_svhn(tmp_path / "s")
    d = load_dataset(data_cfg("svhn", root))
    assert d.train.shape == (6, 3, 32, 32) and d.train.dtype == torch.uint8
    assert d.train[:, 2, 0, 1].tolist() == list(range(6))
    assert d.train_labels.tolist() == [1, 2, 3, 4, 5, 6]
    d = load_dataset(data_cfg("svhn", tmp_path / "s", "data.train_split=train+extra"))
    assert len(d.train) == 12 and d.train_labels.tolist() == [1, 2, 3, 4, 5, 6] * 2
    d10 = load_dataset(data_cfg("svhn", make_svhn(tmp_path / "t", n=10, splits=("train",)),
                                "data.test_split="))
    assert d10.train_labels.tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 0]   # 10 -> 0


def test_svhn_bad_files(tmp_path):
    pytest.importorskip("scipy")
    root = make_svhn(tmp_path, splits=("train",))
    with pytest.raises(DataError) as e:
        load_dataset(data_cfg("svhn", root))
    one_line_error(e, "missing file", "test_32x32.mat")
    p = root / "train_32x32.mat"
    p.write_bytes(p.read_bytes()[:300])
    with pytest.raises(DataError) as e:
        load_dataset(data_cfg("svhn", root, "data.test_split="))
    one_line_error(e, "train_32x32.mat")


def test_svhn_compressed_files_read(tmp_path):
    """MATLAB's own files (as the official ones) hold zlib-compressed, unpadded elements."""
    scipy_io = pytest.importorskip("scipy.io")
    x = np.arange(32 * 32 * 3 * 7, dtype=np.int64).reshape(32, 32, 3, 7).astype(np.uint8)
    y = np.array([[10], [1], [2], [3], [4], [5], [6]])
    scipy_io.savemat(tmp_path / "train_32x32.mat", {"X": x, "y": y}, do_compression=True)
    d = load_dataset(data_cfg("svhn", tmp_path, "data.test_split="))
    assert d.train.shape == (7, 3, 32, 32)
    assert d.train_labels.tolist() == [0, 1, 2, 3, 4, 5, 6]
    assert torch.equal(d.train[3, 2], torch.from_numpy(x[:, :, 2, 3]))


@pytest.mark.parametrize("offset, value, what", [
    (144, 5, "not a real numeric array"),         # X's class made sparse
    (184, 0, "does not match the dimensions"),     # X's data given an unknown type
    (184, 0x10000, "does not match the dimensions"),
])
def test_svhn_files_that_crash_scipy_are_one_line_errors(tmp_path, offset, value, what):
    """scipy's loadmat kills the interpreter (SIGSEGV) on these damaged files; the reader
    checks the arrays' headers first."""
    pytest.importorskip("scipy")
    import struct
    root = make_svhn(tmp_path, splits=("train",))
    p = root / "train_32x32.mat"
    data = bytearray(p.read_bytes())
    assert struct.unpack_from("<2I", data, 128) == (14, 18488)    # X: miMATRIX at byte 128
    struct.pack_into("<I", data, offset, value)
    p.write_bytes(bytes(data))
    with pytest.raises(DataError) as e:
        load_dataset(data_cfg("svhn", root, "data.test_split="))
    one_line_error(e, "train_32x32.mat", what)


# --------------------------------------------------------------------------- CelebA

def test_celeba_crop_attributes_partition(tmp_path):
    root = make_celeba(tmp_path)
    d = load_dataset(data_cfg("celeba", root))
    assert isinstance(d.train, ImageSource) and d.streamed
    assert len(d.train) == 2 and len(d.test) == 1 and d.data_shape == (3, 64, 64)
    assert d.train_labels.shape == (2, 40) and set(d.train_labels.unique().tolist()) == {0, 1}
    assert d.train_labels[0, :3].tolist() == [0, 1, 0]           # -1 -> 0, 1 -> 1
    x, err = d.train[0]
    assert err == "" and x.shape == (3, 64, 64) and x.dtype == torch.uint8
    # rows 7..70 of the 64 x 78 resize: row values grow 255/77 a row from 0
    step = 255 / 77
    assert abs(int(x[0, 0, 32]) - 7 * step) < 6 and abs(int(x[0, 63, 32]) - 70 * step) < 6
    full = load_dataset(data_cfg("celeba", root, "data.stream=off", "data.train_split=all",
                                 "data.test_split=", "data.image_size=32", "data.channels=1"))
    assert full.train.shape == (4, 1, 32, 32) and full.train.dtype == torch.uint8


def test_celeba_errors(tmp_path):
    root = make_celeba(tmp_path, partition=None)
    with pytest.raises(ConfigError) as e:       # no partition file: only "all"
        load_dataset(data_cfg("celeba", root))
    one_line_error(e, "no split 'train'", "all")
    attr = root / "list_attr_celeba.txt"
    attr.write_text(attr.read_text().replace(" -1", " 0", 1))
    with pytest.raises(DataError) as e:
        load_dataset(data_cfg("celeba", root, "data.train_split=all", "data.test_split="))
    one_line_error(e, "list_attr_celeba.txt", "line 3")
    attr.write_text("\n".join(attr.read_text().splitlines()[:4]))
    with pytest.raises(DataError) as e:
        load_dataset(data_cfg("celeba", root, "data.train_split=all", "data.test_split="))
    one_line_error(e, "list_attr_celeba.txt", "truncated")


def test_celeba_corrupted_image_is_one_line_at_the_batch(tmp_path):
    root = make_celeba(tmp_path)
    (root / "img_align_celeba" / "000002.jpg").write_bytes(b"garbage")
    # Decoded on the fly; a cached dataset refuses the file when the cache is built
    # (test_cache.py).
    d = load_dataset(data_cfg("celeba", root, "data.train_split=all", "data.cache=off"))
    s = make_sampler(d, batch_size=4, workers=0)
    with pytest.raises(DataError) as e:
        s.next()
    one_line_error(e, "000002.jpg", "not a readable image")


# --------------------------------------------------------------------------- ImageNet 64

@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
def test_imagenet64_npz(tmp_path, save):
    x = np.zeros((5, 12288), np.uint8)
    x[:, 4096] = np.arange(5)                      # first pixel of the G plane
    for i in (1, 2):
        save(tmp_path / f"Imagenet64_train_part{i}.npz", data=x + 10 * i,
             labels=np.arange(1, 6) + i)
    save(tmp_path / "val_data.npz", data=x, labels=np.full(5, 1000))
    d = load_dataset(data_cfg("imagenet64", tmp_path, "data.train_range=3:8"))
    assert d.streamed and len(d.train) == 5 and len(d.test) == 5 and d.num_classes == 1000
    assert d.train_labels.tolist() == [4, 5, 2, 3, 4]            # 1-based -> 0-based
    assert d.test_labels.tolist() == [999] * 5
    x0, err = d.train[0]
    assert err == "" and x0.shape == (3, 64, 64) and x0[1, 0, 0] == 13
    small = load_dataset(data_cfg("imagenet64", tmp_path, "data.image_size=32",
                                  "data.stream=off"))
    assert small.train.shape == (10, 3, 32, 32) and small.train.dtype == torch.uint8


def test_imagenet64_bad_npz(tmp_path):
    np.savez(tmp_path / "Imagenet64_train_part1.npz", data=np.zeros((2, 100), np.uint8),
             labels=np.ones(2))
    with pytest.raises(DataError) as e:
        load_dataset(data_cfg("imagenet64", tmp_path))
    one_line_error(e, "Imagenet64_train_part1.npz", "3*S*S")
    (tmp_path / "Imagenet64_train_part1.npz").write_bytes(b"PK\x03\x04broken")
    with pytest.raises(DataError) as e:
        load_dataset(data_cfg("imagenet64", tmp_path))
    one_line_error(e, "Imagenet64_train_part1.npz")


# --------------------------------------------------------------------------- folder

def make_folder(root, classes=("cat", "dog"), per=3, size=(40, 30), mode="RGB"):
    from PIL import Image

    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per):
            Image.new(mode, size, color=(200, 100, 50) if mode == "RGB" else 128).save(
                root / c / f"{i}.png")
    return root


def test_folder_classes_resize_channels(tmp_path):
    root = make_folder(tmp_path / "f")
    d = load_dataset(data_cfg("folder", root, "data.image_size=16", "data.test_split=",
                              "data.split_order=stored"))
    assert d.train.shape == (6, 3, 16, 16) and d.train.dtype == torch.uint8
    assert d.train_labels.tolist() == [0, 0, 0, 1, 1, 1] and d.label_names == ["cat", "dog"]
    assert d.train[0, :, 8, 8].tolist() == [200, 100, 50]
    g = load_dataset(data_cfg("folder", root, "data.image_size=8", "data.channels=1",
                              "data.test_split=", "data.stream=on"))
    assert g.streamed and g.data_shape == (1, 8, 8)
    with pytest.raises(DataError) as e:      # not square and no size given
        load_dataset(data_cfg("folder", root, "data.test_split="))
    one_line_error(e, "not square", "data.image_size")
    with pytest.raises(ConfigError) as e:      # no test/ subfolder and no hold-out
        load_dataset(data_cfg("folder", root, "data.image_size=8", "data.holdout=0"))
    one_line_error(e, "no split 'test'", "--set data.holdout=0.05", "--set data.test_split=")


def test_imagenet64_class_folders(tmp_path):
    make_folder(tmp_path / "i" / "train", per=2, size=(64, 64))
    make_folder(tmp_path / "i" / "val", per=1, size=(80, 64))
    d = load_dataset(data_cfg("imagenet64", tmp_path / "i"))     # test = the val folder
    assert d.streamed and len(d.train) == 4 and len(d.test) == 2 and d.data_shape == (3, 64, 64)
    assert d.train_labels.tolist() == [0, 0, 1, 1] and d.num_classes == 2
    assert d.test[0][0].shape == (3, 64, 64)                    # resized and centre-cropped


def test_folder_split_subfolders_and_empty(tmp_path):
    make_folder(tmp_path / "f" / "train", size=(8, 8))
    make_folder(tmp_path / "f" / "test", per=1, size=(8, 8), mode="L")
    d = load_dataset(data_cfg("folder", tmp_path / "f"))
    assert d.train.shape == (6, 3, 8, 8) and d.test.shape == (2, 3, 8, 8)
    assert d.test_labels.tolist() == [0, 1]
    (tmp_path / "e").mkdir()
    with pytest.raises(DataError) as e:
        load_dataset(data_cfg("folder", tmp_path / "e"))
    one_line_error(e, "holds no images")


# --------------------------------------------------------------------------- npz

def test_npz_file(tmp_path):
    p = tmp_path / "d.npz"
    np.savez(p, x_train=np.full((6, 5, 5), 7, np.uint8), y_train=np.arange(6) % 3,
             x_test=np.zeros((2, 5, 5, 3), np.uint8))
    d = load_dataset(data_cfg("npz", p))
    assert d.train.shape == (6, 1, 5, 5) and d.test.shape == (2, 3, 5, 5)
    assert d.num_classes == 3 and d.test_labels is None
    np.savez(p, x_train=np.zeros((6, 5, 5), np.uint8), y_train=np.arange(5))
    with pytest.raises(DataError) as e:
        load_dataset(data_cfg("npz", p))
    one_line_error(e, "d.npz", "y_train")
    np.savez(p, x_train=np.zeros((6, 5, 5), np.uint8))
    with pytest.raises(ConfigError) as e:
        load_dataset(data_cfg("npz", p, "data.holdout=0"))
    one_line_error(e, "d.npz", "x_test", "data.holdout")
    np.savez(p, x_train=np.zeros((6, 5, 5), np.float32), x_test=np.zeros((1, 5, 5), np.uint8))
    with pytest.raises(DataError) as e:
        load_dataset(data_cfg("npz", p))
    one_line_error(e, "uint8")
    p.write_bytes(b"nonsense")
    with pytest.raises(DataError) as e:
        load_dataset(data_cfg("npz", p))
    one_line_error(e, "d.npz", "not an .npz file")
    # A zip whose member is not a .npy array: np.load hands back its bytes, not an array.
    import zipfile

    with zipfile.ZipFile(p, "w") as z:
        z.writestr("x_train.npy", b"not a numpy array")
    with pytest.raises(DataError) as e:
        load_dataset(data_cfg("npz", p))
    one_line_error(e, "d.npz", "'x_train'", "not an array")


# --------------------------------------------------------------------------- config

@pytest.mark.parametrize("override, needle", [
    ("data.train_range=1-5", "data.train_range must look like start:stop"),
    ("data.test_range=a:b", "data.test_range must look like start:stop"),
    ("data.train_split=", "data.train_split must be a split name"),
    ("data.channels=2", "data.channels must be 0, 1 or 3"),
    ("data.stream=maybe", "data.stream must be one of"),
    ("data.name=mnits", "data.name must be one of"),
])
def test_data_config_validation(override, needle):
    with pytest.raises(ConfigError) as e:
        get_config("toy", [override])
    one_line_error(e, needle)


def test_unknown_split_empty_range_and_missing_root(tmp_path):
    root = make_mnist(tmp_path / "m", train=False)
    with pytest.raises(ConfigError) as e:
        load_dataset(data_cfg("mnist", root, "data.train_split=valid"))
    one_line_error(e, "no split 'valid'", "train, test")
    with pytest.raises(ConfigError) as e:
        load_dataset(data_cfg("mnist", root, "data.train_split=test", "data.train_range=20:30"))
    one_line_error(e, "selects no images")
    with pytest.raises(ConfigError) as e:
        load_dataset(get_config("toy", ["data.name=mnist"]).data)
    one_line_error(e, "needs data.root")
    with pytest.raises(DataError) as e:
        load_dataset(data_cfg("mnist", tmp_path / "nowhere"))
    one_line_error(e, "does not exist")


def test_cli_bad_data_is_one_line(tmp_path, capsys):
    assert main(["train", "toy", "--set", "data.name=mnist", "--set",
                 f"data.root={tmp_path / 'nowhere'}", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not exist" in err and "Traceback" not in err


# --------------------------------------------------------------------------- samplers

def test_image_sampler_floats_and_exact_resume(tmp_path):
    d = load_dataset(data_cfg("mnist", make_mnist(tmp_path / "m"), "data.test_split="))
    s = make_sampler(d, batch_size=5, runs=1, seed=3)
    assert isinstance(s, ImageSampler) and isinstance(s, TensorSampler)
    x = s.next()
    assert x.shape == (5, 1, 28, 28) and x.dtype == torch.float32
    assert 0 <= float(x.min()) and float(x.max()) <= 1 and float(x.max()) > 0.9
    state = s.state_dict()
    want = [s.next() for _ in range(4)]
    s2 = make_sampler(d, batch_size=5, runs=1, seed=99)
    s2.load_state_dict(state)
    assert all(torch.equal(a, s2.next()) for a in want)
    assert make_sampler(d, 5, runs=2).next().shape == (5, 2, 1, 28, 28)
    host = make_sampler(d, 5, device_bytes=0)       # too big for the device: stays on the host
    assert host.next().shape == (5, 1, 28, 28)
    toy = load_dataset(get_config("toy", ["data.n_train=64"]).data)
    assert type(make_sampler(toy, 8)) is TensorSampler


def test_stream_sampler_exact_resume_and_workers(tmp_path):
    root = make_folder(tmp_path / "f", per=5, size=(8, 8))
    d = load_dataset(data_cfg("folder", root, "data.stream=on", "data.test_split="))
    s = make_sampler(d, batch_size=3, runs=2, seed=1, workers=0)
    assert isinstance(s, StreamSampler)
    first = s.next()
    assert first.shape == (3, 2, 3, 8, 8) and first.dtype == torch.float32
    state = s.state_dict()
    want = [s.next() for _ in range(5)]                     # crosses an epoch (10 // 3 = 3)
    for workers in (0, 1):
        r = make_sampler(d, batch_size=3, runs=2, seed=1, workers=workers)
        r.load_state_dict(state)
        assert all(torch.equal(a, r.next()) for a in want)
        r.close()
    with pytest.raises(ConfigError):
        make_sampler(d, batch_size=11)


# --------------------------------------------------------------------------- download

def test_download_with_a_fake_fetch(tmp_path, monkeypatch, capsys):
    src = make_mnist(tmp_path / "src")
    sums = {f: md5(src / f) for f in MNIST_MD5}
    monkeypatch.setattr(dl, "MNIST_MD5", sums)
    fetched = []

    def fake_fetch(url, dest):
        fetched.append(url)
        dest.write_bytes((src / url.rsplit("/", 1)[1]).read_bytes())

    monkeypatch.setattr(dl, "fetch", fake_fetch)
    out = tmp_path / "dst"
    assert main(["data", "download", "mnist", "--root", str(out)]) == 0
    assert len(fetched) == 4 and all(md5(out / f) == h for f, h in sums.items())
    assert "data.name=mnist" in capsys.readouterr().out
    assert main(["data", "download", "mnist", "--root", str(out)]) == 0
    assert len(fetched) == 4                                # already there: nothing fetched
    # A file with the wrong checksum from every mirror: one line, nothing left behind.
    monkeypatch.setattr(dl, "fetch", lambda url, dest: dest.write_bytes(b"wrong"))
    (out / "t10k-labels-idx1-ubyte.gz").unlink()
    assert main(["data", "download", "mnist", "--root", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "t10k-labels-idx1-ubyte.gz" in err and "md5" in err
    assert not any(p.name.endswith(".part") for p in out.iterdir())


def test_download_cifar10_extracts_the_archive(tmp_path, monkeypatch):
    import tarfile

    src = make_cifar(tmp_path / "src")
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    monkeypatch.setattr(dl, "CIFAR10_ARCHIVE_MD5", md5(archive))
    monkeypatch.setattr(dl, "CIFAR10_MD5", {p.name: md5(p)
                                           for p in (src / "cifar-10-batches-py").iterdir()})
    monkeypatch.setattr(dl, "fetch", lambda url, dest: dest.write_bytes(archive.read_bytes()))
    files = dl.download("cifar10", tmp_path / "dst")
    assert len(files) == 6 and all(p.is_file() for p in files)
    d = load_dataset(data_cfg("cifar10", tmp_path / "dst"))
    assert d.train.shape == (45, 3, 32, 32)


@pytest.mark.parametrize("name, needle", [("celeba", "mmlab"), ("imagenet64", "image-net.org")])
def test_download_manual_datasets_explain(name, needle, capsys, monkeypatch):
    monkeypatch.setattr(dl, "fetch", lambda *a: pytest.fail("no network"))
    assert main(["data", "download", name, "--root", "somewhere"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err


def test_more_workers_than_cores_decode_with_one_per_core(tmp_path, monkeypatch, capsys):
    import ali.data

    root = make_folder(tmp_path / "f", per=5, size=(8, 8))
    # built anywhere and recorded: a config from a larger machine must still load and run here
    d = load_dataset(data_cfg("folder", root, "data.stream=on", "data.cache=off",
                              "data.test_split=", "data.workers=10000"))
    monkeypatch.setattr(ali.data, "cores", lambda: 2)
    capsys.readouterr()
    s = make_sampler(d, batch_size=3)
    assert isinstance(s, StreamSampler) and s.workers == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "data.workers=10000 is more than the 2 CPU cores" in err
    assert make_sampler(d, batch_size=3, workers=2).workers == 2      # within: as asked
    assert capsys.readouterr().err == ""


def test_a_data_root_for_the_2d_data_says_it_is_ignored(tmp_path, capsys):
    # ali train toy --set data.root=FILE trained on the grid without a word, as if FILE had
    # been read (ali experiment figure8 --data-root is refused: it does not apply).
    np.savez(tmp_path / "x.npz", x_train=np.zeros((4, 2), dtype=np.float32))
    for name in ("grid", "ring"):
        capsys.readouterr()
        d = load_dataset(data_cfg(name, tmp_path / "x.npz", "data.n_train=8"))
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and (f"data.root={tmp_path / 'x.npz'} is ignored: "
                                         f"data.name={name} is 2-D data drawn") in err, err
        same = load_dataset(data_cfg(name, "", "data.n_train=8"))     # the same points
        assert torch.equal(d.train, same.train) and capsys.readouterr().err == ""


def test_stream_and_cache_on_say_where_the_data_ignores_them(tmp_path, capsys):
    root = make_folder(tmp_path / "f", per=5, size=(8, 8))
    np.savez(tmp_path / "x.npz", x_train=np.zeros((4, 8, 8), dtype=np.uint8))
    capsys.readouterr()
    for name, root_, key, why in (
            ("grid", "", "data.stream=on", "data.name=grid is read into memory whole"),
            ("npz", tmp_path / "x.npz", "data.stream=on", "data.name=npz is read into memory"),
            ("npz", tmp_path / "x.npz", "data.cache=on", "data.name=npz has no image files")):
        d = load_dataset(data_cfg(name, root_, key, "data.test_split=", "data.n_train=8"))
        assert len(d.train)                                  # a warning, not an error
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"{key} is ignored: {why}" in err, err
    # where they act, or are off, nothing is said
    for name, root_, key in (("npz", tmp_path / "x.npz", "data.stream=off"),
                             ("npz", tmp_path / "x.npz", "data.cache=off"),
                             ("folder", root, "data.stream=on")):
        load_dataset(data_cfg(name, root_, key, "data.test_split=", "data.cache=off"))
        assert capsys.readouterr().err == ""
