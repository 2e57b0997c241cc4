"""Anomaly detection with ALI, side by side with PyOD (a benchmark, not a test).

MNIST one-class on the real digits (``--root``, default ../shared/data/mnist: only the 10,000
test digits are needed), with the MNIST experiment's split of that set: each model trains on the
normal digits of test[0:8000], test[8000:9000] is the validation part (unused by every model
here: no model selection), and AUROC is measured on test[9000:10000], the normal digit against
every other. Then breast cancer from scikit-learn (the malignant tumours are the anomalies):
a fixed random half of the 569 cases for training (its benign cases only), the other half for
the AUROC.

Models, each given the same wall-clock training budget (``--budget-s``), the same data and
the same seeds, on the same threads:

- ``ali``: EGBAD-style ALI (the ``mnist`` / ``table`` preset: ALI with ALICE's light cycle
  term), score ``egbad`` (0.9 * L1 + 0.1 * D-feature distance);
- ``alad``: the same plus ALAD's D_xx and D_zz and spectral normalisation of every
  discriminator (``model.alad=on``, ``model.spectral_norm=true``), score ``alad``;
- ``ali_ens`` (breast cancer only): four ``table`` ALI runs trained as one batched model and
  scored as an ensemble by ``latent``, settings chosen on validation folds of the training
  half (``anomaly_select.py``);
- PyOD's ``ALAD``, ``AutoEncoder``, ``DeepSVDD`` (default settings, trained until the budget
  runs out: a hook on their optimizer steps stops the fit, see :func:`fit_pyod`) and
  ``IForest`` (defaults; it needs far less than the budget);
- ``mean_l1``: no model, the L1 distance to the mean training item: the floor.

Our models' other scores (l1, fm, logit, egbad, alad) are written to the JSON too; the table
shows the fixed score above. Example (what the docs' table ran)::

    python benchmarks/anomaly.py --digits 0,1,7 --budget-s 45 --out runs/anomaly-bench

Writes ``results.json`` and, for the first digit, ``extremes-digitK.png``: the 16 held-out
digits our ``ali`` model scores lowest (top rows) and the 16 it scores highest (bottom rows).
Needs scikit-learn and PyOD: ``pip install "ali[anomaly-bench]"`` (PyOD uses the installed
torch).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from ali.anomaly import ENSEMBLE_SCORES
from ali.config import get_config
from ali.data import load_dataset
from ali.run import build_run

ALAD_SETS = ("model.alad=on", "model.spectral_norm=true")
ENSEMBLE_SETS = ("model.runs=4", "model.cycle=on", "model.cycle.weight=0.01",
                 "train.steps=3000")
"""``ali_ens``: four ALI runs trained side by side as one batched model, scored as an ensemble;
its cycle weight, steps and score were chosen on breast cancer's validation folds
(``anomaly_select.py``; docs, anomaly.md)."""
OURS = {"ali": ("egbad", ()), "alad": ("alad", ALAD_SETS),
        "ali_mlp": ("egbad", ()), "alad_mlp": ("alad", ALAD_SETS),
        "ali_ens": ("latent", ENSEMBLE_SETS)}
"""Our models: (the score the table shows, overrides); ``*_mlp`` are the ``table`` preset's MLPs
on the digits' 784 pixels as feature vectors, the others the ``mnist`` preset's convnets (on
breast cancer every one of ours is the table preset, so only ``ali``, ``alad`` and ``ali_ens``
run there). ``ali_ens`` is the table preset's alone (run-batched models are MLPs only), so it
runs on breast cancer only."""
PYOD = ("pyod_alad", "pyod_ae", "pyod_deepsvdd", "iforest")
BASELINE = "mean_l1"
"""No training: the L1 distance to the mean training item (pixels; standardised features on
breast cancer), what a detector must beat to have learned anything."""
TABULAR_MODELS = ("ali", "alad", "ali_ens", *PYOD, BASELINE)
TABULAR_ONLY = ("ali_ens",)
MNIST_SPLIT = ("data.train_split=test", "data.train_range=0:8000", "data.test_split=test",
               "data.test_range=9000:10000")
EXTREMES = 16
"""Digits shown at each end of the score ranking."""
MNIST_LR = 2e-4
"""Our models' learning rate on MNIST: the preset's 1e-4 is tuned for 6,000 steps, a budget of
a minute allows a few hundred."""
SCORING_IMAGES = 10_000


def train_ours(cfg: Any, budget: float) -> tuple[Any, int, float]:
    """(the model in evaluation mode, steps taken, seconds) of ``cfg`` trained for at most
    ``budget`` seconds of wall-clock time (or its train.steps)."""
    run = build_run(cfg, torch.device("cpu"))
    start, step = time.perf_counter(), 0
    while step < run.total and time.perf_counter() - start < budget:
        run.model.schedule(step, run.total)
        run.set_learning_rates(step)
        x, z, inputs = run.draw()
        run.stepper(x, z, **inputs)
        step += 1
    return run.model.eval(), step, time.perf_counter() - start


def our_scores(model: Any, x: torch.Tensor) -> dict[str, np.ndarray]:
    if model.runs > 1:
        kinds = list(ENSEMBLE_SCORES)
    else:
        kinds = ["l1", "l2", "latent", "fm", "logit", "egbad"] + (
            ["alad"] if model.d_xx is not None else [])
    return {k: model.anomaly_score(x, k).cpu().numpy() for k in kinds}


PYOD_MAX_EPOCHS = 10**6
"""PyOD's deep models train "for ever" and are stopped at the budget (:func:`fit_pyod`)."""


