"""Anomaly scores (ali.anomaly), the one-class split (data.normal_class) and `ali eval --metric
anomaly`."""

import json

import pytest
import torch

from ali.build import build_model
from ali.cli import main
from ali.config import get_config
from ali.data import load_dataset
from ali.errors import AliError, ConfigError, EncoderError
from ali.train import train

from conftest import tiny_toy


def _model(*overrides):
    return build_model(tiny_toy(*overrides)).eval()


def test_scores_are_the_documented_distances():
    m = _model()
    x = torch.randn(9, 2)
    with torch.no_grad():
        z = m.encode_mean(x)
        rec = m.decode(z)
        feats = []
        last = m.discriminator.d_xz.layers[-1]                  # the joint net's last layer
        h = last.register_forward_pre_hook(lambda mod, inp: feats.append(inp[0]))
        m.discriminator(torch.cat([x, rec]), torch.cat([z, z]))
        h.remove()
        f_x, f_rec = feats[0].flatten(1).chunk(2)
        logit = m.discriminator(x, z).squeeze(1)
    l1 = (x - rec).abs().sum(1)
    fm = (f_x - f_rec).abs().sum(1)
    torch.testing.assert_close(m.anomaly_score(x, "l1"), l1)
    torch.testing.assert_close(m.anomaly_score(x, "l2"), (x - rec).norm(dim=1))
    torch.testing.assert_close(m.anomaly_score(x, "latent"), z.pow(2).sum(1))
    torch.testing.assert_close(m.anomaly_score(x, "fm"), fm)
    torch.testing.assert_close(m.anomaly_score(x, "logit"), -logit)
    torch.testing.assert_close(m.anomaly_score(x, "egbad", alpha=0.3), 0.3 * l1 + 0.7 * fm)
    # batching changes nothing (evaluation mode), and the model keeps its mode
    m.train()
    torch.testing.assert_close(m.anomaly_score(x, "egbad", batch_size=2),
                               m.eval().anomaly_score(x, "egbad"))


def test_image_scores_take_uint8_and_check_the_input():
    m = build_model(get_config("tiny")).eval()
    x8 = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    torch.testing.assert_close(m.anomaly_score(x8, "fm"), m.anomaly_score(x8.float() / 255, "fm"))
    with pytest.raises(AliError, match="shape"):
        m.anomaly_score(torch.rand(4, 3, 16, 16))


def test_scores_refuse_what_the_model_cannot_do_in_one_line():
    with pytest.raises(EncoderError, match="has no encoder"):
        _model("model.kind=gan").anomaly_score(torch.randn(3, 2), "l1")
    vae = _model("model.kind=vae", "model.encoder=gaussian")
    assert vae.anomaly_score(torch.randn(3, 2), "l2").shape == (3,)
    with pytest.raises(AliError, match="no joint discriminator: use --score l1, l2 or latent"):
        vae.anomaly_score(torch.randn(3, 2), "fm")
    posthoc = _model("model.kind=gan_posthoc")                  # its second, joint D
    assert posthoc.anomaly_score(torch.randn(3, 2), "egbad").shape == (3,)
    with pytest.raises(AliError, match="unknown anomaly score 'l3'"):
        _model().anomaly_score(torch.randn(3, 2), "l3")
    with pytest.raises(AliError, match=r"alpha must be in \[0, 1\]"):
        _model().anomaly_score(torch.randn(3, 2), alpha=2)
    with pytest.raises(AliError, match="batch_size must be at least 1; got 0"):
        _model().anomaly_score(torch.randn(3, 2), batch_size=0)
    with pytest.raises(AliError, match="run-batched model .2 runs. scores as an ensemble with "
                                       "l1, l2, latent only; got 'egbad'"):
        _model("model.runs=2").anomaly_score(torch.randn(3, 2))
    with pytest.raises(AliError, match=r"takes x of shape \(N, 2\); got \(3, 2, 2\)"):
        _model("model.runs=2").anomaly_score(torch.randn(3, 2, 2), "l1")


