"""Building blocks shared by the network families."""

from __future__ import annotations

import torch
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
