"""MNIST quality of the default `mnist` config (a benchmark, not a test).

Trains on the first 9,000 images of the real MNIST test set and holds out the last 1,000
(the files in ../shared/data/mnist or --root), then measures:

- samples: how a pixel classifier (3-nearest-neighbours on the 9,000 training images' pixels)
  labels 1,000 samples: the class histogram shows whether every digit appears;
- reconstructions: how often that classifier gives G(z_hat) the class of the held-out original
  (its accuracy on the originals themselves is reported beside it: the ceiling);
- features: a linear classifier (logistic regression) trained on 1,000 labelled training images
  (100 per class) using the encoder's mu, against the same classifier on raw pixels, scored on
  the 1,000 held-out images; mean and std over --probe-subsets such subsets, and on how many of
  them mu wins.

    python benchmarks/mnist_quality.py --steps 4500 --out runs/mnist-quality

Needs scikit-learn (pip install -e ".[eval]").
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier

from ali.config import get_config
from ali.data import load_dataset
from ali.train import load_checkpoint, load_run, step_checkpoint_name, train
from ali.viz import held_out, interpolation_grid, reconstruction_grid, save_grid


def pixels(x: torch.Tensor) -> np.ndarray:
    return x.flatten(1).numpy().astype(np.float64)


def balanced(y: np.ndarray, per_class: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.choice(np.flatnonzero(y == k), per_class, replace=False)
                           for k in range(10)])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    default_root = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
    p.add_argument("--root", default=str(default_root))
    p.add_argument("--steps", type=int, default=None, help="override train.steps")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--out", default="runs/mnist-quality")
    p.add_argument("--skip-train", action="store_true", help="evaluate an existing --out run")
    p.add_argument("--probe-subsets", type=int, default=10,
                   help="class-balanced 1,000-label subsets the linear probes average over")
    p.add_argument("--at-step", type=int, default=None,
                   help="with --skip-train: evaluate checkpoints/step-N.pt instead of latest.pt")
    a = p.parse_args()
    over = [f"data.root={a.root}", "data.train_split=test", "data.train_range=0:9000",
            "data.test_split=test", "data.test_range=9000:10000", *a.overrides]
    if a.steps:
        over.append(f"train.steps={a.steps}")
    cfg = get_config("mnist", over)
    out = Path(a.out)
    data = load_dataset(cfg.data)
    t0 = time.perf_counter()
    if not a.skip_train:
        from ali.viz import write_run_images

        def hook(step, model, run_dir):
            if step % cfg.train.checkpoint_every == 0 or step == cfg.train.steps:
                write_run_images(model, data, run_dir, step)

        train(cfg, run_dir=out, hooks=[hook], dataset=data)
    seconds = time.perf_counter() - t0
    model, cfg, step = load_run(out)
    if a.at_step is not None:
        ckpt = load_checkpoint(out / "checkpoints" / step_checkpoint_name(a.at_step))
        model.load_state_dict(ckpt["model"])
        step = int(ckpt["step"])
    torch.manual_seed(0)

    x_tr = data.train.float() / 255
    y_tr = data.train_labels.numpy()
    x_te = held_out(data, 1000)
    y_te = data.test_labels.numpy()
    pix = KNeighborsClassifier(3).fit(pixels(x_tr), y_tr)

    with torch.no_grad():
        samples = model.sample(1000)
        rec = model.reconstruct(x_te)
        mu_tr = model.encode_mean(x_tr).flatten(1).numpy()
        mu_te = model.encode_mean(x_te).flatten(1).numpy()
    hist = np.bincount(pix.predict(pixels(samples)), minlength=10)
    rec_pred = pix.predict(pixels(rec))
    agree = float((rec_pred == y_te).mean())
    agree_pred = float((rec_pred == pix.predict(pixels(x_te))).mean())
    pix_acc_orig = float(pix.score(pixels(x_te), y_te))

    # The probe on several class-balanced 1,000-label subsets: one subset's score moves by
    # about a point from subset to subset, as much as the gap being measured.
    px_tr, px_te = pixels(x_tr), pixels(x_te)
    acc_mu, acc_px = [], []
    for seed in range(a.probe_subsets):
        idx = balanced(y_tr, 100, seed)
        acc_mu.append(LogisticRegression(max_iter=2000).fit(mu_tr[idx], y_tr[idx])
                      .score(mu_te, y_te))
        acc_px.append(LogisticRegression(max_iter=2000).fit(px_tr[idx], y_tr[idx])
                      .score(px_te, y_te))
    res = {
        "steps": step, "train_seconds": round(seconds, 1),
        "sample_class_histogram": hist.tolist(),
        "recon_class_agreement": agree,
        "recon_agreement_with_classifier_on_original": agree_pred,
        "pixel_classifier_accuracy_on_originals": pix_acc_orig,
        "linear_1000_labels_mu_accuracy": float(np.mean(acc_mu)),
        "linear_1000_labels_pixels_accuracy": float(np.mean(acc_px)),
        "linear_1000_labels_mu_std": float(np.std(acc_mu)),
        "linear_1000_labels_pixels_std": float(np.std(acc_px)),
        "linear_1000_labels_mu_wins": int(sum(m > p for m, p in zip(acc_mu, acc_px))),
        "probe_subsets": a.probe_subsets,
    }
    tag = "final" if a.at_step is None else str(step)
    save_grid(samples[:100], out / f"samples-{tag}.png", 10, 2)
    save_grid(reconstruction_grid(model, x_te[:50]), out / f"reconstructions-{tag}.png", 10, 2)
    save_grid(interpolation_grid(model, x_te[0:16:2], x_te[1:16:2], 8), out / f"interp-{tag}.png",
              10, 2)
    name = "quality.json" if a.at_step is None else f"quality-{step}.json"
    (out / name).write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))
    print(f"images: {out}/samples-{tag}.png, reconstructions-{tag}.png, interp-{tag}.png")


if __name__ == "__main__":
    main()
