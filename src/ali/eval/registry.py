"""The metric registry behind ``ali eval RUN_DIR --metric NAME``.

A metric is one function ``fn(ctx, opts) -> dict`` registered by name with its own command-line
options::

    from ali.eval.registry import metric, option

    @metric("classify", "test error of a semi-supervised run's K+1 discriminator",
            option("--batch-size", type=int, default=500, help="images per forward pass"))
    def classify(ctx, opts):
        ...
        return {"error": 12.3}

``ctx`` is an :class:`EvalContext` (the run's model, config, data, pixel classifier); ``opts``
an ``argparse.Namespace`` holding the metric's options, defaults filled in. The result is
written to ``RUN_DIR/eval/NAME.json`` (``NAME-VARIANT.json`` where the metric names a variant,
e.g. ``svm-pixels.json``) with ``metric``, ``step``, ``seconds`` and ``options`` added. Modules
listed in :data:`MODULES` are imported to register their metrics; add yours there.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

from ..errors import AliError

MODULES = ("ali.eval.metrics",)
"""Modules whose import registers metrics."""


@dataclass(frozen=True)
class Option:
    """One command-line option of a metric: ``argparse`` arguments plus its default."""

    flags: tuple[str, ...]
    kwargs: dict[str, Any]
    default: Any = None

    @property
    def dest(self) -> str:
        return self.kwargs.get("dest") or self.flags[0].lstrip("-").replace("-", "_")


def count(text: str) -> int:
    """An option's type for a count (items, a batch size, repeats): an integer of at least 1,
    so that a bad one is refused by the command line in one line, not deep in a metric."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1; got {value}")
    return value


def option(*flags: str, default: Any = None, **kwargs: Any) -> Option:
    """An option for :func:`metric` (the arguments of ``ArgumentParser.add_argument``)."""
    return Option(tuple(flags), kwargs, default)


@dataclass(frozen=True)
class Metric:
    name: str
    func: Callable[["EvalContext", argparse.Namespace], dict[str, Any]]
    help: str
    options: tuple[Option, ...] = ()
    variant: Callable[[argparse.Namespace], str | None] | None = None
    """The result file's suffix for these options (None: ``NAME.json``)."""
    ensembles: bool = False
    """Whether it measures a run-batched model (``model.runs`` > 1) as one ensemble; every
    other metric refuses such a run."""


METRICS: dict[str, Metric] = {}


def metric(name: str, help: str, *options: Option,
           variant: Callable[[argparse.Namespace], str | None] | None = None,
           ensembles: bool = False):
    """Register ``fn(ctx, opts) -> dict`` as the metric ``name``."""
    def deco(fn):
        METRICS[name] = Metric(name, fn, help, tuple(options), variant, ensembles)
        return fn
    return deco


