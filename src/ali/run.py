"""Run setup: everything a training run is made of, built in one place (:func:`build_run`).

``ali.train.train`` and ``ali bench`` both build their run here: the dataset's labels resolved
into the config, the model with its data-dependent initialisation, the samplers (the labelled
one of a semi-supervised model included), the speed settings, both optimisers and the step. A
:class:`Run` also holds what a checkpoint saves of it (:meth:`Run.state_dict`) and the one
learning-rate formula (:meth:`Run.learning_rates`).
"""

from __future__ import annotations

import dataclasses
import functools
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from . import __version__, distributed, speed
from .checkpoint import rng_state, set_rng_state
from .config import AUTO_FAMILIES, AUTO_NETS, SHUFFLED_BY_DEFAULT, Config
from .data import (Dataset, ImageSampler, first_items, labelled_subset, load_dataset, make_sampler,
                   probe_shape, with_labels)
from .errors import CheckpointError, ConfigError, one_line
from .build import build_model
from .nets import family, nearest_family
from .step import lr_factor, make_optimizer

# The original code set the decoder's per-pixel output bias from this many training images.
DECODER_BIAS_IMAGES = 500


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global RNGs (the training RNG)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def check_data_shape(cfg: Config, dataset: Dataset) -> None:
    """A one-line error when the data's items do not have the shape the networks expect."""
    want = tuple(family(cfg.model.nets).data_shape(cfg.model))
    have = tuple(dataset.data_shape or tuple(dataset.train.shape[1:]))
    if want[-len(have):] != have:
        raise ConfigError(
            f"dataset {dataset.name!r} has items of shape {list(have)} but config "
            f"{cfg.name!r} ({cfg.model.nets} networks) expects {list(want[-len(have):])}; "
            "choose a config for this image size or set data.image_size / data.channels")


def resolve_shape(cfg: Config, dataset: Dataset | None = None) -> Config:
    """``cfg`` with what the data decides filled in, before the data is loaded:

    - ``model.nets=auto`` (the ``folder`` preset): the family of :data:`~ali.config.AUTO_FAMILIES`
      nearest to the images' channels and size (``data.channels`` / ``data.image_size`` where
      given, else the files'), its latent size where ``model.latent_dim`` is 0, and
      ``data.image_size`` / ``data.channels`` set to the family's, so the images are resized
      to it;
    - a folder or npz file whose images differ from a fixed family's shape: the
      ``data.image_size`` / ``data.channels`` left at 0 set to the family's (images that
      already match keep 0, so older runs resume unchanged).

    A ``dataset`` given from Python is not resized: only the family is chosen from its shape.
    """
    m, d = cfg.model, cfg.data
    auto = m.nets == AUTO_NETS
    if not auto and (not m.images or d.name not in SHUFFLED_BY_DEFAULT or dataset is not None
                     or (d.image_size and d.channels)):
        return cfg
    have = tuple(dataset.data_shape if dataset is not None and dataset.data_shape
                 else probe_shape(d))
    if len(have) != 3:
        raise ConfigError(f"model.nets=auto needs images; data.name={d.name} has items of "
                          f"shape {list(have)}")
    if auto:
        nets = nearest_family(have, tuple(AUTO_FAMILIES))
        m = dataclasses.replace(m, nets=nets, latent_dim=m.latent_dim or AUTO_FAMILIES[nets])
    want = tuple(family(m.nets).data_shape(m))
    if dataset is None and (auto or have != want):
        d = dataclasses.replace(d, image_size=d.image_size or want[1],
                                channels=d.channels or want[0])
        if auto:   # the family decides: the images are resized to it
            d = dataclasses.replace(d, image_size=want[1], channels=want[0])
    return dataclasses.replace(cfg, model=m, data=d)


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
    if k < 1 and not (m.semi_supervised and attributes):
        raise ConfigError(f"{which}=true: cannot tell how many classes {dataset.name} has")
    if m.conditional and not attributes and bool((y < 0).any()):
        raise ConfigError("model.conditional=true needs the label of every training example; "
                          "unset data.labels")
    return with_labels(cfg, k, attributes)


