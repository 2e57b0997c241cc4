"""Time full training steps of the 2-D models, one run vs runs side by side (a benchmark).

    python benchmarks/toy_step_time.py --runs 1 10 --batch-size 32 100

Prints ms per step and run-steps per second (runs x steps / s), median of --repeats timings.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from ali.config import get_config
from ali.experiments.toy import tuned_overrides
from ali.build import build_model
from ali.train import make_optimizer, train_step


def time_step(kind: str, runs: int, batch: int, steps: int) -> float:
    cfg = get_config("toy", [f"model.runs={runs}", f"train.batch_size={batch}",
                             *tuned_overrides(kind)])
    m = build_model(cfg)
    pd, pg = m.parameters_d(), m.parameters_g()
    od, og = make_optimizer(pd, cfg.train, cfg.train.lr_d), make_optimizer(pg, cfg.train)
    x = torch.randn(batch, runs, 2) if runs > 1 else torch.randn(batch, 2)
    for i in range(3):
        m.schedule(i, cfg.train.steps)
        train_step(m, x, m.sample_prior(batch), od, og, pd, pg)
    t = time.perf_counter()
    for i in range(3, 3 + steps):
        m.schedule(i, cfg.train.steps)  # lazy R1: the penalty on one step in model.r1_every
        train_step(m, x, m.sample_prior(batch), od, og, pd, pg)
    return (time.perf_counter() - t) / steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default="ali")
    p.add_argument("--runs", type=int, nargs="+", default=[1, 10])
    p.add_argument("--batch-size", type=int, nargs="+", default=[32, 100])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    print(f"threads: {torch.get_num_threads()}")
    for b in a.batch_size:
        for r in a.runs:
            dt = statistics.median(time_step(a.model, r, b, a.steps) for _ in range(a.repeats))
            print(f"{a.model} batch {b:4d} runs {r:3d}: {dt * 1e3:7.1f} ms/step  "
                  f"{r / dt:7.0f} run-steps/s")


if __name__ == "__main__":
    main()
