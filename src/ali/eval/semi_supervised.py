"""Test error of a semi-supervised ALI's K+1 discriminator (section 4.3, Tables 1-2)."""

from __future__ import annotations

import torch
from torch import Tensor

from ..model import GenerativeModel, evaluating


@torch.no_grad()
def predict(model: GenerativeModel, x: Tensor, batch_size: int = 500) -> Tensor:
    """Predicted classes (N,) of images ``x`` (uint8 or float in [0, 1], or streamed): argmax of
    the discriminator's K logits on (x, mu(x)), in evaluation mode."""
    model.need_classifier()
    from .features import batches

    device = next(model.parameters()).device
    with evaluating(model):
        out = [model.classify(xb.to(device)).argmax(1).cpu()
               for xb in batches(x, size=batch_size)]
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long)


def classification_error(model: GenerativeModel, x: Tensor, y: Tensor,
                         batch_size: int = 500) -> float:
    """Percentage of ``x`` whose predicted class is not ``y``."""
    if len(x) == 0:
        raise ValueError("no test images")
    # double: a fraction of counts written as itself, not with float32's rounding
    return 100.0 * float((predict(model, x, batch_size) != y.cpu()).double().mean())
