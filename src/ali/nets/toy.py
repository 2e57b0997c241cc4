"""The 2-D networks of section 4.5, as in the original code.

- encoder: MLP on concat(x, eps), 4 -> 400 -> 400 -> 2 (or x alone -> 2L for a Gaussian or
  deterministic encoder);
- decoder: 2 -> 400 -> 400 -> 400 -> 400 -> 2;
  hidden layers are linear (no bias) -> batch norm -> ReLU, outputs linear with bias;
- discriminator: concat(x, z) -> 3 x [linear to 200 units with maxout of 5 pieces] -> linear 1,
  no dropout; the GAN's discriminator is the same stack on x alone.

Every layer is a :class:`~ali.nets.layers.RunLinear`, so ``model.runs`` independent copies train
side by side as one batched computation. Tensors are (B, R, features); with one run the nets
also accept and return plain (B, features).
"""

from __future__ import annotations

from torch import Tensor, nn

from ..config import ModelConfig
from .layers import Maxout, RunBatchNorm, RunLinear, init_normal_
from .parts import JointDiscriminator, MarginalDiscriminator, StochasticEncoder

DATA_DIM = 2

# For ``ali arch toy``: how to read its tables.
NOTES = ("every layer output has a run axis first: (runs, features)",
         "D(x) and D(z) are identities; D(x, z) acts on concat(x, z)")


class ToyNet(nn.Module):
    """A stack of run-batched layers accepting (B, R, F) or, with one run, (B, F)."""

    def __init__(self, layers: list[nn.Module], runs: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(*layers)
        self.runs = runs

    def forward(self, x: Tensor) -> Tensor:
        flat = x.dim() == 2
        if flat:
            if self.runs != 1:
                raise ValueError(f"expected (B, {self.runs}, F) input for {self.runs} runs")
            x = x.unsqueeze(1)                      # (B, 1, F)
        y = self.layers(x)                          # (B, R, F_out)
        return y.squeeze(1) if flat else y


def _mlp(runs: int, sizes: list[int], out: int) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [RunLinear(runs, a, b, bias=False), RunBatchNorm(runs, b), nn.ReLU()]
    layers.append(RunLinear(runs, sizes[-1], out))
    return layers


def _maxout_stack(runs: int, in_dim: int, cfg: ModelConfig) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for _ in range(cfg.disc_layers):
        layers += [RunLinear(runs, in_dim, cfg.disc_width * cfg.maxout_pieces),
                   Maxout(cfg.maxout_pieces, dim=-1)]
        in_dim = cfg.disc_width
    layers.append(RunLinear(runs, in_dim, 1))
    return layers


def _built(layers: list[nn.Module], cfg: ModelConfig) -> ToyNet:
    net = ToyNet(layers, cfg.runs)
    init_normal_(net, cfg.init_std)
    return net


# The builders take the data dimension ``dim``: the toy family fixes it at ``DATA_DIM``, the
# ``mlp`` family (feature vectors, :mod:`ali.nets.mlp`) takes it from ``model.data_dim``.

def build_encoder(cfg: ModelConfig, dim: int) -> StochasticEncoder:
    """q(z | x) on ``dim``-dimensional x: an MLP wrapped by the configured kind of posterior."""
    noise = cfg.noise_dim if cfg.encoder == "noise" else 0
    out = 2 * cfg.latent_dim if cfg.encoder == "gaussian" else cfg.latent_dim
    net = _built(_mlp(cfg.runs, [dim + noise, cfg.width, cfg.width], out), cfg)
    return StochasticEncoder(net, cfg.encoder, cfg.latent_dim, noise, dim=-1)


def build_decoder(cfg: ModelConfig, dim: int) -> ToyNet:
    """p(x | z) = delta(x - G(z)): four hidden layers of ``cfg.width``, ``dim`` outputs."""
    return _built(_mlp(cfg.runs, [cfg.latent_dim] + [cfg.width] * 4, dim), cfg)


def build_discriminator(cfg: ModelConfig, dim: int, joint: bool = True) -> nn.Module:
    """D(x, z) on concat(x, z) (``joint``), or the GAN's D(x)."""
    if joint:
        d_xz = _built(_maxout_stack(cfg.runs, dim + cfg.latent_dim, cfg), cfg)
        return JointDiscriminator(nn.Identity(), nn.Identity(), d_xz, cat_dim=-1)
    head = _built(_maxout_stack(cfg.runs, dim, cfg), cfg)
    return MarginalDiscriminator(nn.Identity(), head)


def build_pair_discriminator(cfg: ModelConfig, dim: int, on: str) -> JointDiscriminator:
    """ALAD's D_xx(x, x') (``on="x"``) or D_zz(z, z') (``on="z"``): the maxout stack of the
    joint discriminator on the concatenated pair."""
    width = dim if on == "x" else cfg.latent_dim
    pair = _built(_maxout_stack(cfg.runs, 2 * width, cfg), cfg)
    return JointDiscriminator(nn.Identity(), nn.Identity(), pair, cat_dim=-1)


def encoder(cfg: ModelConfig) -> StochasticEncoder:
    """q(z | x): the toy encoder MLP wrapped by the configured kind of posterior."""
    return build_encoder(cfg, DATA_DIM)


def decoder(cfg: ModelConfig) -> ToyNet:
    """p(x | z) = delta(x - G(z)): four hidden layers of ``cfg.width``."""
    return build_decoder(cfg, DATA_DIM)


def discriminator(cfg: ModelConfig, joint: bool = True) -> nn.Module:
    """D(x, z) on concat(x, z) (``joint``), or the GAN's D(x)."""
    return build_discriminator(cfg, DATA_DIM, joint)


def pair_discriminator(cfg: ModelConfig, on: str) -> JointDiscriminator:
    """ALAD's D_xx (``on="x"``) or D_zz (``on="z"``)."""
    return build_pair_discriminator(cfg, DATA_DIM, on)


def latent_shape(cfg: ModelConfig) -> tuple[int, ...]:
    return (cfg.latent_dim,) if cfg.runs == 1 else (cfg.runs, cfg.latent_dim)


def shape_of(cfg: ModelConfig, dim: int) -> tuple[int, ...]:
    """One x of ``dim`` features: (dim,), or (runs, dim) for run-batched models."""
    return (dim,) if cfg.runs == 1 else (cfg.runs, dim)


def data_shape(cfg: ModelConfig) -> tuple[int, ...]:
    return shape_of(cfg, DATA_DIM)
