"""The one training engine for every model of the project: :func:`train`.

:func:`train` builds the run (:func:`ali.run.build_run`), resumes it from its checkpoint where
asked (:mod:`ali.checkpoint`), prepares the run folder (:mod:`ali.run_folder`), puts together
the callbacks (:mod:`ali.callbacks`) and runs the loop (:func:`ali.engine.fit`).

The names other code imports from here (checkpoint I/O, run setup, the step) are re-exported
from the modules that own them.
"""

from __future__ import annotations

import contextlib
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from . import distributed
from .callbacks import (Checkpointer, Divergence, Hook, Hooks, Logger, Progress, ProgressLines,
                        Signals, Sync, non_finite)
from .checkpoint import (LATEST, RESUMABLE_KEYS, atomic_save, atomic_write, check_resumable,
                         config_differences, load_checkpoint, load_run, prune,
                         remove_stale_temporaries, run_checkpoint_path, run_config,
                         schedule_follows_steps, serialize, step_checkpoint_name)
from .config import Config
from .data import Dataset
from .distributed import resolve_device
from .engine import Callback, Loop, LossSums, fit
from .errors import CheckpointError, TrainingInterrupted
from .run import (DECODER_BIAS_IMAGES, Run, build_run, check_data_shape, init_from_data_,
                  resolve_labels, seed_everything)
from .run_folder import RunLock, prepare_run_folder
from .step import lr_factor, make_optimizer, train_step

__all__ = [
    "train", "TrainResult", "load_run", "load_checkpoint", "run_config", "run_checkpoint_path",
    "atomic_save", "atomic_write", "step_checkpoint_name", "make_optimizer", "resolve_device",
    "train_step", "config_differences", "check_data_shape", "resolve_labels",
    "init_from_data_", "seed_everything", "lr_factor", "LATEST", "RESUMABLE_KEYS",
    "DECODER_BIAS_IMAGES", "prune", "remove_stale_temporaries", "non_finite", "serialize",
    "schedule_follows_steps", "build_run", "Run", "Hook",
]


@dataclass
class TrainResult:
    """What :func:`train` returns."""

    model: Any
    step: int
    run_dir: Path | None
    seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)
    start: int = 0
    """The step training started from (the checkpoint's on resume): ``step - start`` steps
    were run."""


