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
from anomaly import breast_cancer_split
from sklearn.metrics import roc_auc_score

from ali.anomaly import ENSEMBLE_SCORES
from ali.config import get_config
from ali.run import build_run


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
            run = build_run(cfg, torch.device("cpu"))
            xv, yv = run.dataset.test, run.dataset.test_labels.numpy()
            for step in range(a.checkpoints[-1]):
                run.model.schedule(step, run.total)
                run.set_learning_rates(step)
                xb, z, inputs = run.draw()
                run.stepper(xb, z, **inputs)
                if step + 1 in a.checkpoints:
                    model = run.model.eval()
                    for kind in ENSEMBLE_SCORES:
                        s = model.anomaly_score(xv, kind).numpy()
                        auroc.setdefault((step + 1, kind), []).append(roc_auc_score(yv, s))
                    run.model.train()
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