def pyod_model(name: str, n_features: int, epochs: int, seed: int) -> Any:
    """A PyOD detector with its defaults, ``epochs`` passes for the deep ones (ALAD: steps)."""
    if name == "pyod_alad":
        from pyod.models.alad import ALAD
        return ALAD(epochs=epochs, verbose=0)
    if name == "pyod_ae":
        from pyod.models.auto_encoder import AutoEncoder
        return AutoEncoder(epoch_num=epochs, verbose=0, random_state=seed)
    if name == "pyod_deepsvdd":
        from pyod.models.deep_svdd import DeepSVDD
        return DeepSVDD(n_features=n_features, epochs=epochs, verbose=0, random_state=seed)
    from pyod.models.iforest import IForest
    return IForest(random_state=seed)


class _OutOfTime(Exception):
    pass


def fit_pyod(name: str, x: np.ndarray, budget: float, seed: int) -> tuple[Any, int, float]:
    """(the fitted detector, optimizer steps, seconds of training), the deep detectors stopped
    at ``budget`` seconds like our models: they are asked for :data:`PYOD_MAX_EPOCHS` and an
    optimizer-step hook ends the fit at the first step past the budget; the detector is then
    finished as its own ``fit`` would (scores of the training data, threshold), with the weights
    it had (DeepSVDD: not its best epoch's, which its fit restores at the end). IForest: one
    fit of its defaults."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    det = pyod_model(name, x.shape[1], PYOD_MAX_EPOCHS, seed)
    start = time.perf_counter()
    if name == "iforest":
        det.fit(x)
        return det, 0, time.perf_counter() - start
    steps, trained = 0, 0.0

    def stop_at_budget(optimizer: Any, args: Any, kwargs: Any) -> None:
        nonlocal steps, trained
        trained = time.perf_counter() - start
        if trained >= budget:
            raise _OutOfTime
        steps += 1

    from torch.optim.optimizer import register_optimizer_step_pre_hook

    hook = register_optimizer_step_pre_hook(stop_at_budget)
    try:
        det.fit(x)
    except _OutOfTime:
        det.decision_scores_ = np.zeros(len(x))      # decision_function checks it is fitted
        det._process_decision_scores()
        det.decision_scores_ = det.decision_function(x)
        det._process_decision_scores()
    finally:
        hook.remove()
    # the training time, as for our models (finishing can JIT-compile PyOD's distance code)
    return det, steps, trained


def evaluate(models: list[str], train_cfg: Callable[[str, int], Any], x_pyod: np.ndarray,
             test_x: Callable[[str], Any], test_pyod: np.ndarray, anomalous: np.ndarray,
             budget: float, seed: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """{model: {auroc, seconds, ...}} on one task, and our trained models; ``test_x(name)``
    is the held-out data as our model ``name`` takes it."""
    out, trained = {}, {}
    for name in models:
        if name in OURS:
            model, steps, secs = train_ours(train_cfg(name, seed), budget)
            scores = our_scores(model, test_x(name))
            main = OURS[name][0]
            out[name] = {"auroc": float(roc_auc_score(anomalous, scores[main])), "score": main,
                         "steps": steps, "seconds": secs,
                         "all_scores": {k: float(roc_auc_score(anomalous, v))
                                        for k, v in scores.items()}}
            trained[name] = (model, scores[main])
        elif name == BASELINE:
            t = time.perf_counter()
            s = np.abs(test_pyod - x_pyod.mean(0)).sum(1)
            out[name] = {"auroc": float(roc_auc_score(anomalous, s)),
                         "seconds": time.perf_counter() - t}
        else:
            det, steps, secs = fit_pyod(name, x_pyod, budget, seed)
            s = det.decision_function(test_pyod)
            out[name] = {"auroc": float(roc_auc_score(anomalous, s)), "steps": steps,
                         "seconds": secs}
        print(f"  {name:14s} AUROC {out[name]['auroc']:.3f}  ({out[name]['seconds']:.0f} s)",
              flush=True)
    return out, trained


def mnist(args: argparse.Namespace, models: list[str]) -> dict[str, Any]:
    from ali.viz import save_grid

    results: dict[str, Any] = {}
    for k in args.digits:
        base = [f"data.root={args.root}", *MNIST_SPLIT, f"data.normal_class={k}",
                "train.device=cpu", "train.progress=off", f"train.lr={MNIST_LR}",
                "train.steps=1000000"]
        data = load_dataset(get_config("mnist", base).data)
        x_train = data.train.float().div(255).flatten(1).numpy()
        x_test = data.test.float().div(255)
        anomalous = (data.test_labels != k).numpy()
        # the same digits as pixel vectors, for the MLP variants (normal digits only)
        flat = args.out / f"mnist-pixels-{k}.npz"
        np.savez(flat, x_train=x_train, x_test=x_test.flatten(1).numpy())
        base_mlp = [f"data.root={flat}", "train.device=cpu", "train.progress=off",
                    "train.steps=1000000"]

        def cfg(name: str, seed: int) -> Any:
            if name.endswith("_mlp"):
                return get_config("table", [*base_mlp, f"train.seed={seed}", *OURS[name][1]])
            return get_config("mnist", [*base, f"train.seed={seed}", *OURS[name][1]])

        def test_x(name: str) -> Any:
            return x_test.flatten(1) if name.endswith("_mlp") else data.test

        for seed in args.seeds:
            print(f"digit {k}, seed {seed}: {len(x_train)} normal training digits", flush=True)
            res, trained = evaluate(models, cfg, x_train, test_x, x_test.flatten(1).numpy(),
                                    anomalous, args.budget_s, seed)
            results[f"{k}/{seed}"] = res
            if k == args.digits[0] and seed == args.seeds[0] and "ali" in trained:
                model, s = trained["ali"]
                order = np.argsort(s)
                pick = np.concatenate([order[:EXTREMES], order[-EXTREMES:]])
                save_grid(x_test[torch.from_numpy(pick)], args.out / f"extremes-digit{k}.png",
                          8, 3)
                scoring_speed(model, data.test, args, results)
    return results


def scoring_speed(model: Any, test: torch.Tensor, args: argparse.Namespace,
                  results: dict[str, Any]) -> None:
    """Seconds to score 10,000 MNIST digits (the held-out 1,000 ten times over), per score."""
    x = test.repeat(SCORING_IMAGES // len(test) + 1, 1, 1, 1)[:SCORING_IMAGES]
    speed = {}
    for kind in ("l1", "egbad"):
        model.anomaly_score(x[:500], kind)                     # warm-up
        t = time.perf_counter()
        model.anomaly_score(x, kind)
        speed[kind] = time.perf_counter() - t
    results["scoring_seconds_10k"] = speed
    print(f"scoring {SCORING_IMAGES} digits: " + ", ".join(f"{k} {v:.2f} s"
                                                             for k, v in speed.items()))


def breast_cancer_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(features, malignant 0/1, the training half's indices, the test half's): a fixed random
    half for training (its benign cases train; ``anomaly_select.py`` validates on the rest of
    it), the other half only for the reported AUROC."""
    from sklearn.datasets import load_breast_cancer

    d = load_breast_cancer()
    malignant = (d.target == 0).astype(np.int64)       # sklearn: 0 = malignant
    order = np.random.default_rng(0).permutation(len(d.data))
    half = len(order) // 2
    return d.data, malignant, order[:half], order[half:]


