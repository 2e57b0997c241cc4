"""The metrics of the learning-with-labels experiments (sections 4.3-4.4): ``classify`` (a
semi-supervised run's test error) and ``conditional`` (how often a class-conditional run's
samples show the class asked for)."""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import AliError
from .registry import EvalContext, metric, option


@metric("classify", "test error (%) of a semi-supervised run's K+1 discriminator",
        option("--batch-size", type=int, default=500, help="images per forward pass"))
def classify(ctx: EvalContext, o: argparse.Namespace) -> dict[str, Any]:
    from .classify import classification_error

    if not ctx.cfg.model.semi_supervised:
        raise AliError(f"{ctx.run_dir} is not a semi-supervised run "
                       "(train with --set model.semi_supervised=true)")
    d = ctx.dataset
    if d.test is None or d.test_labels is None or d.test_labels.ndim != 1:
        raise AliError("classify needs a held-out split with class labels (data.test_split)")
    err = classification_error(ctx.model, d.test, d.test_labels, o.batch_size)
    return {"error": err, "n": len(d.test_labels)}


@metric("conditional", "fraction of class-conditional samples the pixel classifier assigns to "
                       "the class asked for",
        option("--samples", type=int, default=1000, help="samples, the same number per class"),
        option("--classifier", metavar="PATH",
               help="pixel classifier file (default RUN_DIR/eval/classifier.pt, trained there "
                    "on the run's labelled training images if missing)"))
def conditional(ctx: EvalContext, o: argparse.Namespace) -> dict[str, Any]:
    import torch

    model = ctx.model
    if not model.conditional or model.attributes:
        raise AliError(f"{ctx.run_dir} is not a class-conditional run "
                       "(train with --set model.conditional=true on a dataset with classes)")
    if o.samples < model.label_dim:
        raise AliError(f"--samples must be at least the {model.label_dim} classes")
    clf, meta = ctx.classifier(o.classifier)
    torch.manual_seed(ctx.seed)
    y = torch.arange(o.samples) % model.label_dim
    hits = []
    with torch.no_grad():
        for i in range(0, o.samples, 500):
            yb = y[i:i + 500].to(ctx.device)
            x = model.sample(len(yb), yb)
            hits.append(clf.predict(x).cpu() == yb.cpu())
    hit = torch.cat(hits).float()
    per_class = [float(hit[y == k].mean()) for k in range(model.label_dim)]
    return {"accuracy": float(hit.mean()), "per_class": per_class, "samples": o.samples,
            "diversity": _diversity(ctx, model), "classifier_accuracy": meta.get("accuracy")}


def _diversity(ctx: EvalContext, model, per_class: int = 100) -> float | None:
    """Mean over classes of (mean pixel distance between two samples of the class) / (the same
    between two held-out images of the class): about 1 when p(x | y) is as varied as the data,
    near 0 when the decoder ignores z (conditional mode collapse). None without held-out
    labels."""
    import torch

    from .features import take

    x, y = ctx.held_out()
    if y is None or y.ndim != 1:
        return None
    ratios = []
    with torch.no_grad():
        for k in range(model.label_dim):
            idx = torch.nonzero(y == k).flatten()[:per_class]
            if len(idx) < 2:
                continue
            real = take(x, idx.numpy()).flatten(1)
            yk = torch.full((per_class,), k, device=ctx.device)
            fake = model.sample(per_class, yk).flatten(1).cpu()
            ratios.append(float(torch.pdist(fake).mean() / torch.pdist(real).mean()))
    return sum(ratios) / len(ratios) if ratios else None
