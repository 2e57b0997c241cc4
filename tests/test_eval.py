"""ali eval (svm, knn, recon, fid, kid), the pixel classifier and ali report, on tiny data."""

import argparse
import json

import numpy as np
import pytest
import torch

from ali.cli import main
from ali.config import get_config
from ali.eval import fid as F
from ali.eval import knn, recon, registry, svm
from ali.eval.pixel_classifier import train_classifier
from ali.eval.features import extract
from ali.build import build_model
from ali.report import tensorboard_hook

try:
    import sklearn  # noqa: F401
    HAS_SKLEARN = True
except ImportError:
    HAS_SKLEARN = False
needs_sklearn = pytest.mark.skipif(not HAS_SKLEARN, reason="needs scikit-learn (ali[eval])")


def blobs(n_per_class, classes=3, dim=5, spread=0.1, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 5, (classes, dim))
    y = np.repeat(np.arange(classes), n_per_class)
    return centres[y] + spread * rng.normal(size=(len(y), dim)), y


# ------------------------------------------------------------------ features

def test_encoder_features_are_mu_plus_post_bn_pre_activation():
    model = build_model(get_config("tiny")).eval()
    x = torch.rand(5, 3, 8, 8)
    f = extract(model, "tiny", x)
    assert f.shape == (5, 4 + 8 * 3 * 3 + 16)               # mu + encoder[0] + encoder[1]
    names = [n for n, _ in model.feature_layers()]
    assert names == ["encoder[0] k4s2-8 bn", "encoder[1] k3s1-16 bn"]
    b0 = model.encoder.net[0]
    with torch.no_grad():
        pre = b0.bn(b0.conv(x)).flatten(1)
        mu = model.encode_mean(x).flatten(1)
    assert torch.allclose(f[:, :4], mu) and torch.allclose(f[:, 4:76], pre)
    assert (pre < 0).any()                                  # before the leaky ReLU
    assert torch.equal(extract(None, "tiny", (x * 255).to(torch.uint8), "pixels"),
                       ((x * 255).to(torch.uint8).float() / 255).flatten(1))
    assert extract(model, "tiny", x, "mu").shape == (5, 4)


def test_svhn_features_have_the_original_codes_5376_dims():
    model = build_model(get_config("svhn"))                 # in training mode
    bn = model.encoder.net[3].bn
    before = bn.running_mean.clone()
    assert extract(model, "svhn", torch.rand(2, 3, 32, 32)).shape == (2, 5376)
    # population statistics were used (and not updated); the mode is restored
    assert torch.equal(bn.running_mean, before) and model.training


# ------------------------------------------------------------------ svm

def test_svm_plan_is_class_balanced_and_disjoint_from_validation():
    y = np.repeat(np.arange(4), 50)
    p = svm.plan(y, labels=10, repeats=3, val_size=60, seed=1)
    assert len(p.val) == 60 and len(p.subsets) == 3
    for idx in [p.select, *p.subsets]:
        assert len(idx) == 10 and not set(idx) & set(p.val)
        assert sorted(np.bincount(y[idx])) == [2, 2, 3, 3]


@needs_sklearn
def test_svm_svhn_protocol_draws_as_the_authors_script():
    from ali.errors import AliError
    # Table 1's protocol: validation is the fixed train[63257:73257]; each subset is a uniform
    # random draw from train[0:63257], not class-balanced.
    rng = np.random.default_rng(0)
    y = (rng.random(svm.SVHN_TRAIN) < 0.1).astype(np.int64)      # 10% class 1, 90% class 0
    p = svm.plan(y, labels=1000, repeats=20, seed=3, protocol="svhn")
    np.testing.assert_array_equal(p.val, np.arange(63_257, 73_257))
    for s in [p.select, *p.subsets]:
        assert len(s) == len(np.unique(s)) == 1000 and s.max() < 63_257
    ones = np.mean([y[s].mean() for s in p.subsets])
    assert 0.08 < ones < 0.12                                     # balanced would give 0.5
    assert len({tuple(s[:5]) for s in p.subsets}) == 20           # a fresh draw each time
    bal = svm.plan(y[:3000], labels=100, repeats=2, seed=3)
    assert y[bal.subsets[0]].mean() == 0.5                        # the other protocol
    with pytest.raises(AliError, match="needs SVHN's whole labelled train split"):
        svm.plan(y[:5000], labels=100, repeats=2, protocol="svhn")
    with pytest.raises(AliError, match="--val-size does not apply"):
        svm.plan(y, labels=100, repeats=2, val_size=500, protocol="svhn")


