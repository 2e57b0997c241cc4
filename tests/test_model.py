import pytest
import torch
import torch.nn.functional as F

from ali import losses as L
from ali.baselines import GAN, VAE, GANInverse, GANPostHoc
from ali.errors import ArgumentError
from ali.model import ALI
from ali.build import build_model
from ali.train import make_optimizer, train_step

from conftest import tiny_toy

KINDS = ["ali", "gan", "gan_inverse", "gan_posthoc", "vae"]


def build(kind, runs=1, *extra):
    enc = "gaussian" if kind == "vae" else "noise"
    return build_model(tiny_toy(f"model.kind={kind}", f"model.encoder={enc}",
                                f"model.runs={runs}", *extra))


@pytest.mark.parametrize("runs", [1, 3])
@pytest.mark.parametrize("kind", KINDS)
def test_shapes_and_finite_gradients(kind, runs):
    m = build(kind, runs)
    assert type(m) is {"ali": ALI, "gan": GAN, "gan_inverse": GANInverse,
                       "gan_posthoc": GANPostHoc, "vae": VAE}[kind]
    B = 8
    data = (B, 2) if runs == 1 else (B, runs, 2)
    lat = (B, 2) if runs == 1 else (B, runs, 2)
    x, z = torch.randn(data), m.sample_prior(B)
    assert z.shape == lat
    assert m.decode(z).shape == data
    if m.encoder is not None:
        assert m.encode(x).shape == lat
        assert m.encode_mean(x).shape == lat
        assert m.reconstruct(x).shape == data
    assert m.sample(5).shape == ((5, 2) if runs == 1 else (5, runs, 2))
    out = m.losses(x, z)
    params = m.parameters_d() + m.parameters_g()
    assert len({id(p) for p in params}) == len(list(m.parameters()))
    losses = [out.g] + ([out.d] if out.d is not None else [])
    for loss in losses:
        assert loss.shape == () and torch.isfinite(loss)
    grads = torch.autograd.grad(sum(losses), params, allow_unused=True)
    assert all(g is None or torch.isfinite(g).all() for g in grads)
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


def test_encoders_are_stochastic_with_independent_noise():
    for enc in ["noise", "gaussian"]:
        m = build("ali", 1, f"model.encoder={enc}").eval()
        x = torch.randn(4, 2)
        a, b = m.encode(x), m.encode(x)
        assert not torch.allclose(a, b), enc
        assert torch.equal(m.encode_mean(x), m.encode_mean(x))
    # Gaussian: one eps per latent unit, so the two coordinates' noise is not shared.
    m = build("ali", 1, "model.encoder=gaussian").eval()
    x = torch.randn(1, 2).expand(4000, 2)
    mu, log_sigma = m.encoder.stats(x)
    eps = (m.encode(x) - mu) / log_sigma.exp()
    assert abs(eps.mean()) < 0.1 and abs(eps.std() - 1) < 0.1
    assert abs(torch.corrcoef(eps.T)[0, 1]) < 0.1


def test_deterministic_encoder():
    m = build("ali", 1, "model.encoder=deterministic").eval()
    x = torch.randn(4, 2)
    assert torch.equal(m.encode(x), m.encode(x))


def test_interpolate_endpoints():
    m = build("ali", 1, "model.encoder=deterministic").eval()
    x1, x2 = torch.randn(3, 2), torch.randn(3, 2)
    path = m.interpolate(x1, x2, 5)
    assert path.shape == (5, 3, 2)
    assert torch.allclose(path[0], m.decode(m.encode(x1)), atol=1e-6)
    assert torch.allclose(path[-1], m.decode(m.encode(x2)), atol=1e-6)
    with pytest.raises(ArgumentError, match=r"^interpolate needs steps >= 2; got 1$"):
        m.interpolate(x1, x2, 1)
    with pytest.raises(ArgumentError, match="the two ends of each line: 3 and 2 items"):
        m.interpolate(x1, x2[:2], 5)
    with pytest.raises(ArgumentError, match=r"^n must be >= 0; got -1$"):
        m.sample(-1)
    assert m.sample(0).shape == (0, 2)