def test_a_run_batched_model_scores_as_the_mean_of_its_runs():
    """model.runs=R: each item goes through every run; the score is the mean of the runs'."""
    ens = _model("model.runs=3", "model.init_std=1")   # untrained runs far apart
    x = torch.randn(6, 2)
    with torch.no_grad():
        xr = x.unsqueeze(1).expand(6, 3, 2)
        z = ens.encode_mean(xr)                                 # (6, 3, latent)
        d = xr - ens.decode(z)                                  # (6, 3, 2)
    per_run = {"l1": d.abs().sum(2), "l2": d.norm(dim=2), "latent": z.pow(2).sum(2)}
    for kind, want in per_run.items():
        assert not torch.allclose(want[:, 0], want[:, 1])      # the runs differ
        torch.testing.assert_close(ens.anomaly_score(x, kind), want.mean(1))
        torch.testing.assert_close(ens.anomaly_score(x, kind, batch_size=4), want.mean(1))


def test_normal_class_keeps_one_class_in_training_only():
    d = load_dataset(tiny_toy("data.normal_class=7").data)
    assert set(d.train_labels.tolist()) == {7} and len(d.train) == len(d.train_labels)
    assert len(set(d.test_labels.tolist())) == 25                # held out: every class
    with pytest.raises(ConfigError, match="out of range: grid has classes 0..24"):
        load_dataset(tiny_toy("data.normal_class=25").data)
    with pytest.raises(ConfigError, match="data.normal_class must be a class index"):
        tiny_toy("data.normal_class=-2")


