"""The one training engine for every model of the project.

Each step draws a batch ``x ~ q(x)`` and ``z ~ p(z)``, runs ONE forward pass of the model
(:meth:`~ali.model.GenerativeModel.losses`), takes the gradient of the discriminator loss with
respect to the discriminator's parameters and of the generator loss with respect to the encoder
and decoder's parameters from that same graph, and steps both Adam optimisers at once
(simultaneous 1:1 updates, as the original code). Nothing in the loop waits on the device except
at logging intervals.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
import os
import random
import re
import shlex
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable

import numpy as np
import torch

from . import __version__, distributed, speed
from .config import Config, TrainConfig, model_from_dict, section_defaults
from .data import (Dataset, ImageSampler, first_items, labelled_subset, load_dataset,
                   make_sampler)
from .errors import CheckpointError, ConfigError, DivergenceError, TrainingInterrupted
from .model import GenerativeModel, Losses
from .build import build_model
from .nets import family

# The original code set the decoder's per-pixel output bias from this many training images.
DECODER_BIAS_IMAGES = 500

Hook = Callable[[int, GenerativeModel, "Path | None"], None]


def resolve_device(name: str) -> torch.device:
    """``auto`` is cuda when available, else cpu."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device={name} but no CUDA device is available")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_optimizer(params: list[torch.nn.Parameter], t: TrainConfig,
                   lr: float | None = None) -> torch.optim.Adam | None:
    """Adam with the config's learning rate (or ``lr``) and PyTorch-convention betas."""
    if not params:
        return None
    lr = t.lr if lr is None else lr
    try:  # the fused kernel (one pass over all parameters) where this PyTorch has it
        return torch.optim.Adam(params, lr=lr, betas=(t.beta1, t.beta2), fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(params, lr=lr, betas=(t.beta1, t.beta2))


def lr_factor(step: int, t: TrainConfig) -> float:
    """Multiplier of train.lr at ``step`` under train.lr_schedule."""
    if t.lr_schedule == "linear":
        return max(0.0, 1.0 - step / t.steps)
    return 1.0


@dataclass
class TrainResult:
    """What :func:`train` returns."""

    model: GenerativeModel
    step: int
    run_dir: Path | None
    seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)


# ---------------------------------------------------------------------------- checkpoints

LATEST = "latest.pt"
_STEP_FILE = re.compile(r"^step-(\d{8})\.pt$")
_TMP_FILE = re.compile(r"^\..+\.tmp-(\d+)$")


def step_checkpoint_name(step: int) -> str:
    """``step-NNNNNNNN.pt``: eight digits, so names sort in step order."""
    return f"step-{step:08d}.pt"


