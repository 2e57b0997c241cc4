"""The one training engine for every model of the project.

Each step draws a batch ``x ~ q(x)`` and ``z ~ p(z)``, runs ONE forward pass of the model
(:meth:`~ali.model.GenerativeModel.losses`), takes the gradient of the discriminator loss with
respect to the discriminator's parameters and of the generator loss with respect to the encoder
and decoder's parameters from that same graph, and steps both Adam optimisers at once
(simultaneous 1:1 updates, as the original code). Nothing in the loop waits on the device except
at logging intervals.
"""

from __future__ import annotations

import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch

from . import __version__
from .config import Config, TrainConfig
from .data import Dataset, first_items, load_dataset, make_sampler
from .errors import CheckpointError, ConfigError
from .model import GenerativeModel, Losses
from .nets import build_model, family

# The original code set the decoder's per-pixel output bias from this many training images.
DECODER_BIAS_IMAGES = 500

Hook = Callable[[int, GenerativeModel, "Path | None"], None]


def resolve_device(name: str) -> torch.device:
    """``auto`` is cuda when available, else cpu."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        from .errors import ConfigError
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

def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
             "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save to a temporary file, flush and fsync, then rename over ``path``.

    A reader never sees a half-written file: either the old checkpoint or the new one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load_checkpoint(path: Path | str) -> dict[str, Any]:
    """Load a checkpoint written by :func:`train`, with a clear error if it is unusable."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # a truncated or foreign file: say so in one line
        raise CheckpointError(f"cannot read checkpoint {path}: {type(e).__name__}: {e}") from None
    if not isinstance(ckpt, dict) or not {"model", "step", "config"} <= set(ckpt):
        raise CheckpointError(f"{path} is not an ali checkpoint")
    return ckpt


def load_run(run_dir: Path | str, device: str = "cpu") -> tuple[GenerativeModel, Config, int]:
    """The trained model of a run folder (from ``checkpoints/latest.pt``), in eval mode."""
    ckpt = load_checkpoint(Path(run_dir) / "checkpoints" / "latest.pt")
    cfg = Config.from_dict(ckpt["config"])
    model = build_model(cfg)
    model.load_state_dict(ckpt["model"])
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


def init_from_data_(model: GenerativeModel, dataset: Dataset) -> None:
    """Data-dependent initialisation: the decoder's per-pixel bias, where it has one."""
    from .nets.conv import PixelBias, init_decoder_bias_

    if any(isinstance(m, PixelBias) for m in model.decoder.modules()):
        x0 = first_items(dataset, DECODER_BIAS_IMAGES)
        init_decoder_bias_(model, x0)


def train_step(model: GenerativeModel, x: torch.Tensor, z: torch.Tensor,
               opt_d: torch.optim.Optimizer | None, opt_g: torch.optim.Optimizer | None,
               params_d: list[torch.nn.Parameter], params_g: list[torch.nn.Parameter]) -> Losses:
    """One simultaneous update of both players from ONE forward pass.

    The discriminator loss is differentiated w.r.t. the discriminator's parameters only and the
    generator loss w.r.t. the encoder's and decoder's only, both from the same graph; neither
    optimiser steps before both backward passes are done, so no saved tensor is modified in
    place (the bug of ports that step D before G's backward).
    """
    out = model.losses(x, z)
    for opt in (opt_d, opt_g):
        if opt is not None:
            opt.zero_grad(set_to_none=True)
    if out.d is not None:
        out.d.backward(inputs=params_d, retain_graph=True)
    out.g.backward(inputs=params_g)
    for opt in (opt_d, opt_g):
        if opt is not None:
            opt.step()
    return out


# Keys that may change when a run is resumed: how long it runs and how it reports.
RESUMABLE_KEYS = {"train.steps", "train.log_every", "train.checkpoint_every", "train.progress",
                  "train.device"}


