"""Features of images for the evaluation metrics.

- ``encoder``: the paper's L2-SVM features (section 4.3, as the original code computed them;
  :meth:`~ali.model.GenerativeModel.features` with ``kind="svm"``): mu of q(z|x) concatenated
  with the post-batch-norm, pre-activation outputs of the encoder blocks its family names in
  ``svm_layers`` (:class:`~ali.nets.conv.ConvFamily`), flattened, with the model in evaluation
  mode so batch norm uses its population statistics. For SVHN and
  CIFAR-10 these are the k4s2-256 (256x4x4), k4s1-512 and k1-512 layers: 5,376 numbers for SVHN.
- ``mu``: mu alone (the encoder's point estimate, :meth:`~ali.model.GenerativeModel.encode_mean`).
- ``pixels``: the raw pixels in [0, 1], the baseline.

Images are read in batches from a uint8 tensor or a streamed
:class:`~ali.data.images.ImageSource`; features come back as float32 (N, D) CPU tensors.
"""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import torch
from torch import Tensor

from ..data import take
from ..errors import AliError
from ..model import GenerativeModel
from . import FEATURE_KINDS as KINDS

__all__ = ["BATCH", "batches", "conditions", "extract", "take"]

BATCH = 500


def batches(data: Any, idx: np.ndarray | None = None, size: int = BATCH) -> Iterator[Tensor]:
    """``data`` (or its items ``idx``) as float batches of at most ``size`` items."""
    n = len(data) if idx is None else len(idx)
    for start in range(0, n, size):
        part = slice(start, start + size) if idx is None else idx[start:start + size]
        yield take(data, part)


@torch.no_grad()
def extract(model: GenerativeModel | None, nets: str, data: Any, kind: str = "encoder",
            idx: np.ndarray | None = None, device: str | torch.device = "cpu",
            batch_size: int = BATCH, labels: Tensor | None = None) -> Tensor:
    """Features ``kind`` (see the module doc) of ``data`` (or of its items ``idx``):
    float32 (N, D) on the CPU.

    ``labels``: the labels of all of ``data`` (indexed by ``idx`` alike). A conditional model
    encodes each example with its own label, so it needs them; other models ignore them.
    """
    if kind not in KINDS:
        raise AliError(f"unknown features {kind!r} (known: {', '.join(KINDS)})")
    out = []
    if kind == "pixels":
        for x in batches(data, idx, batch_size):
            out.append(x.flatten(1))
        return torch.cat(out)
    if model is None:
        raise AliError(f"features {kind!r} need a model")
    if model.encoder is None:
        raise AliError(f"a {type(model).__name__} has no encoder to take features from")
    ys = conditions(model, labels, idx, len(data) if idx is None else len(idx))
    which = "svm" if kind == "encoder" else "mu"
    for i, x in enumerate(batches(data, idx, batch_size)):
        y = None if ys is None else ys[i * batch_size:(i + 1) * batch_size]
        out.append(model.features(x, y, which, batch_size).cpu())
    return torch.cat(out)


def conditions(model: GenerativeModel, labels: Tensor | None, idx: Any = None,
               n: int | None = None) -> Tensor | None:
    """The conditions a conditional model encodes ``n`` examples with: their own ``labels``
    (items ``idx``); None for an unconditional model. A one-line error when they are missing
    or are not the kind the model was trained on."""
    if not model.conditional:
        return None
    what = "attributes" if model.attributes else "classes"
    if labels is None:
        raise AliError(f"this model is conditional on {what}: its encoder needs the examples' "
                       "labels, and the data here has none")
    y = labels if idx is None else labels[torch.as_tensor(idx) if not isinstance(idx, slice)
                                          else idx]
    if (y.dim() == 2) != model.attributes or (model.attributes and
                                               y.shape[1] != model.label_dim):
        raise AliError(f"this model is conditional on {model.label_dim} {what}; the data's "
                       f"labels have shape {list(y.shape)}")
    if not model.attributes and len(y) and (int(y.min()) < 0 or int(y.max()) >= model.label_dim):
        raise AliError(f"this model is conditional on {model.label_dim} classes; the data's "
                       f"labels run from {int(y.min())} to {int(y.max())}")
    if n is not None and len(y) != n:
        raise AliError(f"{len(y)} labels for {n} examples")
    return y.cpu()
