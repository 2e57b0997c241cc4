"""How a training step runs fast: precision, memory format and compilation (README, "Speed").

:func:`resolve` turns ``train.precision``, ``train.channels_last`` and ``train.compile`` into the
settings of one device; :class:`Stepper` runs :func:`~ali.step.train_step` with them. The
``auto`` values are what was measured to keep quality and speed on each device kind:

- precision: fp32 on every device (:func:`auto_precision`); bf16 and fp16 are opt-in. On the
  2-core AVX-512 machine of the README (avx512_bf16 but no AMX), a large bf16 matrix multiply
  runs at about half the fp32 rate and the bf16 svhn step was slower than fp32; bf16 also lost
  quality on MNIST's reconstructions.
- channels-last: on, on either kind of device (oneDNN's transposed convolutions work in that
  format and made the svhn step about 1.3x faster on the CPU; tensor-core convolutions want it).
- torch.compile: off (it made the CPU step slower).
"""

from __future__ import annotations

import contextlib
import shutil
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
    """fp32 | bf16 | fp16."""
    channels_last: bool
    compile: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def auto_precision(device: torch.device) -> str:
    """What ``train.precision=auto`` means on ``device``: fp32 on every device.

    bf16 kept the 2-D experiment's figures but not MNIST's reconstructions (README, "Speed":
    the class kept by G(z_hat) fell from 71.6% in fp32 to 54.2% in bf16, one run each, same
    code), so mixed precision is opt-in (``train.precision=bf16|fp16``) until it is shown to
    keep quality; on this project's CPU it was also slower.
    """
    return "fp32"


def resolve(t: TrainConfig, device: torch.device, images: bool = True) -> StepSettings:
    """The settings ``t`` asks for on ``device``; ``images``: the networks take (B, C, H, W).

    Raises:
        ConfigError: fp16 on a CPU, or train.compile without the C++ compiler it needs there.
    """
    precision = auto_precision(device) if t.precision == "auto" else t.precision
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError(f"train.precision=fp16 needs a GPU; the device is {device} "
                          "(use bf16 on a CPU)")
    if t.compile and device.type == "cpu" and not (shutil.which("g++") or shutil.which("c++")
                                                   or shutil.which("clang++")):
        raise ConfigError("train.compile=true on a CPU needs a C++ compiler (g++ or clang++) "
                          "on the PATH")
    cl = t.channels_last in ("on", "auto")        # auto: on, on either kind of device
    return StepSettings(precision, cl and images, t.compile)


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
