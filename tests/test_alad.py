"""ALAD (model.alad: D_xx and D_zz with their games), its anomaly score, and spectral
normalisation of the discriminators (model.spectral_norm)."""

import json

import pytest
import torch
import torch.nn.functional as F

import ali
from ali.build import build_model
from ali.cli import main
from ali.config import get_config
from ali.errors import AliError, ConfigError
from ali.nets.parts import JointDiscriminator

from conftest import tiny_toy

ALAD = ("model.alad=on", "model.encoder=deterministic")


def _model(*overrides):
    return build_model(tiny_toy(*overrides))


def _bce_game(s_q, s_p):
    """Algorithm 1's discriminator loss and the non-saturating generator loss, by hand."""
    d = (F.softplus(-s_q) + F.softplus(s_p)).mean()
    g = (F.softplus(s_q) + F.softplus(-s_p)).mean()
    return d, g


def test_alad_losses_are_the_three_games():
    """Known answer: in evaluation mode (batch norm on running statistics, deterministic
    encoder) the objective's losses are the joint game plus D_xx's and D_zz's, weighted."""
    m = _model(*ALAD, "model.alad.xx_weight=0.5", "model.alad.zz_weight=2").eval()
    x, z = torch.randn(8, 2), torch.randn(8, 2)
    out = m.losses(x, z)
    with torch.no_grad():
        z_hat = m.encoder(x)
        x_tilde, x_rec = m.decoder(torch.cat([z, z_hat])).chunk(2)
        s = m.discriminator(torch.cat([x, x_tilde]), torch.cat([z_hat, z]))
        d, g = _bce_game(*s.chunk(2))
        s_xx = m.d_xx(torch.cat([x, x]), torch.cat([x, x_rec]))
        d_xx, g_xx = _bce_game(*s_xx.chunk(2))
        s_zz = m.d_zz(torch.cat([z, z]), torch.cat([z, m.encoder(x_tilde)]))
        d_zz, g_zz = _bce_game(*s_zz.chunk(2))
    torch.testing.assert_close(out.d.detach(), d + 0.5 * d_xx + 2 * d_zz)
    torch.testing.assert_close(out.g.detach(), g + 0.5 * g_xx + 2 * g_zz)
    assert {"xx_acc_q", "xx_acc_p", "zz_acc_q", "zz_acc_p", "acc_q"} <= set(out.stats)


def test_alad_discriminators_are_the_discriminators_parameters():
    m = _model(*ALAD)
    assert isinstance(m.d_xx, JointDiscriminator) and isinstance(m.d_zz, JointDiscriminator)
    d = {id(p) for p in m.parameters_d()}
    for net in (m.discriminator, m.d_xx, m.d_zz):
        assert all(id(p) in d for p in net.parameters())
    assert not d & {id(p) for p in m.parameters_g()}
    assert {id(p) for p in m.parameters_g()} == {
        id(p) for p in (*m.encoder.parameters(), *m.decoder.parameters())}
    # zz_weight 0: no D_zz at all (the ALAD code's allow_zz=False)
    assert _model(*ALAD, "model.alad.zz_weight=0").d_zz is None


def test_one_training_step_moves_every_discriminator():
    from ali.run import build_run
    from ali.step import train_step

    run = build_run(tiny_toy(*ALAD), torch.device("cpu"))
    before = {n: p.detach().clone() for n, p in run.model.named_parameters()}
    x, z, inputs = run.draw()
    train_step(run.model, x, z, run.opt_d, run.opt_g, run.model.parameters_d(),
               run.model.parameters_g(), **inputs)
    moved = {n.split(".")[0] for n, p in run.model.named_parameters()
             if not torch.equal(p, before[n])}
    assert {"d_xx", "d_zz", "discriminator", "encoder", "decoder"} <= moved


def test_alad_score_is_the_documented_distance():
    m = _model(*ALAD).eval()
    x = torch.randn(6, 2)
    with torch.no_grad():
        rec = m.decode(m.encode_mean(x))
        feats = []
        h = m.d_xx.d_xz.layers[-1].register_forward_pre_hook(
            lambda mod, inp: feats.append(inp[0]))
        m.d_xx(torch.cat([x, x]), torch.cat([x, rec]))
        h.remove()
    f_id, f_rec = feats[0].flatten(1).chunk(2)
    torch.testing.assert_close(m.anomaly_score(x, "alad"), (f_id - f_rec).abs().sum(1))
    with pytest.raises(AliError, match="only an ALAD model"):
        _model().anomaly_score(x, "alad")


@pytest.mark.parametrize("sets, message", [
    (("model.kind=gan", "model.alad=on"), "model.alad does not apply to model.kind=gan"),
    (("model.alad.xx_weight=0",), "model.alad.xx_weight must be > 0"),
    (("model.alad.zz_weight=-1",), "model.alad.zz_weight must be >= 0"),
    (("model.kind=vae", "model.encoder=gaussian", "model.spectral_norm=true"),
     "model.spectral_norm needs a discriminator"),
])
def test_refusals_are_one_line(sets, message):
    with pytest.raises(ConfigError, match=message) as e:
        tiny_toy(*sets)
    assert "\n" not in str(e.value)


def test_alad_is_refused_with_labels():
    with pytest.raises(ConfigError, match="cannot be combined with model.conditional"):
        get_config("tiny", ["model.alad=on", "model.conditional=on"])


def _spectral_norms(module):
    from ali.nets.layers import RunLinear
    out = []
    for m in module.modules():
        if isinstance(m, RunLinear):
            out.extend(torch.linalg.matrix_norm(m.weight, 2))       # one per run
        elif isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)):
            out.append(torch.linalg.matrix_norm(m.weight.flatten(1), 2))
    return torch.stack(out)