def _rng_state() -> dict[str, Any]:
    # numpy's state as plain Python values, so a checkpoint loads with weights_only=True.
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(),
             "numpy": (name, keys.tolist(), int(pos), int(has_gauss), float(cached)),
             "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _one_line(e: BaseException) -> str:
    """An exception as one short line (torch's unpickling errors span many)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e))  # torch colours part of its advice
    # Of torch's weights_only advice, only the cause names what is wrong with the file.
    cause = re.search(r"WeightsUnpickler error: ([^\n]*?)(\. |\n|$)", text)
    if cause:
        text = f"it holds more than tensors and plain values ({cause.group(1)})"
    text = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    text = text or type(e).__name__
    limit = 200  # enough to name the cause; the rest is torch's advice on weights_only
    return text if len(text) <= limit else text[:limit] + "..."


def _atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """``write`` into a temporary file, flush and fsync, then rename it over ``path``.

    A reader never sees a half-written file, and a failure (a full disk) leaves no temporary
    file and ``path`` as it was; it is raised as a one-line :class:`CheckpointError`.
    """
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(tmp, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()
        if os.name == "posix":  # make the rename itself durable
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
    except OSError as e:
        raise CheckpointError(f"cannot write checkpoint {path}: {_one_line(e)}") from e


def atomic_save(obj: Any, path: Path | str) -> None:
    """torch.save ``obj`` to ``path`` atomically (see :func:`_atomic_write`).

    Raises:
        CheckpointError: the file could not be written (e.g. the disk is full); ``path`` is
            unchanged and no temporary file is left.
    """
    _atomic_write(Path(path), lambda f: torch.save(obj, f))


def _serialize(obj: Any) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _validate(ckpt: Any, name: str) -> dict[str, Any]:
    if (not isinstance(ckpt, dict) or not {"model", "step", "config"} <= set(ckpt)
            or not isinstance(ckpt["model"], dict) or not isinstance(ckpt["config"], dict)
            or not isinstance(ckpt["step"], int) or ckpt["step"] < 0):
        raise CheckpointError(f"{name} is not an ali checkpoint")
    return ckpt


def load_checkpoint(path: Path | str) -> dict[str, Any]:
    """Load a checkpoint written by :func:`train`, with a clear error if it is unusable.

    Only tensors and plain Python values are unpickled (``weights_only=True``): a damaged or
    foreign file can fail to load but cannot run code.

    Raises:
        CheckpointError: the file is missing, truncated, corrupted or not an ali checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated, corrupted or foreign file: say so in one line
        raise CheckpointError(f"cannot read checkpoint {path} (truncated or corrupted?): "
                              f"{type(e).__name__}: {_one_line(e)}") from None
    return _validate(ckpt, str(path))


def run_checkpoint_path(run_dir: Path | str) -> Path:
    """``run_dir/checkpoints/latest.pt``, or a one-line error saying why there is none."""
    run_dir = Path(run_dir)
    path = run_dir / "checkpoints" / LATEST
    if not path.is_file():
        if not run_dir.is_dir():
            raise CheckpointError(f"no run folder at {run_dir}")
        raise CheckpointError(f"{run_dir} is not an ali run folder (it has no "
                              f"checkpoints/{LATEST}); --resume needs the --out of an earlier run")
    return path


def run_config(run_dir: Path | str) -> Config:
    """The config a run folder was trained with (from its latest checkpoint)."""
    path = run_checkpoint_path(run_dir)
    try:
        return Config.from_dict(load_checkpoint(path)["config"])
    except ConfigError as e:
        raise CheckpointError(f"{path} holds an invalid config: {e}") from None


def load_run(run_dir: Path | str, device: str = "cpu") -> tuple[GenerativeModel, Config, int]:
    """The trained model of a run folder (from ``checkpoints/latest.pt``), in eval mode."""
    path = run_checkpoint_path(run_dir)
    ckpt = load_checkpoint(path)
    try:
        cfg = Config.from_dict(ckpt["config"])
    except ConfigError as e:
        raise CheckpointError(f"{path} holds an invalid config: {e}") from None
    model = build_model(cfg)
    try:
        model.load_state_dict(ckpt["model"])
    except (RuntimeError, KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path} does not fit its config's model: {_one_line(e)}") from None
    return model.to(device).eval(), cfg, int(ckpt["step"])


def check_data_shape(cfg: Config, dataset: Dataset) -> None:
    """A one-line error when the data's items do not have the shape the networks expect."""
    want = tuple(family(cfg.model.nets).data_shape(cfg.model))
    have = tuple(dataset.data_shape or tuple(dataset.train.shape[1:]))
    if want[-len(have):] != have:
        raise ConfigError(
            f"dataset {dataset.name!r} has items of shape {list(have)} but config "
            f"{cfg.name!r} ({cfg.model.nets} networks) expects {list(want[-len(have):])}; "
            "choose a config for this image size or set data.image_size / data.channels")