def resolve_data_dim(cfg: Config, dataset: Dataset) -> Config:
    """``cfg`` with ``model.data_dim`` filled in from the dataset's feature vectors where the
    network family takes it (``mlp``) and the config leaves it at 0; a one-line error when a
    set width differs from the data's."""
    m = cfg.model
    if m.images or m.nets == "toy":
        return cfg
    have = tuple(dataset.data_shape or tuple(dataset.train.shape[1:]))
    if len(have) != 1:
        raise ConfigError(f"the {m.nets} networks take feature vectors (N, D); dataset "
                          f"{dataset.name!r} has items of shape {list(have)}")
    if m.data_dim and m.data_dim != have[0]:
        raise ConfigError(f"model.data_dim={m.data_dim} but dataset {dataset.name!r} has "
                          f"{have[0]} features")
    return dataclasses.replace(cfg, model=dataclasses.replace(m, data_dim=have[0]))


def resolve_from_root(cfg: Config) -> Config:
    """``cfg`` with what its data decides and it leaves open filled in from ``data.root``, as
    training fills it: the family of ``model.nets=auto`` (the ``folder`` preset) and an
    ``mlp``'s ``model.data_dim`` (the ``table`` preset), for ``ali arch`` and ``ali bench``,
    which build the networks without training. Without ``data.root``, or with these set,
    ``cfg`` as it is (building the networks then needs them set: a one-line error)."""
    m = cfg.model
    if not cfg.data.root:
        return cfg
    if m.nets == AUTO_NETS:
        cfg = resolve_shape(cfg)
    if cfg.model.nets == "mlp" and not cfg.model.data_dim:
        cfg = resolve_data_dim(cfg, load_dataset(cfg.data))
    return cfg


def init_from_data_(model: Any, dataset: Dataset) -> None:
    """Data-dependent initialisation of what is still as built: the decoder's per-pixel bias
    (zeros), where it has one; a feature-vector model's standardisation (mean 0, std 1), from
    the whole training split. A model given to ``train`` that has them already (``ali.load``,
    to train further) keeps its own: set again, they would overwrite what it learned and move
    its inputs out of the units it was trained in."""
    from .nets.conv import PixelBias, init_decoder_bias_

    biases = [m.bias for m in model.decoder.modules() if isinstance(m, PixelBias)]
    if biases and not any(bool(b.any()) for b in biases):
        x0 = first_items(dataset, DECODER_BIAS_IMAGES)
        init_decoder_bias_(model, x0)
    scaler = getattr(model, "scaler", None)
    if scaler is not None and not scaler.mean.any() and bool((scaler.std == 1).all()):
        scaler.fit_(first_items(dataset, len(dataset.train)))


