"""The project's pixel classifier: a small CNN trained on the labelled training images of a
dataset, used to judge generated images (``recon``'s ``class_agreement``, the ``conditional``
metric) and as an offline feature network for FID/KID (its penultimate layer).

Architecture (any image size, any channels): three 3x3 convs (32, 64, 128 maps, padding 1),
each followed by batch norm and ReLU, the first two by 2x2 max pooling; adaptive average
pooling to 2x2; a 128-unit hidden layer (the ``features``); dropout 0.3; a linear layer to the
classes (softmax cross-entropy) or to the attributes of a multi-label dataset such as CelebA
(sigmoid cross-entropy, an attribute is predicted present when its logit is > 0).

Training is deterministic for a seed: Adam (lr 1e-3 decayed linearly to 0), batch 64, ``epochs`` epochs of the
labelled training images (at most ``max_steps`` steps), each image shifted at random by up to
2 pixels. On MNIST (9,000 training images, test[0:9000]) it reaches 99% on the held-out 1,000
in about a minute of CPU (README, "Evaluation").

A trained classifier is cached as a file holding its weights and a ``meta`` dict (what data it
was trained on, its held-out accuracy); :func:`load_or_train` reuses the file when the data
and the seed match and retrains otherwise.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import AliError
from ..model import evaluating
from .features import batches, take

FEATURE_DIM = 128
SHIFT = 2
# What about the data a cached classifier must agree on to be reused.
DATA_KEYS = ("name", "root", "train_split", "train_range", "image_size", "channels", "seed")
# ... and, where they change the data, the settings added since: a classifier cached before
# they existed still matches the data it was trained on.


class PixelClassifier(nn.Module):
    """Logits (B, K) of images (B, C, H, W) in [0, 1]."""

    def __init__(self, channels: int, num_outputs: int, multilabel: bool = False) -> None:
        super().__init__()
        self.num_outputs, self.multilabel = num_outputs, multilabel

        def block(i: int, o: int, pool: bool) -> list[nn.Module]:
            mods = [nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU()]
            return mods + ([nn.MaxPool2d(2)] if pool else [])

        self.body = nn.Sequential(*block(channels, 32, True), *block(32, 64, True),
                                  *block(64, 128, False), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                                  nn.Linear(512, FEATURE_DIM), nn.ReLU())
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(FEATURE_DIM, num_outputs))

    def features(self, x: Tensor) -> Tensor:
        """The penultimate layer (B, 128): the classifier's feature space for FID/KID."""
        return self.body((x - 0.5) / 0.5)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))

    @torch.no_grad()
    def predict(self, x: Tensor, batch_size: int = 500) -> Tensor:
        """Class indices (B,), or 0/1 attributes (B, K) for a multi-label classifier."""
        out = []
        with evaluating(self):
            for xb in batches(x, size=batch_size):
                logits = self(xb.to(next(self.parameters()).device)).cpu()
                out.append((logits > 0).long() if self.multilabel else logits.argmax(1))
        return torch.cat(out)


def _shift(x: Tensor, g: torch.Generator) -> Tensor:
    """Each image translated by up to SHIFT pixels each way (zero fill)."""
    b, c, h, w = x.shape
    xp = F.pad(x, (SHIFT, SHIFT, SHIFT, SHIFT))
    dy = torch.randint(0, 2 * SHIFT + 1, (b,), generator=g)
    dx = torch.randint(0, 2 * SHIFT + 1, (b,), generator=g)
    rows = (dy[:, None] + torch.arange(h))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w))[:, None, None, :]
    return xp[torch.arange(b)[:, None, None, None], torch.arange(c)[None, :, None, None], rows, cols]


def accuracy(clf: PixelClassifier, x: Any, y: Tensor) -> float:
    """Fraction of correct classes (or of correct attributes, multi-label)."""
    return float((clf.predict(x) == y.cpu()).double().mean())


