"""The losses of Algorithm 1 and of the baselines, on discriminator logits.

All losses take logits of shape ``(B, R)``: ``B`` pairs for each of ``R`` runs trained side by
side (``R = 1`` for a single model). They average over the batch and *sum* over runs, so each
run receives exactly the gradient it would receive if trained alone.

With ``s_q = D(x, z_hat)`` (encoder pairs, labelled real) and ``s_p = D(x_tilde, z)``
(decoder pairs, labelled fake) and D = sigmoid(s):

- discriminator: ``L_d = -log D(x, z_hat) - log(1 - D(x_tilde, z))``
  ``= softplus(-s_q) + softplus(s_p)``;
- generator, non-saturating (Eq. 4, the original code):
  ``L_g = -log(1 - D(x, z_hat)) - log D(x_tilde, z) = softplus(s_q) + softplus(-s_p)``;
- generator, saturating (Eq. 1): ``L_g = -L_d``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def fp32(t: Tensor) -> Tensor:
    """``t`` in fp32 when it is in a half precision (mixed-precision forward), else as it is."""
    return t.float() if t.dtype in (torch.bfloat16, torch.float16) else t


def batch_mean_run_sum(t: Tensor) -> Tensor:
    """Average a (B, R) per-example term over the batch and sum it over runs."""
    return t.mean(0).sum()


def discriminator_loss(s_q: Tensor, s_p: Tensor) -> Tensor:
    """-E_q[log D(x, z_hat)] - E_p[log(1 - D(x_tilde, z))]."""
    return batch_mean_run_sum(F.softplus(-s_q) + F.softplus(s_p))


def generator_loss(s_q: Tensor, s_p: Tensor, kind: str = "nonsaturating") -> Tensor:
    """The encoder/decoder loss: Eq. 4 (``nonsaturating``) or minus Eq. 1 (``saturating``)."""
    if kind == "nonsaturating":
        return batch_mean_run_sum(F.softplus(s_q) + F.softplus(-s_p))
    if kind == "saturating":
        return -discriminator_loss(s_q, s_p)
    raise ValueError(f"unknown generator loss {kind!r}")


def k_plus_one_discriminator_loss(l_q: Tensor, l_p: Tensor, l_lab: Tensor, y_lab: Tensor) -> Tensor:
    """The K+1 discriminator's loss of Salimans et al. (2016), as their code wrote it.

    ``l_q``, ``l_p``: (B, K) class logits of the real (encoder) and fake (decoder) pairs;
    ``l_lab``: (Bl, K) logits of labelled real pairs with classes ``y_lab``. The fake class's
    logit is fixed at 0, so p(real) = sigmoid(lse(l)). ``L_lab`` is the cross-entropy over the K
    classes; ``L_unl = 0.5 * (-E[lse(l_q)] + E[softplus(lse(l_q))] + E[softplus(lse(l_p))])``,
    which is half of :func:`discriminator_loss` on ``s = lse(l)`` (their code's halves).
    """
    s_q, s_p = l_q.logsumexp(1), l_p.logsumexp(1)
    l_unl = 0.5 * (-s_q.mean() + F.softplus(s_q).mean() + F.softplus(s_p).mean())
    return F.cross_entropy(l_lab, y_lab) + l_unl


def discriminator_accuracy(s_q: Tensor, s_p: Tensor) -> dict[str, Tensor]:
    """Fraction of encoder pairs called real (``acc_q``) and of decoder pairs called fake
    (``acc_p``), as detached tensors (no host sync)."""
    return {"acc_q": (s_q.detach() > 0).float().mean(), "acc_p": (s_p.detach() < 0).float().mean()}


def per_example_sum(t: Tensor, runs: int = 1) -> Tensor:
    """Sum an elementwise term over each example's own dimensions: shape (B, R).

    With ``runs > 1`` the tensor is laid out (B, R, ...) and each run keeps its own column.
    """
    return t.flatten(2).sum(-1) if runs > 1 else t.flatten(1).sum(-1, keepdim=True)


def r1_penalty(s_real: Tensor, inputs: list[Tensor], runs: int = 1) -> Tensor:
    """The zero-centred gradient penalty R1 of Mescheder et al. (2018) on the discriminator's
    'real' inputs: E ||d s_real / d inputs||^2, over all of ``inputs`` (for ALI both halves of
    the pair (x, z_hat)), averaged over the batch and summed over runs.

    The graph is kept (``create_graph``) so the penalty can be differentiated w.r.t. the
    discriminator's parameters. An input that does not reach ``s_real`` contributes zero.
    """
    grads = torch.autograd.grad(fp32(s_real).sum(), inputs, create_graph=True,
                                allow_unused=True)
    total = sum(per_example_sum(fp32(g).pow(2), runs) for g in grads if g is not None)
    return batch_mean_run_sum(total)


def gaussian_kl(mu: Tensor, log_sigma: Tensor) -> Tensor:
    """KL(N(mu, sigma^2) || N(0, 1)) elementwise, in fp32."""
    mu, log_sigma = fp32(mu), fp32(log_sigma)
    return 0.5 * (mu.pow(2) + (2 * log_sigma).exp() - 1) - log_sigma


def gaussian_nll(x: Tensor, mean: Tensor, log_sigma: Tensor) -> Tensor:
    """-log N(x; mean, sigma^2) elementwise, in fp32."""
    x, mean, log_sigma = fp32(x), fp32(mean), fp32(log_sigma)
    return 0.5 * ((x - mean) * (-log_sigma).exp()).pow(2) + log_sigma + 0.5 * math.log(2 * math.pi)


def bernoulli_nll(x: Tensor, mean: Tensor, eps: float = 1e-7) -> Tensor:
    """-log Bernoulli(x; mean) elementwise for x in [0, 1], in fp32 (1 - 1e-7 is 1 in bf16)."""
    x, mean = fp32(x), fp32(mean).clamp(eps, 1 - eps)
    return -(x * mean.log() + (1 - x) * (1 - mean).log())
