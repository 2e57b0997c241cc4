"""Seconds per training step (and per image) of an image config on this machine.

    PYTHONPATH=src python benchmarks/image_step_time.py mnist [--steps 10] [--batch 100]

Random inputs in [0, 1]; the first two steps are warm-up and not timed. Wall time is what a
run sees; CPU time (summed over threads) is steadier on a shared machine. A speed measurement,
not a test.
"""

from __future__ import annotations

import argparse
import time

import torch

from ali.config import get_config
from ali.build import build_model
from ali.nets import family
from ali.train import make_optimizer, train_step


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("name")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--batch", type=int)
    p.add_argument("--threads", type=int)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    cfg = get_config(a.name)
    b = a.batch or cfg.train.batch_size
    model = build_model(cfg).train()
    pd, pg = model.parameters_d(), model.parameters_g()
    od, og = make_optimizer(pd, cfg.train), make_optimizer(pg, cfg.train)
    x = torch.rand(b, *family(cfg.model.nets).data_shape(cfg.model))
    for i in range(a.steps + 2):
        if i == 2:
            t0, c0 = time.perf_counter(), time.process_time()
        train_step(model, x, model.sample_prior(b), od, og, pd, pg)
    dt = (time.perf_counter() - t0) / a.steps
    cpu = (time.process_time() - c0) / a.steps
    print(f"{a.name}: batch {b}, {torch.get_num_threads()} threads: {dt * 1e3:.1f} ms/step, "
          f"{dt / b * 1e3:.2f} ms/image wall; {cpu / b * 1e3:.2f} ms/image of CPU time")


if __name__ == "__main__":
    main()