def train(cfg: Config, *, run_dir: Path | str | None = None, resume: bool = False,
          model: Any = None, dataset: Dataset | None = None, quiet: bool = False,
          hooks: Iterable[Hook] = (), until: int | None = None,
          callbacks: Iterable[Callback] = (), extend: bool = False,
          images: bool = True) -> TrainResult:
    """Train ``cfg`` and return the trained model.

    Every ``train.checkpoint_every`` steps and at the end, ``run_dir/checkpoints/`` gets
    ``step-NNNNNNNN.pt`` and ``latest.pt`` (each written atomically; the newest
    ``train.keep_checkpoints`` step files are kept). A checkpoint is written only when every
    parameter is finite. While training runs in the main thread, SIGINT and SIGTERM finish the
    current step, write a checkpoint and raise :class:`~ali.errors.TrainingInterrupted`; a
    second signal raises KeyboardInterrupt at once.

    Under torchrun (``RANK``/``WORLD_SIZE`` set) each process trains its share of every batch
    and the gradients are averaged (:mod:`ali.distributed`); only rank 0 writes ``run_dir``,
    prints and runs ``hooks`` and the callbacks marked ``main_only``, and the other ranks
    return ``run_dir=None``. Every rank reads the checkpoint to resume, so ``run_dir`` must be
    visible to all of them.

    Args:
        cfg: the run's configuration.
        run_dir: where ``config.json``, ``metrics.jsonl`` and ``checkpoints/`` go; None keeps
            everything in memory.
        resume: continue from ``run_dir/checkpoints/latest.pt``. Only the settings of
            :data:`~ali.checkpoint.RESUMABLE_KEYS` may differ from the run's own, and
            ``train.steps`` only where the schedule does not follow it (or with ``extend``).
        model, dataset: built from ``cfg`` when not given.
        quiet: no stdout or stderr output (the metrics file is still written).
        hooks: callables ``hook(step, model, run_dir)`` run after each logged record.
        until: stop (with a checkpoint) after this many steps instead of ``train.steps``; the
            schedule still follows ``train.steps``, so a later ``resume`` continues exactly:
            the way to train a run in pieces.
        callbacks: more :class:`~ali.engine.Callback` objects (your own), run
            after the logger and before the signal check and the checkpoint.
        extend: on resume, accept a ``train.steps`` that stretches a schedule following it
            (linear learning-rate decay, batch-norm freeze, gan_posthoc's phases) from the
            resumed step on; the run then no longer matches a straight run of either length.
        images: with a run folder, write what ``ali train`` writes besides the checkpoints
            and metrics: ``samples.png`` and ``reconstructions.png`` (image models) every
            ``train.checkpoint_every`` steps and at the end, and TensorBoard logs where the
            ``tensorboard`` package is installed.

    Raises:
        DivergenceError: a non-finite loss (checked at logging intervals) or parameter
            (checked before each checkpoint) with train.on_divergence=stop, or after
            train.max_rollbacks rollbacks.
        TrainingInterrupted: SIGINT or SIGTERM; a checkpoint of the step reached was written.
        CheckpointError: an unusable run folder or checkpoint, or one that cannot be written,
            or a resume that would not continue the run.
    """
    ctx, device, own_group = distributed.init(cfg.train.device)
    try:
        return _train(cfg, ctx, device, run_dir, resume, model, dataset, quiet, hooks, until,
                      list(callbacks), extend, images)
    finally:
        if own_group:
            distributed.shutdown()


def _read_checkpoint(read_dir: Path | None) -> tuple[dict[str, Any], Path]:
    """The run folder's latest checkpoint, to resume from, and its path."""
    if read_dir is None:
        raise CheckpointError("--resume needs a run folder")
    try:
        path = run_checkpoint_path(read_dir)
    except CheckpointError as e:
        raise CheckpointError(f"{e}; --resume needs the --out of an earlier run") from None
    return load_checkpoint(path), path


def _resume(run: Run, ckpt: dict[str, Any], path: Path, extend: bool) -> int:
    """Restore ``run`` from checkpoint ``ckpt`` (read from ``path``); returns its step."""
    check_resumable(ckpt, run.cfg, path, extend)
    return run.load_state_dict(ckpt, str(path))


def _train(cfg: Config, ctx: distributed.Context, device: Any, run_dir: Path | str | None,
           *args: Any) -> TrainResult:
    # The run folder is claimed before anything is read from it or written to it: a second
    # training into it refuses here, having changed nothing (rank 0 alone writes, and locks).
    claim = (RunLock(Path(run_dir)) if run_dir is not None and ctx.main
             else contextlib.nullcontext())
    with claim:
        return _train_owned(cfg, ctx, device, run_dir, *args)