@dataclass
class Run:
    """A built run: its config (labels resolved), data, model, samplers, optimisers and step.

    ``lr_scale`` and ``rollbacks`` are changed by the divergence policy's rollbacks and saved
    in every checkpoint.
    """

    cfg: Config
    device: torch.device
    ctx: distributed.Context
    dataset: Dataset
    model: Any
    sampler: Any
    labelled_sampler: ImageSampler | None
    settings: speed.StepSettings
    opt_d: torch.optim.Optimizer | None
    opt_g: torch.optim.Optimizer | None
    stepper: speed.Stepper
    batch: int
    """This process's share of train.batch_size."""
    lr_scale: float = 1.0
    rollbacks: int = 0

    @property
    def total(self) -> int:
        """train.steps: the length the schedule follows (``until`` may stop a run earlier)."""
        return self.cfg.train.steps

    def draw(self) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        """The next training batch ``x ~ q(x)`` (B, *data), the prior draws ``z ~ p(z)``
        (B, *latent) and what else the model's losses take: a conditional model's ``y`` (the
        batch's labels), a semi-supervised model's ``labelled`` batch ``(x_l, y_l)``."""
        return draw(self.model, self.sampler, self.labelled_sampler, self.batch)

    def learning_rates(self, step: int) -> dict[str, float]:
        """The learning rates of ``step`` (0-based): ``lr`` of the generator's optimiser and
        ``lr_d`` of the discriminator's, where there is one. The one place of the formula."""
        t = self.cfg.train
        factor = lr_factor(step, t)
        rates = {"lr": t.lr * factor * self.lr_scale}
        if self.opt_d is not None:
            rates["lr_d"] = (t.lr if t.lr_d is None else t.lr_d) * factor * self.lr_scale
        return rates

    def set_learning_rates(self, step: int) -> None:
        """Set both optimisers' learning rates to those of ``step``."""
        rates = self.learning_rates(step)
        for opt, key in ((self.opt_d, "lr_d"), (self.opt_g, "lr")):
            if opt is not None:
                for group in opt.param_groups:
                    group["lr"] = rates[key]

    def state_dict(self, step: int) -> dict[str, Any]:
        """What a checkpoint of ``step`` holds: the model, optimisers, samplers, RNGs, the
        gradient scaler and the divergence policy's learning-rate scale and rollback count."""
        return {"model": self.model.state_dict(), "step": step, "config": self.cfg.to_dict(),
                "opt_d": self.opt_d.state_dict() if self.opt_d else None,
                "opt_g": self.opt_g.state_dict() if self.opt_g else None,
                "sampler": self.sampler.state_dict(), "rng": rng_state(), "version": __version__,
                "labelled_sampler": (self.labelled_sampler.state_dict()
                                     if self.labelled_sampler else None),
                "lr_scale": self.lr_scale, "rollbacks": self.rollbacks,
                "scaler": self.stepper.state_dict(), "precision": self.settings.precision}

    def load_state_dict(self, ckpt: dict[str, Any], name: str) -> int:
        """Restore :meth:`state_dict`'s dict; returns its step. A one-line
        :class:`CheckpointError` when it does not fit this run."""
        try:
            self.model.load_state_dict(ckpt["model"])
            for opt, key in ((self.opt_d, "opt_d"), (self.opt_g, "opt_g")):
                if opt is not None:
                    opt.load_state_dict(ckpt[key])
            self.sampler.load_state_dict(ckpt["sampler"])
            if self.labelled_sampler is not None:
                self.labelled_sampler.load_state_dict(ckpt["labelled_sampler"])
            set_rng_state(ckpt["rng"])
            self.stepper.load_state_dict(ckpt.get("scaler"))
            self.lr_scale = float(ckpt.get("lr_scale", 1.0))
            self.rollbacks = int(ckpt.get("rollbacks", 0))
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as e:
            raise CheckpointError(f"{name} does not fit this model ({type(e).__name__}: "
                                  f"{one_line(e)})") from None
        return int(ckpt["step"])

    def record(self) -> dict[str, Any]:
        """How this process runs (``config.json``'s ``run`` section)."""
        return {"world_size": self.ctx.world_size, "batch_per_process": self.batch,
                "device": str(self.device), **self.settings.to_dict(),
                "torch": torch.__version__, "ali": __version__}

    def close(self) -> None:
        """Release the samplers' resources (a streaming sampler's DataLoader workers)."""
        for sampler in (self.sampler, self.labelled_sampler):
            if sampler is not None:
                sampler.close()


def draw(model: Any, sampler: Any, labelled_sampler: Any,
         batch: int) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """One training draw: see :meth:`Run.draw`."""
    inputs: dict[str, Any] = {}
    x = sampler.next()
    if isinstance(x, tuple):                        # conditional: (x, y) ~ q(x, y)
        x, inputs["y"] = x
    if labelled_sampler is not None:                # (x_l, y_l): (Bl, *data), (Bl,)
        inputs["labelled"] = labelled_sampler.next()
    return x, model.sample_prior(batch), inputs


def _draw_aside(model: Any, sampler: Any, labelled_sampler: Any,
                batch: int) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """One training draw that leaves both samplers where they were (the caller forks the RNG
    that the prior draws use)."""
    states = [(s, s.state_dict()) for s in (sampler, labelled_sampler) if s is not None]
    try:
        return draw(model, sampler, labelled_sampler, batch)
    finally:
        for s, state in states:
            s.load_state_dict(state)