def test_losses_match_algorithm_1():
    s_q = torch.tensor([[2.0], [-1.0]])
    s_p = torch.tensor([[0.5], [-3.0]])
    d_q, d_p = torch.sigmoid(s_q), torch.sigmoid(s_p)
    want_d = -(d_q.log().mean() + (1 - d_p).log().mean())
    want_g = -((1 - d_q).log().mean() + d_p.log().mean())
    assert torch.allclose(L.discriminator_loss(s_q, s_p), want_d)
    assert torch.allclose(L.generator_loss(s_q, s_p), want_g)
    assert torch.allclose(L.generator_loss(s_q, s_p, "saturating"), -want_d)
    acc = L.discriminator_accuracy(s_q, s_p)
    assert acc["acc_q"] == 0.5 and acc["acc_p"] == 0.5


def test_joint_discriminator_scores_both_halves_as_one_batch(monkeypatch):
    m = build("ali")
    seen = []
    m.discriminator.d_xz.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].shape))
    m.losses(torch.randn(8, 2), m.sample_prior(8))
    assert seen == [torch.Size([16, 4])]  # concat(x, z) for 2B pairs in one call


@pytest.mark.parametrize("r1", [0.0, 1.0])
@pytest.mark.parametrize("kind", ["ali", "gan", "gan_inverse", "gan_posthoc"])
def test_each_loss_moves_only_its_own_player(kind, r1):
    """After one engine step, D's gradient is dL_d/dD alone and G's is dL_g/dG alone (also
    with the R1 penalty, whose graph reaches the encoder through z_hat)."""
    m = build(kind, 1, "model.posthoc_fraction=0.5", f"model.r1_weight={r1}")
    if kind == "gan_posthoc":
        m.schedule(3, 4)  # the post-hoc phase: decoder frozen
    cfg = tiny_toy()
    pd, pg = m.parameters_d(), m.parameters_g()
    od, og = make_optimizer(pd, cfg.train), make_optimizer(pg, cfg.train)
    x, z = torch.randn(8, 2), m.sample_prior(8)
    state = torch.get_rng_state()
    out = m.losses(x, z)
    want_d = torch.autograd.grad(out.d, pd, retain_graph=True, allow_unused=True)
    want_g = torch.autograd.grad(out.g, pg, allow_unused=True)
    before = [p.detach().clone() for p in m.parameters()]
    torch.set_rng_state(state)
    train_step(m, x, z, od, og, pd, pg)
    for p, w in zip(pd, want_d):
        assert (p.grad is None) == (w is None)
        if w is not None:
            torch.testing.assert_close(p.grad, w)
    for p, w in zip(pg, want_g):
        assert (p.grad is None) == (w is None)
        if w is not None:
            torch.testing.assert_close(p.grad, w)
    moved = [not torch.equal(b, p) for b, p in zip(before, m.parameters())]
    assert any(moved)
    if kind == "gan_posthoc":  # the frozen decoder and the GAN's D must not move
        for p in [*m.decoder.parameters(), *m.discriminator.parameters()]:
            assert p.grad is None


def test_generator_loss_would_move_discriminator_without_isolation():
    # Sanity check of the test above: L_g does depend on D's parameters, so isolation matters.
    m = build("ali")
    out = m.losses(torch.randn(8, 2), m.sample_prior(8))
    g = torch.autograd.grad(out.g, m.parameters_d(), allow_unused=True)
    assert any(x is not None and x.abs().sum() > 0 for x in g)


def test_runs_are_independent():
    """Side-by-side runs: run 0's gradients do not depend on run 1's data."""
    m = build("ali", 2)
    x = torch.randn(8, 2, 2)
    z = m.sample_prior(8)

    def run0_grads(x):
        torch.manual_seed(1)
        out = m.losses(x, z)
        gs = torch.autograd.grad(out.d, m.parameters_d())
        return [g[0] for g in gs if g.dim() >= 1 and g.shape[0] == 2]

    a = run0_grads(x)
    x2 = x.clone()
    x2[:, 1] += 5.0
    b = run0_grads(x2)
    for u, v in zip(a, b):
        torch.testing.assert_close(u, v)


def test_vae_loss_is_negative_elbo():
    m = build("vae")
    x = torch.randn(16, 2)
    out = m.losses(x, m.sample_prior(16))   # every model takes z; the VAE ignores it
    assert out.d is None and m.parameters_d() == []
    assert torch.allclose(out.g, out.stats["nll"] + out.stats["kl"])
    assert out.stats["kl"] >= 0


