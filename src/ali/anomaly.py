"""Anomaly scores of a trained model with an encoder (beyond the paper).

The encoder makes scoring a new point one forward pass instead of an optimisation (Zenati et
al., 2018, "Efficient GAN-based anomaly detection", EGBAD). For x, with z = E(x) the encoder's
point estimate (its mean: scores are deterministic) and x' = G(z), HIGHER MEANS MORE ANOMALOUS
for every score:

- ``l1``, ``l2``: the reconstruction distance ``||x - x'||_1`` and ``||x - x'||_2``;
- ``latent``: ``||z||_2^2``, the code's squared distance from the prior's centre (minus twice
  the log prior density, up to a constant): a point the encoder sends where the prior puts
  little mass is anomalous, which the reconstruction distances miss for points far out along
  the data's own directions;
- ``fm``: the discriminator-feature distance ``||f(x, z) - f(x', z)||_1``, f being the joint
  discriminator's last hidden features (the input of its last layer);
- ``logit``: minus the joint discriminator's logit on (x, z): D calls data pairs real (a high
  logit), so a low logit is anomalous;
- ``egbad``: EGBAD's weighting ``alpha * l1 + (1 - alpha) * fm`` (alpha 0.9 in their paper);
- ``alad``: ALAD's score (Zenati et al., 2018, "Adversarially Learned Anomaly Detection"),
  ``||f_xx(x, x) - f_xx(x, x')||_1``, f_xx being D_xx's last hidden features: how far the
  reconstruction pair is from the identity pair, in the cycle discriminator's eyes.

``l1``, ``l2`` and ``latent`` work for every model with an encoder (the VAE included); ``fm``,
``logit`` and ``egbad`` need a joint discriminator (ALI's, or gan_posthoc's second one);
``alad`` needs an ALAD model (``model.alad``). A feature-vector model scores in standardised
units.

A run-batched model (``model.runs=N``, N > 1: N models trained side by side as one batched
computation) scores as an ensemble: each item's score is the mean of its N runs' scores, for
``l1``, ``l2`` and ``latent`` (the same units in every run: data units, and the shared prior's).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .config import ANOMALY_BATCH_SIZE, ANOMALY_SCORES
from .errors import AliError, DataError, EncoderError
from .nets.parts import JointDiscriminator, inference_copy

SCORES = ANOMALY_SCORES
ENSEMBLE_SCORES = ("l1", "l2", "latent")
"""The scores a run-batched model averages over its runs."""
ALPHA = 0.9
"""EGBAD's weight of the reconstruction term (their MNIST setting)."""
BATCH_SIZE = ANOMALY_BATCH_SIZE


def item_shape(model: Any) -> tuple[int, ...]:
    """The shape of one item the model scores: its data shape, less a run-batched model's runs
    dimension (each of its runs scores every item)."""
    shape = tuple(model.data_shape)
    return shape[1:] if model.runs > 1 else shape


def joint_discriminator(model: Any) -> nn.Module:
    """The model's joint discriminator D(x, z), or a one-line error."""
    for name in ("discriminator", "joint_discriminator"):
        d = getattr(model, name, None)
        if isinstance(d, JointDiscriminator):
            return d
    raise AliError(f"a {type(model).__name__} has no joint discriminator: use --score l1, l2 or latent")


def pair_discriminator(model: Any) -> nn.Module:
    """An ALAD model's D_xx, or a one-line error."""
    d = getattr(model, "d_xx", None)
    if d is None:
        raise AliError(f"only an ALAD model (model.alad=on) has D_xx for --score alad; this "
                       f"{type(model).__name__} has none")
    return d


def _last_layer(d: nn.Module) -> nn.Module:
    """The last weighted layer of D's joint part: its input is the last hidden feature map.
    (A layer with a weight attribute: a spectrally normalised layer keeps its weight there.)"""
    layers = [m for m in d.d_xz.modules() if isinstance(getattr(m, "weight", None), Tensor)
              and not isinstance(m, nn.modules.batchnorm._BatchNorm)]
    return layers[-1]


def _hidden(disc: nn.Module, *args: Tensor) -> Tensor:
    """D's last hidden features (B, F) of the pairs ``args``: the input of its last layer."""
    captured: list[Tensor] = []
    hook = _last_layer(disc).register_forward_pre_hook(
        lambda mod, inp: captured.append(inp[0].flatten(1)))
    try:
        disc(*args)
    finally:
        hook.remove()
    return captured[0]