@pytest.mark.parametrize("preset, sets", [
    ("toy", ("model.kind=gan",)), ("toy", ALAD), ("toy", (*ALAD, "model.runs=3")),
    ("tiny", ("model.alad=on",)), ("tiny", ("model.kind=gan_posthoc",))])
def test_spectral_norm_covers_every_discriminator_and_nothing_else(preset, sets):
    cfg = (tiny_toy(*sets, "model.spectral_norm=true") if preset == "toy"
           else get_config("tiny", [*sets, "model.spectral_norm=true"]))
    m = build_model(cfg).train()
    assert m.discriminators()
    x = torch.rand(16, *m.data_shape)
    for _ in range(30):                     # power iterations, one per forward in training
        for d in m.discriminators():
            z = m.sample_prior(16)
            pair = {id(getattr(m, "d_xx", None)): (x, x), id(getattr(m, "d_zz", None)): (z, z)}
            d(*pair.get(id(d), (x, z)))
    for d in m.discriminators():
        torch.testing.assert_close(_spectral_norms(d), torch.ones(len(_spectral_norms(d))),
                                   atol=0.02, rtol=0)
    # the generator is untouched
    assert not any("parametrizations" in n for n, _ in m.decoder.named_parameters())
    if m.encoder is not None:
        assert not any("parametrizations" in n for n, _ in m.encoder.named_parameters())


def test_run_batched_spectral_norm_keeps_runs_apart():
    """Each run's matrix is divided by its own largest singular value: as torch's
    spectral_norm of that run alone (up to rounding), whatever the other runs' weights."""
    from torch.nn.utils.parametrizations import spectral_norm

    from ali.nets.layers import RunLinear, spectral_norm_
    torch.manual_seed(0)
    layer = RunLinear(3, 6, 4)
    with torch.no_grad():       # norms far apart: one shared sigma would show
        layer.weight.copy_(torch.randn(3, 6, 4) * torch.tensor([0.1, 1.0, 50.0]).view(3, 1, 1))
    alone = []
    for r in range(3):
        single = RunLinear(1, 6, 4)
        with torch.no_grad():
            single.weight.copy_(layer.weight[r:r + 1])
        alone.append(spectral_norm(single, dim=2))
    spectral_norm_(layer)
    x = torch.randn(8, 3, 6)
    for _ in range(30):         # power iterations, one per training forward
        y = layer(x)
        y_alone = torch.cat([alone[r](x[:, r:r + 1]) for r in range(3)], 1)
    torch.testing.assert_close(y, y_alone, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(torch.linalg.matrix_norm(layer.weight, 2), torch.ones(3),
                               atol=1e-4, rtol=0)
    # run 0's layer does not move when run 2's weight does
    before = layer.eval()(x)[:, 0]
    with torch.no_grad():
        layer.parametrizations.weight.original[2].mul_(7)
    torch.testing.assert_close(layer(x)[:, 0], before, atol=0, rtol=0)


@pytest.mark.parametrize("preset", ["toy", "tiny"])
def test_alad_with_spectral_norm_trains_saves_and_loads(preset, tmp_path, capsys):
    """An ALAD model with spectral norm, trained by `ali train`, reloaded from its run folder
    and from save_pretrained with the same weights and the same scores; `ali eval` and
    `ali score` take --score alad."""
    import numpy as np
    if preset == "toy":
        cfg_sets = [*ALAD, "model.spectral_norm=true", "data.normal_class=0",
                    "model.recon_weight=0", "model.r1_weight=0", "model.width=16",
                    "model.disc_width=8", "model.maxout_pieces=2", "data.n_train=2000",
                    "data.n_test=256", "train.batch_size=32"]
        x = torch.randn(10, 2)
    else:
        rng = np.random.default_rng(0)
        np.savez(tmp_path / "d.npz", x_train=rng.integers(0, 255, (64, 8, 8, 3), np.uint8),
                 y_train=np.arange(64) % 2, x_test=rng.integers(0, 255, (32, 8, 8, 3), np.uint8),
                 y_test=np.arange(32) % 2)
        cfg_sets = ["model.alad=on", "model.spectral_norm=true", "data.normal_class=0",
                    f"data.root={tmp_path / 'd.npz'}", "model.dropout=false"]
        x = torch.randint(0, 256, (10, 3, 8, 8), dtype=torch.uint8)
    run = tmp_path / "run"
    steps = ["train.steps=4", "train.log_every=2", "train.checkpoint_every=4",
             "train.progress=off", "train.device=cpu"]
    assert main(["train", preset, *[a for kv in [*cfg_sets, *steps] for a in ("--set", kv)],
                 "--out", str(run)]) == 0
    model = ali.load(run)
    assert model.d_xx is not None and model.config.spectral_norm
    model.save_pretrained(tmp_path / "saved")
    again = ali.load(tmp_path / "saved")
    a, b = model.state_dict(), again.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any("parametrizations" in k for k in a)
    for kind in ("alad", "egbad"):
        torch.testing.assert_close(again.anomaly_score(x, kind), model.anomaly_score(x, kind))
    capsys.readouterr()
    assert main(["eval", str(run), "--metric", "anomaly", "--score", "alad", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["score"] == "alad"
    # resuming restores the extra discriminators and their optimiser state
    assert main(["train", preset, "--out", str(run), "--resume", "--extend",
                 "--set", "train.steps=6"]) == 0