def breast_cancer(args: argparse.Namespace, models: list[str]) -> dict[str, Any]:
    x, malignant, tr, te = breast_cancer_split()
    path = args.out / "breast_cancer.npz"
    np.savez(path, x_train=x[tr], y_train=malignant[tr], x_test=x[te], y_test=malignant[te])
    base = [f"data.root={path}", "data.normal_class=0", "train.device=cpu",
            "train.progress=off", "train.steps=1000000"]
    data = load_dataset(get_config("table", base).data)
    # PyOD gets the same standardised features our models see (training statistics)
    mean, std = data.train.mean(0), data.train.std(0)
    x_pyod = ((data.train - mean) / std).numpy()
    test_pyod = ((data.test - mean) / std).numpy()

    def cfg(name: str, seed: int) -> Any:
        return get_config("table", [*base, f"train.seed={seed}", *OURS[name][1]])

    results = {}
    for seed in args.seeds:
        print(f"breast cancer, seed {seed}: {len(data.train)} benign training cases", flush=True)
        results[str(seed)], _ = evaluate(models, cfg, x_pyod, lambda name: data.test,
                                         test_pyod, data.test_labels.numpy() == 1,
                                         args.tabular_budget_s, seed)
    return results


def table(results: dict[str, Any], models: list[str]) -> str:
    lines = ["| task | " + " | ".join(models) + " |", "|---" * (len(models) + 1) + "|"]
    means: dict[str, list[float]] = {m: [] for m in models}
    for task, res in results.items():
        lines.append(f"| {task} | " + " | ".join(f"{res[m]['auroc']:.3f}" for m in models)
                     + " |")
        for m in models:
            means[m].append(res[m]["auroc"])
    lines.append("| mean | " + " | ".join(f"**{np.mean(v):.3f}**" for v in means.values())
                 + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", default="../shared/data/mnist")
    p.add_argument("--digits", default="0,1,2,3,4,5,6,7,8,9",
                   type=lambda s: [int(v) for v in s.split(",") if v != ""])
    p.add_argument("--seeds", default="0", type=lambda s: [int(v) for v in s.split(",")])
    p.add_argument("--budget-s", type=float, default=60.0,
                   help="training wall-clock seconds per model per MNIST task")
    p.add_argument("--tabular-budget-s", type=float, default=20.0,
                   help="training wall-clock seconds per model on breast cancer")
    p.add_argument("--models", default=",".join([*OURS, *PYOD, BASELINE]))
    p.add_argument("--threads", type=int, default=2,
                   help="torch threads of every model (1 on a loaded machine: idle threads "
                        "spin at OpenMP barriers)")
    p.add_argument("--out", type=Path, default=Path("runs/anomaly-bench"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    models = args.models.split(",")
    mnist_models = [m for m in models if m not in TABULAR_ONLY]
    start = time.perf_counter()
    results: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}}
    if args.digits:
        results["mnist"] = mnist(args, mnist_models)
    tabular = [m for m in models if m in TABULAR_MODELS]
    results["breast_cancer"] = breast_cancer(args, tabular)
    results["seconds"] = time.perf_counter() - start
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    speed = results.get("mnist", {}).pop("scoring_seconds_10k", None)
    if args.digits:
        print("\nMNIST one-class AUROC (normal digit / seed)\n"
              + table(results["mnist"], mnist_models))
        results["mnist"]["scoring_seconds_10k"] = speed
    print("\nbreast cancer AUROC (seed)\n" + table(results["breast_cancer"], tabular))
    print(f"\n{results['seconds']:.0f} s in all -> {args.out / 'results.json'}")


if __name__ == "__main__":
    main()
