"""Choose our tabular detector's settings on a validation split (a tuning aid, not a test).

Breast cancer as ``anomaly.py`` splits it, using only its training half: the benign training
cases are cut into ``--folds`` folds; each fold in turn is held out, a model trains on the
other folds' benign cases, and the held-out benign cases and the training half's malignant
ones (which no model trains on) give a validation AUROC. The test half, on which
``anomaly.py`` reports, is never read. Every score of ``ENSEMBLE_SCORES`` is measured at each
of ``--checkpoints`` steps of the same training; the table is the mean (and std) over folds::

    python benchmarks/anomaly_select.py --runs 4 model.cycle=on model.cycle.weight=0.1
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from ali.anomaly import ENSEMBLE_SCORES
from ali.config import get_config
from ali.engine import Callback
from ali.train import train
from sklearn.metrics import roc_auc_score

from anomaly import breast_cancer_split


class Validate(Callback):
    """At each checkpoint step, every ensemble score's AUROC on the run's held-out split."""

    def __init__(self, checkpoints: list[int], auroc: dict[tuple[int, str], list[float]]) -> None:
        self.checkpoints, self.auroc = set(checkpoints), auroc

    def due(self, step: int, loop) -> bool:
        return step in self.checkpoints

    def __call__(self, step: int, loop) -> None:
        model, data = loop.run.model.eval(), loop.run.dataset
        for kind in ENSEMBLE_SCORES:
            s = model.anomaly_score(data.test, kind).numpy()
            self.auroc.setdefault((step, kind), []).append(
                roc_auc_score(data.test_labels.numpy(), s))
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
            train(cfg, quiet=True, callbacks=[Validate(a.checkpoints, auroc)])
    print(f"validation AUROC over {a.folds} folds, runs={a.runs} {' '.join(a.overrides)} "
          f"({time.perf_counter() - start:.0f} s)")
    rows = []
    for (step, kind), v in sorted(auroc.items()):
        rows.append({"steps": step, "score": kind, "auroc": float(np.mean(v)),
                     "std": float(np.std(v))})
        print(f"  {step:5d} steps  {kind:7s} {np.mean(v):.3f} ± {np.std(v):.3f}")
    if a.out:
        a.out.write_text(json.dumps({"runs": a.runs, "overrides": a.overrides, "rows": rows},
                                    indent=2) + "\n")


if __name__ == "__main__":
    main()
