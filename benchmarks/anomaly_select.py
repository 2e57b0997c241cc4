"""Choose our tabular detector's settings on a validation split (a tuning aid, not a test).

Breast cancer as ``anomaly.py`` splits it, using only its training half: the benign training
cases are cut into ``--folds`` folds; each fold in turn is held out, a model trains on the
other folds' benign cases, and the held-out benign cases and the training half's malignant
ones (which no model trains on) give a validation AUROC. The test half, on which
``anomaly.py`` reports, is never read. Every score of ``ENSEMBLE_SCORES`` is measured at each
of ``--checkpoints`` steps of the same training; the table is the mean (and std) over folds::

    python benchmarks/anomaly_select.py --runs 4 model.cycle=on model.cycle.weight=0.1

``--posthoc`` also measures scores the library does not offer, to see whether they would earn a
place: ``centred`` and ``maha``, each run's code against its training codes' mean (squared
distance) and covariance (Mahalanobis), averaged over runs, and ``emaD``, ``latent`` of a copy
of the model whose weights are an exponential moving average (decay D, ``--ema``) of the
training's.
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from ali.anomaly import ENSEMBLE_SCORES, _batch
from ali.config import get_config
from ali.engine import Callback
from ali.train import train
from sklearn.metrics import roc_auc_score

from anomaly import breast_cancer_split


class Average(Callback):
    """Exponential moving averages of the model's weights, one copy per decay (buffers copied)."""

    def __init__(self, decays: list[float]) -> None:
        self.decays, self.copies = decays, {}

    def due(self, step: int, loop) -> bool:
        return bool(self.decays)

    @torch.no_grad()
    def __call__(self, step: int, loop) -> None:
        model = loop.run.model
        for d in self.decays:
            if d not in self.copies:
                self.copies[d] = copy.deepcopy(model)
                continue
            for mine, live in zip(self.copies[d].parameters(), model.parameters()):
                mine.lerp_(live, 1 - d)
            for mine, live in zip(self.copies[d].buffers(), model.buffers()):
                mine.copy_(live)


@torch.no_grad()
def codes(model, x: torch.Tensor) -> torch.Tensor:
    return model.encode_mean(_batch(model, x)).reshape(len(x), model.runs, -1)   # (N, R, L)


def posthoc_scores(model, train_x: torch.Tensor, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """``centred`` and ``maha`` of ``x`` against the codes of the training items."""
    fit, z = codes(model, train_x), codes(model, x)                              # (N, R, L)
    mean = fit.mean(0)                                                           # (R, L)
    maha = []
    for r in range(model.runs):
        # a small ridge: 135 codes estimate an 8 x 8 covariance well, but not exactly
        cov = torch.cov((fit[:, r] - mean[r]).T) + 1e-3 * torch.eye(fit.shape[2])
        d = z[:, r] - mean[r]
        maha.append((d @ torch.linalg.inv(cov) * d).sum(1))
    return {"centred": (z - mean).pow(2).sum(2).mean(1), "maha": torch.stack(maha, 1).mean(1)}


class Validate(Callback):
    """At each checkpoint step, every ensemble score's AUROC on the run's held-out split (and
    the post-hoc scores' with ``average``)."""

    def __init__(self, checkpoints: list[int], auroc: dict[tuple[int, str], list[float]],
                 average: Average | None = None) -> None:
        self.checkpoints, self.auroc, self.average = set(checkpoints), auroc, average

    def due(self, step: int, loop) -> bool:
        return step in self.checkpoints

    def __call__(self, step: int, loop) -> None:
        model, data = loop.run.model.eval(), loop.run.dataset
        scores = {kind: model.anomaly_score(data.test, kind) for kind in ENSEMBLE_SCORES}
        if self.average is not None:
            scores |= posthoc_scores(model, data.train, data.test)
            for d, averaged in self.average.copies.items():
                scores[f"ema{d}"] = codes(averaged.eval(), data.test).pow(2).sum(2).mean(1)
        for kind, s in scores.items():
            self.auroc.setdefault((step, kind), []).append(
                roc_auc_score(data.test_labels.numpy(), s.numpy()))
        model.train()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("overrides", nargs="*", help="section.key=value for the table preset")
    p.add_argument("--runs", type=int, default=1, help="model.runs: >1 scores as an ensemble")
    p.add_argument("--folds", type=int, default=4)
    p.add_argument("--checkpoints", default="500,1000,2000,3000",
                   type=lambda s: sorted(int(v) for v in s.split(",")))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, help="also write the table as JSON here")
    p.add_argument("--posthoc", action="store_true", help="also the post-hoc scores (above)")
    p.add_argument("--ema", default="0.99,0.999", help="--posthoc's averaging decays",
                   type=lambda s: [float(v) for v in s.split(",") if v])
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    x, malignant, train_half, _ = breast_cancer_split()          # the test half: never read
    benign = train_half[malignant[train_half] == 0]
    anomalies = train_half[malignant[train_half] == 1]
    folds = np.array_split(np.random.default_rng(1).permutation(benign), a.folds)
    auroc: dict[tuple[int, str], list[float]] = {}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for f, held in enumerate(folds):
            fit = np.concatenate([g for j, g in enumerate(folds) if j != f])
            val = np.concatenate([held, anomalies])
            path = Path(tmp) / f"fold{f}.npz"
            np.savez(path, x_train=x[fit], y_train=malignant[fit], x_test=x[val],
                     y_test=malignant[val])
            cfg = get_config("table", [f"data.root={path}", "data.normal_class=0",
                                       "train.device=cpu", "train.progress=off",
                                       f"train.steps={a.checkpoints[-1]}",
                                       f"train.seed={a.seed}", f"model.runs={a.runs}",
                                       *a.overrides])
            average = Average(a.ema) if a.posthoc else None
            callbacks = [average, Validate(a.checkpoints, auroc, average)]
            train(cfg, quiet=True, callbacks=[c for c in callbacks if c is not None])
    print(f"validation AUROC over {a.folds} folds, runs={a.runs} {' '.join(a.overrides)} "
          f"({time.perf_counter() - start:.0f} s)")
    rows = []
    for (step, kind), v in sorted(auroc.items()):
        rows.append({"steps": step, "score": kind, "auroc": float(np.mean(v)),
                     "std": float(np.std(v))})
        print(f"  {step:5d} steps  {kind:8s} {np.mean(v):.3f} ± {np.std(v):.3f}")
    if a.out:
        a.out.write_text(json.dumps({"runs": a.runs, "overrides": a.overrides, "rows": rows},
                                    indent=2) + "\n")


if __name__ == "__main__":
    main()
