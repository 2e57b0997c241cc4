"""One training step: both players' updates from ONE forward pass, and their optimisers.

:func:`train_step` is what the engine (:mod:`ali.engine`), ``ali bench`` and the benchmarks
run; :class:`ali.speed.Stepper` runs it with a run's speed settings.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable

import torch

from .config import TrainConfig


def make_optimizer(params: list[torch.nn.Parameter], t: TrainConfig,
                   lr: float | None = None) -> torch.optim.Adam | None:
    """Adam with the config's learning rate (or ``lr``) and PyTorch-convention betas; None
    when there are no parameters (a model without that player)."""
    if not params:
        return None
    lr = t.lr if lr is None else lr
    try:  # the fused kernel (one pass over all parameters) where this PyTorch has it
        return torch.optim.Adam(params, lr=lr, betas=(t.beta1, t.beta2), fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(params, lr=lr, betas=(t.beta1, t.beta2))


def lr_factor(step: int, t: TrainConfig) -> float:
    """Multiplier of the learning rates at ``step`` under train.lr_schedule."""
    if t.lr_schedule == "linear":
        return max(0.0, 1.0 - step / t.steps)
    return 1.0


def train_step(model: Any, x: torch.Tensor, z: torch.Tensor,
               opt_d: torch.optim.Optimizer | None, opt_g: torch.optim.Optimizer | None,
               params_d: list[torch.nn.Parameter], params_g: list[torch.nn.Parameter], *,
               forward: Callable[..., Any] | None = None,
               autocast: Callable[[], contextlib.AbstractContextManager] | None = None,
               scaler: torch.amp.GradScaler | None = None,
               sync: Callable[[], None] | None = None, **inputs: Any) -> Any:
    """One simultaneous update of both players from ONE forward pass; returns the
    :class:`~ali.model.Losses`.

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
