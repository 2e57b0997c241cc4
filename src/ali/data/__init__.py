"""Datasets and the batch samplers.

A dataset that fits in memory lives on the training device as one tensor; batches are drawn by
:class:`TensorSampler` with index arithmetic on that device, so a training step does no
per-sample Python work and no host-device copy. Images are kept as uint8 (N, C, H, W) and a batch
becomes float in [0, 1] on the device (:class:`ImageSampler`). A large image dataset
(:class:`~ali.data.images.ImageSource`) is decoded on the fly by DataLoader workers
(:class:`StreamSampler`). :func:`make_sampler` picks the right one.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch
from torch import Tensor

from ..config import Config, DataConfig, parse_range
from ..errors import ConfigError, DataError
from . import toy
from .images import ImageSource, collate, convert
from .readers import READERS, Part, Spec

DEVICE_BYTES = 4 << 30
"""In-memory images larger than this stay in host memory; batches are copied to the device."""

KNOWN_LABELS: dict[str, tuple[int, bool]] = {
    "mnist": (10, False), "cifar10": (10, False), "svhn": (10, False), "celeba": (40, True),
    "imagenet64": (1000, False)}
"""(K, attributes) of the datasets whose labels are known without reading their files: K
classes, or K 0/1 attributes. What lets a conditional or semi-supervised config of these
datasets build its networks without the data (``ali arch``, ``ali bench``); training checks
them against the labels it reads."""


@dataclass
class Dataset:
    """Training and held-out data, with labels where the data has them.

    ``train``/``test`` are float tensors (2-D data), uint8 (N, C, H, W) tensors (images in
    memory) or :class:`~ali.data.images.ImageSource` (streamed images); ``test`` is None when
    ``data.test_split`` is empty. Labels are int64, (N,) class indices (-1: label dropped by
    ``data.labels``) or (N, K) 0/1 attributes (CelebA).
    """

    name: str
    train: Any
    test: Any
    train_labels: Tensor | None = None
    test_labels: Tensor | None = None
    centres: Tensor | None = None
    """Mixture means of a 2-D dataset."""
    std: float | None = None
    """Component std of a 2-D dataset."""
    data_shape: tuple[int, ...] | None = None
    """Shape of one item: (2,) or (C, H, W)."""
    num_classes: int | None = None
    """Number of classes, where the labels are classes."""
    label_names: list[str] | None = None
    """Class or attribute names, where known."""
    workers: int = 0
    """DataLoader workers for streamed data."""

    @property
    def streamed(self) -> bool:
        return isinstance(self.train, ImageSource)


def with_known_labels(cfg: Config) -> Config:
    """``cfg`` with ``model.label_dim`` and ``model.attributes`` taken from
    :data:`KNOWN_LABELS` when a conditional or semi-supervised model leaves them to the data
    (``label_dim=0``) and ``data.name`` is known; ``cfg`` unchanged otherwise. A one-line
    :class:`~ali.errors.ConfigError` when the known labels cannot serve the model."""
    m = cfg.model
    known = KNOWN_LABELS.get(cfg.data.name)
    if not (m.semi_supervised or m.conditional) or known is None:
        return cfg
    return with_labels(cfg, *known)


def with_labels(cfg: Config, k: int, attributes: bool) -> Config:
    """``cfg`` whose conditional or semi-supervised model takes ``k`` classes (or ``k`` 0/1
    attributes) of ``cfg.data.name``; a one-line :class:`~ali.errors.ConfigError` when such
    labels cannot serve the model (attributes for a semi-supervised one, another label_dim)."""
    m = cfg.model
    which = "model.semi_supervised" if m.semi_supervised else "model.conditional"
    if m.semi_supervised and attributes:
        raise ConfigError(f"{which}=true needs class labels; {cfg.data.name} has attributes")
    if m.label_dim and m.label_dim != k:
        raise ConfigError(f"model.label_dim={m.label_dim} but {cfg.data.name} has {k} "
                          f"{'attributes' if attributes else 'classes'}")
    return dataclasses.replace(cfg, model=m.with_labels(k, attributes))


def load_dataset(cfg: DataConfig) -> Dataset:
    """The dataset named by ``cfg.name``, on the CPU (README, "Datasets")."""
    if cfg.name in toy.NAMES:
        std = cfg.std or toy.DEFAULT_STD[cfg.name]
        g = torch.Generator().manual_seed(cfg.seed)
        x, y = toy.sample(cfg.name, cfg.n_train, std, g)
        xt, yt = toy.sample(cfg.name, cfg.n_test, std, g)
        k = len(toy.centres(cfg.name))
        x, y = keep_class(x, y, cfg.normal_class, k, cfg.name)
        return Dataset(cfg.name, x, xt, y, yt, toy.centres(cfg.name), std, data_shape=(2,),
                       num_classes=k)
    if cfg.name not in READERS:
        raise ConfigError(f"unknown dataset data.name={cfg.name!r} "
                          f"(known: {', '.join((*toy.NAMES, *READERS))})")
    spec = READERS[cfg.name](cfg)
    stream = cfg.stream == "on" or (cfg.stream == "auto" and spec.stream)
    x, y = _split(cfg, spec, cfg.train_split, cfg.train_range, "train", stream)
    xt, yt = (_split(cfg, spec, cfg.test_split, cfg.test_range, "test", stream)
              if cfg.test_split else (None, None))
    x, y = keep_class(x, y, cfg.normal_class, spec.num_classes, cfg.name)
    if cfg.labels:
        y = keep_labels(y, cfg.labels, spec.num_classes, cfg.seed)
    shape = tuple(x.shape) if isinstance(x, ImageSource) else tuple(x.shape[1:])
    return Dataset(cfg.name, x, xt, y, yt, data_shape=shape, num_classes=spec.num_classes,
                   label_names=spec.label_names, workers=cfg.workers)


def _split(cfg: DataConfig, spec: Spec, splits: str, range_text: str, key: str,
           stream: bool) -> Part:
    """The images and labels of ``splits`` ("a+b"), cut to ``range_text``, converted."""
    parts = []
    for name in splits.split("+"):
        name = spec.aliases.get(name, name)
        if name not in spec.splits:
            raise ConfigError(f"data.{key}_split: {cfg.name} has no split {name!r} here "
                              f"(available: {', '.join(spec.splits)})")
        parts.append(spec.splits[name]())
    xs, ys = zip(*parts)
    if all(isinstance(p, Tensor) for p in xs):
        x = xs[0] if len(xs) == 1 else torch.cat(xs)
    elif all(isinstance(p, ImageSource) and p.base is xs[0].base for p in xs):
        x = ImageSource(xs[0].base, np.concatenate([p.index for p in xs]), xs[0].shape)
    else:
        raise ConfigError(f"data.{key}_split={splits}: these splits cannot be combined")
    y = None if any(t is None for t in ys) else (ys[0] if len(ys) == 1 else torch.cat(ys))
    start, stop = parse_range(range_text)
    n = len(x)
    picked = range(n)[slice(start, stop)]
    if len(picked) == 0:
        raise ConfigError(f"data.{key}_range={range_text!r} selects no images of the {n} in "
                          f"{cfg.name} {splits}")
    if (start, stop) != (None, None):
        x = x.select(slice(start, stop)) if isinstance(x, ImageSource) else x[start:stop]
        y = None if y is None else y[start:stop]
    if isinstance(x, Tensor):
        if x.dim() == 4:                                # images (feature vectors: as read)
            x = convert(x, cfg.image_size, cfg.channels)
    elif not stream:
        x = x.load_all()
    return x, y


def keep_class(x: Any, y: Tensor | None, k: int, num_classes: int | None,
               name: str) -> tuple[Any, Tensor | None]:
    """The items of class ``k`` alone (anomaly detection's normal class); everything for
    ``k = -1``. One-line error for data without class labels or a class out of range."""
    if k < 0:
        return x, y
    if y is None or y.dim() != 1 or not num_classes:
        raise ConfigError(f"data.normal_class={k} needs class labels, and {name} has none here")
    if k >= num_classes:
        raise ConfigError(f"data.normal_class={k} is out of range: {name} has classes "
                          f"0..{num_classes - 1}")
    idx = torch.nonzero(y == k).flatten()
    if len(idx) == 0:
        raise ConfigError(f"data.normal_class={k}: the training split has no example of it")
    x = x.select(idx.numpy()) if isinstance(x, ImageSource) else x[idx]
    return x, y[idx]


def keep_labels(y: Tensor | None, n: int, num_classes: int | None, seed: int) -> Tensor:
    """Labels with all but ``n`` of them set to -1: ``n // K`` per class (the first ``n % K``
    classes one more), chosen at random with ``seed``."""
    if y is None or y.ndim != 1 or not num_classes:
        raise ConfigError("data.labels needs a dataset with class labels")
    if n > len(y):
        raise ConfigError(f"data.labels={n} is more than the {len(y)} training examples")
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(y), generator=g)
    out = torch.full_like(y, -1)
    for k in range(num_classes):
        want = n // num_classes + (k < n % num_classes)
        idx = order[y[order] == k][:want]
        if len(idx) < want:
            raise DataError(f"data.labels={n}: class {k} has only {len(idx)} training "
                            f"examples, {want} needed")
        out[idx] = k
    return out


class TensorSampler:
    """Shuffled minibatches from a tensor on the device, epoch by epoch, for ``runs`` runs.

    Each run walks its own permutation of the data. Batches are (B, *item) for one run and
    (B, R, *item) for R runs. The state (epoch permutation, position, generator) is part of a
    checkpoint, so a resumed run sees exactly the batches it would have seen.

    ``shard=(rank, world_size)``: every process walks the same order and takes its
    ``B / world_size`` share of each batch of ``B`` (multi-process training).
    """

    def __init__(self, data: Tensor, batch_size: int, runs: int = 1, seed: int = 0,
                 labels: Tensor | None = None, shard: tuple[int, int] = (0, 1)) -> None:
        if batch_size > len(data):
            raise ConfigError(
                f"train.batch_size={batch_size} is larger than the dataset ({len(data)} items)")
        self.data, self.batch_size, self.runs = data, batch_size, runs
        self.labels = None if labels is None else labels.to(data.device)
        self.share = _share(batch_size, shard)
        self.generator = torch.Generator(device=data.device).manual_seed(seed)
        self.perm: Tensor | None = None
        self.pos = 0

    def _new_epoch(self) -> None:
        n = len(self.data)
        keys = torch.rand(self.runs, n, generator=self.generator, device=self.data.device)
        self.perm = keys.argsort(dim=1)                     # (R, N)
        self.pos = 0

    def next(self) -> Tensor | tuple[Tensor, Tensor]:
        """The next batch, or (batch, its labels) for a sampler with labels; drops the last
        incomplete batch of each epoch."""
        if self.perm is None or self.pos + self.batch_size > self.perm.shape[1]:
            self._new_epoch()
        idx = self.perm[:, self.pos:self.pos + self.batch_size].T    # (B, R)
        idx = idx[self.share]                                         # this process's share
        self.pos += self.batch_size
        x = self.data[idx]                                            # (B, R, *item)
        x = x.squeeze(1) if self.runs == 1 else x
        if self.labels is None:
            return x
        y = self.labels[idx.to(self.labels.device)]                   # (B, R, *label)
        return self._convert(x), (y.squeeze(1) if self.runs == 1 else y)

    def _convert(self, x: Tensor) -> Tensor:
        return x

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "perm": self.perm, "pos": self.pos}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.perm, self.pos = state["perm"], state["pos"]


class ImageSampler(TensorSampler):
    """:class:`TensorSampler` over uint8 images: a batch is float in [0, 1] on ``device``.

    The images may live on ``device`` (the usual case: no copy per step) or, when too large,
    in host memory: a batch is then gathered on the host and copied.
    """

    def __init__(self, data: Tensor, batch_size: int, runs: int = 1, seed: int = 0,
                 device: torch.device | str | None = None, labels: Tensor | None = None,
                 shard: tuple[int, int] = (0, 1)) -> None:
        super().__init__(data, batch_size, runs, seed, labels, shard)
        self.device = torch.device(device) if device is not None else data.device
        if self.labels is not None:
            self.labels = self.labels.to(self.device)
        if self.device.type == "cuda" and data.device.type == "cpu":
            self.data = data.pin_memory()

    def _convert(self, x: Tensor) -> Tensor:
        return x.to(self.device, non_blocking=True).float().div_(255)

    def next(self) -> Tensor | tuple[Tensor, Tensor]:
        out = super().next()
        return out if isinstance(out, tuple) else self._convert(out)


class StreamSampler:
    """Shuffled minibatches of an :class:`~ali.data.images.ImageSource`, decoded by DataLoader
    workers, as float in [0, 1] on ``device``; (B, C, H, W), or (B, R, C, H, W) for R runs.

    Epoch e of run r walks a permutation drawn from (seed, e). The state is the number of
    batches taken, so a resumed run sees exactly the batches it would have seen.
    """

    def __init__(self, source: ImageSource, batch_size: int, runs: int = 1, seed: int = 0,
                 device: torch.device | str = "cpu", workers: int = 0,
                 labels: Tensor | None = None, shard: tuple[int, int] = (0, 1)) -> None:
        if batch_size > len(source):
            raise ConfigError(
                f"train.batch_size={batch_size} is larger than the dataset ({len(source)} items)")
        self.source, self.batch_size, self.runs, self.seed = source, batch_size, runs, seed
        self.share = _share(batch_size, shard)
        self.device, self.workers = torch.device(device), workers
        self.labels = None if labels is None else labels.to(self.device)
        self.taken = 0
        self._it: Iterator | None = None
        self._label_idx: Iterator[list[int]] | None = None

    def _batches(self, start: int) -> Iterator[list[int]]:
        per_epoch = len(self.source) // self.batch_size
        epoch, pos = divmod(start, per_epoch)
        while True:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            perm = torch.rand(self.runs, len(self.source), generator=g).argsort(dim=1)
            for p in range(pos, per_epoch):
                b = self.batch_size
                yield perm[:, p * b:(p + 1) * b].T[self.share].reshape(-1).tolist()  # (B * R,)
            epoch, pos = epoch + 1, 0

    def _start(self) -> None:
        loader = torch.utils.data.DataLoader(
            self.source, batch_sampler=self._batches(self.taken), num_workers=self.workers,
            collate_fn=collate, pin_memory=self.device.type == "cuda",
            prefetch_factor=4 if self.workers else None, persistent_workers=False)
        self._it = iter(loader)
        # The same batch order again, walked in step with the loader, for the labels.
        self._label_idx = self._batches(self.taken)

    def next(self) -> Tensor | tuple[Tensor, Tensor]:
        if self._it is None:
            self._start()
        x = next(self._it)
        if isinstance(x, str):
            raise DataError(x)
        self.taken += 1
        x = x.to(self.device, non_blocking=True).float().div_(255)
        if self.runs > 1:
            x = x.view(-1, self.runs, *x.shape[1:])
        if self.labels is None:
            return x
        idx = torch.tensor(next(self._label_idx), device=self.device)
        y = self.labels[idx]
        return x, (y.view(-1, self.runs, *y.shape[1:]) if self.runs > 1 else y)

    def close(self) -> None:
        self._it = self._label_idx = None

    def state_dict(self) -> dict:
        return {"taken": self.taken, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        self.taken, self.seed = int(state["taken"]), int(state["seed"])
        self._it = self._label_idx = None


def take(data: Any, idx: np.ndarray | Tensor | slice | None = None) -> Tensor:
    """Items ``idx`` (all by default) of ``data`` (a tensor or a streamed
    :class:`~ali.data.images.ImageSource`) as floats on the CPU: uint8 images in [0, 1], other
    data (2-D points) as they are."""
    if isinstance(data, ImageSource):
        x = (data if idx is None else data.select(idx)).load_all()
    else:
        if idx is not None and not isinstance(idx, slice):
            idx = torch.as_tensor(idx)
        x = (data if idx is None else data[idx]).cpu()
    return x.float() / 255 if x.dtype == torch.uint8 else x.float()


def first_items(dataset: Dataset, n: int) -> Tensor:
    """The first ``n`` training items as floats (images in [0, 1]), on the CPU."""
    return take(dataset.train, slice(0, n))


def make_sampler(dataset: Dataset, batch_size: int, runs: int = 1, seed: int = 0,
                 device: torch.device | str = "cpu", workers: int | None = None,
                 device_bytes: int = DEVICE_BYTES, shard: tuple[int, int] = (0, 1),
                 with_labels: bool = False) -> TensorSampler | StreamSampler:
    """The sampler of ``dataset.train``: ``.next()`` is a float batch on ``device``, or
    ``(batch, labels)`` ``with_labels``.

    2-D data: :class:`TensorSampler` on the device. Images in memory: :class:`ImageSampler`,
    the uint8 tensor on the device when it is at most ``device_bytes``, else in host memory.
    Streamed images: :class:`StreamSampler` with ``workers`` (default ``dataset.workers``).
    ``shard=(rank, world_size)``: this process's share of each batch (multi-process training).
    """
    device = torch.device(device)
    x = dataset.train
    y = dataset.train_labels if with_labels else None
    if with_labels and y is None:
        raise ConfigError(f"dataset {dataset.name!r} has no training labels")
    if isinstance(x, ImageSource):
        return StreamSampler(x, batch_size, runs, seed, device,
                             dataset.workers if workers is None else workers, labels=y,
                             shard=shard)
    if x.dtype == torch.uint8:
        on_device = x.numel() <= device_bytes
        return ImageSampler(x.to(device) if on_device else x, batch_size, runs, seed, device,
                            labels=y, shard=shard)
    return TensorSampler(x.to(device), batch_size, runs, seed, labels=y, shard=shard)


def _share(batch_size: int, shard: tuple[int, int]) -> slice:
    """The rows of a batch of ``batch_size`` that process ``rank`` of ``world_size`` takes."""
    rank, world = shard
    n = batch_size // world
    return slice(rank * n, (rank + 1) * n)


def labelled_subset(dataset: Dataset) -> tuple[Tensor, Tensor]:
    """The training items whose label was kept (``data.labels``) and their classes, on the
    CPU; streamed images are decoded now (a labelled subset is small)."""
    y = dataset.train_labels
    if y is None or y.dim() != 1:
        raise ConfigError(f"dataset {dataset.name!r} has no class labels")
    keep = torch.nonzero(y >= 0).flatten()
    if len(keep) == 0:
        raise ConfigError("no training example has a label (data.labels)")
    x = dataset.train
    x = x.select(keep.numpy()).load_all() if isinstance(x, ImageSource) else x[keep]
    return x, y[keep]