def resolve_labels(cfg: Config, dataset: Dataset) -> Config:
    """``cfg`` with ``model.label_dim`` and ``model.attributes`` filled in from the dataset's
    labels, for semi-supervised and conditional models; a one-line error when the data cannot
    serve the model."""
    m = cfg.model
    if not (m.semi_supervised or m.conditional):
        return cfg
    which = "model.semi_supervised" if m.semi_supervised else "model.conditional"
    y = dataset.train_labels
    if y is None:
        raise ConfigError(f"{which}=true needs labels, and dataset {dataset.name!r} has none "
                          "here")
    attributes = y.dim() == 2
    k = int(y.shape[1]) if attributes else int(dataset.num_classes or 0)
    if m.semi_supervised and attributes:
        raise ConfigError(f"{which}=true needs class labels; {dataset.name} has attributes")
    if k < 1:
        raise ConfigError(f"{which}=true: cannot tell how many classes {dataset.name} has")
    if m.label_dim and m.label_dim != k:
        raise ConfigError(f"model.label_dim={m.label_dim} but {dataset.name} has {k} "
                          f"{'attributes' if attributes else 'classes'}")
    if m.conditional and not attributes and bool((y < 0).any()):
        raise ConfigError("model.conditional=true needs the label of every training example; "
                          "unset data.labels")
    return dataclasses.replace(cfg, model=m.with_labels(k, attributes))


def init_from_data_(model: GenerativeModel, dataset: Dataset) -> None:
    """Data-dependent initialisation: the decoder's per-pixel bias, where it has one."""
    from .nets.conv import PixelBias, init_decoder_bias_

    if any(isinstance(m, PixelBias) for m in model.decoder.modules()):
        x0 = first_items(dataset, DECODER_BIAS_IMAGES)
        init_decoder_bias_(model, x0)


def _prune(folder: Path, step: int, keep: int) -> None:
    """Delete the step files older than ``step`` beyond the newest ``keep`` (``step``'s own
    included); files of later steps (an abandoned attempt) are left alone."""
    older = sorted((int(m.group(1)), p) for p in folder.iterdir()
                   if (m := _STEP_FILE.match(p.name)) and int(m.group(1)) < step)
    for _, p in older[:max(0, len(older) - (keep - 1))]:
        with contextlib.suppress(OSError):
            p.unlink()


def _remove_stale_temporaries(folder: Path) -> None:
    """Temporary files of killed writers (SIGKILL, power loss): they were never renamed."""
    if os.name != "posix" or not folder.is_dir():
        return  # the liveness test below uses POSIX signal 0
    for p in folder.iterdir():
        m = _TMP_FILE.match(p.name)
        if not m or int(m.group(1)) == os.getpid():
            continue
        try:
            os.kill(int(m.group(1)), 0)
            continue  # its writer is alive
        except ProcessLookupError:
            pass
        except OSError:
            continue
        with contextlib.suppress(OSError):
            p.unlink()


def _non_finite(model: GenerativeModel, pending: dict[str, torch.Tensor]) -> str | None:
    """What is non-finite among the model's tensors and the pending loss sums, or None.

    One host sync when everything is finite (the common case).
    """
    tensors = {**{f"parameter {k}": v for k, v in model.state_dict().items()
                  if v.is_floating_point()},
               **{f"{k} (since the last log)": v for k, v in pending.items()}}
    if not tensors:
        return None
    flags = torch.stack([torch.isfinite(v).all() for v in tensors.values()]).cpu()
    if bool(flags.all()):
        return None
    bad = [k for k, ok in zip(tensors, flags.tolist()) if not ok]
    return f"non-finite {bad[0]}" + (f" and {len(bad) - 1} more" if len(bad) > 1 else "")