def _train_owned(cfg: Config, ctx: distributed.Context, device: Any, run_dir: Path | str | None,
                 resume: bool, model: Any, dataset: Dataset | None, quiet: bool,
                 hooks: Iterable[Hook], until: int | None, extra: list[Callback],
                 extend: bool, images: bool) -> TrainResult:
    t = cfg.train
    read_dir = Path(run_dir) if run_dir is not None else None
    run_dir = read_dir if ctx.main else None       # only rank 0 writes
    quiet = quiet or not ctx.main
    ckpt, path = _read_checkpoint(read_dir) if resume else (None, None)
    # A resumed run keeps the precision that train.precision=auto chose when it started (a
    # checkpoint from before the probe existed was trained in fp32, auto's meaning then).
    chosen = ckpt.get("precision", "fp32") if ckpt is not None else None
    run = build_run(cfg, device, ctx, dataset, model, init_from_data=not resume,
                    precision=chosen)
    if dataset is not None and dataset.config is None and run_dir is not None and not quiet:
        print(f"ali: the dataset given has no data settings (it was not made by "
              f"ali.data.load_dataset): {run_dir / 'config.json'} names data.name="
              f"{run.cfg.data.name}, which `ali eval` and `ali reconstruct` would read",
              file=sys.stderr, flush=True)
    if run_dir is not None and images:
        extra[:0] = run_images(run)    # first: the user's callbacks see the images written
    logger = None
    try:
        start = _resume(run, ckpt, path, extend) if ckpt is not None else 0
        end = t.steps if until is None else min(until, t.steps)
        if resume and not quiet:
            more = (f"training {end - start} more steps (to step {end})" if end > start
                    else f"nothing to train: until={until} is not past it" if until is not None
                    and until <= start and until < t.steps
                    else "nothing left to train (a larger train.steps, with --extend where "
                         "the schedule follows it, trains further)")
            print(f"resumed at step {start}; {more}", flush=True)
        if ctx.enabled:
            # One model in every process (rank 0's), and each process its own noise.
            distributed.broadcast_module(run.model)
            if not ctx.main:
                seed_everything(distributed.rank_seed(t.seed, ctx.rank, start))
        if run_dir:
            prepare_run_folder(run_dir, {**run.cfg.to_dict(), "run": run.record()})
        logger = Logger(t, run_dir, start, quiet)
        checkpointer = Checkpointer(t, run_dir, t.on_divergence == "rollback", run, start,
                                    resumed=resume)
        signals = Signals(ctx)
        mine = [c for c in (*extra, Hooks(hooks)) if ctx.main or not c.main_only]
        order = ([Sync(logger, checkpointer, signals)] if ctx.enabled else []) + [
            logger, Progress(logger), ProgressLines(t, logger, start), *mine, signals,
            checkpointer]
        loop = Loop(run, end, run_dir, order, Divergence(t, checkpointer, logger, signals),
                    LossSums(run.model.runs))
        t0 = time.perf_counter()
        with signals:
            step = fit(loop, start)
    finally:
        run.close()
        if logger is not None:
            logger.close()
        for c in extra:
            c.close()
    run.model.eval()
    result = TrainResult(run.model, step, run_dir, time.perf_counter() - t0, loop.history,
                         start)
    if loop.signum is not None:
        raise _interrupted(loop.signum, result, checkpointer, cfg.name)
    return result


def run_images(run: Run) -> list[Callback]:
    """The callbacks writing a run folder's images and TensorBoard logs, every
    ``train.checkpoint_every`` steps (the run's own data: the images of what it trains on)."""
    from .callbacks import RunImages
    from .report import TensorBoard

    every, seed = run.cfg.train.checkpoint_every, run.cfg.train.seed
    images = run.cfg.model.images
    out: list[Callback] = [RunImages(run.dataset, every, seed=seed)] if images else []
    if TensorBoard.available():
        out.append(TensorBoard(every, run.dataset if images else None, seed=seed))
    return out


def _interrupted(signum: int, result: TrainResult, checkpointer: Checkpointer,
                 name: str) -> TrainingInterrupted:
    import signal

    what = signal.Signals(signum).name
    if result.run_dir is None:
        msg = f"interrupted by {what} at step {result.step} (no run folder: nothing saved)"
    else:
        msg = (f"interrupted by {what} at step {result.step}; checkpoint "
               f"{checkpointer.latest}; resume with: ali train {shlex.quote(name)} --out "
               f"{shlex.quote(str(result.run_dir))} --resume")
    return TrainingInterrupted(msg, signum, result.step, result)


# The private name of atomic_write, still imported by ali.eval.registry.
_atomic_write = atomic_write
