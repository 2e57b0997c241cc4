"""Multi-process data-parallel training on ``torch.distributed`` (README, "Multi-process").

``torchrun --standalone --nproc_per_node=N -m ali train NAME`` starts N copies of the engine;
:func:`init` reads the variables torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) and
joins the process group: NCCL on GPUs (process ``LOCAL_RANK`` uses ``cuda:LOCAL_RANK``), gloo on
CPUs. Outside torchrun everything here is a no-op and training is single-process.

Why not :class:`torch.nn.parallel.DistributedDataParallel` itself: the engine's step takes two
gradients from ONE forward pass (``L_d`` w.r.t. the discriminator, ``L_g`` w.r.t. the encoder
and decoder, ``backward(inputs=...)`` twice), and DDP's reducer expects one backward pass per
forward over all parameters. So the step does what DDP does, with the same collectives:

- the parameters and buffers are broadcast from rank 0 when training starts;
- after both backward passes and before either optimiser steps, the gradients of every
  parameter are averaged over the processes with one ``all_reduce`` of a flat buffer
  (:class:`GradientAverager`); every process then takes the same Adam step, so the parameters
  stay identical;
- batch norm normalises each process's own batch (as DDP without SyncBatchNorm) and its running
  statistics are rank 0's: they are broadcast from rank 0 before every checkpoint (DDP's
  ``broadcast_buffers``, done where the buffers are read).

``train.batch_size`` is the global batch: each process draws its ``batch_size / world_size``
share of the same global batch (one shared data order, so a run can be resumed with another
number of processes and sees the data it would have seen) and its own z and dropout noise.
Only rank 0 writes the run folder; the logged losses are averages over the processes.
"""

from __future__ import annotations

import hashlib
import importlib
import os
from dataclasses import dataclass

import torch
from torch import nn

from .errors import ConfigError


@dataclass(frozen=True)
class Context:
    """Where this process stands in a multi-process run (rank 0 of 1 when single-process)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        """Rank 0: the process that writes the run folder and prints."""
        return self.rank == 0


def from_env() -> Context:
    """The context torchrun's environment variables describe (single-process without them)."""
    try:
        return Context(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                       int(os.environ.get("LOCAL_RANK", 0)))
    except ValueError:
        raise ConfigError("RANK, WORLD_SIZE and LOCAL_RANK must be integers (set by torchrun)"
                          ) from None


def _dist():
    import torch.distributed as dist

    return dist


def active() -> bool:
    """Whether this process is in an initialised process group."""
    dist = _dist()
    return dist.is_available() and dist.is_initialized()


def resolve_device(name: str | torch.device, mps: bool = False) -> torch.device:
    """The device ``train.device`` (or a command's ``--device``, or ``ali.load``'s ``device``)
    names: ``auto`` is cuda when available, else (with ``mps``: the commands that only run a
    trained model) Apple's mps, else cpu. Training leaves mps out of ``auto``: some of its
    operations are missing there. A device this process cannot use is a one-line
    :class:`~ali.errors.ConfigError` here, not torch's error at the first tensor moved."""
    name = str(name)
    backend = getattr(torch.backends, "mps", None)
    has_mps = backend is not None and backend.is_available()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if mps and has_mps else "cpu")
    known = "auto, cpu, cuda, cuda:N" + (", mps" if mps else "")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r} (known: {known})") from None
    if dev.type not in ("cpu", "cuda", *(("mps",) if mps else ())):
        raise ConfigError(f"unknown device {name!r} (known: {known})")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name} but no CUDA device is available")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"device {name} but only {torch.cuda.device_count()} CUDA "
                              "device(s) are visible")
    if dev.type == "mps" and not has_mps:
        raise ConfigError(f"device {name} but this PyTorch has no usable mps backend")
    return dev