def probe_precision(model: Any, draw_batch: Any, settings: speed.StepSettings, t: Any,
                    device: torch.device, ctx: distributed.Context) -> speed.StepSettings:
    """``train.precision=auto``: time the training step of copies of ``model`` in fp32 and
    bf16 on one batch from ``draw_batch()`` and decide by :func:`ali.speed.choose_precision`.

    The model, its samplers and every RNG are left as they were, so a run that keeps fp32
    trains exactly as one with ``train.precision=fp32``. In a multi-process run rank 0 probes
    and every process takes its choice.
    """
    import copy
    import statistics

    rec: dict[str, Any] = {}
    if ctx.main:
        devices = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            x, z, inputs = draw_batch()
            steppers, first, warm = {}, {}, {}
            for p in ("fp32", "bf16"):
                m = copy.deepcopy(model)
                pd, pg = m.parameters_d(), m.parameters_g()
                steppers[p] = speed.Stepper(
                    m, make_optimizer(pd, t, t.lr if t.lr_d is None else t.lr_d),
                    make_optimizer(pg, t), pd, pg, device,
                    dataclasses.replace(settings, precision=p, compile=False))
                torch.manual_seed(t.seed)       # the same dropout masks for both
                outs: list = []                 # the first step: also the warm-up
                warm[p] = speed.time_chunk(
                    lambda p=p, outs=outs: outs.append(steppers[p](x, z, **inputs)), device, 1)
                first[p] = [float(v.detach()) for v in (outs[0].d, outs[0].g) if v is not None]
            diff = max(abs(b - f) / max(abs(f), 1e-12)
                       for f, b in zip(first["fp32"], first["bf16"]))

            def timed(p: str) -> float:
                return speed.time_chunk(lambda: steppers[p](x, z, **inputs), device, 1)

            fp32_s = [timed("fp32")]
            if fp32_s[0] * 1e3 < t.precision_probe_min_ms:
                rec = speed.choose_precision(t, fp32_s[0], None, diff)
            elif speed.hopeless(t, warm["fp32"], warm["bf16"]):
                rec = speed.choose_precision(t, warm["fp32"], warm["bf16"], diff,
                                             first_steps=True)
            else:
                bf16_s = []
                for i in range(t.precision_probe_steps):    # interleaved: drift hits both
                    bf16_s.append(timed("bf16"))
                    if i:
                        fp32_s.append(timed("fp32"))
                rec = speed.choose_precision(t, statistics.median(fp32_s),
                                             statistics.median(bf16_s), diff)
    bf16 = distributed.agree(rec.get("chose") == "bf16", device)
    if not ctx.main:
        rec = {"chose": "bf16" if bf16 else "fp32", "why": "rank 0's probe"}
    return dataclasses.replace(settings, precision="bf16" if bf16 else "fp32",
                               precision_auto=rec)


def build_run(cfg: Config, device: torch.device, ctx: distributed.Context | None = None,
              dataset: Dataset | None = None, model: Any = None,
              init_from_data: bool = True, precision: str | None = None) -> Run:
    """Build the run of ``cfg`` on ``device``: seed the training RNG with ``train.seed``, load
    the dataset (unless given), resolve its labels into the config, build the model (unless
    given) and initialise it from the data (unless ``init_from_data`` is false: a resumed run
    loads its parameters), and make the samplers, speed settings, optimisers and step.

    ``ctx``: this process's place in a multi-process run (each process samples its share of
    every batch and averages the gradients); single-process when None. ``precision``: what
    ``train.precision=auto`` chose when the run started (a resumed run keeps it; None probes).
    """
    ctx = ctx or distributed.Context()
    t = cfg.train
    seed_everything(t.seed)
    batch = distributed.local_batch(t.batch_size, ctx)
    cfg = resolve_shape(cfg, dataset)
    if dataset is None:
        dataset = load_dataset(cfg.data)
    elif dataset.config is not None and dataset.config != cfg.data:
        # Record the data actually trained on (a dataset loaded with other settings and given
        # from Python), so that every command reading the run folder finds it.
        cfg = dataclasses.replace(cfg, data=dataset.config)
    cfg = resolve_data_dim(resolve_labels(cfg, dataset), dataset)
    if model is None:
        model = build_model(cfg)
    model.to(device).train()
    check_data_shape(cfg, dataset)
    if init_from_data:
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
    settings = speed.resolve(t, device, images, chosen=precision)
    speed.prepare(model, settings, device)
    if settings.precision == "auto":
        settings = probe_precision(
            model, functools.partial(_draw_aside, model, sampler, labelled_sampler, batch),
            settings, t, device, ctx)

    params_d, params_g = model.parameters_d(), model.parameters_g()
    opt_d = make_optimizer(params_d, t, t.lr if t.lr_d is None else t.lr_d)
    opt_g = make_optimizer(params_g, t)
    stepper = speed.Stepper(model, opt_d, opt_g, params_d, params_g, device, settings,
                            sync=distributed.GradientAverager(list(model.parameters()))
                            if ctx.enabled else None)
    return Run(cfg, device, ctx, dataset, model, sampler, labelled_sampler, settings, opt_d,
               opt_g, stepper, batch)
