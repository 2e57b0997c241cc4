"""Datasets and the batch samplers.

A dataset that fits in memory lives on the training device as one tensor; batches are drawn by
:class:`TensorSampler` with index arithmetic on that device, so a training step does no
per-sample Python work and no host-device copy. Images are kept as uint8 (N, C, H, W) and a batch
becomes float in [0, 1] on the device (:class:`ImageSampler`). A large image dataset
(:class:`~ali.data.images.ImageSource`) is decoded on the fly by DataLoader workers
(:class:`StreamSampler`), or, once decoded into its cache (:mod:`ali.data.cache`), gathered
from the memory-mapped array (:class:`CachedSampler`): the same batches, in the same order.
:func:`make_sampler` picks the right one.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import sys
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch
from torch import Tensor

from ..config import (
    DEFAULT_HOLDOUT,
    SHUFFLED_BY_DEFAULT,
    Config,
    DataConfig,
    parse_range,
)
from ..errors import ConfigError, DataError
from . import toy
from .cache import CachedImages, cached_source, cores, default_workers
from .images import FileImages, ImageSource, collate, convert
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
    """DataLoader workers for streamed data decoded on the fly."""
    config: DataConfig | None = None
    """The data settings it was loaded with (:func:`load_dataset`); None for a dataset built
    by hand."""

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
        _warn_ignored(cfg, None)
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
    x, y = _gather(cfg, spec, cfg.train_split, "train")
    _warn_ignored(cfg, x)
    order = split_order(cfg, len(x))
    xt = yt = None
    if not cfg.test_split:
        x, y = _cut(cfg, x, y, order, cfg.train_range, "train")
    elif _missing(spec, cfg.test_split):
        # No held-out split in the files: carve one out of the training split, the same
        # fraction of every class, so that no class is missing from either side. Only for
        # the default name: another one (a typo, a split the files lack) is refused, never
        # silently replaced.
        if not cfg.holdout or cfg.test_split != HOLDOUT_SPLIT:
            raise ConfigError(_no_split_message(cfg, spec, cfg.test_split, "test"))
        keep, held = stratified_holdout(y, order, cfg.holdout, cfg.name)
        xt, yt = _cut(cfg, x, y, held, cfg.test_range, "test")
        x, y = _cut(cfg, x, y, keep, cfg.train_range, "train")
    else:
        xt, yt = _gather(cfg, spec, cfg.test_split, "test")
        xt, yt = _cut(cfg, xt, yt, split_order(cfg, len(xt)), cfg.test_range, "test")
        x, y = _cut(cfg, x, y, order, cfg.train_range, "train")
    if cfg.cache == "on" or (cfg.cache == "auto" and stream):
        x, xt = _from_cache(cfg, x, xt)
    if not stream:
        x, xt = (p.load_all() if isinstance(p, ImageSource) else p for p in (x, xt))
    x, y = keep_class(x, y, cfg.normal_class, spec.num_classes, cfg.name)
    if cfg.labels:
        y = keep_labels(y, cfg.labels, spec.num_classes, cfg.seed)
    shape = tuple(x.shape) if isinstance(x, ImageSource) else tuple(x.shape[1:])
    return Dataset(cfg.name, x, xt, y, yt, data_shape=shape, num_classes=spec.num_classes,
                   label_names=spec.label_names,
                   workers=default_workers() if cfg.workers < 0 else cfg.workers, config=cfg)


def _warn_ignored(cfg: DataConfig, x: Any) -> None:
    """A one-line warning where ``x``, the training split as read, is not what data.stream=on
    or data.cache=on acts on, or where a data.root is set for 2-D data drawn at random (``x``
    None), which reads no files (a warning, not an error: configs that set them still load)."""
    if x is None and cfg.root:
        _warn(f"data.root={cfg.root} is ignored: data.name={cfg.name} is 2-D data drawn at "
              "random, not read from files")
    if cfg.stream == "on" and not isinstance(x, ImageSource):
        _warn(f"data.stream=on is ignored: data.name={cfg.name} is read into memory whole "
              "(only celeba, imagenet64 and folders of images are streamed)")
    if cfg.cache == "on" and not (isinstance(x, ImageSource) and isinstance(x.base, FileImages)):
        _warn(f"data.cache=on is ignored: data.name={cfg.name} has no image files to decode "
              "once (only celeba, folders of images and imagenet64's class folders are cached)")


def _from_cache(cfg: DataConfig, *parts: Any) -> list[Any]:
    """``parts`` with each :class:`~ali.data.images.ImageSource` of image files reading from
    its decode-once cache (:func:`~ali.data.cache.cached_source`); splits sharing the files
    (CelebA's) share one cache, checked once."""
    done: dict[int, ImageSource] = {}
    out = []
    for p in parts:
        if isinstance(p, ImageSource):
            if id(p.base) not in done:
                done[id(p.base)] = cached_source(ImageSource(p.base, np.arange(0), p.shape),
                                                 cfg.cache_dir, cfg.verify,
                                                 required=cfg.cache == "on")
            p = ImageSource(done[id(p.base)].base, p.index, p.shape)
        out.append(p)
    return out




def probe_shape(cfg: DataConfig) -> tuple[int, ...]:
    """The shape (C, H, W) one training image of ``cfg`` is loaded with, found without
    decoding the data where the reader is lazy (folders read one image's header)."""
    if cfg.name in toy.NAMES:
        return (2,)
    if cfg.name not in READERS:
        raise ConfigError(f"unknown dataset data.name={cfg.name!r}")
    x, _ = _gather(cfg, READERS[cfg.name](cfg), cfg.train_split, "train")
    if isinstance(x, ImageSource):
        return tuple(x.shape)
    return tuple(convert(x[:1], cfg.image_size, cfg.channels).shape[1:])


def shuffles(cfg: DataConfig) -> bool:
    """Whether ``cfg``'s ranges and hold-out cut its splits in a shuffled order
    (``data.split_order``)."""
    return cfg.split_order == "shuffled" or (cfg.split_order == "auto"
                                             and cfg.name in SHUFFLED_BY_DEFAULT)


def split_order(cfg: DataConfig, n: int) -> np.ndarray:
    """The order (a permutation of ``range(n)``) in which ``cfg``'s ranges cut a split of ``n``
    items: fixed by ``data.split_seed`` and ``n`` alone, so two ranges of one split (a
    ``train_range`` and a ``test_range`` of the same split) are disjoint; the stored order
    where the data is not shuffled."""
    if not shuffles(cfg):
        return np.arange(n)
    return np.random.default_rng(cfg.split_seed).permutation(n)


def stratified_holdout(y: Tensor | None, order: np.ndarray, fraction: float,
                       name: str) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held out): ``order`` (the split's items, in the order they are taken) divided
    so that the held-out part has ``fraction`` of each class (at least one item of every class
    with two or more), or of all items where there are no class labels; both parts keep
    ``order``'s order."""
    held = np.zeros(len(order), dtype=bool)
    if y is not None and y.dim() == 1:
        classes = y.numpy()[order]
        for c in np.unique(classes):
            at = np.flatnonzero(classes == c)
            if len(at) > 1:
                held[at[:max(1, round(fraction * len(at)))]] = True
    elif len(order) > 1:
        held[:max(1, round(fraction * len(order)))] = True
    if held.all() or not held.any():
        raise DataError(f"data.holdout={fraction}: {name} has too few images ({len(order)}) "
                        f"to hold out a part of its training split")
    return order[~held], order[held]


HOLDOUT_SPLIT = "test"
"""The held-out split name (the default ``data.test_split``) that ``data.holdout`` stands in for
where the files have no such split."""


def _missing(spec: Spec, splits: str) -> list[str]:
    return [n for n in splits.split("+") if spec.aliases.get(n, n) not in spec.splits]


def _no_split_message(cfg: DataConfig, spec: Spec, splits: str, key: str) -> str:
    name = _missing(spec, splits)[0]
    have = [s for s in spec.splits if s != "all"] or list(spec.splits)
    if key == "train":
        fix = f"add --set data.train_split={have[0] if len(have) == 1 else '+'.join(have)}"
    elif splits == HOLDOUT_SPLIT:
        fix = (f"hold out a fraction of the training split with --set data.holdout="
               f"{DEFAULT_HOLDOUT}, or train without one with --set data.test_split=")
    else:
        fix = (f"name a split there is, or leave data.test_split={HOLDOUT_SPLIT} to hold out "
               "data.holdout of the training split")
    return (f"data.{key}_split: {cfg.name} has no split {name!r} here (available: "
            f"{', '.join(spec.splits)}{'; ' + spec.hint.format(name=name) if spec.hint else ''}); {fix}")


def _gather(cfg: DataConfig, spec: Spec, splits: str, key: str) -> Part:
    """The images and labels of ``splits`` ("a+b"), joined."""
    if _missing(spec, splits):
        raise ConfigError(_no_split_message(cfg, spec, splits, key))
    xs, ys = zip(*(spec.splits[spec.aliases.get(n, n)]() for n in splits.split("+")))
    if all(isinstance(p, Tensor) for p in xs):
        x = xs[0] if len(xs) == 1 else torch.cat(xs)
    elif all(isinstance(p, ImageSource) and p.base is xs[0].base for p in xs):
        x = ImageSource(xs[0].base, np.concatenate([p.index for p in xs]), xs[0].shape)
    else:
        raise ConfigError(f"data.{key}_split={splits}: these splits cannot be combined")
    y = None if any(t is None for t in ys) else (ys[0] if len(ys) == 1 else torch.cat(ys))
    return x, y


def _cut(cfg: DataConfig, x: Any, y: Tensor | None, order: np.ndarray, range_text: str,
         key: str) -> Part:
    """Items ``order[start:stop]`` of ``x`` and ``y`` (``range_text``), converted."""
    start, stop = parse_range(range_text)
    picked = order[start:stop]
    if len(picked) == 0:
        raise ConfigError(f"data.{key}_range={range_text!r} selects no images of the "
                          f"{len(order)} in {cfg.name} {getattr(cfg, key + '_split')}")
    if not np.array_equal(picked, np.arange(len(x))):     # the whole split, as stored: no copy
        x = x.select(picked) if isinstance(x, ImageSource) else x[torch.from_numpy(picked)]
        y = None if y is None else y[torch.from_numpy(picked)]
    if isinstance(x, Tensor):
        if x.dim() == 4:                                # images (feature vectors: as read)
            x = convert(x, cfg.image_size, cfg.channels)
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

    def close(self) -> None:
        """Release what the sampler holds (nothing here; worker threads or processes in the
        streaming samplers), so every sampler can be closed the same way."""


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

    def _orders(self, start: int) -> Iterator[Tensor]:
        """The positions in the source of each batch from batch ``start`` on: (B * R,) int64,
        this process's share, run-major within each item."""
        per_epoch = len(self.source) // self.batch_size
        epoch, pos = divmod(start, per_epoch)
        while True:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            perm = torch.rand(self.runs, len(self.source), generator=g).argsort(dim=1)
            for p in range(pos, per_epoch):
                b = self.batch_size
                yield perm[:, p * b:(p + 1) * b].T[self.share].reshape(-1)   # (B * R,)
            epoch, pos = epoch + 1, 0

    def _batches(self, start: int) -> Iterator[list[int]]:
        return (o.tolist() for o in self._orders(start))

    def _start(self) -> None:
        loader = torch.utils.data.DataLoader(
            self.source, batch_sampler=self._batches(self.taken), num_workers=self.workers,
            collate_fn=collate, pin_memory=self.device.type == "cuda",
            prefetch_factor=4 if self.workers else None, persistent_workers=False,
            # its own generator: a DataLoader otherwise draws its workers' base seed from the
            # global RNG, so the training noise would depend on the data path and on when the
            # loader (re)starts (a resumed run would draw z off by one)
            generator=torch.Generator())
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
        return self._finish(x, lambda: torch.tensor(next(self._label_idx)))

    def _finish(self, x: Tensor, positions: Any) -> Tensor | tuple[Tensor, Tensor]:
        """A uint8 batch (B * R, C, H, W) as float on the device (or one converted already),
        (B, R, ...) for R runs, with the labels at ``positions()`` (the batch's positions in
        the source) if any."""
        if x.dtype == torch.uint8:
            x = x.to(self.device, non_blocking=True).float().div_(255)
        if self.runs > 1:
            x = x.view(-1, self.runs, *x.shape[1:])
        if self.labels is None:
            return x
        y = self.labels[positions().to(self.device)]
        return x, (y.view(-1, self.runs, *y.shape[1:]) if self.runs > 1 else y)

    def close(self) -> None:
        self._it = self._label_idx = None

    def state_dict(self) -> dict:
        return {"taken": self.taken, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        self.taken, self.seed = int(state["taken"]), int(state["seed"])
        self._it = self._label_idx = None


class CachedSampler(StreamSampler):
    """:class:`StreamSampler`'s batches, gathered from a decode-once cache
    (:class:`~ali.data.cache.CachedImages`) in the training process instead of decoded by
    workers: the same positions in the same order, so the same bytes, and the same state (the
    number of batches taken; a run may resume on either path).

    A batch is one gather of uint8 rows from the memory-mapped array, made ahead by ``threads``
    threads (numpy releases the GIL while it copies), then copied to ``device`` as uint8
    (from pinned memory on a GPU) and converted to float there; on a CPU the threads convert
    it too.
    """

    def __init__(self, source: ImageSource, batch_size: int, runs: int = 1, seed: int = 0,
                 device: torch.device | str = "cpu", labels: Tensor | None = None,
                 shard: tuple[int, int] = (0, 1), threads: int | None = None) -> None:
        if not isinstance(source.base, CachedImages):
            raise TypeError("CachedSampler needs an ImageSource over CachedImages")
        super().__init__(source, batch_size, runs, seed, device, 0, labels, shard)
        self.threads = threads if threads is not None else min(2, cores())
        self._order: Iterator[Tensor] | None = None
        self._ahead: collections.deque = collections.deque()
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None

    def _make(self, pos: Tensor) -> Tensor:
        """The batch at positions ``pos``: float on a CPU, else uint8 (pinned for a GPU)."""
        rows = self.source.index[pos.numpy()]
        shape = (len(rows), *self.source.shape)
        if self.device.type != "cpu":
            # A fresh block each time: the caching host allocator keeps a pinned block from
            # reuse until its asynchronous copy is done, so there is no host sync.
            buf = torch.empty(shape, dtype=torch.uint8, pin_memory=self.device.type == "cuda")
            self.source.base.gather(rows, out=buf.numpy())
            return buf
        raw = self.source.base.gather(rows, out=np.empty(shape, dtype=np.uint8))
        # One pass instead of .float().div_(255)'s two (the CPU-bound part of a cached batch),
        # and the same bits: both are float32 x / 255, correctly rounded.
        x = torch.empty(shape, dtype=torch.float32)
        np.divide(raw, np.float32(255), out=x.numpy(), dtype=np.float32)
        return x

    def next(self) -> Tensor | tuple[Tensor, Tensor]:
        if self._order is None:
            self._order = self._orders(self.taken)
            self._ahead.clear()
        if self.threads < 1:
            pos = next(self._order)
            x = self._make(pos)
        else:
            if self._pool is None:
                # Map the array here, not in the workers: np.load parses the .npy header with
                # ast.literal_eval, and CPython 3.11 keeps the AST constructor's recursion depth
                # in interpreter-wide state, so two threads parsing at once can raise
                # "SystemError: AST constructor recursion depth mismatch" (seen in CI, 3.11.7).
                self.source.base.array  # noqa: B018
                self._pool = concurrent.futures.ThreadPoolExecutor(
                    self.threads, thread_name_prefix="ali-cache")
            while len(self._ahead) < 2 * self.threads:      # in order: a FIFO of futures
                p = next(self._order)
                self._ahead.append((p, self._pool.submit(self._make, p)))
            pos, fut = self._ahead.popleft()
            x = fut.result()
        self.taken += 1
        return self._finish(x, lambda: pos)

    def close(self) -> None:
        self._order = None
        self._ahead.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.close()             # batches made ahead belong to the old position


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
    Streamed images: :class:`CachedSampler` when they come from a decode-once cache, else
    :class:`StreamSampler` with ``workers`` (default ``dataset.workers``), at most one per
    usable core (more is said on stderr).
    ``shard=(rank, world_size)``: this process's share of each batch (multi-process training).
    """
    device = torch.device(device)
    x = dataset.train
    y = dataset.train_labels if with_labels else None
    if with_labels and y is None:
        raise ConfigError(f"dataset {dataset.name!r} has no training labels")
    if isinstance(x, ImageSource) and isinstance(x.base, CachedImages):
        return CachedSampler(x, batch_size, runs, seed, device, labels=y, shard=shard)
    if isinstance(x, ImageSource):
        asked = dataset.workers if workers is None else workers
        # torch's own suggested maximum: more workers only compete for the cores (each with a
        # copy of the file list), and a config recorded on a larger machine must still run
        # here; the batches are the same with any number of workers.
        used = min(asked, cores())
        if used < asked:
            _warn(f"data.workers={asked} is more than the {used} CPU cores this process may "
                  f"use; decoding on the fly with {used} workers")
        return StreamSampler(x, batch_size, runs, seed, device, used, labels=y, shard=shard)
    if x.dtype == torch.uint8:
        on_device = x.numel() <= device_bytes
        return ImageSampler(x.to(device) if on_device else x, batch_size, runs, seed, device,
                            labels=y, shard=shard)
    return TensorSampler(x.to(device), batch_size, runs, seed, labels=y, shard=shard)


def _warn(text: str) -> None:
    """``text`` as one line on stderr, from the first process only (torchrun's others would
    say the same)."""
    from .. import distributed

    if distributed.from_env().rank == 0:
        print(f"ali: warning: {text}", file=sys.stderr, flush=True)


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
