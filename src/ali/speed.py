"""How a training step runs fast: precision, memory format and compilation (README, "Speed").

:func:`resolve` turns ``train.precision``, ``train.channels_last`` and ``train.compile`` into the
settings of one device; :class:`Stepper` runs :func:`~ali.step.train_step` with them. The
``auto`` values are what was measured to keep quality and speed on each device kind:

- precision: measured on the device at hand (:func:`choose_precision`): a short probe before
  training times the step in fp32 and in bf16 and takes bf16 only where it is clearly faster
  and its losses agree with fp32's. On the 2-core CPUs of the README bf16 ran at 0.7x (AVX-512)
  and 0.1x (AVX2, emulated) of fp32, so ``auto`` is fp32 there.
- channels-last: on, on either kind of device (oneDNN's transposed convolutions work in that
  format and made the svhn step about 1.3x faster on the CPU; tensor-core convolutions want it).
- torch.compile: off (it made the CPU step slower).
"""

from __future__ import annotations

import contextlib
import shutil
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, ContextManager

import torch
from torch import Tensor

from .config import TrainConfig
from .errors import AliError, ConfigError, one_line
from .step import train_step

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class CompileError(AliError):
    """torch.compile could not compile the step (reported as one line)."""


@dataclass(frozen=True)
class StepSettings:
    """The resolved speed settings of a run (recorded in the run's ``config.json``)."""

    precision: str
    """fp32 | bf16 | fp16; ``auto`` until :func:`ali.run.build_run` has probed the device."""
    channels_last: bool
    compile: bool
    precision_auto: dict[str, Any] | None = None
    """How ``train.precision=auto`` chose (``chose``, ``why`` and the probe's timings), or None
    when the precision was set."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def probes_bf16(device: torch.device) -> bool:
    """Whether ``train.precision=auto`` times bf16 on ``device``: on a GPU that has it. A CPU
    keeps fp32 without a probe, so that one command and seed train one model: a timed choice
    follows the machine's load, and on a CPU bf16's gain is small, model-dependent and within
    the timing noise (docs, speed.md). ``train.precision=bf16`` asks for it there."""
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


def hopeless(t: TrainConfig, fp32_first_s: float, bf16_first_s: float) -> bool:
    """Whether the first (warm-up) steps already rule bf16 out: it ran at under half the
    speed-up asked for (emulated bf16 runs several times slower than fp32), so the probe
    spends no more of its slow steps on it."""
    return fp32_first_s / bf16_first_s < t.bf16_min_speedup / 2


def choose_precision(t: TrainConfig, fp32_s: float, bf16_s: float | None,
                     loss_diff: float | None, first_steps: bool = False) -> dict[str, Any]:
    """The rule of ``train.precision=auto``, given the probe's median step times (seconds;
    ``bf16_s`` None when bf16 was not timed) and the largest relative difference between the
    bf16 and fp32 losses of its first step: bf16 when it is ``train.bf16_min_speedup`` times
    faster and its losses agree within ``train.bf16_loss_tolerance``, else fp32.
    ``first_steps``: the times are of the first steps, which :func:`hopeless` found too slow.

    Returns the record kept in ``config.json``: ``chose``, ``why``, ``fp32_ms``, ``bf16_ms``,
    ``speedup`` (fp32 time / bf16 time) and ``loss_rel_diff``.
    """
    rec: dict[str, Any] = {"chose": "fp32", "fp32_ms": round(fp32_s * 1e3, 3),
                           "bf16_ms": None, "speedup": None, "loss_rel_diff": loss_diff}
    if bf16_s is None:
        rec["why"] = (f"the fp32 step takes under train.precision_probe_min_ms="
                      f"{t.precision_probe_min_ms:g} ms: bf16 not timed")
        return rec
    speedup = fp32_s / bf16_s
    rec.update(bf16_ms=round(bf16_s * 1e3, 3), speedup=round(speedup, 4))
    if first_steps:
        rec["why"] = (f"bf16's first step ran at {speedup:.2f}x fp32's speed, under half of "
                      f"train.bf16_min_speedup={t.bf16_min_speedup:g}: not timed further")
        return rec
    if loss_diff is None or not loss_diff <= t.bf16_loss_tolerance:   # NaN fails too
        rec["why"] = (f"bf16 losses differ from fp32's by {loss_diff:.3g} (more than "
                      f"train.bf16_loss_tolerance={t.bf16_loss_tolerance:g})")
    elif speedup < t.bf16_min_speedup:
        rec["why"] = (f"bf16 is {speedup:.2f}x fp32's speed (under "
                      f"train.bf16_min_speedup={t.bf16_min_speedup:g})")
    else:
        rec.update(chose="bf16", why=f"bf16 is {speedup:.2f}x fp32's speed and its losses agree")
    return rec


def resolve(t: TrainConfig, device: torch.device, images: bool = True,
            chosen: str | None = None) -> StepSettings:
    """The settings ``t`` asks for on ``device``; ``images``: the networks take (B, C, H, W).

    ``train.precision=auto`` resolves to ``chosen`` (a resumed run's own choice) when given,
    to fp32 on a device where bf16 is not probed, and otherwise stays ``auto`` for
    :func:`ali.run.build_run` to probe.

    Raises:
        ConfigError: fp16 on a CPU, or train.compile without the C++ compiler it needs there.
    """
    precision, how = t.precision, None
    if precision == "auto":
        if chosen is not None:
            precision, how = chosen, {"chose": chosen, "why": "resumed: the run's own choice"}
        elif not probes_bf16(device):
            why = ("a CPU keeps fp32, so that a run is reproducible (bf16 is opt-in there: "
                   "train.precision=bf16)" if device.type == "cpu" else f"no bf16 on {device}")
            precision, how = "fp32", {"chose": "fp32", "why": why}
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError(f"train.precision=fp16 needs a GPU; the device is {device} "
                          "(use bf16 on a CPU)")
    if t.compile and device.type == "cpu" and not (shutil.which("g++") or shutil.which("c++")
                                                   or shutil.which("clang++")):
        raise ConfigError("train.compile=true on a CPU needs a C++ compiler (g++ or clang++) "
                          "on the PATH")
    cl = t.channels_last in ("on", "auto")        # auto: on, on either kind of device
    return StepSettings(precision, cl and images, t.compile, how)


def sync(device: torch.device) -> None:
    """Wait for ``device``'s queued work (a no-op on a CPU, whose work is synchronous)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_chunk(step: Callable[[], Any], device: torch.device, n: int) -> float:
    """Seconds per call of ``step`` over ``n`` calls (the device synchronised around them)."""
    sync(device)
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    sync(device)
    return (time.perf_counter() - t0) / n


def autocast(device: torch.device, precision: str) -> Callable[[], ContextManager]:
    """A factory of the autocast context of ``precision`` on ``device`` (a no-op for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext
    dtype = DTYPES[precision]
    return lambda: torch.autocast(device.type, dtype=dtype)


def to_channels_last(x: Tensor) -> Tensor:
    """``x`` in channels-last format when it is a batch of images (4-D), else as it is."""
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


def prepare(model: torch.nn.Module, settings: StepSettings, device: torch.device) -> None:
    """Put ``model`` in the memory format of ``settings`` and set the device's backend flags."""
    if settings.channels_last:
        model.to(memory_format=torch.channels_last)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True   # fixed shapes: pick the fastest conv algorithms


class Stepper:
    """One training step with the speed settings of a run: ``stepper(x, z) -> Losses``.

    Autocast covers the forward pass only (the losses are computed in fp32 from the logits);
    fp16 scales both losses with one :class:`torch.amp.GradScaler` (each optimiser skips its
    step when its own gradients overflow; the scale is updated once per step). ``sync`` is
    called after both backward passes and before either optimiser steps (multi-process
    training averages the gradients there).
    """

    def __init__(self, model: Any, opt_d: torch.optim.Optimizer | None,
                 opt_g: torch.optim.Optimizer | None, params_d: list, params_g: list,
                 device: torch.device, settings: StepSettings,
                 sync: Callable[[], None] | None = None) -> None:
        self.model, self.opt_d, self.opt_g = model, opt_d, opt_g
        self.params_d, self.params_g = params_d, params_g
        self.settings, self.sync = settings, sync
        self.autocast = autocast(device, settings.precision)
        self.scaler = (torch.amp.GradScaler(device.type) if settings.precision == "fp16"
                       else None)
        self.forward = model.losses
        self._untried = settings.compile    # the first compiled call compiles
        if settings.compile:
            # Both gradients come from one graph (two backward calls, the first retaining it),
            # which AOTAutograd allows only without donating the forward's buffers.
            import torch._functorch.config as functorch_config

            functorch_config.donated_buffer = False
            self.forward = torch.compile(model.losses)

    def __call__(self, x: Tensor, z: Tensor, **inputs: Any):
        """One step on data ``x`` and prior draws ``z``; ``inputs`` (a conditional model's
        ``y``, a semi-supervised model's ``labelled`` batch) go to ``model.losses``."""
        if self.settings.channels_last:
            x, z = to_channels_last(x), to_channels_last(z)
            if "labelled" in inputs:
                x_l, y_l = inputs["labelled"]
                inputs["labelled"] = (to_channels_last(x_l), y_l)
        step = lambda: train_step(  # noqa: E731
            self.model, x, z, self.opt_d, self.opt_g, self.params_d, self.params_g,
            forward=self.forward, autocast=self.autocast, scaler=self.scaler, sync=self.sync,
            **inputs)
        if not self._untried:
            return step()
        try:
            out = step()
        except Exception as e:  # inductor's errors span pages: one line, and what to do
            raise CompileError(f"torch.compile failed ({type(e).__name__}: {one_line(e)}); "
                               "run without train.compile / --compile") from None
        self._untried = False
        return out

    def state_dict(self) -> dict[str, Any] | None:
        return self.scaler.state_dict() if self.scaler is not None else None

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)
