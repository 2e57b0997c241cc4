"""Building blocks shared by the network families."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# The original code's batch-norm settings (Blocks defaults): eps 1e-4 and a running-average
# momentum of 0.05 in PyTorch's convention.
BN_EPS = 1e-4
BN_MOMENTUM = 0.05


class Maxout(nn.Module):
    """Maxout over ``pieces`` contiguous features along ``dim`` (Goodfellow et al., 2013):
    C * pieces features in, C out."""

    def __init__(self, pieces: int, dim: int = 1) -> None:
        super().__init__()
        self.pieces, self.dim = pieces, dim

    def forward(self, x: Tensor) -> Tensor:
        dim = self.dim % x.dim()
        c = x.shape[dim]
        if c % self.pieces:
            raise ValueError(f"maxout: {c} features do not split into {self.pieces} pieces")
        shape = (*x.shape[:dim], c // self.pieces, self.pieces, *x.shape[dim + 1:])
        return x.view(shape).max(dim + 1).values

    def extra_repr(self) -> str:
        return f"pieces={self.pieces}, dim={self.dim}"


class RunLinear(nn.Module):
    """A linear layer for ``runs`` independent models at once: (B, R, in) -> (B, R, out).

    Run r has its own weight ``weight[r]``; one batched matmul serves all runs, which is how the
    2-D experiment trains its runs side by side.
    """

    def __init__(self, runs: int, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(runs, in_features, out_features))
        self.bias = nn.Parameter(torch.zeros(runs, out_features)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        # x: (B, R, in) -> (R, B, in) @ (R, in, out) -> (B, R, out)
        xt = x.transpose(0, 1)
        if self.bias is None:
            return torch.bmm(xt, self.weight).transpose(0, 1)
        return torch.baddbmm(self.bias.unsqueeze(1), xt, self.weight).transpose(0, 1)

    def extra_repr(self) -> str:
        r, i, o = self.weight.shape
        return f"runs={r}, in_features={i}, out_features={o}, bias={self.bias is not None}"


class RunBatchNorm(nn.BatchNorm1d):
    """Batch norm with separate statistics for each run: (B, R, C) -> (B, R, C)."""

    def __init__(self, runs: int, features: int) -> None:
        super().__init__(runs * features, eps=BN_EPS, momentum=BN_MOMENTUM)

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.flatten(1)).view(x.shape)


def _one_pixel(conv: nn.Conv2d | nn.ConvTranspose2d) -> bool:
    return (conv.padding == (0, 0) and conv.dilation == (1, 1) and conv.groups == 1
            and getattr(conv, "output_padding", (0, 0)) == (0, 0)
            and conv.padding_mode == "zeros")


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` (same parameters, same result) that runs as one matrix multiply when its
    kernel covers the whole input, so the output is one pixel (a 4x4 conv on a 4x4 map, or
    any 1x1 conv on 1x1 maps: the discriminators' and encoder's last layers). PyTorch's CPU
    convolution is 5-10x slower than the matrix multiply for these shapes, forward and
    backward (README, "Speed")."""

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 4 and tuple(x.shape[-2:]) == self.kernel_size and _one_pixel(self):
            return F.linear(x.flatten(1), self.weight.flatten(1), self.bias)[:, :, None, None]
        return super().forward(x)


class ConvTranspose2d(nn.ConvTranspose2d):
    """``nn.ConvTranspose2d`` that runs as one matrix multiply on a one-pixel input (the
    decoders' first layer, z of shape (B, L, 1, 1)); see :class:`Conv2d`."""

    def forward(self, x: Tensor, output_size: list[int] | None = None) -> Tensor:
        if (x.dim() == 4 and tuple(x.shape[-2:]) == (1, 1) and output_size is None
                and _one_pixel(self)):
            y = (x.flatten(1) @ self.weight.flatten(1)).view(len(x), *self.weight.shape[1:])
            return y if self.bias is None else y + self.bias[:, None, None]
        return super().forward(x, output_size)


