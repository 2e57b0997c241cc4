"""Convolutional networks built from tables, shared by the image families.

A family module (``cifar10.py``, ``svhn.py``, ...) writes each of its five networks as a list of
:class:`Layer` rows, one row per line of the paper's Tables 3-6 (kernel, stride, feature maps,
batch norm, dropout, nonlinearity), and hands them to a :class:`ConvFamily`, which builds them
with the original code's conventions:

- every convolution and transposed convolution is "valid" (padding 0);
- a layer is ``dropout -> conv -> batch norm -> nonlinearity``: dropout acts on the conv's
  *input* (the original code's discriminators; CIFAR-10's D(x) also drops one conv's *output*,
  before its maxout), batch norm uses eps 1e-4 and momentum 0.05, and a conv has a bias where no
  batch norm follows it unless its row says otherwise (the original code switched biases off
  for whole networks: CIFAR-10's D(x) after its first conv, most families' D(z));
- ``maxout`` keeps the max of ``pieces`` contiguous channels, so a conv with ``c`` feature maps
  hands ``c / pieces`` channels to the next layer;
- the decoder's last layer is a bias-free 1x1 conv plus a per-pixel bias of shape (C, H, W)
  (:class:`PixelBias`) before the sigmoid; :func:`init_decoder_bias_` sets it from data;
- weights start N(0, ``model.init_std``), biases 0, batch norm (1, 0);
- z has shape (B, L, 1, 1); the encoder outputs 2L channels (mu, log sigma) or L.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Callable

import torch
from torch import Tensor, nn

from ..config import ModelConfig
from ..errors import ConfigError
from .layers import (BN_EPS, BN_MOMENTUM, Conv2d, ConvTranspose2d, Dropout, Maxout,
                     OutputDropout, init_normal_)
from .parts import (ConditionedNet, Conditioning, JointDiscriminator, MarginalDiscriminator,
                    StochasticEncoder)

OPS = ("conv", "convT")
ACTS = ("lrelu", "relu", "maxout", "linear", "sigmoid")


@dataclass(frozen=True)
class Layer:
    """One row of a network table."""

    op: str
    """conv | convT (transposed convolution)."""
    kernel: int
    stride: int
    maps: int
    """Feature maps the conv outputs (before maxout, which divides them by its pieces)."""
    bn: bool = True
    dropout: float = 0.0
    """Dropout probability on the conv's input."""
    act: str = "lrelu"
    """lrelu | relu | maxout | linear | sigmoid."""
    pixel_bias: bool = False
    """A per-pixel bias (C, H, W) after the conv instead of a per-channel one."""
    bias: bool | None = None
    """Whether the conv has a per-channel bias; None: only where no batch norm follows."""
    dropout_out: float = 0.0
    """Dropout probability on the conv's output, before the batch norm and nonlinearity."""

    def __post_init__(self) -> None:
        if self.op not in OPS or self.act not in ACTS:
            raise ValueError(f"bad layer {self}")
        for p in (self.dropout, self.dropout_out):
            if not (0 <= p < 1):
                raise ValueError(f"dropout must be in [0, 1); got {p}")

    @property
    def has_bias(self) -> bool:
        """Whether the conv itself has a (per-channel) bias."""
        return not (self.bn or self.pixel_bias) if self.bias is None else self.bias


def conv(kernel: int, stride: int, maps: int, bn: bool = True, dropout: float = 0.0,
         act: str = "lrelu", pixel_bias: bool = False, bias: bool | None = None,
         dropout_out: float = 0.0) -> Layer:
    """A convolution row."""
    return Layer("conv", kernel, stride, maps, bn, dropout, act, pixel_bias, bias, dropout_out)


def convT(kernel: int, stride: int, maps: int, bn: bool = True, dropout: float = 0.0,
          act: str = "lrelu") -> Layer:
    """A transposed-convolution row: output size (in - 1) * stride + kernel."""
    return Layer("convT", kernel, stride, maps, bn, dropout, act)