def test_svm_separable_features_near_zero_error_random_labels_near_chance():
    x, y = blobs(60)
    xt, yt = blobs(40, seed=0)
    grid = (1e-3, 1.0, 1e3)
    res = svm.run(lambda idx: x[idx], y, xt, yt, labels=15, repeats=3, val_size=30, c_grid=grid)
    assert res["error_mean"] == 0 and res["labels"] == 15 and res["repeats"] == 3
    assert res["feature_dim"] == 5 and len(res["errors"]) == 3
    rng = np.random.default_rng(1)
    noise, noise_t = rng.normal(size=(300, 20)), rng.normal(size=(300, 20))
    y_r, yt_r = rng.integers(0, 3, 300), rng.integers(0, 3, 300)
    res = svm.run(lambda idx: noise[idx], y_r, noise_t, yt_r, labels=30, repeats=3,
                  c_grid=grid)
    assert 50 < res["error_mean"] < 85                       # chance: 66.7%


# ------------------------------------------------------------------ knn, recon

def test_knn_on_known_points():
    train = torch.tensor([[1.0, 0.0], [0.0, 1.0], [10.0, 1.0]])
    labels = torch.tensor([0, 1, 2])
    test = torch.tensor([[2.0, 0.1], [0.1, 3.0], [9.0, 1.2]])
    assert knn.accuracy(train, labels, test, torch.tensor([0, 1, 2]), "euclidean") == 1.0
    # (0.2, 0.1) is nearest to (1, 0) but closest in angle to (10, 1)
    q = torch.tensor([[0.2, 0.1]])
    assert knn.nearest(train, q, "euclidean").tolist() == [0]
    assert knn.nearest(train, q, "cosine").tolist() == [2]


def test_recon_scores_on_known_tensors():
    x = torch.zeros(4, 1, 2, 2)
    x[1] = 1.0
    x[3] = 1.0
    res = recon.scores(x, x.clone())
    assert res["mse"] == 0 and res["ratio"] == 0
    res = recon.scores(x, x + 0.1, classify=lambda r: (r.mean((1, 2, 3)) > 0.5).long(),
                       labels=torch.tensor([0, 1, 1, 1]))
    assert res["mse"] == pytest.approx(0.01) and res["class_agreement"] == 0.75
    assert res["recon_distance"] == pytest.approx(0.2)
    assert res["ratio"] == pytest.approx(0.2 / res["pair_distance"])
    assert recon.pair_distance(torch.tensor([[0.0], [3.0]])) == pytest.approx(3.0)


# ------------------------------------------------------------------ fid, kid

def test_fid_identical_zero_and_gaussian_closed_form():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(500, 4))
    assert F.fid(a, a) == pytest.approx(0, abs=1e-8)
    mu1, mu2 = np.zeros(3), np.array([1.0, 2.0, 0.0])
    s1, s2 = np.diag([1.0, 4.0, 9.0]), np.diag([4.0, 1.0, 9.0])
    want = 5.0 + (1 - 2) ** 2 + (2 - 1) ** 2 + 0
    assert F.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(want)
    # samples of two shifted isotropic Gaussians: FID ~ ||shift||^2
    b = rng.normal(size=(20000, 2))
    c = rng.normal(size=(20000, 2)) + np.array([3.0, 0.0])
    assert F.fid(b, c) == pytest.approx(9.0, rel=0.03)


