import math

import pytest
import torch

from ali.config import TOY_RECON, TOY_RING_RECON
from ali.data import toy
from ali.eval.toy import mode_metrics, recon_mode


def test_grid_and_ring_centres():
    g = toy.centres("grid")
    assert g.shape == (25, 2) and set(g[:, 0].tolist()) == {-4.0, -2.0, 0.0, 2.0, 4.0}
    r = toy.centres("ring")
    assert r.shape == (8, 2)
    assert torch.allclose(r.norm(dim=1), torch.ones(8))


def test_samples_exactly_on_seven_centres():
    c = toy.centres("grid")
    samples = c[torch.arange(7)].repeat(100, 1)
    m = mode_metrics(samples, c, 0.05)
    # exactly on their centres: no spread; 7 of 25 equal-weight modes: KL = log(25 / 7)
    assert m == {"modes": 7, "modes_hq": 7, "hq": 1.0, "spread": 0.0,
                 "mode_kl": pytest.approx(math.log(25 / 7))}


def test_far_samples_count_for_modes_but_not_quality():
    c = toy.centres("grid")
    # 0.5 away from each of 3 centres: assigned to them (paper count), but beyond 3 std.
    samples = c[:3] + torch.tensor([0.5, 0.0])
    m = mode_metrics(samples, c, 0.05)
    assert m["modes"] == 3 and m["modes_hq"] == 0 and m["hq"] == 0.0
    assert m["spread"] is None and m["mode_kl"] == pytest.approx(math.log(25 / 3))


def test_mixed_quality():
    c = toy.centres("ring")
    good = c[:4] + 0.02  # within 3 * 0.01 * sqrt(2) = 0.042
    bad = c[4:8] * 1.2   # 0.2 away
    m = mode_metrics(torch.cat([good, bad]), c, 0.01)
    # the good ones are (0.02, 0.02) off: RMS 0.02 per coordinate = 2 stds; one sample per mode
    assert m == {"modes": 8, "modes_hq": 4, "hq": 0.5, "spread": pytest.approx(2.0),
                 "mode_kl": pytest.approx(0.0, abs=1e-12)}


def test_data_itself_has_spread_near_one_and_balanced_modes():
    c = toy.centres("grid")
    x, labels = toy.sample("grid", 50_000, 0.05, torch.Generator().manual_seed(0))
    m = mode_metrics(x, c, 0.05)
    # offsets cut at 3 std lose a little of the tail: 0.97, not 1
    assert 0.95 < m["spread"] < 0.99 and m["mode_kl"] < 1e-3
    # the same points pulled halfway to their centres: half as wide, as balanced
    half = mode_metrics(c[labels] + 0.5 * (x - c[labels]), c, 0.05)
    assert half["hq"] == 1.0 and half["spread"] == pytest.approx(0.5, abs=0.01)
    assert half["mode_kl"] == pytest.approx(m["mode_kl"])


def test_recon_mode():
    c = toy.centres("grid")
    x = c.clone()
    x_rec = c.clone()
    x_rec[:5] = c[5:10]  # 5 of 25 land in another component
    assert recon_mode(x, x_rec, c) == 20 / 25


def test_sampled_dataset_labels_match_nearest_centre():
    g = torch.Generator().manual_seed(0)
    x, y = toy.sample("grid", 2000, 0.05, g)
    d = torch.cdist(x, toy.centres("grid")).argmin(1)
    assert torch.equal(d, y)


