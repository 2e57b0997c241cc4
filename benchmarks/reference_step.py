"""Our training step against the straightforward loop of most public ALI/BiGAN ports.

    PYTHONPATH=src python benchmarks/reference_step.py svhn [--batch-size 100] [--rounds 5]
        [--precision fp32 bf16] [--ablate]

The reference loop, as most public PyTorch ports write it, on the same networks (the same
layer tables, built from torch.nn's own Conv2d, ConvTranspose2d and Dropout), the same batch
and fp32:

1. z_hat = E(x), x_tilde = G(z) (NCHW memory format); D on (x, z_hat.detach()) and
   (x_tilde.detach(), z) (the two halves as one batch, as ours, so batch norm and dropout see
   the same thing); D's loss, backward, Adam step;
2. a second full forward of E, G and D for the generator's loss; a full backward (it also
   computes D's gradients, which the next step zeroes); Adam step.

Its optimisers are torch.optim.Adam with the defaults (not the fused kernel).

Ours is ``ali.bench``'s step, i.e. exactly what ``ali train`` runs (one forward, both
gradients from it, fused Adam, the fast layers of ``ali.nets.layers``) in each --precision.
Both are timed on random data of the config's shape, alternating chunks of --steps steps for
--rounds rounds in this one process; the medians and their ratio are printed. --ablate adds
ours with torch.nn's layers and the reference with ours, to show where the gain comes from.
"""

from __future__ import annotations

import argparse
import statistics

import torch
import torch.nn.functional as F
from torch import nn

from ali.bench import prepare, time_chunk
from ali.config import get_config
from ali.nets import layers


def plain_layers_(model: nn.Module) -> nn.Module:
    """Turn the fast layers of ``ali.nets.layers`` back into torch.nn's own (the same
    parameters; only ``forward`` differs), as a public port would have them."""
    plain = {layers.Conv2d: nn.Conv2d, layers.ConvTranspose2d: nn.ConvTranspose2d,
             layers.Dropout: nn.Dropout}
    for m in model.modules():
        if type(m) in plain:
            m.__class__ = plain[type(m)]
    return model


def reference_step(s, fast_layers: bool = False):
    """The two-forward reference loop on the networks of ``s`` (an ``ali.bench`` step)."""
    model = s.model if fast_layers else plain_layers_(s.model)
    t = s.cfg.train
    # A public port's optimisers: torch.optim.Adam with its defaults (not the fused kernel).
    opt_d = torch.optim.Adam(model.parameters_d(), lr=t.lr, betas=(t.beta1, t.beta2))
    opt_g = torch.optim.Adam(model.parameters_g(), lr=t.lr, betas=(t.beta1, t.beta2))
    E, G, D = model.encode, model.decode, model.discriminator
    b = t.batch_size

    def step() -> None:
        x, z = s.sampler.next(), model.sample_prior(b)
        z_hat, x_tilde = E(x), G(z)
        s_q, s_p = D(torch.cat([x, x_tilde.detach()]), torch.cat([z_hat.detach(), z])).chunk(2)
        loss_d = (F.softplus(-s_q) + F.softplus(s_p)).mean()
        opt_d.zero_grad()
        loss_d.backward()
        opt_d.step()
        z_hat, x_tilde = E(x), G(z)
        s_q, s_p = D(torch.cat([x, x_tilde]), torch.cat([z_hat, z])).chunk(2)
        loss_g = (F.softplus(s_q) + F.softplus(-s_p)).mean()
        opt_g.zero_grad()
        loss_g.backward()
        opt_g.step()

    return step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", nargs="?", default="svhn")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--steps", type=int, default=3, help="steps per timed chunk")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--precision", nargs="+", default=["fp32", "bf16"])
    p.add_argument("--ablate", action="store_true")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    a = p.parse_args()

    def cfg(*extra: str):
        return get_config(a.name, [f"train.batch_size={a.batch_size}", "train.device=cpu",
                                   *a.overrides, *extra])

    plain = ("train.precision=fp32", "train.channels_last=off")   # a port's model: NCHW, fp32
    steps = {"reference (fp32)": reference_step(prepare(cfg(*plain)))}
    for prec in a.precision:
        steps[f"ours ({prec})"] = prepare(cfg(f"train.precision={prec}")).step
    if a.ablate:
        s = prepare(cfg("train.precision=fp32"))
        plain_layers_(s.model)
        steps["ours, torch.nn layers (fp32)"] = s.step
        steps["reference, our layers (fp32)"] = reference_step(prepare(cfg(*plain)),
                                                               fast_layers=True)
    device = torch.device("cpu")
    for step in steps.values():                               # warm-up
        time_chunk(step, device, 2)
    times: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(a.rounds):                                 # interleaved
        for k, step in steps.items():
            times[k].append(time_chunk(step, device, a.steps))
    ref = statistics.median(times["reference (fp32)"])
    print(f"{a.name}, batch {a.batch_size}, {torch.get_num_threads()} threads, "
          f"median of {a.rounds} interleaved chunks of {a.steps} steps:")
    for k, v in times.items():
        med = statistics.median(v)
        print(f"  {k:32s} {med * 1e3:8.1f} ms/step {a.batch_size / med:8.1f} images/s "
              f"{ref / med:5.2f}x the reference")


if __name__ == "__main__":
    main()
