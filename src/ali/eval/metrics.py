"""The built-in metrics of ``ali eval`` (see :mod:`ali.eval.registry` to add one)."""

from __future__ import annotations

import argparse
from typing import Any

from ..config import ANOMALY_BATCH_SIZE, ANOMALY_SCORES
from ..errors import AliError
from . import FEATURE_KINDS
from .registry import EvalContext, count, metric, option

# numpy, torch and the metric modules are imported inside the functions: building the command
# line's parser registers the metrics, and must stay quick.

FEATURES = option("--features", choices=FEATURE_KINDS,
                  help="encoder: mu + the family's svm_layers activations; mu: mu alone; "
                       "pixels: raw pixels (the baseline)")
CLASSIFIER = option("--classifier", metavar="PATH",
                    help="pixel classifier file (default RUN_DIR/eval/classifier.pt, trained "
                         "there on the run's labelled training images if missing)")
N_ITEMS = option("--n", type=count, help="held-out images used (default: all, at most 10,000)")
FEATURE_NET = option("--feature-net", default="inception", metavar="NET",
                     help="inception (pytorch-fid's InceptionV3 pool3, weights downloaded once), "
                          "classifier (the pixel classifier's penultimate layer) or the path of "
                          "a TorchScript or torch.export (.pt2) file mapping images in [0, 1] "
                          "to features")
LABELS_HELP = "labelled training examples, class-balanced (svm: per SVM; knn: 0 = all)"
BATCH = option("--batch-size", type=count, default=200, help="images per forward pass")


def _class_labels(ctx: EvalContext, what: str):
    d = ctx.dataset
    if d.train_labels is None or d.test_labels is None or d.train_labels.ndim != 1:
        raise AliError(f"{what} needs class labels on the training and held-out splits "
                       f"(dataset {d.name!r} has none)")
    if d.test is None:
        raise AliError(f"{what} needs a held-out split (data.test_split)")
    return d.train_labels.numpy(), d.test_labels.numpy()


def _variant(default: str):
    return lambda o: None if o.features == default else o.features


def _features(ctx: EvalContext, kind: str, data: Any, labels: Any, idx=None):
    """Features of ``data`` (items ``idx``); a conditional model encodes each example with
    its own label."""
    from .features import extract

    return extract(ctx.model, ctx.nets, data, kind, idx, ctx.device, labels=labels)


def _label_conditioned(ctx: EvalContext, features: str) -> dict[str, bool]:
    """``label_conditioned``: whether the features came from an encoder given each example's
    own label (a conditional run), which then carry it: a classifier on them is not a measure
    of what the encoder learnt unsupervised, and not comparable with an unconditional run's."""
    flag = bool(ctx.model.conditional and features != "pixels")
    if flag:
        ctx.log("note: this conditional encoder is given each example's own label, so its "
                "features carry the label (label_conditioned: true)")
    return {"label_conditioned": flag}


@metric("svm", "the paper's L2-SVM protocol on encoder features (error %, mean/std)",
        option("--features", default="encoder", **FEATURES.kwargs),
        option("--labels", type=int, default=1000, help=LABELS_HELP),
        option("--repeats", type=count, default=100, help="SVMs, each on a fresh subset"),
        option("--val-size", type=int,
               help="validation split for C (default 10,000 or a third of the training split)"),
        option("--c-grid", default="-20:20:50", metavar="LO:HI:N",
               help="C from exp(linspace(LO, HI, N)); write --c-grid=-20:20:50 (with =) "
                    "when LO is negative"),
        option("--max-iter", type=count, default=1000, help="LinearSVC max_iter"),
        option("--protocol", choices=("auto", "balanced", "svhn"), default="auto",
               help="where the labelled subsets and the validation split come from: svhn "
                    "(the authors' Table 1 script: random draws from SVHN train[0:63257], "
                    "validation train[63257:73257], whatever split the encoder trained on), "
                    "balanced (class-balanced draws from the run's training split, a random "
                    "validation split); auto: svhn for SVHN runs, balanced otherwise"),
        variant=_variant("encoder"))