class _SignalGuard:
    """While active, SIGINT and SIGTERM only set :attr:`signum`; the loop checks it after each
    step and stops cleanly. A second signal raises KeyboardInterrupt at once (writes are
    atomic, so nothing on disk is damaged). Only the main thread can own signal handlers; in
    other threads the guard does nothing."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "_SignalGuard":
        if threading.current_thread() is threading.main_thread():
            for name in ("SIGINT", "SIGTERM"):
                sig = getattr(signal, name, None)
                if sig is not None:
                    self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:
            self.restore()
            raise KeyboardInterrupt
        self.signum = signum

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            # None: a handler not installed from Python; the default is the best we can do.
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
        self._previous.clear()

    def __exit__(self, *exc: Any) -> None:
        self.restore()


def train_step(model: GenerativeModel, x: torch.Tensor, z: torch.Tensor,
               opt_d: torch.optim.Optimizer | None, opt_g: torch.optim.Optimizer | None,
               params_d: list[torch.nn.Parameter], params_g: list[torch.nn.Parameter], *,
               forward: Callable[..., Losses] | None = None,
               autocast: Callable[[], contextlib.AbstractContextManager] | None = None,
               scaler: torch.amp.GradScaler | None = None,
               sync: Callable[[], None] | None = None, **inputs: Any) -> Losses:
    """One simultaneous update of both players from ONE forward pass.

    ``inputs`` go to :meth:`~ali.model.GenerativeModel.losses` (a conditional model's ``y``, a
    semi-supervised model's ``labelled`` batch).

    The discriminator loss is differentiated w.r.t. the discriminator's parameters only and the
    generator loss w.r.t. the encoder's and decoder's only, both from the same graph; neither
    optimiser steps before both backward passes are done, so no saved tensor is modified in
    place (the bug of ports that step D before G's backward).

    ``forward`` replaces ``model.losses`` (a compiled version of it), ``autocast`` makes the
    context the forward pass runs in (mixed precision), ``scaler`` scales both losses (fp16)
    and ``sync`` runs between the backward passes and the optimiser steps (gradient averaging
    across processes). See :class:`ali.speed.Stepper`.
    """
    with autocast() if autocast is not None else contextlib.nullcontext():
        out = (forward or model.losses)(x, z, **inputs)
    for opt in (opt_d, opt_g):
        if opt is not None:
            opt.zero_grad(set_to_none=True)
    scale = scaler.scale if scaler is not None else (lambda loss: loss)
    if out.d is not None:
        scale(out.d).backward(inputs=params_d, retain_graph=True)
    scale(out.g).backward(inputs=params_g)
    if sync is not None:
        sync()
    for opt in (opt_d, opt_g):
        if opt is not None:
            scaler.step(opt) if scaler is not None else opt.step()
    if scaler is not None:
        scaler.update()
    return out


# Keys that may change when a run is resumed: how long it runs and how it reports.
# So are the failure policies: the learning-rate scale and rollback count they produced are
# part of the checkpoint, so changing them does not alter the steps already taken.
# How fast the step runs may change too (the device, and with it the number of processes, may).
RESUMABLE_KEYS = {"train.steps", "train.log_every", "train.checkpoint_every", "train.progress",
                  "train.device", "train.keep_checkpoints", "train.on_divergence",
                  "train.rollback_lr_factor", "train.max_rollbacks", "train.precision",
                  "train.compile", "train.channels_last"}


def config_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``key: saved -> current`` for each setting that differs and may not change on resume.

    A setting the saved config lacks (it was added to the project after the run was written)
    counts as its default, the behaviour the run was trained with.
    """
    if isinstance(saved.get("model"), dict):
        # The model section as this version writes it (a run may predate its variant sections).
        with contextlib.suppress(ConfigError):
            saved = {**saved, "model": dataclasses.asdict(model_from_dict(saved["model"]))}
    out = []
    for section in ("name", "model", "data", "train"):
        a, b = saved.get(section), current.get(section)
        if not isinstance(a, dict) or not isinstance(b, dict):
            if a != b:
                out.append(f"{section}: {a!r} -> {b!r}")
            continue
        a = {**section_defaults(section), **a}
        for key in sorted(set(a) | set(b)):
            if f"{section}.{key}" not in RESUMABLE_KEYS and a.get(key) != b.get(key):
                out.append(f"{section}.{key}: {a.get(key)!r} -> {b.get(key)!r}")
    return out


# ---------------------------------------------------------------------------- the loop

class _Logger:
    """Writes log records to stdout and metrics.jsonl; draws a progress bar on a terminal."""

    def __init__(self, run_dir: Path | None, t: TrainConfig, start: int, quiet: bool) -> None:
        self.file = open(run_dir / "metrics.jsonl", "a") if run_dir else None
        self.quiet = quiet
        show_bar = t.progress == "on" or (t.progress == "auto" and sys.stderr.isatty())
        self.bar = None
        if show_bar and not quiet:
            try:
                from tqdm.auto import tqdm
                self.bar = tqdm(total=t.steps, initial=start, unit="step", dynamic_ncols=True)
            except ImportError:
                self.bar = None

    def log(self, record: dict[str, Any]) -> None:
        if self.file:
            try:
                self.file.write(json.dumps(record) + "\n")
                self.file.flush()
            except OSError as e:  # a full disk: the checkpoints on disk are still whole
                raise CheckpointError(f"cannot write {self.file.name} at step {record['step']}: "
                                      f"{e.strerror or e}") from None
        if self.bar is not None:
            self.bar.set_postfix({k: f"{v:.3g}" for k, v in record.items()
                                  if k in ("loss_d", "loss_g", "acc_q", "acc_p")})
        elif not self.quiet:
            print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in record.items()), flush=True)

    def note(self, text: str) -> None:
        """A one-line notice on stderr (rollbacks, interruptions)."""
        if self.quiet:
            return
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr, flush=True)

    def advance(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def jump(self, step: int) -> None:
        if self.bar is not None:
            self.bar.n = step
            self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.file:
            self.file.close()


def train(cfg: Config, *, run_dir: Path | str | None = None, resume: bool = False,
          model: GenerativeModel | None = None, dataset: Dataset | None = None,
          quiet: bool = False, hooks: Iterable[Hook] = (), until: int | None = None) -> TrainResult:
    """Train ``cfg`` and return the trained model.

    Every ``train.checkpoint_every`` steps and at the end, ``run_dir/checkpoints/`` gets
    ``step-NNNNNNNN.pt`` and ``latest.pt`` (each written atomically; the newest
    ``train.keep_checkpoints`` step files are kept). A checkpoint is written only when every
    parameter is finite. While training runs in the main thread, SIGINT and SIGTERM finish the
    current step, write a checkpoint and raise :class:`~ali.errors.TrainingInterrupted`; a
    second signal raises KeyboardInterrupt at once.

    Under torchrun (``RANK``/``WORLD_SIZE`` set) each process trains its share of every batch
    and the gradients are averaged (:mod:`ali.distributed`); only rank 0 writes ``run_dir``,
    prints and runs ``hooks``, and the other ranks return ``run_dir=None``. Every rank reads
    the checkpoint to resume, so ``run_dir`` must be visible to all of them.

    Args:
        cfg: the run's configuration.
        run_dir: where ``config.json``, ``metrics.jsonl`` and ``checkpoints/`` go; None keeps
            everything in memory.
        resume: continue from ``run_dir/checkpoints/latest.pt``.
        model, dataset: built from ``cfg`` when not given.
        quiet: no stdout or stderr output (the metrics file is still written).
        hooks: callables ``hook(step, model, run_dir)`` run at every logging interval.
        until: stop (with a checkpoint) after this many steps instead of ``train.steps``; the
            schedule still follows ``train.steps``, so a later ``resume`` continues exactly.

    Raises:
        DivergenceError: a non-finite loss (checked at logging intervals) or parameter
            (checked before each checkpoint) with train.on_divergence=stop, or after
            train.max_rollbacks rollbacks.
        TrainingInterrupted: SIGINT or SIGTERM; a checkpoint of the step reached was written.
        CheckpointError: an unusable run folder or checkpoint, or one that cannot be written.
    """
    t = cfg.train
    ctx, device, own_group = distributed.init(t.device)
    try:
        return _train(cfg, ctx, device, run_dir, resume, model, dataset, quiet, hooks, until)
    finally:
        if own_group:
            distributed.shutdown()


def _train(cfg: Config, ctx: distributed.Context, device: torch.device,
           run_dir: Path | str | None, resume: bool, model: GenerativeModel | None,
           dataset: Dataset | None, quiet: bool, hooks: Iterable[Hook],
           until: int | None) -> TrainResult:
    t = cfg.train
    seed_everything(t.seed)
    read_dir = Path(run_dir) if run_dir is not None else None
    run_dir = read_dir if ctx.main else None       # only rank 0 writes
    quiet = quiet or not ctx.main
    batch = distributed.local_batch(t.batch_size, ctx)

    if dataset is None:
        dataset = load_dataset(cfg.data)
    cfg = resolve_labels(cfg, dataset)
    if model is None:
        model = build_model(cfg)
    model.to(device).train()
    check_data_shape(cfg, dataset)
    if not resume:
        init_from_data_(model, dataset)
    sampler = make_sampler(dataset, t.batch_size, model.runs, seed=t.seed, device=device,
                           shard=(ctx.rank, ctx.world_size), with_labels=cfg.model.conditional is not None)
    labelled_sampler = None
    if cfg.model.semi_supervised:
        x_lab, y_lab = labelled_subset(dataset)
        size = t.labelled_batch_size or min(t.batch_size, len(y_lab))
        # Its own seed, so the unlabelled batches are those of the same run without labels.
        # Every process draws the same labelled batch.
        labelled_sampler = ImageSampler(x_lab.to(device), size, 1, seed=t.seed + 1,
                                        device=device, labels=y_lab)
    images = len(family(cfg.model.nets).data_shape(cfg.model)) == 3
    settings = speed.resolve(t, device, images)
    speed.prepare(model, settings, device)

    params_d, params_g = model.parameters_d(), model.parameters_g()
    lr_d = t.lr if t.lr_d is None else t.lr_d
    opt_d, opt_g = make_optimizer(params_d, t, lr_d), make_optimizer(params_g, t)
    stepper = speed.Stepper(model, opt_d, opt_g, params_d, params_g, device, settings,
                            sync=distributed.GradientAverager(list(model.parameters()))
                            if ctx.enabled else None)
    base_lr = [(o, lr) for o, lr in ((opt_d, lr_d), (opt_g, t.lr)) if o is not None]
    lr_scale, rollbacks = 1.0, 0          # changed by rollbacks; saved in every checkpoint

    def state(step: int) -> dict[str, Any]:
        return {"model": model.state_dict(), "step": step, "config": cfg.to_dict(),
                "opt_d": opt_d.state_dict() if opt_d else None,
                "opt_g": opt_g.state_dict() if opt_g else None,
                "sampler": sampler.state_dict(), "rng": _rng_state(), "version": __version__,
                "labelled_sampler": labelled_sampler.state_dict() if labelled_sampler else None,
                "lr_scale": lr_scale, "rollbacks": rollbacks, "scaler": stepper.state_dict()}

    def restore(ckpt: dict[str, Any], name: str) -> int:
        nonlocal lr_scale, rollbacks
        try:
            model.load_state_dict(ckpt["model"])
            for opt, key in ((opt_d, "opt_d"), (opt_g, "opt_g")):
                if opt is not None:
                    opt.load_state_dict(ckpt[key])
            sampler.load_state_dict(ckpt["sampler"])
            if labelled_sampler is not None:
                labelled_sampler.load_state_dict(ckpt["labelled_sampler"])
            _set_rng_state(ckpt["rng"])
            stepper.load_state_dict(ckpt.get("scaler"))
            lr_scale = float(ckpt.get("lr_scale", 1.0))
            rollbacks = int(ckpt.get("rollbacks", 0))
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as e:
            raise CheckpointError(f"{name} does not fit this model ({type(e).__name__}: "
                                  f"{_one_line(e)})") from None
        return int(ckpt["step"])

    start = 0
    ckpt_dir = run_dir / "checkpoints" if run_dir else None
    latest = ckpt_dir / LATEST if ckpt_dir else None
    if resume:
        if read_dir is None:
            raise CheckpointError("--resume needs a run folder")
        path = run_checkpoint_path(read_dir)
        ckpt = load_checkpoint(path)
        diff = config_differences(ckpt["config"], cfg.to_dict())
        if diff:
            raise CheckpointError(f"{path} was written by a different config "
                                  f"({diff[0]}); resume with the run's own settings")
        start = restore(ckpt, str(path))
    if ctx.enabled:
        # One model in every process (rank 0's), and each process its own noise.
        distributed.broadcast_module(model)
        if not ctx.main:
            seed_everything(distributed.rank_seed(t.seed, ctx.rank, start))
    if run_dir:
        if run_dir.exists() and not run_dir.is_dir():
            raise CheckpointError(f"{run_dir} exists and is not a folder; choose another --out")
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            record = {**cfg.to_dict(), "run": {
                "world_size": ctx.world_size, "batch_per_process": batch, "device": str(device),
                **settings.to_dict(), "torch": torch.__version__, "ali": __version__}}
            (run_dir / "config.json").write_text(json.dumps(record, indent=2) + "\n")
            _remove_stale_temporaries(ckpt_dir)
        except OSError as e:
            raise CheckpointError(f"cannot use run folder {run_dir}: {_one_line(e)}") from None

    # The last good state, for rollbacks: kept serialised in memory, so a run without a folder
    # can roll back too and a rollback never reads the disk.
    rollback = t.on_divergence == "rollback"
    good = (start, _serialize(state(start))) if rollback else None
    saved_step = start if resume else None

    def save(step: int) -> None:
        nonlocal good, saved_step
        if not rollback and latest is None:
            return
        kept = (f"{latest} still holds step {saved_step}" if saved_step is not None
                else "no checkpoint was written")
        try:
            data = _serialize(state(step))
            if rollback:
                good = (step, data)
            if ckpt_dir is not None and latest is not None:
                # The step file first: if writing latest.pt then fails, latest.pt still is
                # the previous good checkpoint.
                _atomic_write(ckpt_dir / step_checkpoint_name(step), lambda f: f.write(data))
                _atomic_write(latest, lambda f: f.write(data))
                _prune(ckpt_dir, step, t.keep_checkpoints)
                saved_step = step
        except OSError as e:
            raise CheckpointError(f"cannot write the checkpoint of step {step}: "
                                  f"{_one_line(e)}; {kept}") from e
        except CheckpointError as e:
            raise CheckpointError(f"at step {step}, {e}; {kept}") from e

    def set_lr(step: int) -> None:
        for opt, lr in base_lr:
            for group in opt.param_groups:
                group["lr"] = lr * lr_factor(step, t) * lr_scale

    logger = _Logger(run_dir, t, start, quiet)
    history: list[dict[str, Any]] = []
    sums: dict[str, torch.Tensor] = {}
    n_sum, t_log, t0 = 0, time.perf_counter(), time.perf_counter()
    step = start
    end = t.steps if until is None else min(until, t.steps)
    try:
        with _SignalGuard() as guard:
            while step < end:
                model.schedule(step, t.steps)
                set_lr(step)
                inputs: dict[str, Any] = {}
                x = sampler.next()                              # (B, *data) ~ q(x)
                if isinstance(x, tuple):                        # conditional: (x, y) ~ q(x, y)
                    x, inputs["y"] = x
                if labelled_sampler is not None:                # (x_l, y_l): (Bl, *data), (Bl,)
                    inputs["labelled"] = labelled_sampler.next()
                z = model.sample_prior(batch)                   # (B, *latent) ~ p(z)
                out = stepper(x, z, **inputs)

                scalars = {"loss_g": out.g.detach() / model.runs, **out.stats}
                if out.d is not None:
                    scalars["loss_d"] = out.d.detach() / model.runs
                for k, v in scalars.items():
                    sums[k] = sums[k] + v if k in sums else v.clone()
                n_sum += 1
                step += 1

                problem = None
                at_log = step % t.log_every == 0 or step == t.steps
                at_ckpt = step % t.checkpoint_every == 0 or step == end
                stop = False
                if ctx.enabled and (at_log or at_ckpt):
                    # Every process decides alike: on the averaged losses, rank 0's batch-norm
                    # statistics, and a signal any of them got (looked at only here).
                    stop = distributed.agree(guard.signum is not None, device)
                    sums = distributed.average(sums)
                    distributed.broadcast_module(model, buffers_only=True)
                if at_log:
                    now = time.perf_counter()
                    record: dict[str, Any] = {"step": step}
                    record.update({k: float(v) / n_sum for k, v in sorted(sums.items())})
                    record["lr"] = t.lr * lr_factor(step - 1, t) * lr_scale
                    if opt_d is not None:
                        record["lr_d"] = lr_d * lr_factor(step - 1, t) * lr_scale
                    record["steps_per_s"] = n_sum / max(now - t_log, 1e-9)
                    logger.log(record)
                    bad = [k for k, v in record.items() if not math.isfinite(v)]
                    if bad:
                        problem = f"non-finite {bad[0]}"
                    else:
                        history.append(record)
                        sums, n_sum, t_log = {}, 0, now
                        for hook in hooks if ctx.main else ():
                            hook(step, model, run_dir)
                stop = stop or (not ctx.enabled and guard.signum is not None)
                # Never write bad weights over the last good checkpoint.
                if problem is None and (at_ckpt or stop):
                    problem = _non_finite(model, sums)
                    if problem is None:
                        save(step)

                if problem is not None:
                    if rollback and rollbacks < t.max_rollbacks and not stop:
                        assert good is not None
                        bad_step, (step, data) = step, good
                        # The good state's own scale and count predate this divergence.
                        scale, count = lr_scale * t.rollback_lr_factor, rollbacks + 1
                        restore(torch.load(io.BytesIO(data), weights_only=True), "rollback")
                        lr_scale, rollbacks = scale, count
                        sums, n_sum, t_log = {}, 0, time.perf_counter()
                        logger.jump(step)
                        logger.note(f"ali: {problem} at step {bad_step}; rolled back to step "
                                    f"{step} with the learning rates x{lr_scale:.4g} "
                                    f"(rollback {rollbacks} of {t.max_rollbacks})")
                        continue
                    where = (f"the last good checkpoint is {latest} (step {saved_step})"
                             if saved_step is not None else "no checkpoint was written")
                    hint = (f"after {rollbacks} rollbacks (train.max_rollbacks)" if rollback
                            else "lower train.lr or set train.on_divergence=rollback")
                    raise DivergenceError(f"training diverged at step {step}: {problem}; "
                                          f"{where}; {hint}", step)
                if stop:
                    signum = guard.signum or signal.SIGTERM    # a signal another process got
                    name = signal.Signals(signum).name
                    model.eval()
                    result = TrainResult(model, step, run_dir, time.perf_counter() - t0, history)
                    if run_dir is None:
                        msg = f"interrupted by {name} at step {step} (no run folder: nothing saved)"
                    else:
                        msg = (f"interrupted by {name} at step {step}; checkpoint {latest}; "
                               f"resume with: ali train {shlex.quote(cfg.name)} --out "
                               f"{shlex.quote(str(run_dir))} --resume")
                    raise TrainingInterrupted(msg, signum, step, result)
                logger.advance(1)
    finally:
        logger.close()
    model.eval()
    return TrainResult(model, step, run_dir, time.perf_counter() - t0, history)