class PixelBias(nn.Module):
    """A learned bias per output unit, shape (C, H, W), added to (B, C, H, W)."""

    def __init__(self, shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(shape))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.bias

    def extra_repr(self) -> str:
        return f"shape={tuple(self.bias.shape)}"


class ConvBlock(nn.Sequential):
    """One table row as modules, in forward order: dropout, conv, output dropout, bn, pixel
    bias, act."""

    def __init__(self, spec: Layer, in_channels: int, slope: float, pieces: int,
                 pixel_shape: tuple[int, int, int] | None = None) -> None:
        mods: OrderedDict[str, nn.Module] = OrderedDict()
        if spec.dropout > 0:
            mods["dropout"] = Dropout(spec.dropout)
        Conv = Conv2d if spec.op == "conv" else ConvTranspose2d
        mods["conv"] = Conv(in_channels, spec.maps, spec.kernel, spec.stride, padding=0,
                            bias=spec.has_bias)
        if spec.dropout_out > 0:
            mods["dropout_out"] = OutputDropout(spec.dropout_out)
        if spec.bn:
            mods["bn"] = nn.BatchNorm2d(spec.maps, eps=BN_EPS, momentum=BN_MOMENTUM)
        if spec.pixel_bias:
            if pixel_shape is None or pixel_shape[0] != spec.maps:
                raise ValueError(f"a per-pixel bias needs the output shape; got {pixel_shape}")
            mods["bias"] = PixelBias(pixel_shape)
        if spec.act == "lrelu":
            mods["act"] = nn.LeakyReLU(slope)
        elif spec.act == "relu":
            mods["act"] = nn.ReLU()
        elif spec.act == "maxout":
            mods["act"] = Maxout(pieces, dim=1)
        elif spec.act == "sigmoid":
            mods["act"] = nn.Sigmoid()
        super().__init__(mods)
        self.spec = spec
        self.out_channels = spec.maps // pieces if spec.act == "maxout" else spec.maps


def stack(in_channels: int, table: list[Layer], slope: float, init_std: float,
          pieces: int = 2, pixel_shape: tuple[int, int, int] | None = None) -> nn.Sequential:
    """The network of ``table``: an ``nn.Sequential`` of :class:`ConvBlock`, initialised."""
    blocks = []
    for spec in table:
        if spec.act == "maxout" and spec.maps % pieces:
            raise ValueError(f"maxout: {spec.maps} maps do not split into {pieces} pieces")
        block = ConvBlock(spec, in_channels, slope, pieces, pixel_shape)
        blocks.append(block)
        in_channels = block.out_channels
    net = nn.Sequential(*blocks)
    init_normal_(net, init_std)
    return net


def _need_label_dim(cfg: ModelConfig) -> None:
    if cfg.label_dim < 1:
        raise ConfigError("model.label_dim is 0: it is filled in from the dataset when training "
                          "starts; set it (the number of classes or attributes) to build the "
                          "networks without data")


def condition_embedding(cfg: ModelConfig) -> Conditioning:
    """The linear embedding of y (K -> model.embed_dim) of conditional ALI. Weights start
    N(0, 1) so that y enters the networks on the same scale as z ~ N(0, I)."""
    _need_label_dim(cfg)
    embed = Conditioning(cfg.label_dim, cfg.embed_dim, cfg.attributes)
    nn.init.normal_(embed.weight, 0.0, 1.0)
    nn.init.zeros_(embed.bias)
    return embed


def out_channels(net: nn.Sequential) -> int:
    """Channels a :func:`stack` network outputs."""
    return net[-1].out_channels