class Dropout(nn.Dropout):
    """``nn.Dropout`` whose mask on a CPU comes from 16 random bits per unit (four units per
    64-bit draw) instead of one ``bernoulli_`` draw each: 4-6x faster to draw. The drop
    probability is rounded to a multiple of 1/65536 (0.2 -> 0.199997). Elsewhere (GPUs, eval
    mode, torch.compile) it is ``nn.Dropout``."""

    def forward(self, x: Tensor) -> Tensor:
        if (not self.training or self.p == 0 or x.device.type != "cpu" or self.inplace
                or torch.compiler.is_compiling()):     # compiled code draws its own mask
            return super().forward(x)
        n = x.numel()
        bits = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-2**63, 2**63 - 1)
        keep = bits.view(torch.int16)[:n].view(x.shape) >= round(self.p * 65536) - 32768
        return x * keep.to(x.dtype) * (1.0 / (1.0 - self.p))


class OutputDropout(Dropout):
    """:class:`Dropout` on a conv's output, before its nonlinearity: where the original code
    applied dropout to the input of a maxout brick rather than of a conv (CIFAR-10's D(x)).
    Its own class so that :mod:`ali.arch` attributes it to the layer it follows."""


def init_normal_(module: nn.Module, std: float) -> None:
    """The original code's initialisation: weights N(0, std), biases 0, batch norm (1, 0)."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            if m.affine:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        elif isinstance(m, (RunLinear, nn.Linear, nn.Conv1d, nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


SPECTRAL_NORMED = (RunLinear, nn.Linear, nn.Conv2d, nn.ConvTranspose2d)


class RunSpectralNorm(nn.Module):
    """Spectral normalisation of a :class:`RunLinear` weight (R, in, out), each run's (out, in)
    matrix by its own largest singular value: torch's ``spectral_norm`` (one power iteration per
    training forward, 15 when made) done R times in one batched product, so no run's norm
    depends on another's weights."""

    def __init__(self, weight: Tensor, eps: float = 1e-12) -> None:
        super().__init__()
        runs, n_in, n_out = weight.shape
        self.eps = eps
        # drawn as torch's are, u (out) before v (in), for each run
        u = weight.new_empty(runs, n_out).normal_(0, 1)
        v = weight.new_empty(runs, n_in).normal_(0, 1)
        self.register_buffer("_u", F.normalize(u, dim=1, eps=eps))
        self.register_buffer("_v", F.normalize(v, dim=1, eps=eps))
        self._power_method(weight, 15)

    @torch.no_grad()
    def _power_method(self, weight: Tensor, iterations: int) -> None:
        # in place, as torch's: the buffers must stay the module's own tensors
        for _ in range(iterations):
            wv = torch.bmm(self._v.unsqueeze(1), weight).squeeze(1)         # (R, out): W_r v_r
            F.normalize(wv, dim=1, eps=self.eps, out=self._u)
            wu = torch.bmm(weight, self._u.unsqueeze(2)).squeeze(2)         # (R, in): W_r^T u_r
            F.normalize(wu, dim=1, eps=self.eps, out=self._v)

    def forward(self, weight: Tensor) -> Tensor:
        # weight: (R, in, out) -> (R, in, out), run r divided by sigma_r
        if self.training:
            self._power_method(weight, 1)
        # clones, so that two forwards before one backward (D on real, then on fake) work
        u, v = self._u.clone(), self._v.clone()
        sigma = (torch.bmm(v.unsqueeze(1), weight).squeeze(1) * u).sum(1)    # (R,)
        return weight / sigma.view(-1, 1, 1)


def spectral_norm_(module: nn.Module) -> nn.Module:
    """Spectral normalisation (Miyato et al., 2018) of the weight of every linear, run-linear
    and convolutional layer in ``module``, in place; returns ``module``. A single-run
    :class:`RunLinear`'s weight (1, in, out) is normalised as its (out, in) matrix by torch's
    ``spectral_norm``; one of several runs by :class:`RunSpectralNorm`, each run's on its own."""
    from torch.nn.utils import parametrize
    from torch.nn.utils.parametrizations import spectral_norm

    layers = [m for m in module.modules() if isinstance(m, SPECTRAL_NORMED)]
    for m in layers:
        if isinstance(m, RunLinear) and m.weight.shape[0] > 1:
            parametrize.register_parametrization(m, "weight", RunSpectralNorm(m.weight))
        elif isinstance(m, RunLinear):
            spectral_norm(m, dim=2)
        else:
            spectral_norm(m)    # a transposed conv's output dim (1) is found by torch
    return module
