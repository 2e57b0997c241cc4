"""Checkpoint files: atomic writes, loading with validation, rotation, and what may change on
resume (README, "Reliability").

A checkpoint is one ``torch.save`` of a plain dict (``model``, ``step``, ``config``, the
optimisers', samplers' and RNGs' states, ...): :func:`load_checkpoint` reads it with
``weights_only=True``, so a damaged or foreign file can fail to load but cannot run code. Every
write goes to a temporary file that is fsynced and renamed over the target, so a reader (or a
resume after ``kill -9``) sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import random
import re
from pathlib import Path
from typing import Any, BinaryIO, Callable

import numpy as np
import torch

from .config import Config, model_from_dict, saved_defaults
from .errors import CheckpointError, ConfigError, one_line

LATEST = "latest.pt"
_STEP_FILE = re.compile(r"^step-(\d{8})\.pt$")
_TMP_FILE = re.compile(r"^\..+\.tmp-(\d+)$")


def step_checkpoint_name(step: int) -> str:
    """``step-NNNNNNNN.pt``: eight digits, so names sort in step order."""
    return f"step-{step:08d}.pt"


# ---------------------------------------------------------------------------- RNG state

def rng_state() -> dict[str, Any]:
    """The global RNGs' states (torch, numpy, Python, CUDA), as a checkpoint holds them."""
    # numpy's state as plain Python values, so a checkpoint loads with weights_only=True.
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(),
             "numpy": (name, keys.tolist(), int(pos), int(has_gauss), float(cached)),
             "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the global RNGs from :func:`rng_state`'s dict."""
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------------------- writing

def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
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
        raise CheckpointError(f"cannot write {path}: {one_line(e)}") from e


def atomic_save(obj: Any, path: Path | str) -> None:
    """torch.save ``obj`` to ``path`` atomically (see :func:`atomic_write`).

    Raises:
        CheckpointError: the file could not be written (e.g. the disk is full); ``path`` is
            unchanged and no temporary file is left.
    """
    atomic_write(Path(path), lambda f: torch.save(obj, f))


def serialize(obj: Any) -> bytes:
    """``torch.save`` of ``obj`` in memory (what a checkpoint file holds)."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def deserialize(data: bytes) -> dict[str, Any]:
    """The checkpoint dict of :func:`serialize`'s bytes."""
    return torch.load(io.BytesIO(data), weights_only=True)


