"""The engine's callbacks (:class:`ali.engine.Callback`): each does one thing at its own interval.

In the order :func:`ali.train.train` runs them after a step:

- :class:`Sync` (multi-process runs): at logging and checkpoint steps, every process agrees on
  a stop, averages the pending losses and takes rank 0's batch-norm statistics;
- :class:`Logger`: a record of the losses every ``train.log_every`` steps to ``metrics.jsonl``
  and stdout; a non-finite record is not written but handed to the divergence policy;
- :class:`Progress`: the progress bar, or without a terminal :class:`ProgressLines`;
- :class:`RunImages`, ``ali.report.TensorBoard`` and :class:`Hooks` (plain functions);
- :class:`Signals`: SIGINT and SIGTERM request a clean stop;
- :class:`Checkpointer`: every ``train.checkpoint_every`` steps, at the end and on a stop, a
  checkpoint, written only when every parameter is finite.

:class:`Divergence` is the policy the loop calls on a non-finite loss or parameter: stop with
a one-line error, or roll back to the last good checkpoint. Callbacks that draw random numbers
do so on their own stream (:func:`private_rng`): writing images never changes the training.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import torch

from . import distributed
from .checkpoint import LATEST, atomic_write, deserialize, prune, serialize, step_checkpoint_name
from .config import TrainConfig
from .engine import Callback, Loop, NonFinite
from .errors import CheckpointError, DivergenceError, one_line
from .run_folder import MetricsFile

Hook = Callable[[int, Any, "Path | None"], None]


def callback_seed(seed: int, name: str, step: int) -> int:
    """The seed of callback ``name``'s random draws at ``step`` of a run seeded ``seed``: the
    same in a straight run and a resumed one, and unrelated to the training RNG."""
    text = f"ali-callback:{name}:{seed}:{step}".encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "little") % 2**63


@contextlib.contextmanager
def private_rng(seed: int, device: torch.device) -> Iterator[None]:
    """Run the block on its own torch RNG stream seeded with ``seed``: the global (training)
    RNG of the CPU and of ``device`` is saved before and restored after, so the block neither
    reads nor advances it."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


def non_finite(model: torch.nn.Module, pending: dict[str, torch.Tensor]) -> str | None:
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


def _every_or_end(step: int, every: int, end: int) -> bool:
    return step % every == 0 or step == end


# ---------------------------------------------------------------------------- logging

class Logger(Callback):
    """Every ``train.log_every`` steps and at ``train.steps``: the mean losses and statistics
    since the last log, the learning rates and the speed, as one record appended to
    ``metrics.jsonl`` (when there is a run folder) and printed (unless quiet or a progress bar
    shows the losses). A non-finite record raises :class:`~ali.engine.NonFinite` before it is
    written: the file never holds NaN, and a rollback continues a clean curve."""

    def __init__(self, t: TrainConfig, run_dir: Path | None, start: int, quiet: bool) -> None:
        self.every, self.total, self.quiet = t.log_every, t.steps, quiet
        self.metrics = MetricsFile(run_dir, start) if run_dir else None
        self.bar = None
        show_bar = t.progress == "on" or (t.progress == "auto" and sys.stderr.isatty())
        if show_bar and not quiet:
            try:
                from tqdm.auto import tqdm
                self.bar = tqdm(total=t.steps, initial=start, unit="step", dynamic_ncols=True)
            except ImportError:
                self.bar = None

    def due(self, step: int, loop: Loop) -> bool:
        return _every_or_end(step, self.every, self.total)

    def __call__(self, step: int, loop: Loop) -> None:
        now, losses = time.perf_counter(), loop.losses
        record: dict[str, Any] = {"step": step}
        record.update({k: float(v) / losses.n for k, v in sorted(losses.sums.items())})
        record.update(loop.run.learning_rates(step - 1))
        record["steps_per_s"] = losses.n / max(now - losses.since, 1e-9)
        bad = [k for k, v in record.items() if not math.isfinite(v)]
        if bad:
            raise NonFinite(f"non-finite {bad[0]}")
        if self.metrics is not None:
            self.metrics.write(record)
        if self.bar is not None:
            self.bar.set_postfix({k: f"{v:.3g}" for k, v in record.items()
                                  if k in ("loss_d", "loss_g", "acc_q", "acc_p")})
        elif not self.quiet:
            print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in record.items()), flush=True)
        loop.history.append(record)
        losses.reset()
        loop.record = record

    def note(self, text: str) -> None:
        """A one-line notice on stderr (rollbacks)."""
        if self.quiet:
            return
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr, flush=True)

    def rolled_back(self, step: int) -> None:
        """The run continues from ``step``: the records after it are dropped, and the bar
        goes back."""
        if self.metrics is not None:
            self.metrics.truncate_after(step)
        if self.bar is not None:
            self.bar.n = step
            self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.metrics is not None:
            self.metrics.close()


