import os

# Tests use tiny networks, for which one thread is fastest; it also keeps the suite steady when
# the machine is busy (OpenMP threads spinning against each other). Subprocesses inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest
import torch

torch.set_num_threads(1)

from ali.config import get_config


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


def tiny_toy(*overrides: str):
    """The toy preset shrunk to run in well under a second."""
    return get_config("toy", ["model.width=16", "model.disc_width=8", "model.maxout_pieces=2",
                              "data.n_train=512", "data.n_test=256", "train.steps=4",
                              "train.batch_size=32", "train.log_every=2", "train.progress=off",
                              "train.device=cpu", *overrides])