def test_kid_unbiased_near_zero_for_one_distribution():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(400, 8)), rng.normal(size=(400, 8))
    mean, std = F.kid(a, b, subsets=20, subset_size=200)
    assert abs(mean) < 3 * std + 1e-3 and std > 0
    far, _ = F.kid(a, b + 1.0, subsets=5, subset_size=200)
    assert far > 0.1


def test_fid_inception_has_inception3s_parameters_and_fails_offline_in_one_line(tmp_path,
                                                                              monkeypatch):
    from ali.errors import AliError
    from ali.eval.inception import FIDInceptionV3, fid_inception

    net = FIDInceptionV3().eval()
    # torchvision's Inception3 with 1,008 classes and no auxiliary head, pytorch-fid's layout
    assert sum(p.numel() for p in net.parameters()) == 23_850_960
    assert "Mixed_7c.branch3x3dbl_3b.bn.running_var" in net.state_dict()
    with torch.no_grad():
        assert net(torch.rand(1, 1, 28, 28)).shape == (1, 2048)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(AliError, match="could not be loaded.*--feature-net classifier"):
        fid_inception(url=(tmp_path / "absent" / "pt_inception-0000.pth").as_uri())


# ------------------------------------------------------------------ pixel classifier

def test_pixel_classifier_is_deterministic_and_learns(tiny_images):
    x, y = tiny_images
    a, meta = train_classifier(x[:96], y[:96], x[96:], y[96:], seed=3, epochs=6)
    b, _ = train_classifier(x[:96], y[:96], seed=3, epochs=6)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(),
                                                 b.state_dict().values()))
    assert meta["accuracy"] >= 0.9 and a.features(x[:2].float() / 255).shape == (2, 128)


# ------------------------------------------------------------------ the command line

