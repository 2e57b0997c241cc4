"""The samplers beyond ancestral G(z) on one trained run of the 2-D experiment (a benchmark,
not a test; README, "Beyond the paper: samplers").

    python benchmarks/toy_samplers.py                      # the toy preset, train.seed=0
    python benchmarks/toy_samplers.py model.kind=gan model.recon_weight=0

Trains one run of the ``toy`` preset with the given ``section.key=value`` overrides, then scores
10,000 samples drawn: ancestrally; by discriminator importance resampling with 1, 5, 10, 20 and
50 candidates per sample; after 0-5 steps of the decode-encode chain; and the reconstructions of
10,000 held-out points (whose width the chain inherits). One line each: ``modes_hq``, ``hq``,
``spread`` (1 = as wide as the data) and ``mode_kl`` (0 = balanced).
"""

from __future__ import annotations

import argparse
import time

import torch

from ali.config import get_config
from ali.data import load_dataset
from ali.eval.toy import mode_metrics
from ali.train import train

N = 10_000


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("overrides", nargs="*", help="section.key=value")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    cfg = get_config("toy", ["model.runs=1", "train.seed=0", "train.progress=off",
                             *a.overrides])
    data = load_dataset(cfg.data)
    t0 = time.perf_counter()
    model = train(cfg, dataset=data, quiet=True).model.eval()
    print(f"{' '.join(a.overrides) or 'toy'}: trained in {time.perf_counter() - t0:.0f} s")
    torch.manual_seed(0)

    def show(name: str, x: torch.Tensor) -> None:
        m = mode_metrics(x, data.centres, data.std)
        spread = "n/a" if m["spread"] is None else f"{m['spread']:.2f}"
        print(f"  {name:26s} modes_hq {m['modes_hq']:2d}  hq {m['hq']:.3f}  spread {spread}  "
              f"mode_kl {m['mode_kl']:.3f}", flush=True)

    with torch.no_grad():
        show("data (held out)", data.test[:N])
        show("ancestral G(z)", model.sample(N))
        if model.discriminator is not None:
            for k in (1, 5, 10, 20, 50):
                show(f"resampled, {k} candidates", model.sample_resampled(N, oversample=k))
        if model.encoder is not None:
            show("reconstructions G(E(x))", model.reconstruct(data.test[:N]))
            for steps in range(6):
                show(f"chain, {steps} steps", model.sample_chain(N, steps))


if __name__ == "__main__":
    main()