class Progress(Callback):
    """Moves the :class:`Logger`'s progress bar on after every step."""

    every = 1

    def __init__(self, logger: Logger) -> None:
        self.logger = logger

    def due(self, step: int, loop: Loop) -> bool:
        return self.logger.bar is not None

    def __call__(self, step: int, loop: Loop) -> None:
        self.logger.bar.update(step - self.logger.bar.n)


class ProgressLines(Callback):
    """Progress without a terminal (nohup, Slurm, a CI log), where the bar is not shown: a
    line after the first step, then whenever ``train.progress_every_s`` seconds have passed
    without one (a log record printed meanwhile counts): the step, the rate since the first
    step, the time left and the mean losses since the last record.

    Deciding is a clock read per step; the losses are read (a host sync) only when a line is
    printed, at most once per interval."""

    every = 1
    SHOWN = ("loss_d", "loss_g", "acc_q", "acc_p")
    """The statistics a line shows (the log records have them all)."""

    def __init__(self, t: TrainConfig, logger: Logger, start: int) -> None:
        self.every_s, self.logger, self.start = t.progress_every_s, logger, start
        self.show = (not logger.quiet and logger.bar is None and t.progress != "off")
        self.first: tuple[int, float] | None = None    # (step, time) after the first step
        self.last = time.perf_counter()

    def due(self, step: int, loop: Loop) -> bool:
        if not self.show:
            return False
        if loop.record is not None:               # the logger has just printed a line
            self.last = time.perf_counter()
            return self.first is None
        return self.first is None or time.perf_counter() - self.last >= self.every_s

    def __call__(self, step: int, loop: Loop) -> None:
        now = time.perf_counter()
        self.last = now
        if self.first is None:
            self.first = (step, now)
            if loop.record is not None:
                return
        done, since = step - self.first[0], now - self.first[1]
        parts = [f"step {step}/{loop.end}"]
        if done > 0 and since > 0:
            rate = done / since
            parts.append(f"{rate:.3g} steps/s, {_duration((loop.end - step) / rate)} left")
        losses = loop.losses
        if losses.n:
            parts.append(" ".join(f"{k}={float(v) / losses.n:.4g}"
                                  for k, v in sorted(losses.sums.items()) if k in self.SHOWN))
        print("progress: " + ", ".join(parts), flush=True)


def _duration(seconds: float) -> str:
    """``seconds`` as 42s, 3m05s or 2h07m."""
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


# ---------------------------------------------------------------------------- hooks

class Hooks(Callback):
    """Plain functions ``hook(step, model, run_dir)``, called after each logged record."""

    main_only = True

    def __init__(self, hooks: Iterable[Hook]) -> None:
        self.hooks = list(hooks)

    def due(self, step: int, loop: Loop) -> bool:
        return bool(self.hooks) and loop.record is not None

    def __call__(self, step: int, loop: Loop) -> None:
        for hook in self.hooks:
            hook(step, loop.run.model, loop.run_dir)


class RunImages(Callback):
    """``samples.png`` and ``reconstructions.png`` of the run folder (and step-stamped copies
    in ``images/``) every ``every`` steps and at the end, drawn on a private RNG stream."""

    main_only = True

    def __init__(self, dataset: Any, every: int, seed: int = 0) -> None:
        self.dataset, self.every, self.seed = dataset, every, seed

    def due(self, step: int, loop: Loop) -> bool:
        return loop.run_dir is not None and _every_or_end(step, self.every, loop.end)

    def __call__(self, step: int, loop: Loop) -> None:
        from .viz import write_run_images

        with private_rng(callback_seed(self.seed, "images", step), loop.run.device):
            write_run_images(loop.run.model, self.dataset, loop.run_dir, step)


# ---------------------------------------------------------------------------- signals

class Signals(Callback):
    """While active (``with signals:``), SIGINT and SIGTERM only record the signal; after the
    step it arrived in, the loop writes a checkpoint and stops. A second signal raises
    KeyboardInterrupt at once (writes are atomic, so nothing on disk is damaged). Only the
    main thread can own signal handlers; in other threads this does nothing.

    In a multi-process run, :class:`Sync` looks at :attr:`signum` instead (every process
    stops at the same step)."""

    every = 1

    def __init__(self, ctx: distributed.Context) -> None:
        self.ctx = ctx
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def due(self, step: int, loop: Loop) -> bool:
        return not self.ctx.enabled and self.signum is not None

    def __call__(self, step: int, loop: Loop) -> None:
        loop.signum = self.signum

    def __enter__(self) -> "Signals":
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


class Sync(Callback):
    """Multi-process runs, at logging and checkpoint steps: every process decides alike, on
    the losses averaged over the processes, rank 0's batch-norm statistics and a signal any
    of them got (a host sync, so only there)."""

    def __init__(self, logger: Logger, checkpointer: "Checkpointer", signals: Signals) -> None:
        self.logger, self.checkpointer, self.signals = logger, checkpointer, signals

    def due(self, step: int, loop: Loop) -> bool:
        return (self.logger.due(step, loop)
                or _every_or_end(step, self.checkpointer.every, loop.end))

    def __call__(self, step: int, loop: Loop) -> None:
        if distributed.agree(self.signals.signum is not None, loop.run.device):
            loop.signum = self.signals.signum or signal.SIGTERM   # another process got it
        loop.losses.sums = distributed.average(loop.losses.sums)
        distributed.broadcast_module(loop.run.model, buffers_only=True)


