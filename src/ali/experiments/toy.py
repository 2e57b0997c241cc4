"""Section 4.5: the importance of learning inference jointly with generation.

Five models share the toy networks of the original code: ``ali``, ``gan``, ``gan_inverse``
(GAN + learned inverse mapping), ``gan_posthoc`` (GAN + post-hoc learned inference) and ``vae``.
Each is trained ``runs`` times and scored by :mod:`ali.eval.toy`.

Three protocols:

- ``tuned`` (default): our settings (the ``toy`` preset on the grid, ``toy_ring`` on the ring:
  :data:`TUNED_PRESETS`; their cycle term is ALI's alone),
  train.seed 0; the N runs of a model train side by side as one batched computation
  (``model.runs = N``), each with its own parameters, data order and noise.
- ``long``: the tuned settings for :data:`LONG_STEPS` steps per run (by default ALI and the
  GAN), scored against PacGAN's ALI figures and the targets of :func:`long_targets`.
- ``paper``: the ``toy_paper`` preset (the original code's settings) where each run draws its
  own learning rate, Adam beta1 and init std (ranges in :func:`paper_draw`; the paper does not
  give them), seed = run index. The paper trained 200 epochs (200,000 steps) per run; our
  default budget, 20,000 steps (``--steps``), is the shortest at which ALI's mean mode count
  came out above the GAN's, as in the paper (README, "2-D experiment"); at 5,000 they tied.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..checkpoint import atomic_write
from ..config import Config, get_config
from ..data import Dataset, load_dataset
from ..eval.toy import mode_metrics, recon_mode
from ..model import GenerativeModel
from ..train import train

MODELS = ("ali", "gan", "gan_inverse", "gan_posthoc", "vae")
METRICS = ("modes", "modes_hq", "hq", "spread", "mode_kl", "recon_mode", "seconds")
N_EVAL = 10_000
# Beyond the paper, two other ways to sample a trained model, scored beside its ancestral
# samples G(z) (``samplers`` in results.json; README, "Beyond the paper: samplers"):
# importance resampling with the discriminator, and the decode-encode chain.
SAMPLERS = ("resampled", "chain")
SAMPLE_METRICS = ("modes", "modes_hq", "hq", "spread", "mode_kl")
RESAMPLE_OVERSAMPLE = 10   # candidates per sample; 20 and 50 gave the same hq (one ALI run)
CHAIN_STEPS = 1

# The paper's figures (section 4.5) on its own counting protocol.
PAPER_MODES = {"ali": {"mean": 13.4, "std": 5.8, "min": 8, "max": 25},
               "gan": {"mean": 10.4, "std": 9.2, "min": 1, "max": 22}}

# The tuned protocol trains the registered preset of the dataset (our settings); ``--quick``
# shortens it.
TUNED_PRESETS = {"grid": "toy", "ring": "toy_ring"}
"""Each dataset's tuned preset: the ring's ALI takes a lighter cycle term than the grid's."""
# The paper protocol trains the ``toy_paper`` preset with per-run random draws.
QUICK_STEPS = 1500
PAPER_STEPS = 20_000

# The long protocol: the tuned settings for longer, against the best published ALI figures.
LONG_STEPS = 150_000
"""Steps per run of the long protocol: at the preset's batch of 32, 4.8M samples, under the
10M (a quarter of PacGAN's 40M) that :data:`LONG_MAX_SAMPLES` allows."""
LONG_MAX_SAMPLES = 10_000_000
ESTIMATE_STEPS = 32
"""Steps timed per model for the long protocol's estimate, printed before it trains."""
LONG_MODELS = ("ali", "gan")
"""The long protocol's default models: ALI, and the GAN with the same budget beside it."""
PACGAN_ALI = {"grid": {"modes": 24.1, "modes_std": 0.4, "hq": 0.957},
              "ring": {"modes": 6.6, "modes_std": 0.3, "hq": 0.976}}
"""ALI in PacGAN (Lin et al., 2018, Table 1): 10 runs, 400 epochs of 100,000 points each."""
LONG_TARGETS = {"grid": 0.96, "ring": 0.98}
"""The long protocol's targets: every mode on the strict count in every run, and a mean
high-quality fraction of at least this (PacGAN's ALI rounded up)."""


