"""Datasets and the on-device batch sampler.

A dataset that fits in memory lives on the training device as one tensor; batches are drawn by
:class:`TensorSampler` with index arithmetic on that device, so a training step does no
per-sample Python work and no host-device copy.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..config import DataConfig
from ..errors import ConfigError
from . import toy


@dataclass
class Dataset:
    """Training and held-out tensors, with labels where the data has them."""

    name: str
    train: Tensor
    test: Tensor
    train_labels: Tensor | None = None
    test_labels: Tensor | None = None
    centres: Tensor | None = None
    """Mixture means of a 2-D dataset."""
    std: float | None = None
    """Component std of a 2-D dataset."""

    def to(self, device: torch.device | str) -> "Dataset":
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return Dataset(self.name, move(self.train), move(self.test), move(self.train_labels),
                       move(self.test_labels), move(self.centres), self.std)


def load_dataset(cfg: DataConfig) -> Dataset:
    """The dataset named by ``cfg.name``, on the CPU."""
    if cfg.name in toy.NAMES:
        std = cfg.std or toy.DEFAULT_STD[cfg.name]
        g = torch.Generator().manual_seed(cfg.seed)
        x, y = toy.sample(cfg.name, cfg.n_train, std, g)
        xt, yt = toy.sample(cfg.name, cfg.n_test, std, g)
        return Dataset(cfg.name, x, xt, y, yt, toy.centres(cfg.name), std)
    raise ConfigError(f"unknown dataset data.name={cfg.name!r} (known: {', '.join(toy.NAMES)})")


class TensorSampler:
    """Shuffled minibatches from a tensor on the device, epoch by epoch, for ``runs`` runs.

    Each run walks its own permutation of the data. Batches are (B, *item) for one run and
    (B, R, *item) for R runs. The state (epoch permutation, position, generator) is part of a
    checkpoint, so a resumed run sees exactly the batches it would have seen.
    """

    def __init__(self, data: Tensor, batch_size: int, runs: int = 1, seed: int = 0) -> None:
        if batch_size > len(data):
            raise ConfigError(
                f"train.batch_size={batch_size} is larger than the dataset ({len(data)} items)")
        self.data, self.batch_size, self.runs = data, batch_size, runs
        self.generator = torch.Generator(device=data.device).manual_seed(seed)
        self.perm: Tensor | None = None
        self.pos = 0

    def _new_epoch(self) -> None:
        n = len(self.data)
        keys = torch.rand(self.runs, n, generator=self.generator, device=self.data.device)
        self.perm = keys.argsort(dim=1)                     # (R, N)
        self.pos = 0

    def next(self) -> Tensor:
        """The next batch; drops the last incomplete batch of each epoch."""
        if self.perm is None or self.pos + self.batch_size > self.perm.shape[1]:
            self._new_epoch()
        idx = self.perm[:, self.pos:self.pos + self.batch_size].T    # (B, R)
        self.pos += self.batch_size
        x = self.data[idx]                                            # (B, R, *item)
        return x.squeeze(1) if self.runs == 1 else x

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "perm": self.perm, "pos": self.pos}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.perm, self.pos = state["perm"], state["pos"]
