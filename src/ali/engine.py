"""The training loop, and what its callbacks see.

Each step draws a batch ``x ~ q(x)`` and ``z ~ p(z)``, runs ONE forward pass of the model
(:meth:`~ali.model.GenerativeModel.losses`), takes the gradient of the discriminator loss with
respect to the discriminator's parameters and of the generator loss with respect to the encoder
and decoder's parameters from that same graph, and steps both Adam optimisers at once
(simultaneous 1:1 updates, as the original code): :func:`ali.step.train_step`. Everything else
(logging, checkpoints, the divergence policy, signals, images, TensorBoard) is a
:class:`Callback` with its own interval (:mod:`ali.callbacks`). Nothing in the loop waits on
the device except in callbacks at their intervals.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch


class NonFinite(Exception):
    """A callback found a non-finite loss or parameter (the message says which); the loop
    hands it to the divergence policy, which rolls back or raises."""


class Callback:
    """Something the loop does after a step when :meth:`due` (by default every ``every``
    steps; never when ``every`` is 0). Callbacks that draw random numbers use their own RNG
    (:func:`ali.callbacks.private_rng`), never the training RNG."""

    every: int = 0
    main_only: bool = False
    """Only process 0 of a multi-process run runs it (it writes the run folder)."""

    def due(self, step: int, loop: "Loop") -> bool:
        """Whether to run after step ``step`` (1-based: the number of steps done)."""
        return self.every > 0 and step % self.every == 0

    def __call__(self, step: int, loop: "Loop") -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Release what the callback holds (files, writers); called once, at the end."""


class LossSums:
    """The losses and statistics of the steps since the last log, summed on the device."""

    def __init__(self, runs: int) -> None:
        self.runs = runs
        self.reset()

    def add(self, out: Any) -> None:
        """Add a step's :class:`~ali.model.Losses` (per run: a loss over R runs is a sum)."""
        scalars = {"loss_g": out.g.detach() / self.runs, **out.stats}
        if out.d is not None:
            scalars["loss_d"] = out.d.detach() / self.runs
        for k, v in scalars.items():
            self.sums[k] = self.sums[k] + v if k in self.sums else v.clone()
        self.n += 1

    def reset(self) -> None:
        """Start a new logging interval (now)."""
        self.sums: dict[str, torch.Tensor] = {}
        self.n = 0
        self.since = time.perf_counter()


@dataclass
class Loop:
    """What the callbacks see and share: the run, where the loop stops, the record logged at
    this step (None when none was) and a stop requested by a signal."""

    run: Any
    """The :class:`ali.run.Run` being trained."""
    end: int
    run_dir: Path | None
    callbacks: list[Callback]
    divergence: Any
    """``recover(step, problem, loop) -> step``: roll back, or raise DivergenceError."""
    losses: LossSums
    record: dict[str, Any] | None = None
    signum: int | None = None
    history: list[dict[str, Any]] = field(default_factory=list)


def fit(loop: Loop, start: int) -> int:
    """Train from step ``start`` to ``loop.end`` (or a stop requested by a signal); returns
    the step reached."""
    run, step = loop.run, start
    while step < loop.end:
        run.model.schedule(step, run.total)
        run.set_learning_rates(step)
        x, z, inputs = run.draw()                   # x ~ q(x) (B, *data), z ~ p(z) (B, *latent)
        out = run.stepper(x, z, **inputs)           # one forward, both backward, both steps
        loop.losses.add(out)                        # summed on the device: no host sync
        step += 1
        loop.record = None
        try:
            for callback in loop.callbacks:         # sync, log, images, signals, checkpoint
                if callback.due(step, loop):
                    callback(step, loop)
        except NonFinite as e:                      # the good step to continue from, or raise
            step = loop.divergence.recover(step, str(e), loop)
            continue
        if loop.signum is not None:                 # SIGINT/SIGTERM: a checkpoint was written
            break
    return step