def test_eval_anomaly_on_a_one_class_run(tmp_path, capsys):
    """Trained on the corner component (-4, -4) of the grid alone, the reconstruction distance
    tells the other 24 from it (AUROC 1.0 after 200 steps; 0.06 after one step, when the
    decoder still maps everything near the centre)."""
    run = tmp_path / "run"
    train(tiny_toy("data.normal_class=0", "data.n_train=2000", "train.steps=200",
                   "train.log_every=50", "model.width=32", "train.lr=2e-3", "train.lr_d=2e-3",
                   "train.lr_schedule=constant", "model.cycle.weight=1"), run_dir=run, quiet=True)
    assert main(["eval", str(run), "--metric", "anomaly", "--score", "l2", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["normal_class"] == 0 and res["score"] == "l2"
    assert res["n_normal"] + res["n_anomalous"] == 256 and 0 < res["n_normal"] < 30
    assert res["auroc"] > 0.95 and 0 < res["auprc"] <= 1
    assert (run / "eval" / "anomaly-l2.json").exists()
    # another normal class than the run's: the same model, other positives
    assert main(["eval", str(run), "--metric", "anomaly", "--normal-class", "12",
                 "--score", "egbad", "--json"]) == 0
    other = json.loads(capsys.readouterr().out)
    assert other["normal_class"] == 12 and other["score"] == "egbad"
    assert main(["eval", str(run), "--metric", "anomaly", "--normal-class", "30"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_eval_anomaly_measures_a_run_batched_run_as_an_ensemble(tmp_path, capsys):
    """model.runs=3: ali eval --metric anomaly scores the held-out split with the mean of the
    runs' score, the same AUROC as the model's own ensemble scores give."""
    from sklearn.metrics import roc_auc_score

    from ali.pretrained import load
    run = tmp_path / "run"
    cfg = tiny_toy("data.normal_class=0", "data.n_train=2000", "model.runs=3", "train.steps=20")
    train(cfg, run_dir=run, quiet=True)
    assert main(["eval", str(run), "--metric", "anomaly", "--score", "latent", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    data = load_dataset(cfg.data)
    model = load(run, "cpu")
    want = roc_auc_score((data.test_labels != 0).numpy(),
                         model.anomaly_score(data.test, "latent").numpy())
    assert res["score"] == "latent" and res["auroc"] == pytest.approx(want, abs=1e-9)
    assert main(["eval", str(run), "--metric", "anomaly", "--score", "fm"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "scores as an ensemble with l1, l2, latent only" in err


# ---------------------------------------------------------------------------- ali score

@pytest.fixture(scope="module")
def toy_saved(tmp_path_factory):
    d = tmp_path_factory.mktemp("score")
    model = _model()
    model.save_pretrained(d / "toy")
    return d / "toy", model


def test_ali_score_writes_one_row_per_item(toy_saved, tmp_path, capsys):
    import csv
    import numpy as np
    path, model = toy_saved
    x = np.random.default_rng(0).normal(size=(7, 2))
    np.savetxt(tmp_path / "x.csv", x, delimiter=",", header="a,b", comments="")
    np.savez(tmp_path / "x.npz", x=x)
    for name in ("x.csv", "x.npz"):
        out = tmp_path / f"{name}.scores.csv"
        assert main(["score", str(path), "--input", str(tmp_path / name), "--out", str(out),
                     "--score", "l2", "--device", "cpu"]) == 0
        rows = list(csv.reader(open(out)))
        assert rows[0] == ["name", "l2"] and len(rows) == 8
        want = model.anomaly_score(torch.tensor(x, dtype=torch.float32), "l2")
        np.testing.assert_allclose([float(r[1]) for r in rows[1:]], want.numpy(), rtol=1e-5)
    capsys.readouterr()


@pytest.mark.parametrize("content, message", [
    ("1,2\n3,x\n", "row 2 has a non-numeric value 'x'"),
    ("1,2\n3,nan\n", "1 values are NaN or infinite"),
    ("1,2,3\n4,5,6\n", r"items of shape \[3\], but the model takes \[2\]"),
    ("1,2\n3\n", "same number of values"),
])
def test_ali_score_refuses_bad_input_in_one_line(toy_saved, tmp_path, capsys, content, message):
    path, _ = toy_saved
    (tmp_path / "bad.csv").write_text(content)
    assert main(["score", str(path), "--input", str(tmp_path / "bad.csv"), "--out",
                 str(tmp_path / "s.csv"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ali: error:"), err
    assert __import__("re").search(message, err), err
    assert not (tmp_path / "s.csv").exists()


def test_ali_score_on_a_folder_of_images_and_a_gan(tmp_path, capsys):
    from PIL import Image
    import numpy as np
    m = build_model(get_config("tiny")).eval()
    m.save_pretrained(tmp_path / "m")
    (tmp_path / "imgs").mkdir()
    for i in range(3):   # 12 x 12: resized to the model's 8 x 8
        Image.fromarray(np.full((12, 12, 3), 40 * i, np.uint8)).save(tmp_path / "imgs" / f"{i}.png")
    assert main(["score", str(tmp_path / "m"), "--input", str(tmp_path / "imgs"), "--out",
                 str(tmp_path / "s.csv"), "--device", "cpu"]) == 0
    assert [r.split(",")[0] for r in (tmp_path / "s.csv").read_text().split()[1:]] == [
        "0.png", "1.png", "2.png"]
    build_model(get_config("tiny", ["model.kind=gan"])).save_pretrained(tmp_path / "g")
    capsys.readouterr()
    assert main(["score", str(tmp_path / "g"), "--input", str(tmp_path / "imgs"), "--out",
                 str(tmp_path / "g.csv"), "--device", "cpu"]) == 2
    assert "has no encoder" in capsys.readouterr().err


def test_ali_score_on_a_run_batched_model_scores_the_ensemble(tmp_path, capsys):
    import csv
    import numpy as np
    model = _model("model.runs=3", "model.init_std=1")
    model.save_pretrained(tmp_path / "ens")
    x = np.random.default_rng(0).normal(size=(5, 2))
    np.savetxt(tmp_path / "x.csv", x, delimiter=",")
    out = tmp_path / "s.csv"
    assert main(["score", str(tmp_path / "ens"), "--input", str(tmp_path / "x.csv"), "--out",
                 str(out), "--score", "latent", "--device", "cpu"]) == 0
    rows = list(csv.reader(open(out)))[1:]
    want = model.anomaly_score(torch.tensor(x, dtype=torch.float32), "latent")
    np.testing.assert_allclose([float(r[1]) for r in rows], want.numpy(), rtol=1e-5)
    assert main(["score", str(tmp_path / "ens"), "--input", str(tmp_path / "x.csv"), "--out",
                 str(out), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "scores as an ensemble with l1, l2, latent only" in err