def test_paper_protocol_draws_each_runs_hyper_parameters(monkeypatch):
    """--protocol paper: run r trains the toy_paper preset (pure ALI: no cycle term, R1 or
    batch-norm freeze) with its own drawn lr, beta1 and init std and seed r, for --steps."""
    from ali.experiments import toy as experiment

    seen = []
    train_and_score = experiment._train_and_score

    def spy(cfg, data, samplers):
        seen.append(cfg)
        return train_and_score(cfg, data, samplers)

    monkeypatch.setattr(experiment, "_train_and_score", spy)
    tiny = ("model.width=16", "model.disc_width=8", "model.maxout_pieces=2", "data.n_train=512",
            "data.n_test=256", "train.batch_size=16", "train.progress=off")
    results, _ = experiment.run(protocol="paper", runs=2, steps=3, models=("ali", "gan"),
                                device="cpu", log=lambda s: None, overrides=tiny,
                                samplers=True)
    assert results["protocol"] == "paper" and results["runs"] == 2
    assert [(c.model.kind, c.train.seed) for c in seen] == [("ali", 0), ("ali", 1),
                                                             ("gan", 0), ("gan", 1)]
    for cfg in seen:
        draw = experiment.paper_draw(cfg.train.seed)
        assert cfg.name == "toy_paper" and cfg.train.steps == 3 and cfg.model.runs == 1
        assert (cfg.train.lr, cfg.train.beta1, cfg.model.init_std) == (
            draw["lr"], draw["beta1"], draw["init_std"])
        assert cfg.model.cycle is None and cfg.model.r1 is None
        assert cfg.model.freeze_decoder_bn_at == 1
    assert experiment.paper_draw(0) != experiment.paper_draw(1)
    for kind in ("ali", "gan"):
        scores = results["models"][kind]
        assert all(len(v) == 2 for k, v in scores.items() if k != "samplers")
        assert all(len(v) == 2 for m in scores["samplers"].values() for v in m.values())
    assert results["models"]["gan"]["samplers"]["chain"]["hq"] == [None, None]
    assert all(v is not None for v in results["models"]["gan"]["samplers"]["resampled"]["hq"])
    assert results["models"]["gan"]["recon_mode"] == [None, None]


@pytest.mark.parametrize("kind", ["gan_inverse", "gan_posthoc"])
def test_figure8_learns_inference_for_the_trained_gan_its_decoder_frozen(kind):
    # Figure 8's protocol: the baselines' encoders are trained against a GAN trained in full;
    # that GAN's decoder (weights and batch-norm statistics) must come out untouched.
    from conftest import tiny_toy
    from ali.experiments.toy import _copy_gan_
    from ali.build import build_model
    from ali.train import train
    gan = train(tiny_toy("model.kind=gan", "model.encoder=noise"), quiet=True).model
    cfg = tiny_toy(f"model.kind={kind}", "model.encoder=noise", "train.steps=6")
    torch.manual_seed(1)
    model = _copy_gan_(build_model(cfg), gan)
    enc = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    trained = train(cfg, model=model, quiet=True).model
    for k, v in gan.decoder.state_dict().items():
        assert torch.equal(trained.decoder.state_dict()[k], v), k
    assert any(not torch.equal(trained.encoder.state_dict()[k], v) for k, v in enc.items())


def test_figure8_shows_the_best_covering_run():
    from ali.experiments.toy import best_run
    assert best_run({"modes": [20, 25, 25, 24], "hq": [0.9, 0.5, 0.7, 0.99]}) == 2


@pytest.mark.parametrize("dataset, weight", [("grid", TOY_RECON), ("ring", TOY_RING_RECON)])
def test_tuned_protocol_trains_each_datasets_preset(monkeypatch, dataset, weight):
    """--protocol tuned: ALI trains the dataset's preset (the ring's lighter cycle term), the
    baselines the same settings without the cycle term, all runs batched with train.seed 0."""
    from ali.experiments import toy as experiment

    seen = []
    scores = {m: [1.0] for m in ("modes", "modes_hq", "hq", "recon_mode")}
    monkeypatch.setattr(experiment, "_train_and_score",
                        lambda cfg, data, samplers: (seen.append(cfg), (scores, {}))[1])
    experiment.run(dataset=dataset, runs=3, steps=2, models=("ali", "gan"), device="cpu",
                   log=lambda s: None)
    ali, gan = seen
    assert ali.name == experiment.TUNED_PRESETS[dataset] == gan.name
    assert ali.data.name == gan.data.name == dataset
    assert ali.model.cycle.weight == weight and gan.model.cycle is None
    assert (ali.model.runs, ali.train.seed, ali.train.steps) == (3, 0, 2)
    assert ali.model.r1 == gan.model.r1 is not None