def train_classifier(x: Any, y: Tensor, x_test: Any = None, y_test: Tensor | None = None,
                     seed: int = 0, epochs: int = 10, max_steps: int = 5000,
                     batch_size: int = 64, log: Callable[[str], None] | None = None,
                     ) -> tuple[PixelClassifier, dict[str, Any]]:
    """A :class:`PixelClassifier` trained on images ``x`` (uint8 tensor or ImageSource) with
    labels ``y`` ((N,) classes, -1 = unlabelled, or (N, K) 0/1 attributes), and its ``meta``
    (held-out ``accuracy`` on ``x_test``/``y_test`` where given)."""
    log = log or (lambda s: None)
    y = y.cpu()
    multilabel = y.ndim == 2
    keep = torch.ones(len(y), dtype=torch.bool) if multilabel else y >= 0
    idx = torch.nonzero(keep).flatten().numpy()
    if len(idx) < 2:
        raise AliError("the pixel classifier needs a training split with labels")
    k = int(y.shape[1]) if multilabel else int(y[keep].max()) + 1
    shape = tuple(take(x, idx[:1]).shape[1:])
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        clf = PixelClassifier(shape[0], k, multilabel)
        opt = torch.optim.Adam(clf.parameters(), lr=1e-3)
        steps = min(max_steps, epochs * max(1, len(idx) // batch_size))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1 - s / steps)
        t0, step = time.perf_counter(), 0
        clf.train()
        while step < steps:
            perm = idx[torch.randperm(len(idx), generator=g).numpy()]
            for start in range(0, len(perm) - batch_size + 1, batch_size):
                part = perm[start:start + batch_size]
                xb, yb = _shift(take(x, part), g), y[part]
                logits = clf(xb)
                loss = (F.binary_cross_entropy_with_logits(logits, yb.float()) if multilabel
                        else F.cross_entropy(logits, yb))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                step += 1
                if step % 500 == 0:
                    log(f"classifier step {step}/{steps}: loss {loss.item():.4f}")
                if step >= steps:
                    break
    clf.eval()
    meta: dict[str, Any] = {"outputs": k, "multilabel": multilabel, "image_shape": list(shape),
                            "seed": seed, "epochs": epochs, "steps": steps,
                            "train_size": int(len(idx)),
                            "seconds": round(time.perf_counter() - t0, 1)}
    if x_test is not None and y_test is not None:
        meta["accuracy"] = accuracy(clf, x_test, y_test)
        meta["test_size"] = int(len(y_test))
    return clf, meta


def save(clf: PixelClassifier, meta: dict[str, Any], path: Path | str) -> Path:
    from ..checkpoint import atomic_save

    path = Path(path)
    atomic_save({"model": clf.state_dict(), "meta": meta}, path)
    return path


def load(path: Path | str) -> tuple[PixelClassifier, dict[str, Any]]:
    """A classifier written by :func:`save`, or a one-line error."""
    path = Path(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        meta = ckpt["meta"]
        clf = PixelClassifier(meta["image_shape"][0], meta["outputs"], meta["multilabel"])
        clf.load_state_dict(ckpt["model"])
    except FileNotFoundError:
        raise AliError(f"no classifier at {path}") from None
    except Exception as e:
        raise AliError(f"{path} is not an ali pixel classifier ({type(e).__name__})") from None
    return clf.eval(), meta


def data_key(data_cfg: Any) -> dict[str, Any]:
    """The part of a :class:`~ali.config.DataConfig` a cached classifier depends on."""
    from ..config import DEFAULT_HOLDOUT
    from ..data import shuffles

    key = {k: getattr(data_cfg, k) for k in DATA_KEYS}
    if shuffles(data_cfg):
        key["split_seed"] = data_cfg.split_seed
    if data_cfg.holdout != DEFAULT_HOLDOUT:
        key["holdout"] = data_cfg.holdout
    return key


def load_or_train(path: Path | str, dataset: Any, data_cfg: Any, seed: int = 0,
                  epochs: int = 10, log: Callable[[str], None] | None = None,
                  ) -> tuple[PixelClassifier, dict[str, Any]]:
    """The classifier cached at ``path`` if it was trained on the same data with the same seed
    and epochs; otherwise one trained now on ``dataset.train`` (scored on ``dataset.test``) and
    saved to ``path``."""
    path = Path(path)
    want = {"data": data_key(data_cfg), "seed": seed, "epochs": epochs}
    if path.is_file():
        clf, meta = load(path)
        if all(meta.get(k) == v for k, v in want.items()):
            return clf, meta
    if dataset.train_labels is None:
        raise AliError(f"dataset {dataset.name!r} has no labels to train a pixel classifier on")
    (log or (lambda s: None))(f"training the pixel classifier -> {path}")
    clf, meta = train_classifier(dataset.train, dataset.train_labels, dataset.test,
                                 dataset.test_labels, seed=seed, epochs=epochs, log=log)
    meta.update(want)
    save(clf, meta, path)
    return clf, meta

