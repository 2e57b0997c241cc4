"""One setting of the 2-D experiment's ALI, a few runs side by side (a tuning aid, not a test).

    python benchmarks/toy_sweep.py train.lr_d=1.6e-3 model.recon_weight=2
    python benchmarks/toy_sweep.py model.r1_weight=0.3 model.r1_every=1   # the previous preset

Trains the ``toy`` preset with the given ``section.key=value`` overrides (``--runs`` runs as one
batched computation, ``train.seed=0``), scores every run as ``ali toy`` does, and prints one line:
the training time, ``modes_hq`` per run, ``hq`` (mean and range), ``recon_mode`` and the fraction
of samples within 0.1, 0.15 (= 3 std, ``hq``), 0.3 and 0.5 of their nearest centre, which tells
too-wide modes (0.15-0.3) from lines of samples between modes (beyond 0.5), ``spread`` and
``mode_kl``, and the same for the other samplers (discriminator-resampled, decode-encode chain).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from ali.config import get_config
from ali.data import load_dataset
from ali.eval.toy import assign
from ali.experiments.toy import evaluate
from ali.train import train

RADII = (0.1, 0.15, 0.3, 0.5)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("overrides", nargs="*", help="section.key=value")
    p.add_argument("--runs", type=int, default=4)
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (1 lets two sweeps share a 2-core machine)")
    p.add_argument("--preset", default="toy")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    cfg = get_config(a.preset, [f"model.runs={a.runs}", "train.seed=0", "train.progress=off",
                                *a.overrides])
    data = load_dataset(cfg.data)
    t0 = time.perf_counter()
    model = train(cfg, dataset=data, quiet=True).model
    seconds = time.perf_counter() - t0
    scores, _ = evaluate(model, data, seconds, samplers=True)
    with torch.no_grad():
        s = model.sample(10_000).view(10_000, a.runs, 2)
    d = torch.stack([assign(s[:, r], data.centres)[1] for r in range(a.runs)])
    within = {r: round(float((d <= r).float().mean()), 3) for r in RADII}
    rec = [v for v in scores["recon_mode"] if v is not None]
    other = "  ".join(f"{k}: hq={np.mean(m['hq']):.3f} spread={np.mean(m['spread']):.2f} "
                      f"kl={np.mean(m['mode_kl']):.3f}"
                      for k, m in scores["samplers"].items() if m["hq"][0] is not None)
    print(f"{' '.join(a.overrides) or a.preset} | {seconds:.0f} s  modes_hq={scores['modes_hq']}  "
          f"hq={np.mean(scores['hq']):.3f} [{min(scores['hq']):.2f}-{max(scores['hq']):.2f}]  "
          f"recon_mode={np.mean(rec) if rec else float('nan'):.3f}  within={within}  "
          f"spread={np.mean(scores['spread']):.2f} kl={np.mean(scores['mode_kl']):.3f}  {other}",
          flush=True)


if __name__ == "__main__":
    main()
