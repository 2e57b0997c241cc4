"""Run one of the paper's experiments end to end: ``ali experiment NAME``.

:func:`run` trains each stage of an :class:`~ali.experiments.paper.Experiment` once per seed in
``DIR/runs/STAGE-seedS`` (a finished run is reused and an interrupted one resumed, so rerunning
an interrupted experiment continues it), evaluates its rows with ``ali eval``'s metrics
(written beside each run in ``eval/``), draws its figures, and writes ``DIR/results.json`` and
``DIR/table.md``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import statistics
from pathlib import Path
from typing import Any, Callable

from ..checkpoint import atomic_write, config_differences, load_checkpoint, run_checkpoint_path
from ..config import Config, apply_overrides, get_config
from ..errors import AliError, CheckpointError, TrainingInterrupted
from .paper import (EXPERIMENTS, SCALES, SMOKE_SIZES, SMOKE_TRAIN, Experiment,
                    Measure, Stage)

FIGURE_IMAGES = 100
"""Images in each figure grid (10 x 10)."""
FEATURE_NETS = {"inception": "InceptionV3", "classifier": "pixel classifier"}
"""How the table names ``ali eval``'s ``--feature-net`` values (any other: a custom network)."""
ESTIMATE_STEPS = 6
"""Steps timed per stage for the estimate printed before a full-scale experiment."""


FIGURE8_DATASETS = ("grid", "ring")
FIGURE8_METRICS = ("modes", "modes_hq", "hq", "recon_mode")
FIGURE8_RUNS = {"smoke": 2, "full": 10}
FIGURE8_SMOKE_STEPS = 10
PAPER_MODES = {("grid", "ali"): (13.4, 5.8), ("grid", "gan"): (10.4, 9.2)}


def _figure8(exp: Experiment, scale: str, out: Path, seeds: int, device: str,
             log: Callable[[str], None]) -> tuple[list[dict[str, Any]], list[str]]:
    """Figure 8 on the grid and the ring (:func:`ali.experiments.toy.figure8`): ``seeds`` runs
    per model (:func:`run` defaults it to :data:`FIGURE8_RUNS`; smoke scale trains
    :data:`FIGURE8_SMOKE_STEPS` steps)."""
    from ..data import load_dataset
    from . import toy

    runs = seeds
    steps = FIGURE8_SMOKE_STEPS if scale == "smoke" else None
    rows, figures = [], []
    for dataset in FIGURE8_DATASETS:
        res = _figure8_done(out / dataset, runs, steps)
        if res is not None:
            log(f"  {dataset}: finished earlier, reused")
        else:
            log(f"  {dataset}: {runs} runs per model")
            res, figs = toy.figure8(dataset, runs, steps, device, lambda s: log("    " + s))
            data = load_dataset(get_config("toy_paper", [f"data.name={dataset}"]).data)
            toy.write(res, figs, data, out / dataset)
        figures.append(str(out / dataset / "figure.png"))
        for kind, scores in res["models"].items():
            for metric in FIGURE8_METRICS:
                v = [x for x in scores[metric] if x is not None]
                if not v:
                    continue
                paper, paper_std = (PAPER_MODES.get((dataset, kind), (None, None))
                                    if metric == "modes" else (None, None))
                rows.append({"setting": f"{dataset}: {kind}", "metric": metric,
                             "ours": float(statistics.mean(v)),
                             "ours_std": float(statistics.pstdev(v)),
                             "paper": paper, "paper_std": paper_std, "seeds": len(v),
                             "std_times": 1, "best_run": res["best_run"][kind]})
    return rows, figures