def test_maxout_takes_max_of_contiguous_pieces():
    from ali.nets.layers import Maxout
    x = torch.tensor([[1.0, 5.0, 3.0, 2.0, 0.0, -1.0]])
    assert torch.equal(Maxout(2, dim=-1)(x), torch.tensor([[5.0, 3.0, 0.0]]))
    assert torch.equal(Maxout(3, dim=-1)(x), torch.tensor([[5.0, 2.0]]))
    with pytest.raises(ValueError):
        Maxout(4, dim=-1)(x)


@pytest.mark.parametrize("std", [0.05, 0.5])
def test_init_follows_config(std):
    """Every linear weight ~ N(0, model.init_std), every bias 0, batch norm (1, 0), in all
    three networks (two stds: an init that ignored the config would miss one)."""
    from torch import nn

    from ali.nets.layers import RunLinear

    m = build("ali", 1, f"model.init_std={std}")
    linears = [mod for mod in m.modules() if isinstance(mod, RunLinear)]
    norms = [mod for mod in m.modules() if isinstance(mod, nn.modules.batchnorm._BatchNorm)]
    biases = [mod.bias for mod in linears if mod.bias is not None]
    # encoder 3 + decoder 5 + discriminator 4 linear layers; 2 + 4 batch norms
    assert len(linears) == 12 and len(norms) == 6 and len(biases) == 6
    pooled = torch.cat([mod.weight.detach().flatten() for mod in linears])
    assert abs(float(pooled.mean())) < 0.05 * std
    assert abs(float(pooled.std()) / std - 1) < 0.05
    for mod in linears:
        if mod.weight.numel() >= 200:   # enough entries for a per-layer estimate
            assert 0.75 < float(mod.weight.detach().std()) / std < 1.25
    assert all((b == 0).all() for b in biases)
    assert all((n.weight == 1).all() and (n.bias == 0).all() for n in norms)


def test_softplus_identity():
    s = torch.linspace(-5, 5, 11)
    assert torch.allclose(F.softplus(-s), -torch.sigmoid(s).log(), atol=1e-6)


def losses_with_and_without(kind, setting, eval_mode=False):
    """The losses of one batch from two copies of a model, without and with ``setting``:
    (the copy with it, x, losses without, losses with), the same noise for both."""
    m0 = build(kind)
    m1 = build(kind, 1, setting)
    m1.load_state_dict(m0.state_dict())
    if eval_mode:
        m0.eval(), m1.eval()
    x, z = torch.randn(8, 2), m0.sample_prior(8)
    torch.manual_seed(3)
    out0 = m0.losses(x, z)
    torch.manual_seed(3)
    out1 = m1.losses(x, z)
    torch.manual_seed(3)
    return m1, x, out0, out1


def test_recon_weight_adds_the_cycle_term_to_the_generator_only():
    # Population BN statistics: one decoder pass on 2B codes equals two passes on B.
    m1, x, out0, out1 = losses_with_and_without("ali", "model.recon_weight=0.5", eval_mode=True)
    sse = (x - m1.decode(m1.encode(x))).pow(2).sum(-1).mean()
    torch.testing.assert_close(out1.g, out0.g + 0.5 * sse)
    torch.testing.assert_close(out1.d, out0.d)
    torch.testing.assert_close(out1.stats["recon_sse"], sse)
    # The cycle term depends on the encoder and decoder only (the engine never lets the
    # generator loss move the discriminator in any case).
    assert torch.autograd.grad(sse, m1.parameters_d(), allow_unused=True) == \
        tuple(None for _ in m1.parameters_d())