@pytest.fixture(scope="module")
def tiny_images():
    """128 8x8 RGB uint8 images of two classes (bright top or bright left), (N, C, H, W)."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 40, size=(128, 3, 8, 8), dtype=np.uint8)
    y = np.arange(128) % 2
    x[y == 0, :, :4] += 200
    x[y == 1, :, :, :4] += 200
    return torch.from_numpy(x), torch.from_numpy(y)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_images):
    tmp = tmp_path_factory.mktemp("eval")
    x, y = (t.numpy() for t in tiny_images)
    path = tmp / "tiny.npz"
    np.savez(path, x_train=x[:96].transpose(0, 2, 3, 1), y_train=y[:96],
             x_test=x[96:].transpose(0, 2, 3, 1), y_test=y[96:])
    run = tmp / "run"
    assert main(["train", "tiny", "--set", f"data.root={path}", "--set", "train.steps=4",
                 "--set", "train.log_every=2", "--set", "train.progress=off",
                 "--out", str(run)]) == 0
    return run


SVM_FAST = ["--labels", "10", "--repeats", "2", "--c-grid=-2:2:3"]


@needs_sklearn
def test_eval_svm_on_an_svhn_run_uses_the_svhn_train_split(tmp_path, monkeypatch, capsys):
    # The svhn preset trains on `extra`; Table 1's protocol still draws its labelled examples
    # and validation split from `train` (here 60 images standing in for 73,257).
    from test_datasets import make_svhn
    root = make_svhn(tmp_path / "svhn", n=60)
    run = tmp_path / "run"
    assert main(["train", "svhn", "--out", str(run), "--set", f"data.root={root}",
                 "--set", "train.steps=1", "--set", "train.batch_size=4",
                 "--set", "data.verify=false"]) == 0
    monkeypatch.setattr(svm, "SVHN_POOL", 40)
    monkeypatch.setattr(svm, "SVHN_TRAIN", 60)
    seen = []
    plan = svm.plan
    monkeypatch.setattr(svm, "plan", lambda y, *a: seen.append(len(y)) or plan(y, *a))
    capsys.readouterr()
    assert main(["eval", str(run), "--metric", "svm", *SVM_FAST, "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["protocol"] == "svhn" and res["val_size"] == 20 and seen == [60]


@needs_sklearn
def test_eval_writes_json_and_prints_one_object(tiny_run, capsys):
    capsys.readouterr()
    assert main(["eval", str(tiny_run), "--metric", "svm", *SVM_FAST, "--json"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    printed = json.loads(out)
    saved = json.loads((tiny_run / "eval" / "svm.json").read_text())
    assert printed == saved
    assert {"error_mean", "error_std", "labels", "repeats", "feature_dim"} <= set(saved)
    assert saved["labels"] == 10 and saved["repeats"] == 2 and saved["feature_dim"] == 92
    assert saved["protocol"] == "balanced"                   # auto: not an SVHN run
    assert main(["eval", str(tiny_run), "--metric", "svm", *SVM_FAST, "--features", "pixels",
                 "--json"]) == 0
    pixels = json.loads((tiny_run / "eval" / "svm-pixels.json").read_text())
    assert pixels["features"] == "pixels" and pixels["feature_dim"] == 192
    assert main(["eval", str(tiny_run), "--metric", "knn", "--json"]) == 0
    assert 0 <= json.loads(capsys.readouterr().out.splitlines()[-1])["accuracy"] <= 1
    assert main(["eval", str(tiny_run), "--metric", "recon", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert {"mse", "ratio", "class_agreement"} <= set(res) and res["mse"] > 0
    assert (tiny_run / "eval" / "classifier.pt").is_file()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_fid_and_kid_with_a_torchscript_net(tiny_run, tmp_path, capsys):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 6, 3), torch.nn.ReLU(),
                              torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    path = tmp_path / "net.pt"
    torch.jit.script(net).save(str(path))
    assert main(["eval", str(tiny_run), "--metric", "fid", "--feature-net", str(path)]) == 0
    res = json.loads((tiny_run / "eval" / "fid-custom.json").read_text())
    assert res["fid"] >= 0 and res["feature_dim"] == 6
    first = res["fid"]
    assert main(["eval", str(tiny_run), "--metric", "kid", "--feature-net", str(path),
                 "--subsets", "3", "--subset-size", "16", "--json"]) == 0
    res = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert {"kid_mean", "kid_std"} <= set(res)
    # a torch.export program with a dynamic batch dimension works as well
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(net, (torch.rand(4, 3, 8, 8),), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(tmp_path / "net.pt2"))
    assert main(["eval", str(tiny_run), "--metric", "fid", "--feature-net",
                 str(tmp_path / "net.pt2"), "--json"]) == 0
    # the same samples (seed 0) and the same network: the same FID
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["fid"] == pytest.approx(first)


@needs_sklearn
@pytest.mark.parametrize("args, message", [
    (["--metric", "svn"], "did you mean 'svm'"),
    (["--metric", "svm", "--mean"], "--mean does not apply to --metric svm"),
    (["--metric", "svm", "--c-grid", "1:2"], "--c-grid must look like LO:HI:N"),
    (["--metric", "fid", "--feature-net", "missing.pt"], "no such file"),
    (["--metric", "svm", "--labels", "1"], "fewer than the 2 classes"),
    (["--metric", "svm", "--protocol", "svhn"], "--protocol svhn needs an SVHN run"),
    (["--metric", "svm", "--c-grid=0:0:0"], "--c-grid must look like LO:HI:N"),
    (["--metric", "svm", "--c-grid=nan:1:2"], "--c-grid must look like LO:HI:N"),
    (["--metric", "svm", "--c-grid=1000:1001:1"], "exp(LO) and exp(HI) finite"),
    (["--metric", "recon", "--n", "1", "--no-classifier"], "recon needs at least 2 held-out"),
    (["--metric", "recon", "--set", "data.image_size=16"], "the data's images are 3x16x16"),
])
def test_eval_user_errors_are_one_line(tiny_run, args, message, capsys):
    assert main(["eval", str(tiny_run), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("out, message", [
    ("x.mean()", "returned () for"),
    ("x.flatten(1) * float('nan')", "NaN or infinite features"),
])
def test_a_feature_network_of_the_wrong_output_is_one_line(tiny_run, tmp_path, capsys, out,
                                                           message):
    class Net(torch.nn.Module):
        def forward(self, x):
            return eval(out)     # the test's own expressions

    path = tmp_path / "net.pt"
    torch.jit.trace(Net(), torch.rand(2, 3, 8, 8), check_trace=False).save(str(path))
    capsys.readouterr()
    assert main(["eval", str(tiny_run), "--metric", "fid", "--feature-net", str(path)]) == 2
    err = capsys.readouterr().err          # after the log's progress line: the one-line error
    assert message in err.splitlines()[-1] and "Traceback" not in err, err


def test_knn_takes_labels_0_for_all(tiny_run, capsys):
    assert main(["eval", str(tiny_run), "--metric", "knn", "--labels", "0", "--json"]) == 0
    res = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert res["train_size"] == 96 and res["label_conditioned"] is False


def test_knn_on_a_conditional_run_says_its_features_carry_the_label(tiny_run, capsys):
    run = tiny_run.parent / "conditional"
    data = json.loads((tiny_run / "config.json").read_text())["data"]["root"]
    assert main(["train", "tiny", "--set", f"data.root={data}", "--set", "train.steps=2",
                 "--set", "model.conditional=true", "--set", "train.progress=off",
                 "--out", str(run)]) == 0
    for features, flag in (("mu", True), ("pixels", False)):
        capsys.readouterr()
        assert main(["eval", str(run), "--metric", "knn", "--features", features,
                     "--json"]) == 0
        assert json.loads(capsys.readouterr().out.splitlines()[-1])["label_conditioned"] is flag
        assert main(["eval", str(run), "--metric", "knn", "--features", features]) == 0
        assert ("features carry the label" in capsys.readouterr().err) is flag   # not --json


def test_eval_missing_run_is_one_line(tmp_path, capsys):
    assert main(["eval", str(tmp_path / "nope"), "--metric", "knn"]) == 2
    err = capsys.readouterr().err
    assert "no run folder" in err and err.count("\n") == 1


def test_a_new_metric_registers_with_its_own_option(tiny_run):
    @registry.metric("double_step", "twice the step", registry.option("--factor", type=int,
                                                                      default=2))
    def double_step(ctx, o):
        return {"value": ctx.step * o.factor}

    try:
        ctx = registry.EvalContext(tiny_run, quiet=True)
        res, path = registry.run_metric(ctx, "double_step", argparse.Namespace(factor=None))
        assert res["value"] == 8 and path.name == "double_step.json"
    finally:
        del registry.METRICS["double_step"]


def test_report_embeds_metrics_curves_and_images(tiny_run, capsys):
    assert main(["eval", str(tiny_run), "--metric", "knn"]) == 0
    assert main(["report", str(tiny_run)]) == 0
    page = (tiny_run / "report.html").read_text()
    assert "knn" in page and "accuracy" in page and "<svg" in page
    assert '<img alt="samples" src="data:image/png;base64,' in page
    assert "interpolations" in page and "train.steps" in page and "http" not in \
        page.replace("http://www.w3.org/2000/svg", "")
    assert main(["report", str(tiny_run.parent / "missing")]) == 2
    assert "no run folder" in capsys.readouterr().err


@pytest.mark.parametrize("n_test", [3, 1])
def test_report_renders_interpolations_from_an_odd_or_single_held_out_set(tmp_path, n_test):
    # Interpolations pair held-out images: an odd one out is dropped, and one image alone
    # gives a note in place of the panel, never a crash.
    x = np.random.default_rng(0).integers(0, 255, (20 + n_test, 8, 8, 3), dtype=np.uint8)
    path = tmp_path / "tiny.npz"
    np.savez(path, x_train=x[:20], x_test=x[20:])
    run = tmp_path / "run"
    assert main(["train", "tiny", "--set", f"data.root={path}", "--set", "train.steps=1",
                 "--set", "train.batch_size=4", "--set", "train.progress=off",
                 "--out", str(run)]) == 0
    assert main(["report", str(run)]) == 0
    page = (run / "report.html").read_text()
    rendered = (run / "interpolations.png").is_file()
    assert rendered == (n_test > 1)
    assert ("an interpolation needs two held-out images and the run data holds 1" in page) \
        == (n_test == 1)


def test_tensorboard_hook_sends_scalars_and_images(tiny_run):
    calls = []

    class Writer:
        def add_scalar(self, tag, value, step):
            calls.append(("scalar", tag, step))

        def add_image(self, tag, img, step, dataformats):
            calls.append(("image", tag, img.shape))

        def flush(self):
            pass

    from ali.data import load_dataset
    from ali.train import load_run

    model, cfg, step = load_run(tiny_run)
    hook = tensorboard_hook(4, load_dataset(cfg.data), writer_factory=lambda d: Writer())
    hook(4, model, tiny_run)
    assert ("scalar", "train/loss_d", 4) in calls
    assert {c[1] for c in calls if c[0] == "image"} == {"samples", "reconstructions"}


def test_missing_scikit_learn_is_one_line(tiny_run, monkeypatch, capsys):
    monkeypatch.setitem(__import__("sys").modules, "sklearn", None)   # import sklearn fails
    assert main(["eval", str(tiny_run), "--metric", "svm"]) == 2
    err = capsys.readouterr().err
    assert "pip install 'ali[eval]'" in err and err.count("\n") == 1


def test_a_conditional_model_encodes_each_example_with_its_own_label():
    from ali.config import get_config
    from ali.errors import AliError
    from ali.eval.recon import reconstructions
    from ali.build import build_model
    from ali.viz import sample_conditions

    model = build_model(get_config("tiny", ["model.conditional=true", "model.label_dim=3",
                                            "model.dropout=false"])).eval()
    x = torch.randint(0, 256, (7, 3, 8, 8), dtype=torch.uint8)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0])
    got = extract(model, "tiny", x, "mu", idx=np.array([1, 4, 6]), labels=y, batch_size=2)
    want = model.encode_mean(x[[1, 4, 6]].float() / 255, y[[1, 4, 6]]).flatten(1)
    assert torch.allclose(got, want)
    assert not torch.allclose(got, model.encode_mean(x[[1, 4, 6]].float() / 255,
                                                     (y[[1, 4, 6]] + 1) % 3).flatten(1))
    feats = extract(model, "tiny", x, "encoder", labels=y)     # + the svm layers
    assert feats.shape[0] == 7 and feats.shape[1] > got.shape[1]
    with pytest.raises(AliError, match="needs the examples' labels"):
        extract(model, "tiny", x, "mu")
    with pytest.raises(AliError, match="labels run from 0 to 4"):
        extract(model, "tiny", x, "mu", labels=y * 2)
    xs, rec = reconstructions(model, x, mean=True, labels=y, batch_size=3)
    want = model.decode(model.encode_mean(x.float() / 255, y), y)
    assert torch.allclose(rec, want, atol=1e-6)
    # samples: classes in turn; attribute vectors of real examples
    assert sample_conditions(model, None, 5).tolist() == [0, 1, 2, 0, 1]
    model = build_model(get_config("tiny", ["model.conditional=true", "model.label_dim=3",
                                            "model.attributes=true"]))
    attrs = torch.tensor([[1, 0, 0], [0, 1, 1]])
    assert sample_conditions(model, attrs, 3).tolist() == [[1, 0, 0], [0, 1, 1], [1, 0, 0]]
    drawn = sample_conditions(model, attrs, 50, torch.Generator().manual_seed(0))
    assert {tuple(r) for r in drawn.tolist()} == {(1, 0, 0), (0, 1, 1)}
