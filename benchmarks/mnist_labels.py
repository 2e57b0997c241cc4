"""MNIST with labels: semi-supervised ALI (K+1 discriminator, 100 labels) or class-conditional
ALI, on the real MNIST test set (a benchmark, not a test).

Trains on the first 9,000 images of ../shared/data/mnist's test set and scores on the last
1,000, printing the held-out error (semi-supervised) at every log interval:

    python benchmarks/mnist_labels.py ssl --out runs/mnist-ssl
    python benchmarks/mnist_labels.py conditional --out runs/mnist-cond

Then `ali eval RUN --metric classify` / `--metric conditional` give the final figures.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ali.config import get_config
from ali.data import load_dataset
from ali.eval.semi_supervised import classification_error
from ali.train import train

SPLIT = ["data.train_split=test", "data.train_range=0:9000", "data.test_split=test",
         "data.test_range=9000:10000"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("kind", choices=["ssl", "conditional"])
    default_root = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
    p.add_argument("--root", default=str(default_root))
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--out", required=True)
    a = p.parse_args()
    name = "mnist_ssl_100" if a.kind == "ssl" else "mnist_conditional"
    cfg = get_config(name, [f"data.root={a.root}", *SPLIT, *a.overrides])
    data = load_dataset(cfg.data)
    curve = []

    def hook(step, model, run_dir):
        if a.kind == "ssl":
            err = classification_error(model, data.test, data.test_labels)
            curve.append((step, err))
            print(f"step {step}: held-out error {err:.2f}%", flush=True)

    t0 = time.perf_counter()
    r = train(cfg, run_dir=a.out, dataset=data, hooks=[hook])
    out = {"config": name, "overrides": a.overrides, "steps": r.step,
           "seconds": round(time.perf_counter() - t0, 1), "curve": curve}
    print(json.dumps(out))
    Path(a.out, "benchmark.json").write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