def test_cycle_term_batch_normalises_samples_apart_from_reconstructions():
    # With the cycle term, G(z) must see the decoder's batch norm exactly as without it (its
    # own batch's statistics), and the running statistics must describe G(z) alone.
    from ali.config import get_config
    from ali.objectives import Forward
    torch.manual_seed(0)
    m = build_model(get_config("tiny", ["model.cycle=on"])).train()
    x, z = torch.rand(6, 3, 8, 8), m.sample_prior(6)
    bns = [b for b in m.decoder.modules() if isinstance(b, torch.nn.BatchNorm2d)]
    assert bns
    before = [(b.running_mean.clone(), b.running_var.clone()) for b in bns]
    f = Forward(m, x, z, None, None, {"x_rec"})
    x_tilde, x_rec = f.x_tilde, f.x_rec
    after = [(b.running_mean.clone(), b.running_var.clone()) for b in bns]
    for b, (mean, var) in zip(bns, before):                 # replay G(z) alone
        b.running_mean.copy_(mean)
        b.running_var.copy_(var)
    alone = m.decoder(z)
    torch.testing.assert_close(x_tilde, alone, rtol=0, atol=0)
    for b, (mean, var) in zip(bns, after):
        torch.testing.assert_close(b.running_mean, mean, rtol=0, atol=0)
        torch.testing.assert_close(b.running_var, var, rtol=0, atol=0)
    # G(z_hat) is normalised with its own batch's statistics, and the layers are left tracking.
    torch.testing.assert_close(x_rec, m.decoder(f.z_hat.detach()).detach(), rtol=0, atol=0)
    assert all(b.track_running_stats for b in bns)


def test_recon_weight_is_validated():
    from ali.errors import ConfigError
    with pytest.raises(ConfigError, match="model.recon_weight must be >= 0"):
        build("ali", 1, "model.recon_weight=-1")
    with pytest.raises(ConfigError, match="model.cycle does not apply to model.kind=gan"):
        build("gan", 1, "model.recon_weight=1")
    with pytest.raises(ConfigError, match="model.cycle.weight must be > 0"):
        build("ali", 1, "model.cycle.weight=0")
    with pytest.raises(ConfigError, match="model.cycle expects on or off"):
        build("ali", 1, "model.cycle=0.5")


def test_r1_penalty_of_a_linear_discriminator():
    """s = <w_r, x> per run: the penalty is sum_r ||w_r||^2, whatever the batch."""
    w = torch.tensor([[1.0, 2.0], [0.5, -3.0]])                    # (R, d)
    x = torch.randn(16, 2, 2, requires_grad=True)                   # (B, R, d)
    s = (x * w).sum(-1)                                             # (B, R)
    torch.testing.assert_close(L.r1_penalty(s, [x], runs=2), w.pow(2).sum())
    x1 = torch.randn(16, 2, requires_grad=True)                     # runs = 1: (B, d)
    z1 = torch.randn(16, 3, requires_grad=True)
    s1 = (x1 @ w[0] + 2 * z1.sum(-1)).unsqueeze(1)                  # (B, 1)
    torch.testing.assert_close(L.r1_penalty(s1, [x1, z1]), torch.tensor(5.0 + 3 * 4.0))


@pytest.mark.parametrize("kind", ["ali", "gan"])
def test_r1_weight_adds_half_gamma_times_the_penalty_to_the_discriminator_only(kind):
    m1, x, out0, out1 = losses_with_and_without(kind, "model.r1_weight=4.0")
    # The penalty by hand: D's gradient at the real inputs, (x, z_hat) for ALI, x for the GAN.
    xr = x.clone().requires_grad_(True)
    if kind == "ali":
        z_hat = m1.encode(x).detach().requires_grad_(True)
        s = m1.discriminator(xr, z_hat)
        gx, gz = torch.autograd.grad(s.sum(), [xr, z_hat])
        pen = (gx.pow(2).sum(-1) + gz.pow(2).sum(-1)).mean()
    else:
        (gx,) = torch.autograd.grad(m1.discriminator(xr).sum(), [xr])
        pen = gx.pow(2).sum(-1).mean()
    assert pen > 0
    torch.testing.assert_close(out1.d, out0.d + 2.0 * pen)
    torch.testing.assert_close(out1.g, out0.g)
    torch.testing.assert_close(out1.stats["r1"], pen)
    assert "r1" not in out0.stats


