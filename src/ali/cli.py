"""The ``ali`` command line.

Every error the user can cause is printed as one line on stderr with a non-zero exit status;
tracebacks are reserved for bugs.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path

from . import __version__
from .config import apply_overrides, config_names, get_config
from .errors import AliError, TrainingInterrupted

EXIT_USER_ERROR = 2
EXIT_SIGNAL_BASE = 128
"""Killed or stopped by signal N exits with 128 + N (130 for SIGINT, 143 for SIGTERM)."""


def _one_line(e: Exception) -> str:
    """The promise of this module: an error is exactly one line."""
    return " ".join(str(e).split())


def _default_out(name: str) -> Path:
    return Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"


def _cmd_train(args: argparse.Namespace) -> int:
    from .train import run_config, train

    cfg = get_config(args.name, args.overrides)
    if args.resume and args.out is None:
        raise AliError("--resume needs --out RUN_DIR (the folder of the run to continue)")
    out = Path(args.out) if args.out else _default_out(cfg.name)
    if args.resume:
        # The run's own settings, so `ali train NAME --out DIR --resume` needs no --set again;
        # --set still applies on top (e.g. more train.steps), and train() refuses changes
        # that would not continue the same run.
        saved = run_config(out)
        if saved.name != cfg.name:
            raise AliError(f"{out} holds a run of config {saved.name!r}, not {cfg.name!r}")
        cfg = apply_overrides(saved, args.overrides)
    if not args.resume and (out / "checkpoints" / "latest.pt").exists():
        raise AliError(f"{out} already holds a run; pass --resume to continue it, "
                       "or choose another --out")
    print(f"training {cfg.name} ({cfg.model.kind}) for {cfg.train.steps} steps -> {out}",
          flush=True)
    result = train(cfg, run_dir=out, resume=args.resume)
    if cfg.model.nets == "toy":
        from .data import load_dataset
        from .experiments.toy import evaluate

        scores, _ = evaluate(result.model, load_dataset(cfg.data), result.seconds)
        summary = {k: v for k, v in scores.items() if k != "seconds"}
        print("2-D metrics per run: " + json.dumps(summary))
    print(f"done: {result.step} steps in {result.seconds:.1f} s; checkpoint "
          f"{out / 'checkpoints' / 'latest.pt'}, metrics {out / 'metrics.jsonl'}")
    return 0


def _cmd_toy(args: argparse.Namespace) -> int:
    from .data import load_dataset
    from .experiments import toy

    runs = args.runs if args.runs is not None else (2 if args.quick else 10)
    if runs < 1:
        raise AliError(f"--runs must be >= 1; got {runs}")
    if args.steps is not None and args.steps < 1:
        raise AliError(f"--steps must be >= 1; got {args.steps}")
    models = tuple(args.models.split(",")) if args.models else toy.MODELS
    unknown = [m for m in models if m not in toy.MODELS]
    if unknown:
        raise AliError(f"unknown model {unknown[0]!r} in --models (known: {', '.join(toy.MODELS)})")
    out = Path(args.out) if args.out else Path("runs") / (
        f"toy-{args.dataset}-{args.protocol}{'-quick' if args.quick else ''}")
    print(f"2-D experiment: {args.dataset}, protocol {args.protocol}, {runs} runs x "
          f"{len(models)} models{' (quick)' if args.quick else ''}", flush=True)
    t0 = time.perf_counter()
    results, figures = toy.run(args.dataset, args.protocol, runs, args.quick, models,
                               steps=args.steps, device=args.device)
    data = load_dataset(get_config("toy", [f"data.name={args.dataset}"]).data)
    toy.write(results, figures, data, out)
    print()
    print(toy.table(results))
    print(f"finished in {time.perf_counter() - t0:.0f} s")
    print(f"figure:  {out / 'figure.png'}")
    print(f"results: {out / 'results.json'}")
    print(f"table:   {out / 'table.md'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ali", description="Adversarially Learned Inference (Dumoulin et al., 2016).")
    p.add_argument("--version", action="version", version=f"ali {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = sub.add_parser("train", help="train a named config",
                       description=f"Train a named config ({', '.join(config_names())}).")
    t.add_argument("name", help="config name")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set train.lr=1e-3 (repeatable)")
    t.add_argument("--out", help="run folder (default runs/NAME-TIMESTAMP)")
    t.add_argument("--resume", action="store_true",
                   help="continue from OUT/checkpoints/latest.pt")
    t.set_defaults(func=_cmd_train)

    y = sub.add_parser("toy", help="the paper's 2-D experiment (section 4.5), all five models")
    y.add_argument("--dataset", choices=("grid", "ring"), default="grid")
    y.add_argument("--protocol", choices=("tuned", "paper"), default="tuned")
    y.add_argument("--runs", type=int, help="runs per model (default 10; 2 with --quick)")
    y.add_argument("--quick", action="store_true", help="the small, fast version")
    y.add_argument("--steps", type=int, help="override the protocol's steps per run")
    y.add_argument("--models", help="comma-separated subset of ali,gan,gan_inverse,"
                                    "gan_posthoc,vae")
    y.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    y.add_argument("--out", help="output folder (default runs/toy-DATASET-PROTOCOL)")
    y.set_defaults(func=_cmd_toy)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ali`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except TrainingInterrupted as e:
        print(f"ali: {_one_line(e)}", file=sys.stderr)
        return EXIT_SIGNAL_BASE + e.signum
    except AliError as e:
        print(f"ali: error: {_one_line(e)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        # A second signal during training: checkpoints are written atomically, so the last
        # one on disk is whole.
        print("ali: interrupted", file=sys.stderr)
        return EXIT_SIGNAL_BASE + signal.SIGINT


if __name__ == "__main__":
    raise SystemExit(main())