def config_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``key: saved -> current`` for each setting that differs and may not change on resume."""
    out = []
    for section in ("name", "model", "data", "train"):
        a, b = saved.get(section), current.get(section)
        if not isinstance(a, dict) or not isinstance(b, dict):
            if a != b:
                out.append(f"{section}: {a!r} -> {b!r}")
            continue
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
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()
        if self.bar is not None:
            self.bar.set_postfix({k: f"{v:.3g}" for k, v in record.items()
                                  if k in ("loss_d", "loss_g", "acc_q", "acc_p")})
        elif not self.quiet:
            print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in record.items()), flush=True)

    def advance(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.file:
            self.file.close()


def train(cfg: Config, *, run_dir: Path | str | None = None, resume: bool = False,
          model: GenerativeModel | None = None, dataset: Dataset | None = None,
          quiet: bool = False, hooks: Iterable[Hook] = (), until: int | None = None) -> TrainResult:
    """Train ``cfg`` and return the trained model.

    Args:
        cfg: the run's configuration.
        run_dir: where ``config.json``, ``metrics.jsonl`` and ``checkpoints/`` go; None keeps
            everything in memory.
        resume: continue from ``run_dir/checkpoints/latest.pt``.
        model, dataset: built from ``cfg`` when not given.
        quiet: no stdout output (the metrics file is still written).
        hooks: callables ``hook(step, model, run_dir)`` run at every logging interval.
        until: stop (with a checkpoint) after this many steps instead of ``train.steps``; the
            schedule still follows ``train.steps``, so a later ``resume`` continues exactly.
    """
    t = cfg.train
    device = resolve_device(t.device)
    seed_everything(t.seed)
    run_dir = Path(run_dir) if run_dir is not None else None

    if model is None:
        model = build_model(cfg)
    model.to(device).train()
    if dataset is None:
        dataset = load_dataset(cfg.data)
    check_data_shape(cfg, dataset)
    if not resume:
        init_from_data_(model, dataset)
    sampler = make_sampler(dataset, t.batch_size, model.runs, seed=t.seed, device=device)

    params_d, params_g = model.parameters_d(), model.parameters_g()
    lr_d = t.lr if t.lr_d is None else t.lr_d
    opt_d, opt_g = make_optimizer(params_d, t, lr_d), make_optimizer(params_g, t)
    base_lr = [(o, lr) for o, lr in ((opt_d, lr_d), (opt_g, t.lr)) if o is not None]

    start = 0
    ckpt_path = run_dir / "checkpoints" / "latest.pt" if run_dir else None
    if resume:
        if ckpt_path is None:
            raise CheckpointError("--resume needs a run folder")
        ckpt = load_checkpoint(ckpt_path)
        diff = config_differences(ckpt["config"], cfg.to_dict())
        if diff:
            raise CheckpointError(f"{ckpt_path} was written by a different config "
                                  f"({diff[0]}); resume with the run's own settings")
        model.load_state_dict(ckpt["model"])
        for opt, key in ((opt_d, "opt_d"), (opt_g, "opt_g")):
            if opt is not None:
                opt.load_state_dict(ckpt[key])
        sampler.load_state_dict(ckpt["sampler"])
        _set_rng_state(ckpt["rng"])
        start = int(ckpt["step"])
    if run_dir:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(cfg.to_json() + "\n")

    def save(step: int) -> None:
        if ckpt_path is None:
            return
        atomic_save({
            "model": model.state_dict(), "step": step, "config": cfg.to_dict(),
            "opt_d": opt_d.state_dict() if opt_d else None,
            "opt_g": opt_g.state_dict() if opt_g else None,
            "sampler": sampler.state_dict(), "rng": _rng_state(), "version": __version__,
        }, ckpt_path)

    logger = _Logger(run_dir, t, start, quiet)
    history: list[dict[str, Any]] = []
    sums: dict[str, torch.Tensor] = {}
    n_sum, t_log, t0 = 0, time.perf_counter(), time.perf_counter()
    step = start
    try:
        end = t.steps if until is None else min(until, t.steps)
        for step in range(start, end):
            model.schedule(step, t.steps)
            for opt, lr in base_lr:
                for group in opt.param_groups:
                    group["lr"] = lr * lr_factor(step, t)
            x = sampler.next()                              # (B, *data) ~ q(x)
            z = model.sample_prior(t.batch_size)            # (B, *latent) ~ p(z)
            out = train_step(model, x, z, opt_d, opt_g, params_d, params_g)

            scalars = {"loss_g": out.g.detach() / model.runs, **out.stats}
            if out.d is not None:
                scalars["loss_d"] = out.d.detach() / model.runs
            for k, v in scalars.items():
                sums[k] = sums[k] + v if k in sums else v.clone()
            n_sum += 1

            done = step + 1
            if done % t.log_every == 0 or done == t.steps:
                now = time.perf_counter()
                record: dict[str, Any] = {"step": done}
                record.update({k: float(v) / n_sum for k, v in sorted(sums.items())})
                record["lr"] = t.lr * lr_factor(step, t)
                if opt_d is not None:
                    record["lr_d"] = lr_d * lr_factor(step, t)
                record["steps_per_s"] = n_sum / max(now - t_log, 1e-9)
                if not all(math.isfinite(v) for v in record.values()):
                    logger.log(record)
                    raise FloatingPointError(f"non-finite loss at step {done}: {record}")
                logger.log(record)
                history.append(record)
                sums, n_sum, t_log = {}, 0, now
                for hook in hooks:
                    hook(done, model, run_dir)
            if done % t.checkpoint_every == 0 and done != end:
                save(done)
            logger.advance(1)
        step = end
        save(step)
    finally:
        logger.close()
    model.eval()
    return TrainResult(model, step, run_dir, time.perf_counter() - t0, history)