def svm(ctx: EvalContext, o: argparse.Namespace) -> dict[str, Any]:
    import numpy as np

    from . import svm as S

    try:
        lo, hi, n = o.c_grid.split(":")
        with np.errstate(over="ignore"):
            grid = tuple(np.exp(np.linspace(float(lo), float(hi), int(n))).tolist())
    except ValueError:
        grid = ()
    # LinearSVC takes a C in (0, inf): log-C bounds past about +-700 leave it
    if not grid or not all(0 < c < float("inf") for c in grid):
        raise AliError(f"--c-grid must look like LO:HI:N (e.g. -20:20:50), N >= 1, with "
                       f"exp(LO) and exp(HI) finite and above 0; got {o.c_grid!r}")
    S.require_sklearn()
    protocol = o.protocol
    if protocol == "auto":
        protocol = "svhn" if ctx.cfg.data.name == "svhn" else "balanced"
    if protocol == "svhn" and ctx.cfg.data.name != "svhn":
        raise AliError(f"--protocol svhn needs an SVHN run (this one is "
                       f"{ctx.cfg.data.name!r}): use --protocol balanced")
    y_tr, y_te = _class_labels(ctx, "--metric svm")
    d = train = ctx.dataset
    if protocol == "svhn":
        train = _svhn_train(ctx)
        y_tr = train.train_labels.numpy()
    f_te = _features(ctx, o.features, d.test, d.test_labels).numpy()
    res = S.run(lambda idx: _features(ctx, o.features, train.train, train.train_labels,
                                      idx).numpy(),
                y_tr, f_te, y_te,
                o.labels, o.repeats, o.val_size, grid, ctx.seed, o.max_iter, ctx.log, protocol)
    return {"error_mean": res.pop("error_mean"), "error_std": res.pop("error_std"),
            "labels": res.pop("labels"), "repeats": res.pop("repeats"),
            "feature_dim": res.pop("feature_dim"), "features": o.features,
            **_label_conditioned(ctx, o.features), **res}


def _svhn_train(ctx: EvalContext):
    """SVHN's whole train split, labelled, whatever split the run trained on (the svhn SVM
    protocol's pool and validation split)."""
    import dataclasses

    from ..data import load_dataset

    data = ctx.cfg.data
    if data.train_split == "train" and not data.train_range and data.normal_class < 0:
        return ctx.dataset
    return load_dataset(dataclasses.replace(data, train_split="train", train_range="",
                                            labels=0, normal_class=-1))


@metric("knn", "1-nearest-neighbour accuracy on encoder features (BiGAN's protocol)",
        option("--features", default="mu", **FEATURES.kwargs),
        option("--distance", choices=("cosine", "euclidean"), default="cosine"),
        option("--labels", type=int, default=0, help=LABELS_HELP),
        variant=_variant("mu"))
