"""Seconds to score 10,000 images with ``model.anomaly_score`` (a benchmark, not a test).

Builds a preset's model (untrained: the time does not depend on the weights), warms up on 500
images, then times each score ``--repeats`` times on 10,000 random uint8 images and prints
every timing and the median. The issue's target: under 5 s for MNIST on 2 CPU cores::

    python benchmarks/scoring_speed.py --preset mnist --kinds l1,egbad
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from ali.anomaly import BATCH_SIZE
from ali.build import build_model
from ali.config import get_config


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="mnist")
    p.add_argument("--kinds", default="l1,egbad")
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    args = p.parse_args()
    torch.manual_seed(0)
    model = build_model(get_config(args.preset, [f"train.device={args.device}"])).eval()
    model.to(args.device)
    x = torch.randint(0, 256, (args.n, *model.data_shape), dtype=torch.uint8)
    print(f"{args.preset} on {args.device} ({torch.get_num_threads()} threads), {args.n} images, "
          f"batch {args.batch_size}")
    for kind in args.kinds.split(","):
        model.anomaly_score(x[:500], kind, batch_size=args.batch_size)
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            s = model.anomaly_score(x, kind, batch_size=args.batch_size)
            s.sum().item()                      # wait for an accelerator
            times.append(time.perf_counter() - t)
        print(f"{kind:6s} " + " ".join(f"{v:.2f}" for v in times)
              + f"  median {statistics.median(times):.2f} s")


if __name__ == "__main__":
    main()
