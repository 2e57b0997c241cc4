"""Assemble a model from its config: a network family's networks plus its objective."""

from __future__ import annotations

from .baselines import GAN, VAE, GANInverse, GANPostHoc
from .config import Config, ModelConfig
from .errors import ConfigError
from .model import ALI, GenerativeModel
from .nets import condition_embedding, family, pair_discriminator
from .nets.layers import spectral_norm_
from .nets.parts import Standardize
from .objectives import build_objective

__all__ = ["build_model"]


def build_model(cfg: Config | ModelConfig) -> GenerativeModel:
    """The model ``kind`` of a (model) config with the networks of its family ``nets`` and the
    objective :func:`~ali.objectives.build_objective` makes of its settings. The model keeps
    the :class:`~ali.config.ModelConfig` as its ``config``: all :func:`ali.load` needs to
    rebuild it. ``model.spectral_norm`` normalises every discriminator here; a feature-vector
    model (``mlp``) gets its :class:`~ali.nets.parts.Standardize` here (fitted from the data
    by :func:`ali.run.init_from_data_`)."""
    m = cfg.model if isinstance(cfg, Config) else cfg
    nets = family(m.nets)
    lat = nets.latent_shape(m)
    objective = build_objective(m)
    # Each network is built in this order (the initialisation draws from the RNG in turn).
    if m.kind == "ali":
        embed = condition_embedding(m) if m.conditional else None
        enc, dec, disc = nets.encoder(m), nets.decoder(m), nets.discriminator(m, joint=True)
        d_xx = pair_discriminator(m, "x") if m.alad else None
        d_zz = pair_discriminator(m, "z") if m.alad and m.alad.zz_weight > 0 else None
        model: GenerativeModel = ALI(enc, dec, disc, lat, objective, runs=m.runs, embed=embed,
                                     d_xx=d_xx, d_zz=d_zz)
    elif m.kind == "gan":
        model = GAN(nets.decoder(m), nets.discriminator(m, joint=False), lat, objective, m.runs)
    elif m.kind == "gan_inverse":
        model = GANInverse(nets.encoder(m), nets.decoder(m), nets.discriminator(m, joint=False),
                           lat, objective, m.runs)
    elif m.kind == "gan_posthoc":
        model = GANPostHoc(nets.encoder(m), nets.decoder(m), nets.discriminator(m, joint=False),
                           nets.discriminator(m, joint=True), lat, objective, m.runs)
    elif m.kind == "vae":
        likelihood = "bernoulli" if m.images else "gaussian"
        model = VAE(nets.encoder(m), nets.decoder(m), lat, nets.data_shape(m), objective,
                    likelihood=likelihood, runs=m.runs)
    else:
        raise ConfigError(f"unknown model.kind {m.kind!r}")
    if m.spectral_norm:                     # the one place it is applied, to every D
        for d in model.discriminators():
            spectral_norm_(d)
    if getattr(nets, "STANDARDIZED", False):    # feature vectors: standardised on the way in
        model.scaler = Standardize(m.data_dim)
    model.config = m
    return model