def knn(ctx: EvalContext, o: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    import torch

    from . import knn as K
    from .svm import balanced_subset

    y_tr, y_te = _class_labels(ctx, "--metric knn")
    idx = np.flatnonzero(y_tr >= 0)
    if o.labels:
        rng = np.random.default_rng(ctx.seed)
        idx = np.sort(balanced_subset(y_tr, idx, o.labels, np.unique(y_tr[idx]), rng))
    d = ctx.dataset
    f_tr = _features(ctx, o.features, d.train, d.train_labels, idx)
    f_te = _features(ctx, o.features, d.test, d.test_labels)
    acc = K.accuracy(f_tr, torch.as_tensor(y_tr[idx]), f_te, torch.as_tensor(y_te), o.distance)
    return {"accuracy": acc, "features": o.features, "distance": o.distance,
            "train_size": int(len(idx)), "test_size": int(len(y_te)),
            "feature_dim": int(f_tr.shape[1]), **_label_conditioned(ctx, o.features)}


def _held_out(ctx: EvalContext, n: int | None):
    """The first ``n`` (default up to 10,000) held-out items as floats, and their labels."""
    import numpy as np

    from .features import take

    x, y = ctx.held_out()
    if n is not None and n < 1:
        raise AliError(f"--n must be >= 1; got {n}")
    n = min(len(x), n or 10_000)
    return take(x, np.arange(n)), (None if y is None else y[:n])


@metric("recon", "reconstruction error on held-out data (mse, BiGAN's ratio, class agreement)",
        N_ITEMS,
        option("--mean", action="store_true", default=False,
               help="reconstruct from mu instead of z_hat ~ q(z|x)"),
        CLASSIFIER,
        option("--no-classifier", action="store_true", default=False,
               help="skip class_agreement (no pixel classifier is trained)"))
def recon(ctx: EvalContext, o: argparse.Namespace) -> dict[str, Any]:
    from .recon import reconstructions, scores

    x, y = _held_out(ctx, o.n)
    if len(x) < 2:
        raise AliError(f"recon needs at least 2 held-out items (its ratio compares pairs); got "
                       f"{len(x)}")
    x, rec = reconstructions(ctx.model, x, o.mean, ctx.device, labels=y)
    images = x.dim() == 4
    classify = None
    extra: dict[str, Any] = {}
    if images and y is not None and not o.no_classifier:
        clf, meta = ctx.classifier(o.classifier)
        classify = clf.predict
        extra = {"classifier_accuracy": meta.get("accuracy"),
                 "classifier_accuracy_on_originals": float(
                     (clf.predict(x) == y).double().mean())}
    res = scores(x, rec, ctx.seed, classify, y if classify else None)
    out = {"mse": res.pop("mse"), "ratio": res.pop("ratio")}
    if "class_agreement" in res:
        out["class_agreement"] = res.pop("class_agreement")
    return {**out, **res, **extra, "z": "mu" if o.mean else "z_hat"}


def _feature_net(ctx: EvalContext, spec: str, classifier: str | None):
    from .fid import load_feature_net

    if spec == "inception":
        from .inception import fid_inception

        return fid_inception(ctx.device, ctx.log)
    if spec == "classifier":
        clf, _ = ctx.classifier(classifier)
        return clf.to(ctx.device).eval().features
    return load_feature_net(spec, ctx.device)


def _sample_and_real(ctx: EvalContext, o: argparse.Namespace):
    import torch

    from ..viz import sample_conditions
    from .fid import embed

    x, _ = _held_out(ctx, o.n)
    if x.dim() != 4:
        raise AliError("FID and KID need an image run")
    net = _feature_net(ctx, o.feature_net, o.classifier)
    model = ctx.model.eval()
    # As many samples as held-out images. A conditional model's are drawn under the conditions
    # of the data: classes in turn, or the attribute vectors of random training images.
    y = sample_conditions(model, ctx.dataset.train_labels, len(x),
                          torch.Generator().manual_seed(ctx.seed))
    samples = torch.cat([model.sample(min(o.batch_size, len(x) - i),
                                      None if y is None else y[i:i + o.batch_size]).float().cpu()
                         for i in range(0, len(x), o.batch_size)])
    ctx.log(f"features of {len(x)} held-out images and {len(samples)} samples "
            f"({o.feature_net})")
    f_real = embed(net, x, o.batch_size, ctx.device)
    f_fake = embed(net, samples, o.batch_size, ctx.device)
    return f_real, f_fake


def _feature_net_variant(o: argparse.Namespace) -> str | None:
    if o.feature_net == "inception":
        return None
    return "classifier" if o.feature_net == "classifier" else "custom"


@metric("fid", "Frechet distance between samples and held-out images in a feature space",
        N_ITEMS, FEATURE_NET, CLASSIFIER, BATCH, variant=_feature_net_variant)
def fid(ctx: EvalContext, o: argparse.Namespace) -> dict[str, Any]:
    from .fid import fid as frechet

    f_real, f_fake = _sample_and_real(ctx, o)
    return {"fid": frechet(f_real, f_fake), "feature_net": o.feature_net, "n": len(f_real),
            "feature_dim": int(f_real.shape[1])}


@metric("kid", "kernel inception distance (unbiased cubic-kernel MMD^2 over subsets)",
        N_ITEMS, FEATURE_NET, CLASSIFIER, BATCH,
        option("--subsets", type=count, default=100, help="random subsets"),
        option("--subset-size", type=count, default=1000, help="items per subset (at most n)"),
        variant=_feature_net_variant)
def kid(ctx: EvalContext, o: argparse.Namespace) -> dict[str, Any]:
    from .fid import kid as kernel

    f_real, f_fake = _sample_and_real(ctx, o)
    mean, std = kernel(f_real, f_fake, o.subsets, o.subset_size, ctx.seed)
    return {"kid_mean": mean, "kid_std": std, "feature_net": o.feature_net, "n": len(f_real),
            "feature_dim": int(f_real.shape[1])}


# The learning-with-labels experiments (sections 4.3-4.4).

@metric("classify", "test error (%) of a semi-supervised run's K+1 discriminator",
        option("--batch-size", type=count, default=500, help="images per forward pass"))
def classify(ctx: EvalContext, o: argparse.Namespace) -> dict[str, Any]:
    from .semi_supervised import classification_error

    ctx.model.need_classifier(str(ctx.run_dir))
    d = ctx.dataset
    if d.test is None or d.test_labels is None or d.test_labels.ndim != 1:
        raise AliError("classify needs a held-out split with class labels (data.test_split)")
    err = classification_error(ctx.model, d.test, d.test_labels, o.batch_size)
    return {"error": err, "n": len(d.test_labels)}


CONDITIONAL_SAMPLES = 1000
"""``--metric conditional``'s samples by default; for K classes, rounded down to a multiple of K
(the same number per class)."""


@metric("conditional", "fraction of conditional samples the pixel classifier finds as asked: "
                       "the class, or each of the 40 attributes (held-out attribute vectors)",
        option("--samples", type=count,
               help=f"samples (default {CONDITIONAL_SAMPLES}); classes: a multiple of their "
                    "number, the same per class (the default rounded down to one)"),
        option("--classifier", metavar="PATH",
               help=CLASSIFIER.kwargs["help"]))
def conditional(ctx: EvalContext, o: argparse.Namespace) -> dict[str, Any]:
    """Classes: ``--samples`` samples, the classes in turn, as many of each (a multiple of the
    classes, else a one-line error). Attributes (Figure 7): samples for
    the attribute vectors of held-out images (real combinations, in turn), each attribute
    checked by the multi-label pixel classifier. ``classifier_accuracy`` is the classifier's
    accuracy on real held-out images: the ceiling of ``accuracy``."""
    import torch

    model = ctx.model
    if not model.conditional:
        raise AliError(f"{ctx.run_dir} is not a conditional run (train with --set "
                       "model.conditional=true on a dataset with classes or attributes)")
    k = model.label_dim
    if model.attributes:
        _, labels = ctx.held_out()
        if labels is None or len(labels) == 0:
            raise AliError(f"{ctx.run_dir}: its held-out split has no attribute labels")
        n = o.samples or CONDITIONAL_SAMPLES
        y = labels[torch.arange(n) % len(labels)]                          # (N, K)
    else:
        n = o.samples or max(k, CONDITIONAL_SAMPLES // k * k)
        if n % k:
            # accuracy and diversity would weigh the classes unequally
            raise AliError(f"--samples {n} is not a multiple of the {k} classes (each class is "
                           f"sampled as often); e.g. --samples {max(k, n // k * k)}")
        y = torch.arange(n) % k                                            # (N,)
    clf, meta = ctx.classifier(o.classifier)
    torch.manual_seed(ctx.seed)
    hits = []
    with torch.no_grad():
        for i in range(0, n, 500):
            yb = y[i:i + 500].to(ctx.device)
            hits.append(clf.predict(model.sample(len(yb), yb)).cpu() == yb.cpu())
    # double: a fraction of counts written as itself (0.945, not float32's 0.9449999928474426)
    hit = torch.cat(hits).double()                                         # (N,) or (N, K)
    out: dict[str, Any] = {"accuracy": float(hit.mean()), "samples": n}
    if model.attributes:
        names = ctx.dataset.label_names or [str(k) for k in range(hit.shape[1])]
        out["per_attribute"] = dict(zip(names, hit.mean(0).tolist()))
    else:
        out["per_class"] = [float(hit[y == c].mean()) for c in range(k)]
        out["diversity"] = _diversity(ctx, model)
    return {**out, "classifier_accuracy": meta.get("accuracy")}


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
    return _float32(sum(ratios) / len(ratios)) if ratios else None


def _float32(v: float) -> float:
    """``v``, measured in float32, as the shortest decimal that reads back as the same float32
    (0.945, not 0.9449999928474426): the other digits of its float64 are float32's rounding."""
    import numpy as np

    return float(str(np.float32(v)))


@metric("anomaly", "one-class anomaly detection on the held-out split (AUROC, AUPRC)",
        option("--normal-class", type=int,
               help="the normal class K: held-out K against every other class (default: the "
                    "run's data.normal_class)"),
        option("--score", choices=ANOMALY_SCORES, default="egbad",
               help="higher is more anomalous (ali.anomaly): reconstruction distance l1/l2, "
                    "the code's squared norm latent, discriminator features fm, minus D's "
                    "logit, EGBAD's alpha*l1 + (1-alpha)*fm, or ALAD's D_xx feature distance "
                    "alad; a run-batched model: the mean of its runs' l1, l2 or latent"),
        option("--alpha", type=float, default=0.9, help="egbad's weight of l1"),
        option("--batch-size", type=count, default=ANOMALY_BATCH_SIZE,
               help="items per forward pass"),
        variant=lambda o: o.score, ensembles=True)
def anomaly(ctx: EvalContext, o: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    from sklearn.metrics import average_precision_score, roc_auc_score

    from .features import batches

    if o.normal_class is not None and o.normal_class < 0:
        raise AliError(f"--normal-class must be a class index (>= 0); got {o.normal_class}")
    k = ctx.cfg.data.normal_class if o.normal_class is None else o.normal_class
    if k is None or k < 0:
        raise AliError("--metric anomaly needs the normal class: give --normal-class K (or "
                       "train with --set data.normal_class=K)")
    x, y = ctx.held_out()
    d = ctx.dataset
    if y is None or y.ndim != 1 or not d.num_classes:
        raise AliError(f"--metric anomaly needs class labels on the held-out split (dataset "
                       f"{d.name!r} has none)")
    if not 0 <= k < d.num_classes:
        raise AliError(f"--normal-class {k} is out of range: {d.name} has classes "
                       f"0..{d.num_classes - 1}")
    anomalous = (y != k).numpy()
    if anomalous.all() or not anomalous.any():
        raise AliError(f"the held-out split needs both class {k} and other classes")
    model = ctx.model
    ys = y if model.conditional else None
    scores = [model.anomaly_score(xb, o.score, None if ys is None else
                                  ys[i * o.batch_size:(i + 1) * o.batch_size],
                                  o.alpha, o.batch_size).cpu()
              for i, xb in enumerate(batches(x, size=o.batch_size))]
    s = np.concatenate([t.numpy() for t in scores]).astype(np.float64)
    if not np.isfinite(s).all():
        raise AliError(f"{int((~np.isfinite(s)).sum())} anomaly scores are not finite")
    return {"auroc": float(roc_auc_score(anomalous, s)),
            "auprc": float(average_precision_score(anomalous, s)),
            "score": o.score, "normal_class": int(k), "alpha": o.alpha,
            "n_normal": int((~anomalous).sum()), "n_anomalous": int(anomalous.sum())}
