"""Semi-supervised ALI (K+1 discriminator) and conditional ALI (Eq. 7)."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ali import losses as L
from ali.cli import main
from ali.config import get_config
from ali.data import load_dataset
from ali.errors import ConditionError, ConfigError, DiscriminatorError
from ali.eval.semi_supervised import classification_error
from ali.model import condition_vector
from ali.build import build_model
from ali.train import load_run, resolve_labels, train


def _images(rng, n):
    # Two kinds of 8x8 RGB images: bright top half (class 0) or bright left half (class 1).
    x = rng.integers(0, 40, size=(n, 8, 8, 3), dtype=np.uint8)
    x[: n // 2, :4] += 200
    x[n // 2:, :, :4] += 200
    return x, np.repeat(np.arange(2), n // 2)


@pytest.fixture
def classes_npz(tmp_path):
    rng = np.random.default_rng(0)
    x, y = _images(rng, 96)
    xt, yt = _images(rng, 32)
    path = tmp_path / "classes.npz"
    np.savez(path, x_train=x, y_train=y, x_test=xt, y_test=yt)
    return path


@pytest.fixture
def attributes_npz(tmp_path):
    rng = np.random.default_rng(1)
    x, y = _images(rng, 48)
    attrs = np.stack([y, 1 - y, rng.integers(0, 2, 48)], axis=1)      # 3 attributes
    path = tmp_path / "attrs.npz"
    np.savez(path, x_train=x[:40], y_train=attrs[:40], x_test=x[40:], y_test=attrs[40:])
    return path


def _tiny(path, *over):
    return get_config("tiny", [f"data.root={path}", "train.steps=4", "train.progress=off",
                               "train.log_every=2", "train.checkpoint_every=4", *over])


# ---------------------------------------------------------------------------- the K+1 loss

def test_k_plus_one_loss_is_salimans_formula():
    torch.manual_seed(0)
    l_q, l_p, l_l = torch.randn(5, 3), torch.randn(5, 3), torch.randn(4, 3)
    y = torch.tensor([0, 2, 1, 2])
    lse = lambda t: t.logsumexp(1)  # noqa: E731
    want = (-(l_l.gather(1, y[:, None]).squeeze(1)).mean() + lse(l_l).mean()
            + 0.5 * (-lse(l_q).mean() + F.softplus(lse(l_q)).mean()
                     + F.softplus(lse(l_p)).mean()))
    got = L.k_plus_one_discriminator_loss(l_q, l_p, l_l, y)
    assert torch.allclose(got, want, atol=1e-6)
    # The unlabelled half is half of ALI's discriminator loss on s = lse(l).
    half = 0.5 * L.discriminator_loss(lse(l_q)[:, None], lse(l_p)[:, None])
    assert torch.allclose(got - F.cross_entropy(l_l, y), half, atol=1e-6)


def test_condition_vector():
    v = condition_vector(torch.tensor([2, 0]), 3)
    assert v.tolist() == [[0, 0, 1], [1, 0, 0]]
    a = torch.tensor([[1, 0, 1]])
    assert condition_vector(a, 3).tolist() == [[1.0, 0.0, 1.0]]
    with pytest.raises(ValueError):
        condition_vector(torch.zeros(2, 4), 3)


# ---------------------------------------------------------------------------- semi-supervised

def test_semi_supervised_discriminator_has_k_logits_and_losses_move_the_right_players(
        classes_npz):
    cfg = _tiny(classes_npz, "model.semi_supervised=true", "data.labels=10")
    cfg = resolve_labels(cfg, load_dataset(cfg.data))
    assert cfg.model.label_dim == 2
    model = build_model(cfg)
    x, z = torch.rand(6, 3, 8, 8), model.sample_prior(6)
    x_l, y_l = torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 1, 0])
    with pytest.raises(ValueError, match="labelled batch"):
        model.losses(x, z)
    out = model.losses(x, z, labelled=(x_l, y_l))
    assert model.discriminator(x, model.encode(x)).shape == (6, 2)
    assert set(out.stats) >= {"acc_q", "acc_p", "acc_lab"}
    # The labels enter D's loss only (the labelled images reach the generator's loss only
    # through batch norm's statistics).
    torch.manual_seed(1)
    out = model.losses(x, z, labelled=(x_l, y_l))
    torch.manual_seed(1)
    flipped = model.losses(x, z, labelled=(x_l, 1 - y_l))
    assert torch.equal(flipped.g, out.g) and not torch.equal(flipped.d, out.d)
    model.eval()
    assert model.classify(x).shape == (6, 2)


@pytest.mark.parametrize("kind", ["ali", "vae"])
def test_classify_of_a_model_that_is_not_semi_supervised_is_refused_in_one_line(kind):
    # ALI raised a bare TypeError, the VAE an AttributeError (it had no classify at all).
    model = build_model(get_config("tiny", [f"model.kind={kind}", "model.encoder=gaussian",
                                            "model.cycle=off"])).eval()
    assert not model.semi_supervised
    with pytest.raises(DiscriminatorError, match=f"^this {type(model).__name__} is not "
                                                 "semi-supervised .*model.semi_supervised=true"):
        model.classify(torch.rand(2, 3, 8, 8))
    with pytest.raises(DiscriminatorError, match="not semi-supervised"):
        classification_error(model, torch.rand(2, 3, 8, 8), torch.tensor([0, 1]))

def test_semi_supervised_run_learns_to_classify_and_reloads(classes_npz, tmp_path):
    cfg = _tiny(classes_npz, "model.semi_supervised=true", "data.labels=10", "train.steps=60",
                "train.lr=1e-3", "train.log_every=20", "train.checkpoint_every=60")
    data = load_dataset(cfg.data)
    assert int((data.train_labels >= 0).sum()) == 10     # 5 per class, the rest unlabelled
    result = train(cfg, run_dir=tmp_path / "run", quiet=True, dataset=data)
    err = classification_error(result.model, data.test, data.test_labels)
    assert err < 20.0, err                                # chance is 50%
    model, saved, _ = load_run(tmp_path / "run")
    assert saved.model.label_dim == 2
    assert classification_error(model, data.test, data.test_labels) == err
    # The labelled sampler's state is in the checkpoint: a run stopped at step 30 and resumed
    # reaches the straight run's parameters, bit for bit.
    train(cfg, run_dir=tmp_path / "pieces", quiet=True, dataset=data, until=30)
    resumed = train(cfg, run_dir=tmp_path / "pieces", resume=True, quiet=True, dataset=data)
    assert resumed.step == 60
    got = resumed.model.state_dict()
    for k, v in result.model.state_dict().items():
        assert torch.equal(v, got[k]), k


def test_semi_supervised_errors_are_one_line(tmp_path, classes_npz):
    with pytest.raises(ConfigError, match="cannot be combined"):
        get_config("tiny", ["model.semi_supervised=true", "model.conditional=true"])
    with pytest.raises(ConfigError, match="image networks"):
        get_config("toy", ["model.semi_supervised=true", "model.recon_weight=0",
                           "model.r1_weight=0"])
    with pytest.raises(ConfigError, match="does not apply to model.kind=gan"):
        get_config("tiny", ["model.kind=gan", "model.conditional=true"])
    cfg = _tiny(classes_npz, "model.semi_supervised=true", "model.label_dim=5")
    with pytest.raises(ConfigError, match="has 2 classes"):
        resolve_labels(cfg, load_dataset(cfg.data))
    nolabels = tmp_path / "nolabels.npz"
    np.savez(nolabels, x_train=np.zeros((20, 8, 8, 3), np.uint8))
    cfg = get_config("tiny", [f"data.root={nolabels}", "data.test_split=",
                              "model.semi_supervised=true"])
    with pytest.raises(ConfigError, match="needs labels"):
        resolve_labels(cfg, load_dataset(cfg.data))


# ---------------------------------------------------------------------------- conditional

def test_conditional_networks_see_y_and_each_player_owns_its_embedding(classes_npz):
    cfg = _tiny(classes_npz, "model.conditional=true", "model.embed_dim=5")
    cfg = resolve_labels(cfg, load_dataset(cfg.data))
    model = build_model(cfg).eval()
    z = model.sample_prior(2)
    y0, y1 = torch.tensor([0, 0]), torch.tensor([1, 1])
    assert not torch.allclose(model.decode(z, y0), model.decode(z, y1))
    x = torch.rand(2, 3, 8, 8)
    assert not torch.allclose(model.encode_mean(x, y0), model.encode_mean(x, y1))
    v0, v1 = condition_vector(y0, 2), condition_vector(y1, 2)
    assert not torch.allclose(model.discriminator(x, z, v0), model.discriminator(x, z, v1))
    d_ids = {id(p) for p in model.parameters_d()}
    assert id(model.discriminator.embed.weight) in d_ids
    assert id(model.embed.weight) not in d_ids
    assert id(model.embed.weight) in {id(p) for p in model.parameters_g()}
    with pytest.raises(ValueError, match="conditional"):
        model.decode(z)
    # Without y, samples cycle through the classes.
    assert model.sample(4).shape == (4, 3, 8, 8)


def test_conditional_run_trains_reloads_and_samples_a_class_grid(classes_npz, tmp_path, capsys):
    run = tmp_path / "run"
    cfg = _tiny(classes_npz, "model.conditional=true")
    result = train(cfg, run_dir=run, quiet=True)
    model, saved, _ = load_run(run)
    assert saved.model.label_dim == 2 and not saved.model.attributes
    torch.manual_seed(3)
    z = model.sample_prior(2)
    y = torch.tensor([0, 1])
    assert torch.equal(model.decode(z, y), result.model.eval().decode(z, y))
    out = tmp_path / "grid.png"
    assert main(["sample", str(run), "--condition", "all", "--rows", "3",
                 "--out", str(out)]) == 0
    from PIL import Image
    w, h = Image.open(out).size
    assert h > w                                          # 2 class columns, 3 rows of z
    assert main(["sample", str(run), "--condition", "1,0", "--rows", "1",
                 "--out", str(out)]) == 0
    w, h = Image.open(out).size
    assert w > h                                          # 2 class columns, 1 row
    assert "classes" in capsys.readouterr().out
    # without --condition the samples take the classes in turn: a row of 3 does not hold
    # classes 0..K-1 each, and the line says so
    assert main(["sample", str(run), "--n", "6", "--nrow", "3", "--out", str(out)]) == 0
    assert "6 samples, classes 0..1 in turn" in capsys.readouterr().out
    assert main(["sample", str(run), "--n", "6", "--nrow", "2", "--out", str(out)]) == 0
    assert "classes 0..K-1 along each row" in capsys.readouterr().out


_CONDITIONAL = {"classes": ("model.label_dim=3",),
                "attributes": ("model.label_dim=4", "model.attributes=true")}
_TAKES_Y = {
    "sample": lambda m, x, y: m.sample(3, y),
    "sample_resampled": lambda m, x, y: m.sample_resampled(3, y, oversample=2),
    "sample_chain": lambda m, x, y: m.sample_chain(3, 1, y),
    "decode": lambda m, x, y: m.decode(m.sample_prior(3), y),
    "encode": lambda m, x, y: m.encode(x, y),
    "encode_mean": lambda m, x, y: m.encode_mean(x, y),
    "reconstruct": lambda m, x, y: m.reconstruct(x, y),
    "interpolate": lambda m, x, y: m.interpolate(x, x, 2, y, y),
    "log_ratio": lambda m, x, y: m.log_ratio(x, m.sample_prior(3), y),
    "features": lambda m, x, y: m.features(x, y),
    "anomaly_score": lambda m, x, y: m.anomaly_score(x, "l1", y=y),
}
_NAN = float("nan")


@pytest.mark.parametrize("call", _TAKES_Y)
@pytest.mark.parametrize("kind, y, message", [
    ("classes", [11, 2, 1], (r"^class labels y must be in 0\.\.2 \(3 classes\); got values "
                             r"in \[1, 11\]$")),
    ("classes", [0, -1, 2], r"in 0\.\.2 .*\[-1, 2\]"),
    ("classes", [0., 1., 2.], "must be integers"),
    ("classes", [0, 1], "^y holds 2 labels for 3 examples$"),
    ("classes", [[0, 1, 0, 0]] * 3, r"class indices \(B,\) in 0\.\.2 or \(B, 3\).*\(3, 4\)"),
    ("attributes", [0, 1, 2], r"^this model takes y as \(B, 4\) 0/1 attributes; got shape \(3,\)"),
    ("attributes", [[0, 2, 0, 1]] * 3, r"must be in \[0, 1\].*\[0, 2\]"),
    ("attributes", [[0, _NAN, 0, 1]] * 3, r"must be in \[0, 1\]"),
    ("attributes", [[0, 1, 0, 1]] * 4, "4 labels for 3 examples"),
])
def test_every_method_that_takes_y_refuses_a_bad_one_in_one_line(call, kind, y, message):
    # Out-of-range class labels raised "RuntimeError: index 11 is out of bounds" (or were
    # embedded as they were: attributes of 2, NaN, an attribute model given class indices).
    model = build_model(get_config("tiny", ["model.dropout=false", "model.conditional=true",
                                            *_CONDITIONAL[kind]])).eval()
    x = torch.rand(3, 3, 8, 8)
    good = torch.tensor([[0, 1, 1, 0]] * 3) if kind == "attributes" else torch.tensor([2, 0, 1])
    _TAKES_Y[call](model, x, good)
    with pytest.raises(ConditionError, match=message):
        _TAKES_Y[call](model, x, torch.tensor(y))


def test_conditional_with_dropped_labels_is_refused(classes_npz):
    cfg = _tiny(classes_npz, "model.conditional=true", "data.labels=10")
    with pytest.raises(ConfigError, match="every training example"):
        resolve_labels(cfg, load_dataset(cfg.data))


def test_attribute_conditional_run_and_figure7_grid(attributes_npz, tmp_path, capsys):
    run = tmp_path / "run"
    cfg = _tiny(attributes_npz, "model.conditional=true")
    train(cfg, run_dir=run, quiet=True)
    model, saved, _ = load_run(run)
    assert saved.model.attributes and saved.model.label_dim == 3
    with pytest.raises(ValueError, match="attribute-conditional"):
        model.sample(2)
    out = tmp_path / "fig7.png"
    assert main(["sample", str(run), "--condition", "0,1", "--vary", "2",
                 "--out", str(out)]) == 0
    assert out.is_file()
    # The report renders interpolations with the held-out images' attributes.
    assert main(["report", str(run)]) == 0
    assert (run / "interpolations.png").is_file()
    assert main(["sample", str(run), "--condition", "Nope", "--out", str(out)]) == 2
    assert "unknown attribute" in capsys.readouterr().err


# ---------------------------------------------------------------------------- ali eval

def test_eval_classify_and_conditional_metrics(classes_npz, tmp_path, capsys, monkeypatch):
    import json

    ssl, cond = tmp_path / "ssl", tmp_path / "cond"
    train(_tiny(classes_npz, "model.semi_supervised=true", "data.labels=10"), run_dir=ssl,
          quiet=True)
    train(_tiny(classes_npz, "model.conditional=true"), run_dir=cond, quiet=True)
    capsys.readouterr()
    assert main(["eval", str(ssl), "--metric", "classify", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert 0 <= out["error"] <= 100 and out["n"] == 32
    assert json.loads((ssl / "eval" / "classify.json").read_text())["error"] == out["error"]
    assert main(["eval", str(cond), "--metric", "conditional", "--samples", "20", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert 0 <= out["accuracy"] <= 1 and len(out["per_class"]) == 2
    assert out["diversity"] is not None and out["diversity"] >= 0
    # the same number of samples per class, or the classes would weigh unequally
    assert main(["eval", str(cond), "--metric", "conditional", "--samples", "3"]) == 2
    err = capsys.readouterr().err
    assert "--samples 3 is not a multiple of the 2 classes" in err and err.count("\n") == 1
    # Each metric refuses the other kind of run in one line.
    assert main(["eval", str(cond), "--metric", "classify"]) == 2
    assert "is not semi-supervised" in capsys.readouterr().err
    assert main(["eval", str(ssl), "--metric", "conditional"]) == 2
    assert "is not a conditional run" in capsys.readouterr().err
    # Fractions of counts are written as themselves (0.1, not float32's 0.10000000149011612),
    # and a float32 measurement with float32's digits only.
    from ali.eval.registry import EvalContext

    class FirstRight:                   # finds the class asked of the first sample only
        def predict(self, x):
            return torch.tensor([0] + [-1] * (len(x) - 1))

    monkeypatch.setattr(EvalContext, "classifier",
                        lambda self, path=None: (FirstRight(), {"accuracy": None}))
    assert main(["eval", str(cond), "--metric", "conditional", "--samples", "10", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["accuracy"] == 0.1 and out["per_class"] == [0.2, 0.0]
    assert float(str(np.float32(out["diversity"]))) == out["diversity"]


def test_classification_error_is_the_fraction_of_counts(monkeypatch):
    from ali.eval import semi_supervised

    monkeypatch.setattr(semi_supervised, "predict", lambda *a: torch.tensor([0, 1, 1]))
    err = classification_error(None, torch.zeros(3, 2), torch.tensor([0, 1, 0]))
    assert err == pytest.approx(100 / 3, rel=1e-12)      # not float32's 33.33333432674408


@pytest.mark.parametrize("extra", [["model.semi_supervised=true", "data.labels=10"],
                                   ["model.conditional=true", "model.recon_weight=0.1"]])
def test_label_models_train_in_bf16_channels_last(classes_npz, extra):
    cfg = _tiny(classes_npz, "train.precision=bf16", "train.channels_last=on", *extra)
    result = train(cfg, quiet=True)
    assert result.step == 4
    assert all(torch.isfinite(p).all() for p in result.model.parameters())
    assert all(np.isfinite(v) for r in result.history for v in r.values())


@pytest.mark.parametrize("variant", [("model.semi_supervised=true", "data.labels=10"),
                                     ("model.conditional=true",), ("attributes",)])
def test_the_precision_probe_runs_on_labelled_models(variant, classes_npz, attributes_npz,
                                                     tmp_path, monkeypatch):
    # train.precision=auto's probe draws the labelled batch and y aside, as training does.
    import ali.speed

    monkeypatch.setattr(ali.speed, "probes_bf16", lambda device: True)
    data, over = ((attributes_npz, ("model.conditional=true",)) if variant == ("attributes",)
                  else (classes_npz, variant))
    cfg = _tiny(data, *over, "train.precision_probe_min_ms=0", "train.bf16_min_speedup=1e-9",
                "train.bf16_loss_tolerance=1")
    train(cfg, run_dir=tmp_path, quiet=True)
    run = json.loads((tmp_path / "config.json").read_text())["run"]
    assert run["precision"] == "bf16" and run["precision_auto"]["bf16_ms"] > 0