def metrics() -> dict[str, Metric]:
    """Every registered metric, by name."""
    for mod in MODULES:
        importlib.import_module(mod)
    return METRICS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Every metric's options on ``parser`` (an option shared by several metrics once), each
    help text prefixed with the metrics it applies to and followed by their defaults."""
    users: dict[str, list[tuple[str, Option]]] = {}
    for m in metrics().values():
        for o in m.options:
            users.setdefault(o.dest, []).append((m.name, o))
    group = parser.add_argument_group("metric options (each applies to the metrics in brackets)")
    for dest, uses in users.items():
        o = uses[0][1]
        kw = dict(o.kwargs)
        kw["help"] = f"[{', '.join(n for n, _ in uses)}] {kw.get('help', '')}".strip()
        defaults = {n: u.default for n, u in uses
                    if u.default is not None and u.kwargs.get("action") != "store_true"}
        if len(set(map(str, defaults.values()))) == 1:
            kw["help"] += f" (default {next(iter(defaults.values()))})"
        elif defaults:
            kw["help"] += " (default " + "; ".join(f"{n}: {d}" for n, d in defaults.items()) + ")"
        group.add_argument(*o.flags, default=None, **kw)


def resolve(m: Metric, args: argparse.Namespace) -> argparse.Namespace:
    """``m``'s options from the parsed ``args``: defaults filled in; an option given that does
    not apply to ``m`` is a one-line error."""
    own = {o.dest for o in m.options}
    for ms in metrics().values():
        for o in ms.options:
            if o.dest not in own and getattr(args, o.dest, None) not in (None, False):
                raise AliError(f"{o.flags[0]} does not apply to --metric {m.name}")
    return argparse.Namespace(**{o.dest: o.default if getattr(args, o.dest, None) is None
                                 else getattr(args, o.dest) for o in m.options})


def get(name: str) -> Metric:
    known = metrics()
    if name not in known:
        import difflib

        close = difflib.get_close_matches(name, known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise AliError(f"unknown metric {name!r} (known: {', '.join(known)}){hint}")
    return known[name]


@dataclass
class EvalContext:
    """What a metric works on: a trained run and its data."""

    run_dir: Path
    overrides: list[str] = field(default_factory=list)
    """``section.key=value`` overrides of the run's config (e.g. ``data.root=...``)."""
    device: str = "cpu"
    seed: int = 0
    quiet: bool = False

    def log(self, text: str) -> None:
        if not self.quiet:
            print(text, file=sys.stderr, flush=True)

    @cached_property
    def _run(self):
        from ..checkpoint import load_run

        return load_run(self.run_dir, self.device)

    @property
    def model(self):
        return self._run[0]

    @property
    def step(self) -> int:
        return self._run[2]

    @cached_property
    def cfg(self):
        """The run's config with the overrides applied; every training label visible
        (``data.labels=0``: hiding labels is a training setting)."""
        from ..config import apply_overrides

        return apply_overrides(self._run[1], ["data.labels=0", *self.overrides])

    @property
    def nets(self) -> str:
        return self.cfg.model.nets

    @cached_property
    def dataset(self):
        from ..data import load_dataset

        data = load_dataset(self.cfg.data)
        want, got = self.model.data_shape, data.data_shape
        # images of another shape (data.root pointed elsewhere) would fail deep in a network,
        # or worse be compared with the model's samples as if alike
        if want is not None and got is not None and len(want) == 3 and \
                tuple(got) != tuple(want):
            raise AliError(f"the data's images are {'x'.join(map(str, got))}; this run's model "
                           f"takes {'x'.join(map(str, want))} (data.image_size and "
                           "data.channels convert them)")
        return data

    @property
    def eval_dir(self) -> Path:
        return Path(self.run_dir) / "eval"

    def held_out(self):
        """The held-out split (the training split where there is none) and its labels."""
        d = self.dataset
        return (d.test, d.test_labels) if d.test is not None else (d.train, d.train_labels)

    def classifier(self, path: str | Path | None = None, epochs: int = 10):
        """(the project's pixel classifier, its meta): from ``path`` (default
        ``RUN_DIR/eval/classifier.pt``), trained there first if it does not fit this data."""
        from .pixel_classifier import load_or_train

        path = Path(path) if path else self.eval_dir / "classifier.pt"
        return load_or_train(path, self.dataset, self.cfg.data, self.seed, epochs, self.log)


def result_path(run_dir: Path | str, m: Metric, opts: argparse.Namespace) -> Path:
    variant = m.variant(opts) if m.variant else None
    return Path(run_dir) / "eval" / (f"{m.name}-{variant}.json" if variant else f"{m.name}.json")


def run_metric(ctx: EvalContext, name: str, opts: argparse.Namespace | None = None,
               out: Path | str | None = None) -> tuple[dict[str, Any], Path]:
    """Compute metric ``name`` on ``ctx``'s run and write its JSON; (result, path)."""
    import torch

    from ..checkpoint import atomic_write

    m = get(name)
    opts = resolve(m, opts or argparse.Namespace())
    runs = getattr(ctx.model, "runs", 1)  # a missing or broken run fails here, before any work
    if runs > 1 and not m.ensembles:
        raise AliError(f"{ctx.run_dir} holds {runs} models trained side by side (model.runs); "
                       "ali eval scores one model (`ali train toy` prints each run's 2-D "
                       "metrics)")
    t0 = time.perf_counter()
    torch.manual_seed(ctx.seed)
    result = m.func(ctx, opts)
    result = {"metric": name, **result, "step": ctx.step,
              "seconds": round(time.perf_counter() - t0, 2), "seed": ctx.seed,
              "options": {k: v for k, v in vars(opts).items()}}
    path = Path(out) if out else result_path(ctx.run_dir, m, opts)
    text = json.dumps(result, indent=2) + "\n"
    atomic_write(path, lambda f: f.write(text.encode()))
    return result, path