def _batch(model: Any, x: Tensor) -> Tensor:
    """A batch of items as the model takes them: a run-batched model's runs each get every item
    (expanded per batch, so the N x R copy never exists whole)."""
    if model.runs > 1:
        x = x.unsqueeze(1).expand(len(x), model.runs, *x.shape[1:])  # (B, R, D)
    return model.as_input(x)


@torch.no_grad()
def _scores(model: Any, x: Tensor, y: Tensor | None, kind: str, alpha: float) -> Tensor:
    # x: (B, *data) float on the model's device
    # x of a run-batched model: (B, R, D), every run scoring every item
    z = model.encode_mean(x, y)                                     # (B, *latent)
    if kind == "latent":
        return z.flatten(1).pow(2).sum(1) / model.runs              # the runs' mean
    x_rec = model.decode(z, y)                                      # (B, *data)
    if kind in ("l1", "l2"):
        d = (x - x_rec).reshape(len(x), model.runs, -1)              # (B, R, D)
        per_run = d.abs().sum(2) if kind == "l1" else d.pow(2).sum(2).sqrt()   # (B, R)
        return per_run.mean(1)
    if kind == "logit":
        return -model.log_ratio(x, z, y)
    if kind == "alad":
        f_id, f_rec = _hidden(pair_discriminator(model), torch.cat([x, x]),
                              torch.cat([x, x_rec])).chunk(2)       # (B, F) each
        return (f_id - f_rec).abs().sum(1)
    disc = joint_discriminator(model)
    v = None if y is None or model.embed is None else model.embed.vector(y)
    args = [torch.cat([x, x_rec]), torch.cat([z, z])]
    f_x, f_rec = _hidden(disc, *args, *([] if v is None else [torch.cat([v, v])])).chunk(2)
    fm = (f_x - f_rec).abs().sum(1)
    if kind == "fm":
        return fm
    l1 = (x - x_rec).flatten(1).abs().sum(1)
    return alpha * l1 + (1 - alpha) * fm


def anomaly_score(model: Any, x: Any, kind: str = "egbad", y: Tensor | None = None,
                  alpha: float = ALPHA, batch_size: int = BATCH_SIZE) -> Tensor:
    """Anomaly scores (N,) of ``x`` (higher: more anomalous), float32 on the model's device.

    Args:
        model: a trained model with an encoder (a :class:`~ali.model.GenerativeModel`).
        x: (N, *data_shape): images as uint8 or floats in [0, 1], or feature vectors; a
            tensor or a numpy array, checked against the model (one-line error).
        kind: one of :data:`SCORES` (see the module doc).
        y: a conditional model's labels of x.
        alpha: ``egbad``'s weight of the reconstruction term, in [0, 1].
        batch_size: examples per forward pass.
    """
    if kind not in SCORES:
        raise AliError(f"unknown anomaly score {kind!r} (known: {', '.join(SCORES)})")
    if not 0 <= alpha <= 1:
        raise AliError(f"alpha must be in [0, 1]; got {alpha}")
    if batch_size < 1:
        raise AliError(f"batch_size must be at least 1; got {batch_size}")
    if model.encoder is None:
        raise EncoderError(f"a {type(model).__name__} has no encoder: it cannot score "
                           "anomalies in one pass")
    if model.runs > 1 and kind not in ENSEMBLE_SCORES:
        raise AliError(f"a run-batched model ({model.runs} runs) scores as an ensemble with "
                       f"{', '.join(ENSEMBLE_SCORES)} only; got {kind!r}")
    if kind in ("fm", "logit", "egbad"):
        joint_discriminator(model)
    if kind == "alad":
        pair_discriminator(model)
    x, item = torch.as_tensor(x), item_shape(model)
    if model.runs > 1 and tuple(x.shape[1:]) != item:
        raise DataError(f"this model takes x of shape (N, {', '.join(map(str, item))}); got "
                        f"{tuple(x.shape)}")
    y = model.check_condition(y, len(x))
    device = next(model.parameters()).device
    fast = inference_copy(model)             # batch norm folded, channels-last on a CPU
    out = [_scores(fast, _batch(model, x[i:i + batch_size]).to(device),
                   None if y is None else torch.as_tensor(y)[i:i + batch_size].to(device),
                   kind, alpha).float()
           for i in range(0, len(x), batch_size)]
    return torch.cat(out) if out else torch.empty(0, device=device)