# ---------------------------------------------------------------------------- checkpoints

class Checkpointer(Callback):
    """Every ``train.checkpoint_every`` steps, at the end and when a stop is requested: a
    checkpoint, only when every parameter (and pending loss) is finite, else
    :class:`~ali.engine.NonFinite` (bad weights never overwrite the last good checkpoint).

    With a run folder it writes ``checkpoints/step-NNNNNNNN.pt`` then ``latest.pt``
    atomically and keeps the newest ``train.keep_checkpoints`` step files. With
    ``keep_in_memory`` (the rollback policy) the last good state is also kept serialised in
    memory, so a run without a folder can roll back too and a rollback never reads the disk.
    """

    def __init__(self, t: TrainConfig, run_dir: Path | None, keep_in_memory: bool,
                 run: Any, start: int, resumed: bool) -> None:
        self.every, self.keep = t.checkpoint_every, t.keep_checkpoints
        self.folder = run_dir / "checkpoints" if run_dir else None
        self.latest = self.folder / LATEST if self.folder else None
        self.saved_step = start if resumed else None
        self.good = (start, serialize(run.state_dict(start))) if keep_in_memory else None

    def due(self, step: int, loop: Loop) -> bool:
        return _every_or_end(step, self.every, loop.end) or loop.signum is not None

    def __call__(self, step: int, loop: Loop) -> None:
        problem = non_finite(loop.run.model, loop.losses.sums)
        if problem is not None:
            raise NonFinite(problem)
        self.save(loop.run, step)

    def where(self) -> str:
        """Where the last good checkpoint is, for messages."""
        return (f"the last good checkpoint is {self.latest} (step {self.saved_step})"
                if self.saved_step is not None else "no checkpoint was written")

    def save(self, run: Any, step: int) -> None:
        if self.good is None and self.latest is None:
            return
        kept = (f"{self.latest} still holds step {self.saved_step}"
                if self.saved_step is not None else "no checkpoint was written")
        try:
            data = serialize(run.state_dict(step))
            if self.good is not None:
                self.good = (step, data)
            if self.folder is not None and self.latest is not None:
                # The step file first: if writing latest.pt then fails, latest.pt still is
                # the previous good checkpoint.
                atomic_write(self.folder / step_checkpoint_name(step), lambda f: f.write(data))
                atomic_write(self.latest, lambda f: f.write(data))
                prune(self.folder, step, self.keep)
                self.saved_step = step
        except OSError as e:
            raise CheckpointError(f"cannot write the checkpoint of step {step}: "
                                  f"{one_line(e)}; {kept}") from e
        except CheckpointError as e:
            raise CheckpointError(f"at step {step}, {e}; {kept}") from e


class Divergence:
    """What a non-finite loss or parameter does: with ``train.on_divergence=rollback`` (and
    fewer than ``train.max_rollbacks`` rollbacks so far, and no stop requested), reload the
    last good state (model, optimisers, data order, RNG) and continue with the learning rates
    multiplied by ``train.rollback_lr_factor``; otherwise raise a one-line
    :class:`~ali.errors.DivergenceError` naming the last good checkpoint."""

    def __init__(self, t: TrainConfig, checkpointer: Checkpointer, logger: Logger,
                 signals: Signals) -> None:
        self.t, self.checkpointer, self.logger, self.signals = t, checkpointer, logger, signals

    def recover(self, step: int, problem: str, loop: Loop) -> int:
        t, run = self.t, loop.run
        # A signal stops instead of rolling back; in a multi-process run only the stop every
        # process agreed on counts (Sync), so that all of them decide alike.
        stopping = loop.signum is not None or (not run.ctx.enabled
                                               and self.signals.signum is not None)
        rollback = t.on_divergence == "rollback"
        if rollback and run.rollbacks < t.max_rollbacks and not stopping:
            assert self.checkpointer.good is not None
            good_step, data = self.checkpointer.good
            # The good state's own scale and count predate this divergence.
            scale, count = run.lr_scale * t.rollback_lr_factor, run.rollbacks + 1
            run.load_state_dict(deserialize(data), "rollback")
            run.lr_scale, run.rollbacks = scale, count
            loop.losses.reset()
            self.logger.rolled_back(good_step)
            loop.history[:] = [r for r in loop.history if r["step"] <= good_step]
            self.logger.note(f"ali: {problem} at step {step}; rolled back to step "
                             f"{good_step} with the learning rates x{run.lr_scale:.4g} "
                             f"(rollback {run.rollbacks} of {t.max_rollbacks})")
            return good_step
        hint = (f"after {run.rollbacks} rollbacks (train.max_rollbacks)" if rollback
                else "lower train.lr or set train.on_divergence=rollback")
        raise DivergenceError(f"training diverged at step {step}: {problem}; "
                              f"{self.checkpointer.where()}; {hint}", step)
