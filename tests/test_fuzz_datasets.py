"""Property tests for every dataset reader: random and mutated bytes in each official file
format reach the user only as a one-line DataError (or ConfigError), never a traceback.

Each case writes a small valid dataset, then damages one of its files (flip, truncate, zero,
insert bytes, or replace it with random bytes) and loads the dataset and one batch of it.
"""

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ali.data import load_dataset, make_sampler
from ali.errors import AliError

from test_datasets import data_cfg, make_celeba, make_cifar, make_mnist, make_svhn

EXAMPLES = int(os.environ.get("ALI_FUZZ_EXAMPLES", "200")) // 2
FAST = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


def make_npz(root):
    root.mkdir(parents=True, exist_ok=True)
    p = root / "d.npz"
    np.savez(p, x_train=np.arange(6 * 25, dtype=np.uint8).reshape(6, 5, 5),
             y_train=np.arange(6) % 3, x_test=np.zeros((2, 5, 5), np.uint8))
    return p


# name -> (writer returning data.root, the file to damage relative to the root's folder)
FORMATS = {
    "mnist": (make_mnist, "t10k-images-idx3-ubyte.gz"),
    "mnist_labels": (make_mnist, "t10k-labels-idx1-ubyte.gz"),
    "cifar10": (make_cifar, "cifar-10-batches-py/test_batch"),
    "svhn": (lambda r: make_svhn(r, splits=("train", "test")), "test_32x32.mat"),
    "celeba_attr": (lambda r: make_celeba(r, n=2, partition=None), "list_attr_celeba.txt"),
    "celeba_image": (lambda r: make_celeba(r, n=2, partition=None), "img_align_celeba/000001.jpg"),
    "npz": (make_npz, "d.npz"),
}


@st.composite
def damage(draw, data: bytes) -> bytes:
    op = draw(st.sampled_from(["flip", "truncate", "zero", "insert", "random", "empty"]))
    if op == "empty" or not data:
        return b""
    if op == "random":
        return draw(st.binary(min_size=1, max_size=2048))
    i = draw(st.integers(0, len(data) - 1))
    if op == "flip":
        return data[:i] + bytes([data[i] ^ draw(st.integers(1, 255))]) + data[i + 1:]
    if op == "truncate":
        return data[:i]
    if op == "zero":
        n = draw(st.integers(1, 64))
        return data[:i] + bytes(min(n, len(data) - i)) + data[i + n:]
    return data[:i] + draw(st.binary(min_size=1, max_size=16)) + data[i:]


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_damaged_files_give_only_one_line_errors(fmt, tmp_path_factory):
    writer, rel = FORMATS[fmt]
    name = fmt.split("_")[0]
    base = tmp_path_factory.mktemp(fmt)
    root = writer(base / "data")
    folder = root.parent if root.is_file() else root
    original = (folder / rel).read_bytes()
    split = ["data.train_split=test"] if name == "mnist" else []
    if name == "celeba":
        split = ["data.train_split=all", "data.test_split="]

    @FAST
    @given(st.data())
    def prop(data):
        (folder / rel).write_bytes(data.draw(damage(original)))
        try:
            ds = load_dataset(data_cfg(name, root, *split))
            sampler = make_sampler(ds, 1, seed=0)
            try:
                sampler.next()
            finally:
                sampler.close()             # no prefetch threads left behind per example
        except AliError as e:
            assert "\n" not in str(e) and str(e)

    prop()
