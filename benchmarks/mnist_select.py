"""Choose an MNIST preset's settings on the validation split (a tuning aid, not a test).

The MNIST experiment's three-way split of the real MNIST test set (../shared/data/mnist):
train on test[0:8000], choose here on test[8000:9000], report (``ali experiment mnist``) on
test[9000:10000], which this script never reads. The preset trains once to the last of
``--checkpoints``, stopping at each one (exact resume; with the presets' constant learning
rate the model there is the one a run of that many steps trains) to measure the metric
``ali eval`` reports for it, on the validation split:

- a semi-supervised preset (``mnist_ssl_100``): ``classify`` (K+1 error, %);
- a conditional preset (``mnist_conditional``): ``conditional`` (accuracy of the samples'
  classes by the pixel classifier, trained once on the training split);
- otherwise (``mnist``): ``svm`` (``--repeats`` SVMs of 1,000 labels, error %) and ``recon``
  (reconstructions keeping their class).

::

    python benchmarks/mnist_select.py mnist_ssl_100 --checkpoints 1000,2000,3000 train.lr=1e-3
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from ali.config import get_config
from ali.eval.registry import EvalContext, run_metric
from ali.experiments.paper import MNIST_SPLIT
from ali.train import train

SPLIT = (*MNIST_SPLIT["full"], "data.test_range=8000:9000")
"""The experiment's training split; held out: the validation part instead of the report part."""
DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


def metrics_for(cfg, repeats: int) -> list[tuple[str, dict]]:
    """(metric, its options) measured for ``cfg``'s kind of model."""
    if cfg.model.semi_supervised:
        return [("classify", {})]
    if cfg.model.conditional:
        return [("conditional", {})]
    return [("svm", {"repeats": repeats}), ("recon", {})]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("preset", help="mnist, mnist_ssl_100 or mnist_conditional")
    p.add_argument("overrides", nargs="*", help="section.key=value for the preset")
    p.add_argument("--root", default=str(DEFAULT_ROOT))
    p.add_argument("--checkpoints", required=True,
                   type=lambda s: sorted(int(v) for v in s.split(",")))
    p.add_argument("--repeats", type=int, default=20, help="SVMs per svm measurement")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--out", type=Path, help="also write the table as JSON here")
    a = p.parse_intermixed_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    cfg = get_config(a.preset, [f"data.root={a.root}", *SPLIT, "train.device=cpu",
                                "train.progress=off", f"train.steps={a.checkpoints[-1]}",
                                *a.overrides])
    rows, start = [], time.perf_counter()
    with tempfile.TemporaryDirectory() as run_dir:
        for i, step in enumerate(a.checkpoints):
            train(cfg, run_dir=run_dir, resume=i > 0, until=step, quiet=True, images=False)
            ctx = EvalContext(Path(run_dir), quiet=True)
            row = {"steps": step, "seconds": round(time.perf_counter() - start)}
            for name, opts in metrics_for(cfg, a.repeats):
                res, _ = run_metric(ctx, name, argparse.Namespace(**opts))
                row.update({f"{name}.{k}": v for k, v in res.items()
                            if isinstance(v, (int, float)) and not isinstance(v, bool)})
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(f"{a.preset} {' '.join(a.overrides)}: validation test[8000:9000], "
          f"{time.perf_counter() - start:.0f} s")
    if a.out:
        a.out.write_text(json.dumps({"preset": a.preset, "overrides": a.overrides,
                                     "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