@dataclass(frozen=True)
class ConvFamily:
    """An image family: its data shape, leaky slope and the five tables.

    ``encoder`` maps the number of output channels (2L for a Gaussian encoder, L for a
    deterministic one) to the encoder's table; the other tables do not depend on L (a layer's
    input channels follow from the previous layer).
    """

    image_shape: tuple[int, int, int]
    slope: float
    encoder: Callable[[int], list[Layer]]
    decoder: list[Layer]
    disc_x: list[Layer]
    disc_z: list[Layer]
    disc_joint: list[Layer]
    pieces: int = 2
    """Maxout pieces (contiguous channels)."""
    notes: tuple[str, ...] = field(default=())
    """Where the paper's table and the original code disagree (we follow the code)."""
    svm_layers: tuple[int, ...] = field(default=())
    """Indices of the encoder blocks whose post-BN, pre-activation outputs join mu as the
    features of the paper's L2-SVM protocol (:mod:`ali.eval.features`)."""

    # ------------------------------------------------------------------ helpers
    def _check(self, cfg: ModelConfig) -> None:
        if cfg.runs != 1:
            raise ConfigError(f"model.runs must be 1 for the image networks ({cfg.nets}); "
                              f"got {cfg.runs}")

    def _table(self, table: list[Layer], cfg: ModelConfig) -> list[Layer]:
        return table if cfg.dropout else [replace(t, dropout=0.0, dropout_out=0.0)
                                          for t in table]

    def _scaled(self, table: list[Layer], cfg: ModelConfig, keep_last: bool) -> list[Layer]:
        """``table`` with ``model.channel_scale`` applied to its feature maps; ``keep_last``
        keeps the last row's, which the data, the latent size or the logits fix."""
        s = cfg.channel_scale
        if s == 1:
            return list(table)      # a copy: callers may replace rows (the K+1 logits)

        def maps(t: Layer) -> int:
            step = self.pieces if t.act == "maxout" else 1
            return max(step, round(t.maps * s / step) * step)
        last = len(table) - 1 if keep_last else len(table)
        return [replace(t, maps=maps(t)) if i < last else t for i, t in enumerate(table)]

    def _stack(self, in_channels: int, table: list[Layer], cfg: ModelConfig,
               pixel: bool = False) -> nn.Sequential:
        return stack(in_channels, self._table(table, cfg), self.slope, cfg.init_std, self.pieces,
                     self.image_shape if pixel else None)

    # ------------------------------------------------------------------ the family API
    def build_encoder(self, cfg: ModelConfig) -> StochasticEncoder:
        """q(z | x): Gaussian (2L output maps: mu, log sigma) or deterministic (L maps).

        Conditional (Eq. 7): the embedded y joins the last hidden map, before the final conv.
        """
        self._check(cfg)
        if cfg.encoder == "noise":
            raise ConfigError(f"model.encoder=noise is only available for the toy networks; "
                              f"use gaussian or deterministic for {cfg.nets}")
        out = 2 * cfg.latent_dim if cfg.encoder == "gaussian" else cfg.latent_dim
        table = self._scaled(self.encoder(out), cfg, keep_last=True)
        if cfg.conditional:
            body = self._stack(self.image_shape[0], table[:-1], cfg)
            head = self._stack(out_channels(body) + cfg.embed_dim, table[-1:], cfg)
            net: nn.Module = ConditionedNet(body, head)
        else:
            net = self._stack(self.image_shape[0], table, cfg)
        return StochasticEncoder(net, cfg.encoder, cfg.latent_dim, 0, dim=1)

    def build_decoder(self, cfg: ModelConfig) -> nn.Module:
        """p(x | z): z (B, L, 1, 1) -> x (B, C, H, W) in (0, 1); conditional: the embedded y
        (B, E, 1, 1) is concatenated to z."""
        self._check(cfg)
        table = self._scaled(self.decoder, cfg, keep_last=True)
        if cfg.conditional:
            net = self._stack(cfg.latent_dim + cfg.embed_dim, table, cfg, pixel=True)
            return ConditionedNet(nn.Identity(), net)
        return self._stack(cfg.latent_dim, table, cfg, pixel=True)

    def build_discriminator(self, cfg: ModelConfig, joint: bool = True) -> nn.Module:
        """D(x, z) = D_xz(concat(D_x(x), D_z(z))) (``joint``), or the GAN's D(x): D_x followed
        by a 1x1 conv head with the joint network's last dropout.

        Semi-supervised: the last conv outputs K class logits. Conditional: D owns a linear
        embedding of y, concatenated to D_xz's input (512 + 1024 + 256 maps for CelebA)."""
        self._check(cfg)
        d_x = self._stack(self.image_shape[0], self._scaled(self.disc_x, cfg, False), cfg)
        if not joint:
            head = self._stack(out_channels(d_x), self.disc_joint[-1:], cfg)
            return MarginalDiscriminator(d_x, head)
        d_z = self._stack(cfg.latent_dim, self._scaled(self.disc_z, cfg, False), cfg)
        table = self._scaled(self.disc_joint, cfg, keep_last=True)
        if cfg.semi_supervised:
            _need_label_dim(cfg)
            table[-1] = replace(table[-1], maps=cfg.label_dim)
        embed = None
        in_xz = out_channels(d_x) + out_channels(d_z)
        if cfg.conditional:
            embed = condition_embedding(cfg)
            in_xz += cfg.embed_dim
        d_xz = self._stack(in_xz, table, cfg)
        return JointDiscriminator(d_x, d_z, d_xz, cat_dim=1, embed=embed)

    def build_pair_discriminator(self, cfg: ModelConfig, on: str) -> JointDiscriminator:
        """ALAD's D_xx(x, x') (``on="x"``) or D_zz(z, z') (``on="z"``), from the family's own
        tables: each side of the pair through its own D(x) (or D(z)) stack, the two feature
        maps concatenated into a copy of the joint stack, which outputs one logit."""
        self._check(cfg)
        if on == "x":
            a, b = (self._stack(self.image_shape[0], self.disc_x, cfg) for _ in range(2))
        else:
            a, b = (self._stack(cfg.latent_dim, self.disc_z, cfg) for _ in range(2))
        pair = self._stack(out_channels(a) + out_channels(b), self.disc_joint, cfg)
        return JointDiscriminator(a, b, pair, cat_dim=1)

    def latent_shape(self, cfg: ModelConfig) -> tuple[int, ...]:
        return (cfg.latent_dim, 1, 1)

    def data_shape(self, cfg: ModelConfig) -> tuple[int, ...]:
        return self.image_shape

    def exports(self) -> tuple[Callable, ...]:
        """(encoder, decoder, discriminator, latent_shape, data_shape) for a family module
        (ALAD's pair discriminators: :meth:`build_pair_discriminator`, found through
        ``FAMILY`` by :func:`ali.nets.pair_discriminator`)."""
        return (self.build_encoder, self.build_decoder, self.build_discriminator,
                self.latent_shape, self.data_shape)


@torch.no_grad()
def init_decoder_bias_(model: nn.Module, x_sample: Tensor) -> Tensor:
    """Set the decoder's per-pixel output bias to logit(clip(mean of x_sample, 1e-7, 1 - 1e-7)),
    as the original code did with ~500 training images in [0, 1].

    ``model`` is a model with a ``decoder`` or a decoder itself; ``x_sample`` is (N, C, H, W).
    Returns the new bias.
    """
    decoder = getattr(model, "decoder", model)
    biases = [m for m in decoder.modules() if isinstance(m, PixelBias)]
    if len(biases) != 1:
        raise ValueError("init_decoder_bias_ needs a decoder with one per-pixel bias "
                         f"(found {len(biases)})")
    bias = biases[0].bias
    if tuple(x_sample.shape[1:]) != tuple(bias.shape):
        raise ValueError(f"x_sample items have shape {tuple(x_sample.shape[1:])}; "
                         f"the decoder outputs {tuple(bias.shape)}")
    mean = x_sample.to(bias.device, torch.float64).mean(0).clamp(1e-7, 1 - 1e-7)
    bias.copy_(torch.logit(mean).to(bias.dtype))
    return bias