def model_overrides(kind: str) -> tuple[str, ...]:
    """The overrides that turn the ``toy`` preset (ALI's settings) into model ``kind``: the cycle
    term is ALI's alone, and the VAE has no discriminator, so no gradient penalty."""
    if kind == "vae":
        return ("model.kind=vae", "model.encoder=gaussian", "model.r1=off", "model.cycle=off")
    if kind == "ali":
        return ("model.kind=ali", "model.encoder=noise")
    return (f"model.kind={kind}", "model.encoder=noise", "model.cycle=off")


def tuned_overrides(kind: str, overrides: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The tuned protocol's overrides of model ``kind`` on the dataset's preset
    (:data:`TUNED_PRESETS`; every adversarial model
    trains with its learning rates and lazy R1 penalty; the GAN covers more modes with them too,
    README "2-D experiment"), the user's ``overrides`` (which apply to every model) and
    :func:`model_overrides`."""
    return (*overrides, *model_overrides(kind))


def paper_draw(run: int) -> dict[str, float]:
    """The paper's per-run random hyper-parameters (ranges are ours: the paper gives none)."""
    rng = random.Random(run)
    return {"lr": 10 ** rng.uniform(-5, -3), "beta1": rng.uniform(0.0, 0.9),
            "init_std": 10 ** rng.uniform(-2.3, -1)}


@torch.no_grad()
def evaluate(model: GenerativeModel, data: Dataset, seconds: float, n: int = N_EVAL,
             samplers: bool = False) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Score every run of a (possibly run-batched) trained model, and keep run 0's points:
    ``n`` samples (ancestral and, with ``samplers``, from each of :data:`SAMPLERS` the model
    supports), and the reconstructions of ``n`` held-out points (fewer if the held-out set is
    smaller)."""
    model.eval()
    device = next(model.parameters()).device
    runs = model.runs
    n_x = min(n, len(data.test))   # data.n_test may be below N_EVAL
    sets = {"ancestral": model.sample(n)}
    x = data.test[:n_x].to(device)                                      # (Nx, 2)
    xr = x.unsqueeze(1).expand(n_x, runs, 2) if runs > 1 else x
    has_encoder = model.encoder is not None
    if has_encoder:
        z = model.encode(xr)                                            # z_hat ~ q(z|x)
        z_hat = z.cpu().view(n_x, runs, -1)
        recon = model.decode(z).cpu().view(n_x, runs, 2)                # G(z_hat)
    # The samplers draw last, so the figures above are the same with or without them.
    if samplers and model.discriminator is not None:
        sets["resampled"] = model.sample_resampled(n, oversample=RESAMPLE_OVERSAMPLE)
    if samplers and has_encoder:
        sets["chain"] = model.sample_chain(n, CHAIN_STEPS)
    sets = {k: v.cpu().view(n, runs, 2) for k, v in sets.items()}      # (N, R, 2) each
    out: dict[str, Any] = {m: [] for m in METRICS}
    if samplers:
        out["samplers"] = {k: {m: [] for m in SAMPLE_METRICS} for k in SAMPLERS}
    for r in range(runs):
        for k, v in mode_metrics(sets["ancestral"][:, r], data.centres, data.std).items():
            out[k].append(v)
        for name in SAMPLERS if samplers else ():
            scores = (mode_metrics(sets[name][:, r], data.centres, data.std)
                      if name in sets else dict.fromkeys(SAMPLE_METRICS))
            for k, v in scores.items():
                out["samplers"][name][k].append(v)
        out["recon_mode"].append(recon_mode(x.cpu(), recon[:, r], data.centres)
                                 if has_encoder else None)
        out["seconds"].append(seconds / runs)
    fig = {"x": x.cpu().numpy(), "labels": data.test_labels[:n_x].numpy(),
           **{("samples" if k == "ancestral" else k): v[:, 0].numpy() for k, v in sets.items()}}
    if has_encoder:
        fig["z_hat"] = z_hat[:, 0].numpy()
        fig["recon"] = recon[:, 0].numpy()
    return out, fig


def extend(scores: dict[str, Any], more: dict[str, Any]) -> None:
    """Append the per-run lists of ``more`` to those of ``scores`` (nested samplers too)."""
    for k, v in more.items():
        if isinstance(v, dict):
            extend(scores.setdefault(k, {}), v)
        else:
            scores.setdefault(k, []).extend(v)


def _train_and_score(cfg: Config, data: Dataset,
                     samplers: bool = False) -> tuple[dict[str, Any], dict]:
    t0 = time.perf_counter()
    result = train(cfg, dataset=data, quiet=True)
    return evaluate(result.model, data, time.perf_counter() - t0, samplers=samplers)


def run(dataset: str = "grid", protocol: str = "tuned", runs: int = 10, quick: bool = False,
        models: tuple[str, ...] = MODELS, steps: int | None = None, device: str = "auto",
        log: Callable[[str], None] = print, overrides: tuple[str, ...] = (),
        samplers: bool = False) -> tuple[dict[str, Any], dict[str, dict]]:
    """Train and score every model; returns (results.json content, run 0's figure points).

    ``overrides`` (``section.key=value``) apply to every run, e.g. ``train.precision=bf16``;
    ``samplers`` also scores the :data:`SAMPLERS` beyond the paper (``--samplers``).
    """
    base = ("model.runs=1", f"data.name={dataset}", f"train.device={device}")
    data = load_dataset(get_config("toy", (*base, *overrides)).data)
    results: dict[str, Any] = {"dataset": dataset, "protocol": protocol, "runs": runs,
                               "models": {}}
    figures: dict[str, dict] = {}

    def tuned(kind: str) -> Config:
        over = [*base, *tuned_overrides(kind, overrides), f"model.runs={runs}", "train.seed=0"]
        if steps is not None or quick or protocol == "long":
            over.append(f"train.steps={steps or (QUICK_STEPS if quick else LONG_STEPS)}")
        return get_config(TUNED_PRESETS[dataset], over)

    if protocol == "long":   # hours on a CPU: say so before the first run starts
        estimate([tuned(kind) for kind in models], log)
    for kind in models:
        t0 = time.perf_counter()
        if protocol in ("tuned", "long"):
            cfg = tuned(kind)
            results["samples_per_run"] = cfg.train.steps * cfg.train.batch_size
            scores, fig = _train_and_score(cfg, data, samplers)
        else:
            scores, fig = {}, {}
            for r in range(runs):
                h = paper_draw(r)
                over = [*base, *overrides, *model_overrides(kind),
                        f"train.steps={steps or PAPER_STEPS}",
                        f"train.lr={h['lr']}", f"train.beta1={h['beta1']}",
                        f"model.init_std={h['init_std']}", f"train.seed={r}"]
                s, f = _train_and_score(get_config("toy_paper", over), data, samplers)
                extend(scores, s)
                fig = fig or f
        results["models"][kind] = scores
        figures[kind] = fig
        log(f"{kind:12s} {_summary(scores)}  ({time.perf_counter() - t0:.0f} s)")
    if protocol == "long":
        results["pacgan_ali"] = PACGAN_ALI[dataset]
        results["targets"] = {kind: long_targets(s, dataset, len(data.centres),
                                                 results["samples_per_run"])
                              for kind, s in results["models"].items()}
    return results, figures


def estimate(cfgs: list[Config], log: Callable[[str], None] = print) -> float:
    """Seconds that training ``cfgs`` (each model's runs, batched) will take on this device:
    each one's step timed with :func:`ali.bench.bench` over :data:`ESTIMATE_STEPS` steps
    (whole lazy-R1 intervals, as ``bench`` times them) times its steps; logged per model and
    in total. The same timing as the full-scale experiments' estimate
    (:func:`ali.experiments.runner.estimate`), with one line per batched model."""
    from ..bench import bench

    total = 0.0
    for cfg in cfgs:
        r = bench(cfg, steps=ESTIMATE_STEPS, warmup=1, repeats=1)
        seconds = r["step_ms"] / 1e3 * cfg.train.steps
        total += seconds
        log(f"  {cfg.model.kind}: {r['step_ms']:.1f} ms per step of {cfg.model.runs} batched "
            f"runs on {r['device']}, {cfg.train.steps:,} steps: about {_duration(seconds)}")
    log(f"estimated training time: {_duration(total)}")
    return total


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 5400 else f"{seconds / 60:.0f} min"


def long_targets(scores: dict[str, Any], dataset: str, n_modes: int,
                 samples_per_run: int) -> dict[str, Any]:
    """Whether a model's runs meet the long protocol's targets: every mode on the strict count
    (``modes_hq``) in every run, a mean ``hq`` of at least :data:`LONG_TARGETS`, and at most
    :data:`LONG_MAX_SAMPLES` samples per run."""
    every_mode = all(m == n_modes for m in scores["modes_hq"])
    hq = float(np.mean(scores["hq"]))
    budget = samples_per_run <= LONG_MAX_SAMPLES
    return {"every_run_every_mode": every_mode, "hq": hq, "hq_target": LONG_TARGETS[dataset],
            "within_budget": budget,
            "met": every_mode and hq >= LONG_TARGETS[dataset] and budget}


def _copy_gan_(model: GenerativeModel, gan: GenerativeModel) -> GenerativeModel:
    """``model`` (a gan_inverse or gan_posthoc) with the trained ``gan``'s decoder, frozen:
    inference is then learned for that very GAN, as section 2.2 describes (the post-hoc model
    plays the ALI game against it; the inverse mapping regresses z from its samples), with the
    decoder's batch norm on its running statistics, as it samples."""
    from ..objectives import FreezeDecoderBN, InverseMapping, Objective, PostHoc

    model.decoder.load_state_dict(gan.decoder.state_dict())
    gen_loss = model.config.gen_loss
    if model.config.kind == "gan_posthoc":
        model.objective = Objective([PostHoc(gen_loss, 0.0)])     # the ALI phase from step 0
    else:
        model.objective = Objective([InverseMapping(), FreezeDecoderBN(0.0)])
    return model


def best_run(scores: dict[str, Any]) -> int:
    """The run that covers the grid best: most modes, then most high-quality samples (the
    figure of the paper shows such runs)."""
    return max(range(len(scores["modes"])), key=lambda r: (scores["modes"][r], scores["hq"][r]))


def figure8(dataset: str = "grid", runs: int = 10, steps: int | None = None,
            device: str = "auto", log: Callable[[str], None] = print,
            overrides: tuple[str, ...] = ()) -> tuple[dict[str, Any], dict[str, dict]]:
    """Figure 8's protocol: every model trained ``runs`` times with the paper's per-run draws
    (:func:`paper_draw`, the ``toy_paper`` preset, ``steps`` each: default its 200,000), the
    learned inverse mapping and post-hoc inference added to each fully trained GAN run (its
    decoder frozen) rather than trained beside a GAN of their own, and the best-covering run of
    each model (:func:`best_run`) in the figure. Returns (results.json content, figure points)."""
    from ..build import build_model

    base = ("model.runs=1", f"data.name={dataset}", f"train.device={device}", *overrides)
    data = load_dataset(get_config("toy_paper", base).data)
    results: dict[str, Any] = {"dataset": dataset, "protocol": "figure8", "runs": runs,
                               "steps": get_config("toy_paper", base).train.steps
                               if steps is None else steps, "models": {}, "best_run": {}}
    figs: dict[str, list[dict]] = {}
    gans: list[GenerativeModel] = []
    for kind in ("ali", "gan", "gan_inverse", "gan_posthoc", "vae"):
        t0 = time.perf_counter()
        scores: dict[str, Any] = {}
        figs[kind] = []
        for r in range(runs):
            h = paper_draw(r)
            over = [*base, *model_overrides(kind), f"train.lr={h['lr']}",
                    f"train.beta1={h['beta1']}", f"model.init_std={h['init_std']}",
                    f"train.seed={r}", *([f"train.steps={steps}"] if steps else [])]
            cfg = get_config("toy_paper", over)
            model = None
            if kind in ("gan_inverse", "gan_posthoc"):
                torch.manual_seed(r)
                model = _copy_gan_(build_model(cfg), gans[r])
            t1 = time.perf_counter()
            result = train(cfg, model=model, dataset=data, quiet=True)
            s, f = evaluate(result.model, data, time.perf_counter() - t1)
            extend(scores, s)
            figs[kind].append(f)
            if kind == "gan":
                gans.append(result.model)
        results["models"][kind] = scores
        results["best_run"][kind] = best_run(scores)
        log(f"{kind:12s} {_summary(scores)}  ({time.perf_counter() - t0:.0f} s)")
    figures = {k: figs[k][results["best_run"][k]] for k in figs}
    return results, figures


def _summary(scores: dict[str, Any]) -> str:
    parts = []
    for m in ("modes", "modes_hq", "hq", "recon_mode"):
        v = [s for s in scores[m] if s is not None]
        if v:
            parts.append(f"{m}={np.mean(v):.3g}")
    for name, m in scores.get("samplers", {}).items():
        v = [s for s in m["hq"] if s is not None]
        if v:
            parts.append(f"hq[{name}]={np.mean(v):.3g}")
    return " ".join(parts)


def _stat(values: list[float | None], fmt: str) -> str:
    v = [x for x in values if x is not None]
    if not v:
        return "n/a"
    a = np.asarray(v, dtype=float)
    return (f"{a.mean():{fmt}} ± {a.std():{fmt}} "
            f"(min {a.min():{fmt}}, max {a.max():{fmt}})")


def _sampler_table(results: dict[str, Any]) -> list[str]:
    lines = ["", "Beyond the paper, the same trained runs sampled three ways: ancestral G(z) (the "
             "table above), importance-resampled with the discriminator "
             f"({RESAMPLE_OVERSAMPLE} candidates per sample), and after {CHAIN_STEPS} step(s) "
             "of the decode-encode chain:", "",
             "| model | sampler | modes_hq | hq | spread | mode_kl |", "|---|---|---|---|---|---|"]
    for kind, s in results["models"].items():
        for name, m in {"ancestral": s, **s.get("samplers", {})}.items():
            if all(v is None for v in m["hq"]):
                continue
            lines.append(f"| {kind} | {name} | {_stat(m['modes_hq'], '.1f')} | "
                         f"{_stat(m['hq'], '.3f')} | {_stat(m['spread'], '.2f')} | "
                         f"{_stat(m['mode_kl'], '.3f')} |")
    return lines


def table(results: dict[str, Any]) -> str:
    """A Markdown table in the style of the paper: mean ± std (min, max) over runs."""
    lines = [
        f"# 2-D experiment: {results['dataset']}, protocol {results['protocol']}, "
        f"{results['runs']} runs per model",
        "",
        "| model | modes | modes_hq | hq | recon_mode | seconds/run |",
        "|---|---|---|---|---|---|",
    ]
    for kind, s in results["models"].items():
        lines.append(f"| {kind} | {_stat(s['modes'], '.1f')} | {_stat(s['modes_hq'], '.1f')} | "
                     f"{_stat(s['hq'], '.3f')} | {_stat(s['recon_mode'], '.3f')} | "
                     f"{_stat(s['seconds'], '.1f')} |")
    if any("samplers" in s for s in results["models"].values()):
        lines += _sampler_table(results)
    if "targets" in results:
        p = results["pacgan_ali"]
        lines += ["", f"{results['samples_per_run']:,} samples per run. PacGAN's ALI (40M "
                  f"samples per run): {p['modes']} ± {p['modes_std']} modes, hq {p['hq']}. "
                  "Targets (every mode on the strict count in every run, hq >= "
                  f"{LONG_TARGETS[results['dataset']]}, at most {LONG_MAX_SAMPLES:,} samples): "
                  + "; ".join(f"{k} {'met' if t['met'] else 'not met'}"
                              for k, t in results["targets"].items()) + "."]
    if results["dataset"] == "grid":
        lines += ["", "The paper (its protocol, 200 epochs per run): "
                  + "; ".join(f"{k.upper()} {v['mean']} ± {v['std']} modes (min {v['min']}, "
                              f"max {v['max']})" for k, v in PAPER_MODES.items()) + "."]
    lines += ["", "modes: samples assigned to the nearest component, a mode counts if any "
              "sample lands on it (the paper). modes_hq / hq: a sample is high quality within "
              "3 std of its centre; a mode counts only with a high-quality sample. "
              "recon_mode: held-out points whose reconstruction lands in their own component. "
              "spread: the high-quality samples' RMS offset from their centre per coordinate, in "
              "data stds (the data: 0.97). mode_kl: KL of the samples' share per component from "
              "the mixture's equal weights (0: balanced)."]
    return "\n".join(lines) + "\n"


def _colours(x: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """A 2-D colour map: each mixture component gets the colour of its centre's position."""
    lo, hi = centres.min(0), centres.max(0)
    c = (centres - lo) / np.where(hi > lo, hi - lo, 1)
    rgb = np.stack([c[:, 0], 0.3 + 0.4 * (1 - c[:, 1]), c[:, 1]], axis=1)
    return rgb[x]


def figure_rows(figures: dict[str, dict]) -> list[tuple[str, str]]:
    """(label, key) of the figure's rows: the paper's four, then each sampler some model has."""
    rows = [("x ~ q(x)", "x"), ("z_hat ~ q(z|x)", "z_hat"), ("G(z_hat): reconstructions", "recon"),
            ("x_tilde ~ p(x): samples", "samples")]
    extra = [("samples, D-resampled", "resampled"), ("samples, decode-encode chain", "chain")]
    return rows + [r for r in extra if any(r[1] in f for f in figures.values())]


def figure(figures: dict[str, dict], data: Dataset, path: Path) -> None:
    """Figure 8 of the paper: per model, q(x), q(z) coloured by component, G(E(x)), and p(x)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = figure_rows(figures)
    missing = {"z_hat": "no encoder", "recon": "no encoder", "chain": "no encoder",
               "resampled": "no discriminator"}
    kinds = list(figures)
    fig, axes = plt.subplots(len(rows), len(kinds), figsize=(3 * len(kinds), 3 * len(rows)),
                             squeeze=False)
    centres = data.centres.numpy()
    lim = float(np.abs(centres).max()) * 1.3 + 0.5
    for j, kind in enumerate(kinds):
        f = figures[kind]
        colours = _colours(f["labels"], centres)
        axes[0, j].set_title(kind)
        for i, (label, key) in enumerate(rows):
            ax = axes[i, j]
            ax.set_xticks([]), ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(label)
            if key not in f:
                ax.text(0.5, 0.5, missing.get(key, "n/a"), ha="center", va="center",
                        transform=ax.transAxes)
                continue
            pts = f[key]
            c = colours if key in ("x", "z_hat", "recon") else "0.2"
            ax.scatter(pts[:, 0], pts[:, 1], s=1, c=c, alpha=0.5, linewidths=0)
            if key == "z_hat":
                ax.set_xlim(-4, 4), ax.set_ylim(-4, 4)
            else:
                ax.set_xlim(-lim, lim), ax.set_ylim(-lim, lim)
                ax.scatter(centres[:, 0], centres[:, 1], s=8, c="red", marker="+", linewidths=0.8)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=80))
    plt.close(fig)


def write(results: dict[str, Any], figures: dict[str, dict], data: Dataset, out: Path) -> None:
    """table.md, figure.png and results.json in ``out``, each whole or not at all, results.json
    last: a folder holding it holds a finished write (figure8's rerun keeps such a dataset)."""
    out.mkdir(parents=True, exist_ok=True)
    # an earlier write's results.json would vouch for the files this one is replacing
    (out / "results.json").unlink(missing_ok=True)
    atomic_write(out / "table.md", lambda f: f.write(table(results).encode()))
    figure(figures, data, out / "figure.png")
    atomic_write(out / "results.json",
                 lambda f: f.write((json.dumps(results, indent=2) + "\n").encode()))


