"""The samplers beyond ancestral G(z): discriminator importance resampling and the
decode-encode chain (README, "Beyond the paper: samplers")."""

import pytest
import torch
from torch import nn

from ali.baselines import GAN
from ali.errors import ArgumentError, DiscriminatorError
from ali.model import ALI
from ali.objectives import KPlusOneGame, Objective
from ali.build import build_model

from conftest import tiny_toy


class _LogRatio(nn.Module):
    """A stand-in discriminator whose logit is a known function of x (B, [R,] F)."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn
        self.p = nn.Parameter(torch.zeros(()))   # so the model has a device and a dtype

    def forward(self, x, z=None):
        return self.fn(x)


def _identity_gan(fn, runs=1):
    latent = (2,) if runs == 1 else (runs, 2)
    return GAN(nn.Identity(), _LogRatio(fn), latent, runs=runs).eval()


def test_resampling_with_the_exact_ratio_reaches_the_target():
    # G(z) = z ~ N(0, 1); the logit log N(x0; 1, 1) / N(x0; 0, 1) = x0 - 1/2 makes the
    # resampled first coordinate N(1, 1), the second untouched.
    model = _identity_gan(lambda x: (x[:, :1] - 0.5))
    torch.manual_seed(0)
    x = model.sample_resampled(4000, oversample=100)
    assert x.shape == (4000, 2)
    assert x[:, 0].mean() == pytest.approx(1.0, abs=0.08)
    assert x[:, 0].std() == pytest.approx(1.0, abs=0.08)
    assert x[:, 1].mean() == pytest.approx(0.0, abs=0.08)
    plain = model.sample(4000)
    assert plain[:, 0].mean() == pytest.approx(0.0, abs=0.08)


def test_resampling_drops_what_the_discriminator_rejects_in_each_run_alone():
    # run 0 accepts x0 > 0 only, run 1 x0 < 0 only (logits +-30)
    def fn(x):                                                  # x: (B, 2, 2)
        return torch.stack([x[:, 0, 0] > 0, x[:, 1, 0] < 0], 1).float() * 60 - 30
    model = _identity_gan(fn, runs=2)
    torch.manual_seed(0)
    x = model.sample_resampled(500, oversample=30)             # P(all 30 wrong) = 2^-30
    assert x.shape == (500, 2, 2)
    assert (x[:, 0, 0] > 0).all() and (x[:, 1, 0] < 0).all()
    chunked = model.sample_resampled(500, oversample=30, chunk=64)   # 8 passes, same rule
    assert chunked.shape == (500, 2, 2)
    assert (chunked[:, 0, 0] > 0).all() and (chunked[:, 1, 0] < 0).all()
    one = model.sample_resampled(500, oversample=1)            # one candidate: no choice
    assert (one[:, 0, 0] <= 0).any() and (one[:, 1, 0] >= 0).any()
    # AliErrors (they were bare ValueErrors), still ValueErrors
    with pytest.raises(ArgumentError, match="oversample and chunk must be >= 1"):
        model.sample_resampled(5, oversample=0)
    with pytest.raises(ArgumentError, match="oversample and chunk must be >= 1"):
        model.sample_resampled(5, chunk=0)
    assert issubclass(ArgumentError, ValueError)


def test_resampling_a_trained_shape_model_and_the_models_without_a_discriminator():
    for kind in ("ali", "gan", "gan_inverse", "gan_posthoc"):
        model = build_model(tiny_toy(f"model.kind={kind}", "model.runs=3")).eval()
        assert model.sample_resampled(7, oversample=4).shape == (7, 3, 2)
        # none, as model.sample(0) (a RuntimeError: 0 candidates reshaped to (0, K, -1))
        assert model.sample_resampled(0).shape == (0, 3, 2)
        with pytest.raises(ArgumentError, match="n must be >= 0"):
            model.sample_resampled(-1)       # it was a RuntimeError, as sample_prior(-1)
        with pytest.raises(ArgumentError, match="n must be >= 0"):
            model.sample_prior(-1)
        z = model.sample_prior(5)
        assert model.log_ratio(model.decode(z), z).shape == (5, 3)
    vae = build_model(tiny_toy("model.kind=vae", "model.encoder=gaussian")).eval()
    # An AliError (one line), still a TypeError for code written against the old error.
    with pytest.raises(DiscriminatorError, match="^VAE has no discriminator$"):
        vae.sample_resampled(4)
    with pytest.raises(DiscriminatorError):
        vae.sample_resampled(0)
    assert issubclass(DiscriminatorError, TypeError)


def test_log_ratio_is_the_joint_logit_and_logsumexp_for_k_plus_one():
    model = build_model(tiny_toy()).eval()
    x, z = torch.randn(6, 2), torch.randn(6, 2)
    assert torch.equal(model.log_ratio(x, z), model.discriminator(x, z).squeeze(1))
    model.objective = Objective([KPlusOneGame("nonsaturating")])   # a K+1 discriminator
    model.discriminator = _LogRatio(lambda x: torch.stack([x[:, 0], x[:, 1], 0 * x[:, 0]], 1))
    expected = torch.stack([x[:, 0], x[:, 1], torch.zeros(6)], 1).logsumexp(1)
    assert torch.allclose(model.log_ratio(x, z), expected)


def test_chain_applies_decode_encode_steps_times(monkeypatch):
    model = build_model(tiny_toy()).eval()
    assert isinstance(model, ALI)
    monkeypatch.setattr(model, "decode", lambda z, y=None: z)
    monkeypatch.setattr(model, "encode", lambda x, y=None: x + 1)
    torch.manual_seed(0)
    start = model.sample_prior(5)
    for steps in (0, 3):
        torch.manual_seed(0)
        assert torch.allclose(model.sample_chain(5, steps), start + steps)
    with pytest.raises(ArgumentError, match="steps must be >= 0"):
        model.sample_chain(5, -1)
    gan = build_model(tiny_toy("model.kind=gan")).eval()
    with pytest.raises(TypeError, match="GAN has no encoder"):
        gan.sample_chain(4, 1)


def test_toy_evaluation_scores_the_samplers_only_when_asked():
    from ali.data import load_dataset
    from ali.experiments.toy import evaluate, figure_rows

    cfg = tiny_toy("model.runs=2")
    data = load_dataset(cfg.data)
    model = build_model(cfg)
    torch.manual_seed(0)
    plain, fig = evaluate(model, data, 1.0, n=200)
    assert "samplers" not in plain and "resampled" not in fig and len(plain["hq"]) == 2
    assert [k for _, k in figure_rows({"ali": fig})] == ["x", "z_hat", "recon", "samples"]
    torch.manual_seed(0)
    full, fig = evaluate(model, data, 1.0, n=200, samplers=True)
    # the samplers draw after everything else: the other scores do not change
    assert {k: v for k, v in full.items() if k != "samplers"} == plain
    assert set(full["samplers"]) == {"resampled", "chain"}
    assert all(len(v) == 2 and None not in v for m in full["samplers"].values()
               for v in m.values())
    assert fig["resampled"].shape == fig["chain"].shape == (200, 2)
    assert [k for _, k in figure_rows({"ali": fig})][-2:] == ["resampled", "chain"]