@pytest.mark.parametrize("kind", ["ali", "gan", "gan_posthoc"])
def test_lazy_r1_applies_every_kth_step_with_k_times_the_weight(kind):
    """r1_every=3: steps 0, 3, 6 carry 3x the every-step penalty; the others none at all."""
    big = "model.init_std=0.5"  # a discriminator with gradients far above float noise
    m_every = build(kind, 1, big, "model.r1_weight=4.0")
    m_lazy = build(kind, 1, big, "model.r1_weight=4.0", "model.r1_every=3")
    m_lazy.load_state_dict(m_every.state_dict())
    m_off = build(kind, 1, big)
    m_off.load_state_dict(m_every.state_dict())
    x, z = torch.randn(8, 2), m_every.sample_prior(8)
    for step in range(7):
        outs = []
        for m in (m_off, m_every, m_lazy):
            m.schedule(step, 100)
            torch.manual_seed(3)
            outs.append(m.losses(x, z))
        off, every, lazy = outs
        pen = every.d - off.d
        assert pen > 1e-2
        if step % 3 == 0:
            torch.testing.assert_close(lazy.d, off.d + 3 * pen)
            torch.testing.assert_close(lazy.stats["r1"], 3 * every.stats["r1"])
        else:
            torch.testing.assert_close(lazy.d, off.d)
            assert "r1" not in lazy.stats
        torch.testing.assert_close(lazy.g, off.g)


def _bn(net):
    return [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


@pytest.mark.parametrize("kind", ["ali", "gan_inverse", "vae"])
def test_decoder_bn_freezes_at_its_step(kind):
    """freeze_decoder_bn_at=0.5 of 10 steps: the decoder's batch norm normalises with the batch
    and updates its running statistics on steps 0-4; from step 5 on it uses them, frozen, while
    the encoder's keeps training; model.train() and eval() keep that state."""
    m = build(kind, 1, "model.freeze_decoder_bn_at=0.5").train()
    x = torch.randn(16, 2)
    for step in range(10):
        m.schedule(step, 10)
        frozen = step >= 5
        assert all(b.training != frozen for b in _bn(m.decoder))
        assert all(b.training for b in _bn(m.encoder))
        dec = [b.running_mean.clone() for b in _bn(m.decoder)]
        enc = [b.running_mean.clone() for b in _bn(m.encoder)]
        m.losses(x, m.sample_prior(16))
        moved = [not torch.equal(a, b.running_mean) for a, b in zip(dec, _bn(m.decoder))]
        assert all(moved) if not frozen else not any(moved)
        assert all(not torch.equal(a, b.running_mean) for a, b in zip(enc, _bn(m.encoder)))
    m.eval()
    assert not any(b.training for b in _bn(m))
    m.train()
    assert not any(b.training for b in _bn(m.decoder)) and all(b.training for b in _bn(m.encoder))
    # Frozen, a sample no longer depends on the rest of its batch: training is sampling.
    z = m.sample_prior(16)
    torch.testing.assert_close(m.decode(z)[:4], m.decode(z[:4]))
    m.schedule(0, 10)  # a schedule from the start (a new run) unfreezes it
    assert all(b.training for b in _bn(m.decoder))
    assert not torch.allclose(m.decode(z)[:4], m.decode(z[:4]))


def test_decoder_bn_never_freezes_by_default():
    from ali.config import ModelConfig
    assert ModelConfig().freeze_decoder_bn_at == 1
    m = build("ali").train()
    for step in (0, 5, 9):
        m.schedule(step, 10)
        assert all(b.training for b in _bn(m.decoder))


def test_freeze_decoder_bn_at_is_validated():
    from ali.errors import ConfigError
    with pytest.raises(ConfigError, match=r"model.freeze_decoder_bn_at must be in \[0, 1\]"):
        tiny_toy("model.freeze_decoder_bn_at=1.5")


def test_r1_every_is_validated():
    from ali.errors import ConfigError
    with pytest.raises(ConfigError, match="model.r1_every must be >= 1"):
        tiny_toy("model.r1_every=0")


def test_r1_weight_is_validated():
    from ali.errors import ConfigError
    with pytest.raises(ConfigError, match="model.r1_weight must be >= 0"):
        tiny_toy("model.r1_weight=-1")
    with pytest.raises(ConfigError, match="model.r1 does not apply to model.kind=vae"):
        tiny_toy("model.kind=vae", "model.encoder=gaussian", "model.r1_weight=1")
    with pytest.raises(ConfigError, match="model.r1.every must be >= 1"):
        tiny_toy("model.r1.every=0")