def _figure8_done(folder: Path, runs: int, steps: int | None) -> dict[str, Any] | None:
    """The results of one dataset of :func:`_figure8` that an earlier call finished in
    ``folder`` with ``runs`` runs of ``steps`` steps (None: the preset's), or None: a rerun
    of an interrupted figure8 keeps them, as the other experiments keep their finished runs."""
    try:
        res = json.loads((folder / "results.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    want = get_config("toy_paper").train.steps if steps is None else steps
    if (not isinstance(res, dict) or res.get("protocol") != "figure8"
            or (res.get("runs"), res.get("steps")) != (runs, want)
            or not (folder / "figure.png").is_file()):
        return None
    return res


PROTOCOLS: dict[str, Callable[..., tuple[list[dict[str, Any]], list[str]]]] = {
    "figure8": _figure8}
"""The experiments with a protocol of their own (:attr:`Experiment.protocol`)."""


def default_out(name: str, scale: str) -> Path:
    """Where ``ali experiment NAME --scale SCALE`` writes without ``--out``."""
    return Path("runs") / f"experiment-{name}-{scale}"


def get(name: str) -> Experiment:
    """The experiment ``name``, or a one-line error naming the available ones."""
    if name not in EXPERIMENTS:
        raise AliError(f"unknown experiment {name!r} (available: {', '.join(EXPERIMENTS)})")
    return EXPERIMENTS[name]


def stage_config(exp: Experiment, stage: Stage, scale: str, root: Path, seed: int,
                 device: str, synthetic: bool) -> Config:
    """The config of one run of ``stage``: its preset with the experiment's data settings, the
    stage's overrides, the scale's and the seed."""
    over = [f"data.root={root}", *exp.data.get(scale, ()), *stage.overrides]
    if scale == "smoke":
        over += [*SMOKE_TRAIN, *stage.smoke]
    if synthetic:
        over.append("data.verify=false")     # synthetic files have no published checksums
    over += [f"train.seed={seed}", f"train.device={device}"]
    return get_config(stage.preset, over)


def _steps_done(run_dir: Path) -> int | None:
    """The step of ``run_dir``'s checkpoint; None: nothing (readable) there."""
    try:
        return int(load_checkpoint(run_checkpoint_path(run_dir))["step"])
    except CheckpointError:
        return None


def chosen_keys(exp: Experiment, stage: Stage) -> set[str]:
    """The settings :func:`stage_config` chooses for ``stage``'s runs at either scale; the
    others are the preset's, or filled in from the data when the run starts (a semi-supervised
    model's ``label_dim``), so only these tell a run of another invocation. The seed is in the
    run's folder name, and the device may change between runs."""
    over = ("data.root=", "data.verify=", *stage.overrides, *SMOKE_TRAIN, *stage.smoke,
            *(o for scale in exp.data.values() for o in scale))
    return {o.split("=", 1)[0] for o in over}


def check_reusable(run_dir: Path, cfg: Config, keys: set[str]) -> None:
    """A one-line error unless the run in ``run_dir``, if any, has ``cfg``'s values of
    ``keys`` (:func:`chosen_keys`): a rerun with another ``--data-root`` or ``--scale`` would
    otherwise report the first one's runs as its own."""
    try:
        saved = load_checkpoint(run_checkpoint_path(run_dir))["config"]
    except CheckpointError:
        return
    data = saved.get("data")
    if (isinstance(data, dict) and data.get("verify") is False and not cfg.data.verify
            and Path(str(data.get("root"))).parts[-2:] == Path(cfg.data.root).parts[-2:]):
        # the experiment's own synthetic data, OUT/data/NAME: the same files wherever OUT is
        # now (an --out moved or renamed since)
        saved = {**saved, "data": {**data, "root": cfg.data.root}}
    diff = [d for d in config_differences(saved, cfg.to_dict()) if d.split(":")[0] in keys]
    if diff:
        raise AliError(f"{run_dir} was trained with another config ({diff[0]}): rerun with "
                       "the --scale and --data-root it was trained with, or choose another "
                       "--out")


def _finished(run_dir: Path, steps: int) -> bool | None:
    """True: trained to ``steps``; False: a checkpoint to resume; None: nothing there."""
    done = _steps_done(run_dir)
    return None if done is None else done >= steps


def _train(cfg: Config, run_dir: Path, log: Callable[[str], None]) -> None:
    from ..train import train

    state = _finished(run_dir, cfg.train.steps)
    if state:
        log(f"  {run_dir.name}: finished earlier, reused")
        return
    log(f"  {run_dir.name}: {'resuming' if state is False else 'training'} "
        f"{cfg.name}, {cfg.train.steps:,} steps")
    train(cfg, run_dir=run_dir, resume=state is False, quiet=True)


def estimate(work: list[tuple[str, Config, int]], log: Callable[[str], None]) -> float:
    """Seconds that ``work``, (stage, config, steps still to train) triples, will take on this
    device: each stage's step timed once with :func:`ali.bench.bench` (a few steps after a
    warm-up) times the steps left; a stage with nothing left is not timed."""
    from ..bench import bench

    step_s: dict[str, float] = {}
    total = 0.0
    for stage, cfg, steps in work:
        if steps <= 0:
            continue
        if stage not in step_s:
            r = bench(cfg, steps=ESTIMATE_STEPS, warmup=1, repeats=2)
            step_s[stage] = r["step_ms"] / 1e3
            log(f"  {cfg.name}: {r['step_ms']:.0f} ms/step on {r['device']} "
                f"({r['flops_per_image'] / 1e6:.0f} MFLOP per image)")
        total += step_s[stage] * steps
    return total


def _measure(m: Measure, runs: list[Path], scale: str, device: str,
             overrides: list[str]) -> list[dict[str, Any]]:
    from ..eval.registry import EvalContext, run_metric

    opts = {**m.options, **(m.smoke if scale == "smoke" else {})}
    out = []
    for r in runs:
        ctx = EvalContext(r, overrides=overrides, device=device, quiet=True)
        result, _ = run_metric(ctx, m.metric, argparse.Namespace(**opts))
        out.append(result)
    return out


def row(m: Measure, results: list[dict[str, Any]]) -> dict[str, Any]:
    """The table row of measure ``m`` from its results, one per seed (see :class:`Measure`)."""
    values = [float(r[m.key]) for r in results]
    if len(values) > 1:
        std: float | None = statistics.pstdev(values) * m.std_times
    elif m.std_key is not None:
        std = float(results[0][m.std_key]) * m.std_times
    else:
        std = None
    # a feature-space metric says which space: smoke scale measures in another than full scale
    net = results[0].get("feature_net")
    setting = f"{m.setting} ({FEATURE_NETS.get(net, 'custom')} features)" if net else m.setting
    return {"setting": setting, "metric": f"{m.metric}.{m.key}",
            "ours": float(statistics.mean(values)),
            "ours_std": std, "paper": m.paper, "paper_std": m.paper_std, "seeds": len(values),
            "std_times": m.std_times}


def _figure(kind: str, run_dir: Path, out: Path, overrides: list[str]) -> Path:
    import torch

    from ..checkpoint import load_run
    from ..data import load_dataset
    from ..viz import (FIGURE7_COLUMNS, condition_grid, figure7_grid, grid_scale, held_out,
                       interpolation_grid, reconstruction_grid, save_grid)

    model, cfg, _ = load_run(run_dir)
    torch.manual_seed(0)
    n, nrow = FIGURE_IMAGES, 10
    if kind == "samples":
        imgs = model.sample(n)
    elif kind == "classes":       # one column per class, one row per z
        imgs, nrow, _ = condition_grid(model, "all", None, 10)
    elif kind == "attributes":    # Figure 7: one z, 4 rows of attributes x 12 columns
        names = load_dataset(apply_overrides(cfg, overrides).data).label_names
        imgs, nrow = figure7_grid(model, names), len(FIGURE7_COLUMNS)
    else:
        data = load_dataset(apply_overrides(cfg, overrides).data)
        x = held_out(data, n)
        if kind == "reconstructions":   # originals and reconstructions in alternate columns
            imgs = reconstruction_grid(model, x[: n // 2])
        else:                           # rows: x1, 8 decoded interpolations, x2
            imgs, nrow = interpolation_grid(model, x[:10], x[10:20], steps=8), 10
    path = out / f"{run_dir.name}-{kind}.png"
    save_grid(imgs, path, nrow, grid_scale(imgs))
    return path


def table(exp: Experiment, result: dict[str, Any]) -> str:
    """``table.md``: ours beside the paper's number, then the paper's other models."""
    def num(v: float | None, s: float | None) -> str:
        if v is None:
            return "—"
        return f"{v:.4g}" + (f" ± {s:.2g}" if s is not None else "")

    lines = [f"# {exp.title}", "",
             f"`ali experiment {exp.name} --scale {result['scale']}`, {result['seeds']} "
             f"seed(s), {result['seconds']:.0f} s", "",
             "| setting | metric | ours | paper |", "|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['setting']} | `{r['metric']}` | {num(r['ours'], r['ours_std'])} | "
                     f"{num(r['paper'], r['paper_std'])} |")
    if exp.baselines:
        lines += ["", "The paper's other models:", ""] + [f"- {b}" for b in exp.baselines]
    if exp.notes or result["scale"] == "smoke":
        lines += ["", "Notes:", ""] + [f"- {n}" for n in exp.notes]
        if result["scale"] == "smoke":
            lines.append("- smoke scale: a few steps on small synthetic data; the numbers check "
                         "the pipeline, not the model")
    if result["figures"]:
        lines += ["", "Figures:", ""] + [f"- `{f}`" for f in result["figures"]]
    return "\n".join(lines) + "\n"


def run(name: str, scale: str = "smoke", data_root: str | Path | None = None,
        out: str | Path | None = None, seeds: int | None = None, device: str = "auto",
        log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run experiment ``name`` at ``scale`` into ``out`` and return its ``results.json``
    (``experiment``, ``scale``, ``seeds``, ``rows``, ``figures``, ``seconds``).

    ``seeds``: training seeds per stage (default 1); for figure8, runs per model (default
    :data:`FIGURE8_RUNS` of the scale).

    Without ``data_root``, smoke scale first writes the experiment's synthetic dataset into
    ``out/data``; full scale needs the dataset's official files.

    Under ``torchrun`` every process trains every stage (one process group for all of them);
    rank 0 alone writes the data, prints, evaluates and writes the results, and the other
    ranks return ``{}``."""
    from .. import distributed

    exp = get(name)
    if scale not in SCALES:
        raise AliError(f"--scale must be one of {', '.join(SCALES)}; got {scale!r}")
    if seeds is None:
        seeds = FIGURE8_RUNS[scale] if exp.protocol == "figure8" else 1
    if seeds < 1:
        raise AliError(f"--seeds must be >= 1; got {seeds}")
    ctx = distributed.from_env()
    if ctx.enabled and exp.protocol:
        raise AliError(f"{name} trains its runs side by side in one process: run it without "
                       "torchrun")
    if distributed.active():
        raise AliError("ali experiment starts its own process group under torchrun; call it "
                       "before torch.distributed.init_process_group")
    ctx, dev, own = distributed.init(device)
    try:
        return _run(exp, scale, data_root, Path(out or default_out(name, scale)), seeds,
                    str(dev), log if ctx.main else (lambda line: None), ctx, own)
    finally:
        if own:
            distributed.shutdown()


def _run(exp: Experiment, scale: str, data_root: str | Path | None, out: Path, seeds: int,
         device: str, log: Callable[[str], None], ctx: Any, own: bool) -> dict[str, Any]:
    import time

    from .. import distributed
    from ..data import synthetic
    from ..run_folder import make_output_folder

    name = exp.name
    t0 = time.perf_counter()
    make_output_folder(out)
    if exp.protocol:
        if data_root is not None:
            raise AliError(f"{name} generates its own 2-D data: --data-root does not apply")
        log(exp.title)
        rows, figures = PROTOCOLS[exp.protocol](exp, scale, out, seeds, device, log)
        runs = rows[0]["seeds"] if rows else seeds
        return _write(exp, out, {"experiment": name, "scale": scale, "seeds": runs,
                                 "rows": rows, "figures": figures,
                                 "seconds": time.perf_counter() - t0})
    is_synthetic = data_root is None
    if is_synthetic:
        if scale == "full":
            raise AliError(f"--scale full needs --data-root: the official {exp.dataset} files "
                           f"(ali data download {exp.dataset} --root DIR)")
        root = out / "data" / exp.dataset
        if ctx.main and not root.is_dir():
            log(f"writing synthetic {exp.dataset} data into {root}")
            # into a sibling renamed once complete: a rerun takes any folder here for the data,
            # and one half written by an interrupted run lacked files for good
            part = root.with_name(root.name + ".partial")
            shutil.rmtree(part, ignore_errors=True)
            synthetic.write(exp.dataset, part, *SMOKE_SIZES[exp.dataset])
            part.rename(root)
        distributed.barrier()                    # the others read what rank 0 wrote
    else:
        root = Path(data_root)
        if not root.exists():
            raise AliError(f"--data-root {root} does not exist")
    plan = {(st.name, s): stage_config(exp, st, scale, root.resolve(), s, device, is_synthetic)
            for st in exp.stages for s in range(seeds)}
    for st in exp.stages:
        for s in range(seeds):
            check_reusable(out / "runs" / f"{st.name}-seed{s}", plan[st.name, s],
                           chosen_keys(exp, st))
    if scale == "full":
        # only what is left: a rerun of an interrupted experiment times no finished stage
        work = [(stage, cfg, cfg.train.steps - (_steps_done(out / "runs" / f"{stage}-seed{s}")
                                                or 0))
                for (stage, s), cfg in plan.items()]
        log(f"estimating the time on {device}:")
        seconds = estimate(work, log)        # every rank times: the steps' collectives match
        finished = sum(left <= 0 for *_, left in work)
        log(f"about {seconds / 3600:.1f} h of training left ({finished} of {len(work)} runs "
            "finished)")
    log(f"{exp.title}: {len(plan)} run(s) in {out / 'runs'}")
    for (stage, seed), cfg in plan.items():
        distributed.barrier()                    # every rank sees the same finished stages
        try:
            _train(cfg, out / "runs" / f"{stage}-seed{seed}", log)
        except TrainingInterrupted as e:
            # train's own hint (ali train --resume of this stage) would not finish the rest
            again = ["ali", "experiment", name, "--scale", scale, "--out", str(out),
                     *(["--data-root", str(data_root)] if data_root is not None else []),
                     *(["--seeds", str(seeds)] if seeds != 1 else [])]
            raise TrainingInterrupted(
                f"interrupted at step {e.step} of {stage}-seed{seed}, its checkpoint written; "
                f"continue the experiment with: {shlex.join(again)}",
                e.signum, e.step, e.result) from None
    distributed.barrier()                        # rank 0 has written every final checkpoint
    if own:
        distributed.shutdown()                   # rank 0 evaluates alone, with no group
    if not ctx.main:
        return {}
    data_over = [f"data.root={root.resolve()}"]
    rows = []
    for m in exp.measures:
        log(f"  evaluating {m.metric} on {m.stage}")
        runs = [out / "runs" / f"{m.stage}-seed{s}" for s in range(seeds)]
        rows.append(row(m, _measure(m, runs, scale, device, data_over)))
    figures = [str(_figure(kind, out / "runs" / f"{stage}-seed0", out, data_over))
               for stage, kind in exp.figures]
    return _write(exp, out, {"experiment": name, "scale": scale, "seeds": seeds, "rows": rows,
                             "figures": figures, "seconds": time.perf_counter() - t0})


def _write(exp: Experiment, out: Path, result: dict[str, Any]) -> dict[str, Any]:
    """``results.json`` and ``table.md`` of ``result`` in ``out``; returns ``result``."""
    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result, indent=2) + "\n"
    atomic_write(out / "results.json", lambda f: f.write(text.encode()))
    md = table(exp, result)
    atomic_write(out / "table.md", lambda f: f.write(md.encode()))
    return result