def init(device: str) -> tuple[Context, torch.device, bool]:
    """Join the process group torchrun describes and pick this process's device.

    Returns (context, device, whether this call created the process group).
    """
    ctx = from_env()
    if not ctx.enabled:
        return ctx, resolve_device(device), False
    dev = resolve_device(device)
    if dev.type == "cuda":
        if dev.index is None:
            dev = torch.device("cuda", ctx.local_rank % torch.cuda.device_count())
        torch.cuda.set_device(dev)
    if active():
        return ctx, dev, False
    dist = _dist()
    # torch.distributed.nn.functional binds the default group into its functions' default
    # arguments when it is imported, and torch imports it lazily (the optimisers' first
    # add_param_group imports torch._dynamo, which imports it). Imported after the group
    # exists, it would keep the group alive past destroy_process_group: the gloo threads then
    # outlive the run, and one freeing its last work while the interpreter shuts down aborts
    # the process ("terminate called without an active exception", now and then, after a
    # finished run). Imported first, its defaults hold no group.
    importlib.import_module("torch.distributed.nn.functional")
    backend = "nccl" if dev.type == "cuda" else "gloo"
    kwargs = {"device_id": dev} if dev.type == "cuda" else {}
    dist.init_process_group(backend=backend, **kwargs)
    return ctx, dev, True


def shutdown() -> None:
    """Leave the process group (after a run started by :func:`init`)."""
    if active():
        _dist().destroy_process_group()


def barrier() -> None:
    """Wait until every process gets here (nothing to wait for outside a process group)."""
    if active():
        _dist().barrier()


def local_batch(batch_size: int, ctx: Context) -> int:
    """Each process's share of the global batch ``train.batch_size``."""
    if batch_size % ctx.world_size:
        raise ConfigError(f"train.batch_size={batch_size} does not split evenly over "
                          f"{ctx.world_size} processes; choose a multiple of {ctx.world_size}")
    return batch_size // ctx.world_size


def rank_seed(seed: int, rank: int, step: int) -> int:
    """The RNG seed of process ``rank`` (> 0) when a run starts or resumes at ``step``."""
    text = f"ali-rank:{seed}:{rank}:{step}".encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "little") % 2**63


def _through_flat(tensors: list[torch.Tensor], collective) -> None:
    """Run ``collective(flat)`` on one flat buffer per dtype of ``tensors``, then copy the
    result back into them (one message instead of one per tensor)."""
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for t in tensors:
        by_dtype.setdefault(t.dtype, []).append(t)
    for group in by_dtype.values():
        flat = torch.cat([t.reshape(-1) for t in group])
        collective(flat)
        for t, part in zip(group, flat.split([t.numel() for t in group])):
            t.copy_(part.view_as(t))


def _all_reduce_mean(flat: torch.Tensor) -> None:
    dist = _dist()
    dist.all_reduce(flat)
    flat /= dist.get_world_size()


def broadcast_(tensors: list[torch.Tensor]) -> None:
    """Copy rank 0's values of ``tensors`` into every process, in place."""
    if active() and tensors:
        _through_flat(tensors, lambda flat: _dist().broadcast(flat, src=0))


@torch.no_grad()
def broadcast_module(module: nn.Module, buffers_only: bool = False) -> None:
    """Rank 0's parameters (unless ``buffers_only``) and buffers in every process."""
    tensors = [] if buffers_only else [p.data for p in module.parameters()]
    broadcast_(tensors + [b for b in module.buffers()])


class GradientAverager:
    """``averager()`` replaces each parameter's gradient by its mean over the processes."""

    def __init__(self, params: list[nn.Parameter]) -> None:
        self.params = params

    @torch.no_grad()
    def __call__(self) -> None:
        grads = [p.grad for p in self.params if p.grad is not None]
        if grads:
            _through_flat(grads, _all_reduce_mean)


@torch.no_grad()
def average(values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The mean over the processes of each scalar tensor in ``values`` (same keys on all)."""
    if not active() or not values:
        return values
    keys = sorted(values)
    flat = torch.stack([values[k].detach().float().reshape(()) for k in keys])
    _all_reduce_mean(flat)
    return dict(zip(keys, flat.unbind()))


def agree(flag: bool, device: torch.device) -> bool:
    """True on every process when ``flag`` is true on any (a host sync: use it rarely)."""
    if not active():
        return flag
    t = torch.tensor([int(flag)], device=device)
    _dist().all_reduce(t, op=_dist().ReduceOp.MAX)
    return bool(t.item())
