"""The ``ali`` command line.

Every error the user can cause is printed as one line on stderr with a non-zero exit status;
tracebacks are reserved for bugs.
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import time
from pathlib import Path

from . import __version__
from .config import (ANOMALY_BATCH_SIZE, ANOMALY_SCORES, apply_overrides, config_names,
                     get_config)
from .errors import AliError, TrainingInterrupted, one_line

EXIT_USER_ERROR = 2
EXIT_SIGNAL_BASE = 128
"""Killed or stopped by signal N exits with 128 + N (130 for SIGINT, 143 for SIGTERM)."""


def _default_out(name: str) -> Path:
    return Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"


def _absolute_root(cfg):
    """``cfg`` with a relative ``data.root`` made absolute: the run folder records where its
    data is, so ``ali eval``, ``reconstruct`` and ``report`` find it from any folder."""
    root = cfg.data.root
    if not root or Path(root).expanduser().is_absolute():
        return cfg
    return apply_overrides(cfg, [f"data.root={Path(root).expanduser().resolve()}"])


def _cmd_train(args: argparse.Namespace) -> int:
    from .distributed import from_env
    from .train import run_config, train

    main = from_env().main      # under torchrun, only rank 0 prints and writes
    cfg = _absolute_root(get_config(args.name, args.overrides))
    if args.resume and args.out is None:
        raise AliError("--resume needs --out RUN_DIR (the folder of the run to continue)")
    if args.extend and not args.resume:
        raise AliError("--extend goes with --resume (it accepts a resumed run's new train.steps)")
    if args.until is not None and args.until < 1:
        raise AliError(f"--until must be >= 1; got {args.until}")
    out = Path(args.out) if args.out else _default_out(cfg.name)
    from .run_folder import RunLock

    RunLock(out).check()    # a training still writing the folder: say so, whatever else
    if args.resume:
        # The run's own settings, so `ali train NAME --out DIR --resume` needs no --set again;
        # --set still applies on top (e.g. more train.steps), and train() refuses changes
        # that would not continue the same run.
        saved = run_config(out)
        if saved.name != cfg.name:
            raise AliError(f"{out} holds a run of config {saved.name!r}, not {cfg.name!r}")
        cfg = apply_overrides(saved, args.overrides)
        if Path(saved.data.root).is_absolute():      # runs from before roots were made so
            cfg = _absolute_root(cfg)
    if not args.resume and (out / "checkpoints" / "latest.pt").exists():
        raise AliError(f"{out} already holds a run; pass --resume to continue it, "
                       "or choose another --out")
    if main:
        until = (f" (stopping at step {args.until})" if args.until is not None
                 and args.until < cfg.train.steps else "")
        # On resume the steps still to run are known once the checkpoint is read: train()
        # says them ("resumed at step S; training N more steps").
        what = "resuming" if args.resume else "training"
        print(f"{what} {cfg.name} ({cfg.model.kind}), {cfg.train.steps} steps in all{until} "
              f"-> {out}", flush=True)
    result = train(cfg, run_dir=out, resume=args.resume, until=args.until, extend=args.extend)
    if not main:
        return 0
    if cfg.model.nets == "toy":
        from .data import load_dataset
        from .experiments.toy import evaluate

        scores, _ = evaluate(result.model, load_dataset(cfg.data), result.seconds)
        summary = {k: v for k, v in scores.items() if k != "seconds"}
        print("2-D metrics per run: " + json.dumps(summary))
    ran = result.step - result.start
    counted = (f"{ran} steps" if not result.start
               else f"{ran} steps (step {result.start} to {result.step})")
    print(f"done: {counted} in {result.seconds:.1f} s; checkpoint "
          f"{out / 'checkpoints' / 'latest.pt'}, metrics {out / 'metrics.jsonl'}")
    return 0


def _cmd_toy(args: argparse.Namespace) -> int:
    from .data import load_dataset
    from .experiments import toy
    from .run_folder import make_output_folder

    runs = args.runs if args.runs is not None else (2 if args.quick else 10)
    if runs < 1:
        raise AliError(f"--runs must be >= 1; got {runs}")
    if args.steps is not None and args.steps < 1:
        raise AliError(f"--steps must be >= 1; got {args.steps}")
    models = tuple(args.models.split(",")) if args.models else (
        toy.LONG_MODELS if args.protocol == "long" else toy.MODELS)
    unknown = [m for m in models if m not in toy.MODELS]
    if unknown:
        raise AliError(f"unknown model {unknown[0]!r} in --models (known: {', '.join(toy.MODELS)})")
    twice = sorted({m for m in models if models.count(m) > 1})
    if twice:
        raise AliError(f"--models names {twice[0]!r} more than once")
    out = Path(args.out) if args.out else Path("runs") / (
        f"toy-{args.dataset}-{args.protocol}{'-quick' if args.quick else ''}")
    make_output_folder(out)
    print(f"2-D experiment: {args.dataset}, protocol {args.protocol}, {runs} runs x "
          f"{len(models)} models{' (quick)' if args.quick else ''}", flush=True)
    t0 = time.perf_counter()
    results, figures = toy.run(args.dataset, args.protocol, runs, args.quick, models,
                               steps=args.steps, device=args.device,
                               overrides=tuple(args.overrides), samplers=args.samplers)
    data = load_dataset(get_config("toy", [f"data.name={args.dataset}"]).data)
    toy.write(results, figures, data, out)
    print()
    print(toy.table(results))
    print(f"finished in {time.perf_counter() - t0:.0f} s")
    print(f"figure:  {out / 'figure.png'}")
    print(f"results: {out / 'results.json'}")
    print(f"table:   {out / 'table.md'}")
    return 0


def _cmd_experiment(args: argparse.Namespace) -> int:
    from .experiments import runner

    t0 = time.perf_counter()
    out = Path(args.out or runner.default_out(args.name, args.scale))
    if not runner.run(args.name, args.scale, args.data_root, out, args.seeds, args.device):
        return 0                # under torchrun, a rank other than 0: rank 0 reports
    print()
    print((out / "table.md").read_text())
    print(f"finished in {time.perf_counter() - t0:.0f} s")
    print(f"results: {out / 'results.json'}")
    return 0


def _run_and_held_out(args: argparse.Namespace, n: int, what: str):
    """(model, n held-out images, their labels or None) of an image run, the RNG seeded with
    --seed; the labels are those a conditional model needs."""
    import torch

    from .config import apply_overrides
    from .data import load_dataset
    from .checkpoint import load_run
    from .viz import held_out, held_out_labels

    device = _device(args)
    model, cfg, _ = load_run(args.run_dir, device)
    if cfg.model.nets == "toy":
        raise AliError(f"{args.run_dir} is a 2-D run; use `ali toy` or `ali train toy` for its "
                       "figures")
    if not cfg.model.images:
        raise AliError(f"{args.run_dir} is a feature-vector run: it has no images to {what} "
                       "(use model.reconstruct on vectors, or ali score)")
    if model.encoder is None:
        raise AliError(f"{args.run_dir} is a {cfg.model.kind} run: it has no encoder to "
                       f"{what} with")
    data = load_dataset(apply_overrides(cfg, _data_overrides(args.overrides)).data)
    x = held_out(data, n).to(device)
    y = held_out_labels(data, n).to(device) if model.conditional else None
    torch.manual_seed(args.seed)
    return model, x, y


def _device(args: argparse.Namespace):
    """The device of a command that runs a trained model: ``--device``, where ``auto`` is the
    best available (cuda, then mps, then cpu)."""
    from .distributed import resolve_device

    return resolve_device(args.device, mps=True)


def _load_for_sampling(path: str, device):
    """(model, its ModelConfig, step or None, the run's config or None) of a run folder or of
    a folder written by ``save_pretrained``, on ``device``."""
    from .pretrained import is_pretrained, load
    from .checkpoint import load_run

    if is_pretrained(path):
        model = load(path, device)
        return model, model.config, None, None
    model, cfg, step = load_run(path, device)
    return model, cfg.model, step, cfg


def _data_overrides(overrides: list[str]) -> list[str]:
    """``--set`` of a command that reads a trained run: its data may be pointed elsewhere, but
    its model and training settings are those it was trained with, so any other key is refused
    rather than silently ignored."""
    for item in overrides:
        key = item.split("=", 1)[0].strip()
        if not key.startswith("data."):
            raise AliError(f"--set {key}: only data.* settings can be overridden here (a trained "
                           "run's model and training settings are fixed)")
    return overrides


def _out_file(path: str | Path, image: bool = False) -> Path:
    """``--out`` as a file to write, checked before any work is done: not a folder, and for a
    picture a format Pillow writes (it would otherwise fail at the end)."""
    out = Path(path)
    if out.is_dir():
        raise AliError(f"--out {out} is a folder; give a file path")
    if image:
        from PIL import Image

        fmt = Image.registered_extensions().get(out.suffix.lower())
        if fmt not in Image.SAVE:
            raise AliError(f"--out {out}: not an image format Pillow writes "
                           f"({out.suffix or 'no extension'}); use .png")
    return out


def _default_png(args: argparse.Namespace, command: str) -> Path:
    """Where ``ali sample`` / ``ali reconstruct`` write without ``--out``: a name of their own
    with the seed (``RUN_DIR/sample-seed0.png``), never training's ``samples.png`` and
    ``reconstructions.png``, which the next checkpoint would overwrite in turn."""
    return Path(args.run_dir) / f"{command}-seed{args.seed}.png"


def _cmd_sample(args: argparse.Namespace) -> int:
    import torch

    from .viz import condition_grid, grid_scale, save_grid

    out = _out_file(args.out or _default_png(args, "sample"), image=True)
    model, model_cfg, step, cfg = _load_for_sampling(args.run_dir, _device(args))
    torch.manual_seed(args.seed)
    if not model_cfg.images:
        raise AliError(f"{args.run_dir} is not an image run")
    if (args.condition or args.vary) and not model.conditional:
        raise AliError(f"{args.run_dir} is not a conditional run (model.conditional=true)")
    if args.condition:
        names = None
        tokens = f"{args.condition},{args.vary or ''}".split(",")
        if any(t.strip() and not t.strip().isdigit() for t in tokens if t.strip() != "all"):
            if cfg is None:
                raise AliError("label names need the run's dataset; a saved model takes "
                               "indices (e.g. --condition 0,3)")
            from .data import load_dataset

            names = load_dataset(cfg.data).label_names
        imgs, nrow, what = condition_grid(model, args.condition, args.vary, args.rows, names)
    elif model.conditional and model.attributes:
        raise AliError("an attribute-conditional run needs --condition ATTRS [--vary ATTRS]")
    else:
        imgs, nrow = model.sample(args.n), args.nrow
        what = f"{args.n} samples"
        if model.conditional:   # the samples take the classes in turn, row after row
            what += (", classes 0..K-1 along each row" if nrow % model.label_dim == 0
                     else f", classes 0..{model.label_dim - 1} in turn")
    save_grid(imgs, out, nrow, grid_scale(imgs))
    at = "" if step is None else f" at step {step}"
    print(f"{what} of {cfg.name if cfg else args.run_dir}{at} -> {out}")
    return 0


def _cmd_reconstruct(args: argparse.Namespace) -> int:
    from .viz import grid_scale, reconstruction_grid, save_grid

    out = _out_file(args.out or _default_png(args, "reconstruct"), image=True)
    model, x, y = _run_and_held_out(args, args.n, "reconstruct")
    imgs = reconstruction_grid(model, x, y)
    save_grid(imgs, out, args.nrow, grid_scale(imgs))
    print(f"{len(x)} held-out images (odd columns) and reconstructions (even columns) -> {out}")
    return 0


def _cmd_interpolate(args: argparse.Namespace) -> int:
    from .viz import grid_scale, interpolation_grid, save_grid

    out = _out_file(args.out or Path(args.run_dir) / "interpolations.png", image=True)
    model, x, y = _run_and_held_out(args, 2 * args.pairs, "interpolate")
    if len(x) < 2 * args.pairs:
        raise AliError(f"only {len(x)} held-out images; need {2 * args.pairs} for --pairs")
    y1, y2 = (None, None) if y is None else (y[0::2], y[1::2])
    imgs = interpolation_grid(model, x[0::2], x[1::2], args.steps, y1, y2)
    save_grid(imgs, out, args.steps + 2, grid_scale(imgs))
    print(f"{args.pairs} interpolations (first/last columns: the held-out pair) -> {out}")
    return 0


def _cmd_score(args: argparse.Namespace) -> int:
    import csv

    from .anomaly import item_shape
    from .data.inputs import read_inputs

    out = _out_file(args.out)
    model, _, _, cfg = _load_for_sampling(args.run_dir, _device(args))
    if model.conditional:
        raise AliError("ali score does not take labels: a conditional model cannot score "
                       "unlabelled items")
    # a CSV laid out as the run's training CSV: its label column is not a feature
    x, names = read_inputs(args.input, item_shape(model), cfg.data.label_column if cfg else "")
    scores = model.anomaly_score(x, args.score, alpha=args.alpha,
                                 batch_size=args.batch_size).cpu().tolist()
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["name", args.score])
        w.writerows(zip(names, (f"{s:.6g}" for s in scores)))
    print(f"{len(names)} scores ({args.score}) -> {out}")
    bad = sum(not math.isfinite(v) for v in scores)
    if bad:     # written as they are: an overflow marks items far outside the training data
        print(f"ali: warning: {bad} scores are not finite (items far outside the training "
              "data overflow float32)", file=sys.stderr)
    return 0


def _cmd_data_download(args: argparse.Namespace) -> int:
    from .data.download import download

    files = download(args.name, args.root, svhn_extra=not args.no_extra)
    print(f"{args.name}: {len(files)} files checked in {args.root}")
    print(f"use it with: --set data.name={args.name} --set data.root={args.root}")
    return 0


def _cmd_arch(args: argparse.Namespace) -> int:
    from .arch import describe, to_json, to_text
    from .data import with_known_labels
    from .run import resolve_from_root

    desc = describe(with_known_labels(resolve_from_root(get_config(args.name, args.overrides))))
    print(json.dumps(to_json(desc), indent=2) if args.json else to_text(desc))
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from .eval.registry import EvalContext, run_metric

    if args.out:
        _out_file(args.out)
    overrides = [*_data_overrides(args.overrides),
                 *([f"data.root={args.root}"] if args.root else [])]
    ctx = EvalContext(Path(args.run_dir), overrides, str(_device(args)), args.seed,
                      quiet=args.json)
    result, path = run_metric(ctx, args.metric, args, args.out)
    if args.json:
        print(json.dumps(result))
    else:
        shown = {k: v for k, v in result.items() if k not in ("options", "errors", "c_search")}
        print(f"{args.metric} of {args.run_dir} (step {result['step']}): "
              + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                          for k, v in shown.items() if k != "metric"))
        print(f"-> {path}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from .report import write_report

    out = write_report(Path(args.run_dir),
                       _out_file(args.out) if args.out else None)
    print(f"report of {args.run_dir} -> {out}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from .bench import bench, peak_gflops

    for key in ("steps", "batch_size", "repeats"):
        if getattr(args, key) is not None and getattr(args, key) < 1:
            raise AliError(f"--{key.replace('_', '-')} must be >= 1; got {getattr(args, key)}")
    r = bench(args.name, steps=args.steps, batch_size=args.batch_size, precision=args.precision,
              compile=True if args.compile else None, repeats=args.repeats,
              overrides=args.overrides)
    if args.peak:
        r["peak_gflops"] = peak_gflops(get_config(args.name, args.overrides).train.device,
                                       r["precision"])
        r["fraction_of_peak"] = r["achieved_gflops"] / r["peak_gflops"]
    if args.json:
        print(json.dumps(r))
        return 0
    print(f"{r['config']} on {r['device']}, {r['precision']}, batch {r['batch_size']}"
          f"{', channels-last' if r['channels_last'] else ''}"
          f"{', compiled' if r['compile'] else ''}: {r['step_ms']:.1f} ms/step, "
          f"{r['images_per_s']:.1f} images/s, {r['flops_per_image'] / 1e6:.4g} MFLOP/image, "
          f"{r['achieved_gflops']:.1f} GFLOP/s"
          + (f" ({100 * r['fraction_of_peak']:.0f}% of the measured peak "
             f"{r['peak_gflops']:.0f})" if args.peak else ""))
    if r["precision_auto"] is not None:
        print(f"precision=auto chose {r['precision_auto']['chose']}: "
              f"{r['precision_auto']['why']}")
    if "data_images_per_s" in r:
        print(f"data: {r['data_images_per_s']:.1f} images/s ({r['data_path']}) against "
              f"{r['images_per_s']:.1f} images/s of the step: training is bound by the "
              f"{r['bound_by']}")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error: the usage block it prints first buries the reason (the
    project's rule for bad input: one line, a non-zero exit); ``--help`` still shows it."""

    def error(self, message: str):
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
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
    t.add_argument("--until", type=int, metavar="N",
                   help="stop with a checkpoint at step N; the schedule still follows "
                        "train.steps, so --resume later continues exactly (training in pieces)")
    t.add_argument("--extend", action="store_true",
                   help="with --resume: accept a new train.steps that stretches a schedule "
                        "following it (linear lr decay, batch-norm freeze, gan_posthoc)")
    t.set_defaults(func=_cmd_train)

    from .experiments.paper import EXPERIMENTS, SCALES

    x = sub.add_parser("experiment", help="run one of the paper's experiments end to end",
                       description="Train, evaluate with the paper's protocol and write "
                                   "results.json, table.md and the figures. Experiments: "
                                   f"{', '.join(EXPERIMENTS)}.")
    x.add_argument("name", help="experiment name")
    x.add_argument("--scale", choices=SCALES, default="smoke",
                   help="smoke: the same pipeline at tiny sizes (on synthetic data without "
                        "--data-root); full: the paper's schedule")
    x.add_argument("--data-root", help="the dataset's official files (needed at full scale)")
    x.add_argument("--out", help="output folder (default runs/experiment-NAME-SCALE); rerun "
                                 "with the same folder to continue an interrupted experiment")
    x.add_argument("--seeds", type=int, help="training seeds per stage (default 1); figure8: "
                                             "runs per model (default 10, 2 at smoke scale)")
    x.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    x.set_defaults(func=_cmd_experiment)

    y = sub.add_parser("toy", help="the paper's 2-D experiment (section 4.5), all five models")
    y.add_argument("--dataset", choices=("grid", "ring"), default="grid")
    y.add_argument("--protocol", choices=("tuned", "paper", "long"), default="tuned",
                   help="tuned: our settings (default); paper: the paper's per-run draws; "
                        "long: our settings for 150,000 steps per run, against PacGAN's ALI "
                        "(default models ali,gan; prints its estimated time first)")
    y.add_argument("--runs", type=int, help="runs per model (default 10; 2 with --quick)")
    y.add_argument("--quick", action="store_true", help="the small, fast version")
    y.add_argument("--steps", type=int, help="override the protocol's steps per run")
    y.add_argument("--models", help="comma-separated subset of ali,gan,gan_inverse,"
                                    "gan_posthoc,vae")
    y.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    y.add_argument("--samplers", action="store_true",
                   help="also score discriminator-resampled and decode-encode-chain samples "
                        "(beyond the paper; about 40 s more per model of 10 runs on 2 CPU cores)")
    y.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting of every run, e.g. model.r1_weight=0 (repeatable)")
    y.add_argument("--out", help="output folder (default runs/toy-DATASET-PROTOCOL)")
    y.set_defaults(func=_cmd_toy)

    for name, func, what in (
            ("sample", _cmd_sample, "a grid of samples x_tilde = G(z), z ~ p(z)"),
            ("reconstruct", _cmd_reconstruct, "held-out images and their reconstructions "
                                              "G(z_hat), alternating columns (Figures 2b-5b)"),
            ("interpolate", _cmd_interpolate, "latent interpolations between held-out pairs "
                                              "(Figure 6)")):
        c = sub.add_parser(name, help=what, description=f"Write a PNG of {what}.")
        c.add_argument("run_dir", help="a run folder written by `ali train`" + (
            " or a model folder written by save_pretrained" if name == "sample" else ""))
        c.add_argument("--out", help="PNG path (default RUN_DIR/interpolations.png)" if
                       name == "interpolate" else f"PNG path (default RUN_DIR/{name}-seedS.png, "
                       "S the --seed; training's own images are left alone)")
        c.add_argument("--seed", type=int, default=0)
        c.add_argument("--device", default="auto",
                       help="auto (cuda, else mps, else cpu) | cpu | cuda[:N] | mps")
        if name == "interpolate":
            c.add_argument("--pairs", type=int, default=8)
            c.add_argument("--steps", type=int, default=8, help="points between each pair")
        else:
            c.add_argument("--n", type=int, default=100 if name == "sample" else 50)
            c.add_argument("--nrow", type=int, default=10)
        if name != "sample":
            c.add_argument("--set", dest="overrides", action="append", default=[],
                           metavar="KEY=VALUE", help="override data settings, e.g. data.root")
        else:
            c.add_argument("--condition", metavar="LABELS",
                           help="conditional runs: 'all' or comma-separated classes (the "
                                "grid's columns) or attributes (its rows, Figure 7), as indices "
                                "or names")
            c.add_argument("--vary", metavar="ATTRS",
                           help="attribute runs: attributes turned on along each row")
            c.add_argument("--rows", type=int, default=10,
                           help="class-conditional grid: rows, one z each")
        c.set_defaults(func=func)

    sc = sub.add_parser("score", help="anomaly scores of new data (higher: more anomalous)",
                        description="Score each item of an npz file, a folder of images or a "
                                    "CSV of feature vectors with a trained model (ali.anomaly) "
                                    "and write NAME,score rows to a CSV file.")
    sc.add_argument("run_dir", help="a run folder or a folder written by save_pretrained")
    sc.add_argument("--input", required=True, help=".npz, .csv or a folder of images")
    sc.add_argument("--out", required=True, help="CSV file to write")
    sc.add_argument("--score", choices=ANOMALY_SCORES, default="egbad",
                    help="higher is more anomalous (ali.anomaly)")
    sc.add_argument("--alpha", type=float, default=0.9, help="egbad's weight of l1")
    sc.add_argument("--batch-size", type=int, default=ANOMALY_BATCH_SIZE,
                    help="examples per forward")
    sc.add_argument("--device", default="auto",
                    help="auto (cuda, else mps, else cpu) | cpu | cuda[:N] | mps")
    sc.set_defaults(func=_cmd_score)

    d = sub.add_parser("data", help="dataset tools")
    dsub = d.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    dl = dsub.add_parser("download", help="download a dataset's official files and check them",
                         description="Download the official files of mnist, cifar10 or svhn "
                                     "(md5-checked); for celeba and imagenet64, say where to "
                                     "get them.")
    dl.add_argument("name", help="mnist | cifar10 | svhn | celeba | imagenet64")
    dl.add_argument("--root", required=True, help="folder to put the files in (data.root)")
    dl.add_argument("--no-extra", action="store_true",
                    help="svhn: skip extra_32x32.mat (1.3 GB)")
    dl.set_defaults(func=_cmd_data_download)

    a = sub.add_parser("arch", help="print a config's networks as tables like the paper's",
                       description="Print the networks of the model a named config builds "
                                   "(as ali train builds it: ALI's encoder, decoder, D(x), "
                                   "D(z) and D(x, z); model.kind's own for the baselines), "
                                   "layer by layer, with output shapes (from a forward pass) "
                                   "and parameter counts.")
    a.add_argument("name", help="config name")
    a.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set model.latent_dim=128")
    a.add_argument("--json", action="store_true", help="print JSON instead of tables")
    a.set_defaults(func=_cmd_arch)

    from .eval.registry import add_arguments, metrics

    e = sub.add_parser("eval", help="compute a metric of a trained run",
                       description="Compute a metric of a run and write it to "
                                   "RUN_DIR/eval/NAME.json. Metrics: " + "; ".join(
                                       f"{m.name}: {m.help}" for m in metrics().values()))
    e.add_argument("run_dir", help="a run folder written by `ali train`")
    e.add_argument("--metric", required=True, metavar="NAME",
                   help=f"one of {', '.join(metrics())}")
    e.add_argument("--json", action="store_true", help="print the result as one JSON object")
    e.add_argument("--out", help="result file (default RUN_DIR/eval/NAME.json)")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--device", default="auto",
                   help="auto (cuda, else mps, else cpu) | cpu | cuda[:N] | mps")
    e.add_argument("--root", help="the dataset's folder or file, if not the run's data.root")
    e.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override the run's data settings, e.g. data.test_range=9000:")
    add_arguments(e)
    e.set_defaults(func=_cmd_eval)

    r = sub.add_parser("report", help="write a run's HTML report",
                       description="Write one self-contained HTML page (RUN_DIR/report.html) "
                                   "with the run's config, curves, latest images and every "
                                   "metric in RUN_DIR/eval.")
    r.add_argument("run_dir", help="a run folder written by `ali train`")
    r.add_argument("--out", help="HTML path (default RUN_DIR/report.html)")
    r.set_defaults(func=_cmd_report)
    b = sub.add_parser("bench", help="time full training steps of a config on this machine",
                       description="Time full training steps (both updates) of a named config "
                                   "after a warm-up, on random data of the config's data shape "
                                   "(no dataset needed), on the configured device; FLOPs are "
                                   "counted over one real step by torch.utils.flop_counter. "
                                   "With --set data.root=... the data pipeline's images/s "
                                   "are measured too, and which of the two bounds training.")
    b.add_argument("name", help="config name")
    b.add_argument("--steps", type=int, default=20, help="timed steps (default 20)")
    b.add_argument("--batch-size", type=int, help="override train.batch_size")
    b.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"),
                   help="override train.precision")
    b.add_argument("--compile", action="store_true", help="torch.compile the step")
    b.add_argument("--repeats", type=int, default=5,
                   help="chunks the steps are timed in; the median is reported (default 5)")
    b.add_argument("--peak", action="store_true",
                   help="also measure the peak GFLOP/s of a large matrix multiply")
    b.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set train.device=cpu")
    b.add_argument("--json", action="store_true", help="print one JSON object")
    b.set_defaults(func=_cmd_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ali`` console script."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:     # --help, --version, or a bad argument (one line, above)
        return e.code if isinstance(e.code, int) else EXIT_USER_ERROR
    try:
        for key in ("n", "nrow", "pairs", "steps", "rows"):
            if args.command in ("sample", "reconstruct", "interpolate") and \
                    getattr(args, key, 1) < 1:
                raise AliError(f"--{key} must be >= 1; got {getattr(args, key)}")
        return args.func(args)
    except TrainingInterrupted as e:
        print(f"ali: {one_line(e, limit=None)}", file=sys.stderr)
        return EXIT_SIGNAL_BASE + e.signum
    except AliError as e:
        print(f"ali: error: {one_line(e, limit=None)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as e:
        # A path the user gave that cannot be read or written (a read-only place, a missing
        # parent that cannot be made): the system's reason and the path say it all.
        print(f"ali: error: {one_line(e, limit=None)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        # A second signal during training: checkpoints are written atomically, so the last
        # one on disk is whole.
        print("ali: interrupted", file=sys.stderr)
        return EXIT_SIGNAL_BASE + signal.SIGINT


if __name__ == "__main__":
    raise SystemExit(main())
