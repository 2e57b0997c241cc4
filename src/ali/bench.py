"""``ali bench``: how fast the training step of a config runs on this machine.

:func:`bench` times full training steps (both updates, exactly as :func:`ali.train.train` runs
them: the same sampler, noise, precision, memory format and compilation) after a warm-up, on
random data of the config's data shape, so no dataset is needed; with ``data.root`` set the
data pipeline is timed too (:func:`data_rate`), alone, and the slower of the two bounds
training. The FLOPs of one real step
(forward and both backward passes) are counted by :class:`torch.utils.flop_counter.FlopCounterMode`.
:func:`peak_gflops` measures the machine's peak for comparison: a large matrix multiply in
the same precision.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

import torch

from . import speed
from .config import Config, apply_overrides, get_config
from .data import Dataset
from .distributed import resolve_device
from .errors import ConfigError
from .nets import family
from .run import Run, build_run, resolve_from_root
from .speed import time_chunk
from .step import train_step

SYNTHETIC_BATCHES = 4
"""The random dataset holds this many batches (drawn from on the device, as a real run)."""


# Class count of the synthetic labels when the config does not set model.label_dim.
SYNTHETIC_CLASSES = 10


def synthetic_dataset(cfg: Config, batch_size: int, seed: int = 0) -> Dataset:
    """Random data of ``cfg``'s data shape: uint8 images, or 2-D points; with random labels of
    the kind the model takes (classes, or 0/1 attributes with ``model.attributes``) when it is
    conditional or semi-supervised."""
    shape = tuple(family(cfg.model.nets).data_shape(cfg.model))
    shape = shape[1:] if cfg.model.runs > 1 else shape      # one run's item; the sampler stacks
    g = torch.Generator().manual_seed(seed)
    n = SYNTHETIC_BATCHES * batch_size
    if len(shape) == 3:
        x = torch.randint(0, 256, (n, *shape), generator=g, dtype=torch.uint8)
    else:
        x = torch.randn((n, *shape), generator=g)
    m = cfg.model
    if not (m.conditional or m.semi_supervised):
        return Dataset("random", x, None, data_shape=shape)
    k = m.label_dim or SYNTHETIC_CLASSES
    if m.attributes:
        y = torch.randint(0, 2, (n, k), generator=g)
        return Dataset("random", x, None, train_labels=y, data_shape=shape)
    # Every class present, in random order (a semi-supervised run's labelled subset is all).
    y = torch.arange(n) % k
    y = y[torch.randperm(n, generator=g)]
    return Dataset("random", x, None, train_labels=y, data_shape=shape, num_classes=k)


@dataclass
class StepUnderTest:
    """A training step ready to be timed: ``step()`` draws a batch and z (and the labels the
    model takes) and updates both players, as :func:`ali.train.train` does."""

    run: Run
    taken: int = 0
    """Steps so far: what the model's schedule sees (a lazy R1 penalty then costs what it
    costs on average in training)."""

    @property
    def cfg(self) -> Config:
        return self.run.cfg

    @property
    def device(self) -> torch.device:
        return self.run.device

    @property
    def settings(self) -> speed.StepSettings:
        return self.run.settings

    @property
    def model(self) -> Any:
        return self.run.model

    @property
    def stepper(self) -> speed.Stepper:
        return self.run.stepper

    @property
    def sampler(self) -> Any:
        return self.run.sampler

    def step(self) -> None:
        self.model.schedule(self.taken, self.cfg.train.steps)
        self.taken += 1
        x, z, inputs = self.run.draw()
        self.stepper(x, z, **inputs)


def prepare(cfg: Config) -> StepUnderTest:
    """The run of ``cfg`` on its device (:func:`ali.run.build_run`, as training builds it),
    on random data of its shape and label kind."""
    t = cfg.train
    device = resolve_device(t.device)
    return StepUnderTest(build_run(cfg, device, dataset=synthetic_dataset(cfg, t.batch_size,
                                                                          t.seed)))


def bench(name: str | Config, steps: int = 20, batch_size: int | None = None,
          precision: str | None = None, compile: bool | None = None, warmup: int = 3,
          repeats: int = 5, overrides: tuple[str, ...] | list[str] = ()) -> dict[str, Any]:
    """Time ``steps`` training steps of config ``name`` after ``warmup`` untimed ones.

    The steps are timed in ``repeats`` equal chunks and the median chunk is reported (other
    processes on a shared machine make single timings noisy).

    Returns a dict with ``config``, ``device``, ``precision``, ``batch_size``,
    ``images_per_s`` (items of data per second: images, or 2-D points times runs),
    ``step_ms``, ``flops_per_image``, ``achieved_gflops`` and the settings used; when
    ``data.root`` is set, also the data pipeline's rate (:func:`data_rate`:
    ``data_images_per_s``, ``data_path``) and ``bound_by``: ``data`` or ``step``, whichever is
    slower and so bounds training.
    """
    if steps < 1 or warmup < 0 or repeats < 1:
        raise ConfigError("bench needs steps >= 1, warmup >= 0 and repeats >= 1")
    cfg = resolve_from_root(name if isinstance(name, Config) else get_config(name, overrides))
    extra = [f"train.batch_size={batch_size}"] if batch_size is not None else []
    extra += [f"train.precision={precision}"] if precision is not None else []
    extra += [f"train.compile={compile}"] if compile is not None else []
    s = prepare(apply_overrides(cfg, extra))
    for _ in range(warmup):
        s.step()
    # A lazy R1 penalty runs on one step in r1.every: chunks of whole intervals each carry its
    # share, where the median of shorter chunks would drop it (or count it in full).
    every = s.cfg.model.r1.every if s.cfg.model.r1 else 1
    chunk = -(-max(1, steps // repeats) // every) * every
    step_s = statistics.median(time_chunk(s.step, s.device, chunk) for _ in range(repeats))
    b = s.cfg.train.batch_size
    x, z, inputs = s.run.draw()
    flops = step_flops(s.model, s.stepper, x, z, **inputs)
    items = b * s.model.runs
    per_item = flops / items
    out = {"config": s.cfg.name, "device": _device_name(s.device),
           "precision": s.settings.precision, "batch_size": b,
           "images_per_s": items / step_s, "step_ms": step_s * 1e3,
           "flops_per_image": per_item, "achieved_gflops": per_item * items / step_s / 1e9,
           "channels_last": s.settings.channels_last, "compile": s.settings.compile,
           "threads": torch.get_num_threads(), "steps": chunk * repeats, "runs": s.model.runs,
           "precision_auto": s.settings.precision_auto}
    if s.cfg.data.root:
        s.run.close()
        out.update(data_rate(s.cfg, s.device, repeats=repeats))
        out["bound_by"] = "data" if out["data_images_per_s"] < out["images_per_s"] else "step"
    return out


DATA_BATCHES = 20
"""Batches per timed chunk of :func:`data_rate`."""


def data_rate(cfg: Config, device: torch.device, batches: int = DATA_BATCHES, warmup: int = 3,
              repeats: int = 5) -> dict[str, Any]:
    """How fast the data pipeline of ``cfg`` delivers training batches to ``device``: the
    dataset of ``cfg.data`` (its decode-once cache built first if it is missing) and the
    sampler training uses, timed alone over ``repeats`` chunks of ``batches`` batches after
    ``warmup`` (the median chunk).

    Returns ``data_images_per_s`` and ``data_path`` (how batches are made: ``cache``, ``on the
    fly (N workers)`` or ``in memory``).
    """
    from .data import CachedSampler, StreamSampler, load_dataset, make_sampler

    t = cfg.train
    dataset = load_dataset(cfg.data)
    runs = cfg.model.runs
    sampler = make_sampler(dataset, t.batch_size, runs, seed=t.seed, device=device)
    if isinstance(sampler, CachedSampler):
        path = "cache"
    elif isinstance(sampler, StreamSampler):
        path = f"on the fly ({sampler.workers} workers)"
    else:
        path = "in memory"
    try:
        for _ in range(warmup):
            sampler.next()
        per_batch = statistics.median(time_chunk(sampler.next, device, batches)
                                      for _ in range(repeats))
    finally:
        sampler.close()
    return {"data_images_per_s": t.batch_size * runs / per_batch, "data_path": path}


def step_flops(model: Any, stepper: speed.Stepper, x: torch.Tensor, z: torch.Tensor,
               **inputs: Any) -> int:
    """FLOPs of one real training step (forward and both backward passes), counted by
    :class:`~torch.utils.flop_counter.FlopCounterMode` on the uncompiled step (a compiled one
    does the same arithmetic)."""
    from torch.utils.flop_counter import FlopCounterMode

    if stepper.settings.channels_last:
        x, z = speed.to_channels_last(x), speed.to_channels_last(z)
        if "labelled" in inputs:
            x_l, y_l = inputs["labelled"]
            inputs["labelled"] = (speed.to_channels_last(x_l), y_l)
    with FlopCounterMode(display=False) as counter:
        train_step(model, x, z, stepper.opt_d, stepper.opt_g, stepper.params_d,
                   stepper.params_g, autocast=stepper.autocast, scaler=stepper.scaler, **inputs)
    return int(counter.get_total_flops())


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads)"


def peak_gflops(device: str = "auto", precision: str = "fp32", n: int = 4096,
                repeats: int = 5) -> float:
    """The machine's measured peak: GFLOP/s of an ``n`` x ``n`` matrix multiply in
    ``precision`` (median of ``repeats``, after a warm-up)."""
    dev = resolve_device(device)
    dtype = {"fp32": torch.float32, **speed.DTYPES}[precision]
    a = torch.randn(n, n, device=dev).to(dtype)
    b = torch.randn(n, n, device=dev).to(dtype)
    a @ b
    times = []
    for _ in range(repeats):
        speed.sync(dev)
        t0 = time.perf_counter()
        a @ b
        speed.sync(dev)
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(times) / 1e9