def prune(folder: Path, step: int, keep: int) -> None:
    """Delete the step files older than ``step`` beyond the newest ``keep`` (``step``'s own
    included); files of later steps (an abandoned attempt) are left alone."""
    older = sorted((int(m.group(1)), p) for p in folder.iterdir()
                   if (m := _STEP_FILE.match(p.name)) and int(m.group(1)) < step)
    for _, p in older[:max(0, len(older) - (keep - 1))]:
        with contextlib.suppress(OSError):
            p.unlink()


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` of this machine is running (POSIX signal 0; a process of
    another user counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def remove_stale_temporaries(folder: Path) -> None:
    """Temporary files of killed writers (SIGKILL, power loss): they were never renamed."""
    if os.name != "posix" or not folder.is_dir():
        return  # the liveness test below uses POSIX signal 0
    for p in folder.iterdir():
        m = _TMP_FILE.match(p.name)
        if not m or int(m.group(1)) == os.getpid() or pid_alive(int(m.group(1))):
            continue
        with contextlib.suppress(OSError):
            p.unlink()


# ---------------------------------------------------------------------------- reading

def _validate(ckpt: Any, name: str) -> dict[str, Any]:
    if (not isinstance(ckpt, dict) or not {"model", "step", "config"} <= set(ckpt)
            or not isinstance(ckpt["model"], dict) or not isinstance(ckpt["config"], dict)
            or not isinstance(ckpt["step"], int) or ckpt["step"] < 0):
        raise CheckpointError(f"{name} is not an ali checkpoint")
    return ckpt


def load_checkpoint(path: Path | str) -> dict[str, Any]:
    """Load a checkpoint written by :func:`ali.train.train`, with a clear error if it is
    unusable.

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
        # The first sentence names the cause; the rest of torch's text is general advice.
        cause = one_line(e).split(". ")[0]
        raise CheckpointError(f"cannot read checkpoint {path} (truncated or corrupted?): "
                              f"{type(e).__name__}: {cause}") from None
    return _validate(ckpt, str(path))


def run_checkpoint_path(run_dir: Path | str) -> Path:
    """``run_dir/checkpoints/latest.pt``, or a one-line error saying why there is none."""
    run_dir = Path(run_dir)
    path = run_dir / "checkpoints" / LATEST
    if not path.is_file():
        if not run_dir.is_dir():
            raise CheckpointError(f"no run folder at {run_dir}")
        # the weights' name, not pretrained.is_pretrained: pretrained imports this module
        from .model import PRETRAINED_WEIGHTS

        if (run_dir / PRETRAINED_WEIGHTS).is_file():
            raise CheckpointError(f"{run_dir} is a saved model (save_pretrained), not a run "
                                  "folder: this needs a run's checkpoint and data (ali sample "
                                  "and ali score take a saved model)")
        raise CheckpointError(f"{run_dir} is not an ali run folder (it has no "
                              f"checkpoints/{LATEST})")
    return path


def checkpoint_config(ckpt: dict[str, Any], path: Path | str) -> Config:
    """The config a loaded checkpoint was written with, or a one-line error."""
    try:
        return Config.from_dict(ckpt["config"])
    except ConfigError as e:
        raise CheckpointError(f"{path} holds an invalid config: {e}") from None


def run_config(run_dir: Path | str) -> Config:
    """The config a run folder was trained with (from its latest checkpoint)."""
    path = run_checkpoint_path(run_dir)
    return checkpoint_config(load_checkpoint(path), path)


def load_run(run_dir: Path | str, device: str = "cpu") -> tuple[Any, Config, int]:
    """The trained model of a run folder (from ``checkpoints/latest.pt``), in eval mode, with
    its config and step."""
    from .build import build_model

    path = run_checkpoint_path(run_dir)
    ckpt = load_checkpoint(path)
    cfg = checkpoint_config(ckpt, path)
    model = build_model(cfg)
    try:
        model.load_state_dict(ckpt["model"])
    except (RuntimeError, KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path} does not fit its config's model: {one_line(e)}") from None
    return model.to(device).eval(), cfg, int(ckpt["step"])


# ---------------------------------------------------------------------------- resuming

# Keys that may change when a run is resumed: how long it runs and how it reports.
# So are the failure policies: the learning-rate scale and rollback count they produced are
# part of the checkpoint, so changing them does not alter the steps already taken.
# How fast the step runs may change too (the device, and with it the number of processes, may).
# train.steps may change only where the schedule does not follow it (see schedule_follows_steps).
# So may how images are delivered: decoded on the fly by any number of workers or read from the
# decode-once cache, the batches are the same bytes.
RESUMABLE_KEYS = {"data.workers", "data.cache", "data.cache_dir", "train.steps",
                  "train.log_every", "train.checkpoint_every", "train.progress",
                  "train.progress_every_s",
                  "train.device", "train.keep_checkpoints", "train.on_divergence",
                  "train.rollback_lr_factor", "train.max_rollbacks", "train.precision",
                  "train.bf16_min_speedup", "train.bf16_loss_tolerance",
                  "train.precision_probe_steps", "train.precision_probe_min_ms",
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
        a = {**saved_defaults(section), **a}
        for key in sorted(set(a) | set(b)):
            if f"{section}.{key}" not in RESUMABLE_KEYS and a.get(key) != b.get(key):
                out.append(f"{section}.{key}: {a.get(key)!r} -> {b.get(key)!r}")
    return out


def schedule_follows_steps(cfg: Config) -> list[str]:
    """The settings that make the training schedule follow ``train.steps`` (a longer run
    stretches it), as ``key=value``; empty when the schedule does not depend on it."""
    m, t = cfg.model, cfg.train
    out = []
    if t.lr_schedule == "linear":
        out.append("train.lr_schedule=linear")
    if 0 < m.freeze_decoder_bn_at < 1:
        out.append(f"model.freeze_decoder_bn_at={m.freeze_decoder_bn_at:g}")
    if m.kind == "gan_posthoc":
        out.append("model.kind=gan_posthoc")
    return out


def check_resumable(ckpt: dict[str, Any], cfg: Config, path: Path | str,
                    extend: bool = False) -> None:
    """A one-line :class:`CheckpointError` unless ``cfg`` continues the run of ``ckpt``.

    Only the keys of :data:`RESUMABLE_KEYS` may differ; ``train.steps`` only when the schedule
    does not follow it, or with ``extend`` (the caller accepts that the learning-rate decay,
    the batch-norm freeze or gan_posthoc's phases stretch from the resumed step on).
    """
    diff = config_differences(ckpt["config"], cfg.to_dict())
    if diff:
        raise CheckpointError(f"{path} was written by a different config "
                              f"({diff[0]}); resume with the run's own settings")
    if cfg.train.steps < ckpt["step"]:
        raise CheckpointError(f"train.steps={cfg.train.steps} is below the step {path} is at "
                              f"({ckpt['step']}): a run cannot be shortened")
    saved_steps = (ckpt["config"].get("train") or {}).get("steps")
    follows = schedule_follows_steps(cfg)
    if saved_steps != cfg.train.steps and follows and not extend:
        raise CheckpointError(
            f"train.steps {saved_steps} -> {cfg.train.steps} would reshape the schedule, which "
            f"follows train.steps here ({', '.join(follows)}), so the run would not continue "
            f"as trained; pass --extend (extend=True) to accept that, or keep train.steps and "
            f"stop early with --until")
