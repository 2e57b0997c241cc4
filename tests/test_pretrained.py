"""save_pretrained / ali.load: a model rebuilt from its own folder, without data or training
config, is the same model; a damaged or foreign folder is refused in one line."""

import json
import subprocess
import sys

import pytest
import torch

import ali
from ali.config import get_config
from ali.errors import CheckpointError, DataError
from ali.model import PRETRAINED_CONFIG, PRETRAINED_WEIGHTS
from ali.build import build_model

from conftest import tiny_toy

KINDS = ["ali", "gan", "gan_inverse", "gan_posthoc", "vae"]


def _tiny_image(*over):
    # No dataset: the label count is given, as resolve_labels would have filled it in.
    return get_config("tiny", ["model.dropout=false", *over])


VARIANTS = {
    **{kind: (lambda k=kind: tiny_toy(f"model.kind={k}",
                                      f"model.encoder={'gaussian' if k == 'vae' else 'noise'}"))
       for kind in KINDS},
    "ali_deterministic": lambda: tiny_toy("model.encoder=deterministic"),
    "ali_runs3": lambda: tiny_toy("model.runs=3"),
    "vae_runs3": lambda: tiny_toy("model.kind=vae", "model.encoder=gaussian", "model.runs=3"),
    "ali_cycle_r1": lambda: tiny_toy("model.recon_weight=1", "model.r1_weight=0.1"),
    "image_ali": lambda: _tiny_image(),
    "image_gan_posthoc": lambda: _tiny_image("model.kind=gan_posthoc"),
    "class_conditional": lambda: _tiny_image("model.conditional=true", "model.label_dim=3"),
    "attribute_conditional": lambda: _tiny_image("model.conditional=true", "model.label_dim=4",
                                                 "model.attributes=true"),
    "semi_supervised": lambda: _tiny_image("model.semi_supervised=true", "model.label_dim=3"),
}


def _condition(model, n):
    if not model.conditional:
        return None
    if model.attributes:
        return (torch.arange(n * model.label_dim).view(n, -1) % 3 == 0).long()
    return torch.arange(n) % model.label_dim


def _outputs(model):
    """sample, decode, encode_mean (where the model has an encoder) and the discriminator's
    log-ratio, each from a fixed seed."""
    n = 5
    y = _condition(model, n)
    torch.manual_seed(7)
    out = {"sample": model.sample(n, y)}
    torch.manual_seed(8)
    z = model.sample_prior(n)
    with torch.no_grad():
        out["decode"] = model.decode(z, y)
        x = out["decode"]
        if model.encoder is not None:
            out["encode_mean"] = model.encode_mean(x, y)
            torch.manual_seed(9)
            out["encode"] = model.encode(x, y)
    return out


def _perturbed(cfg):
    """A model of ``cfg`` whose every parameter and buffer differs from a fresh build's (so a
    loader that silently kept the fresh init would be caught)."""
    model = build_model(cfg)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.add_(0.01 * torch.randn(t.shape, generator=g))
    return model.eval()


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_round_trip_gives_the_same_model(variant, tmp_path):
    model = _perturbed(VARIANTS[variant]())
    model.save_pretrained(tmp_path / "m")
    loaded = ali.load(tmp_path / "m")
    assert type(loaded) is type(model) and not loaded.training
    assert loaded.config == model.config
    want, got = model.state_dict(), loaded.state_dict()
    assert want.keys() == got.keys()
    assert all(torch.equal(want[k], got[k]) for k in want)
    a, b = _outputs(model), _outputs(loaded)
    assert a.keys() == b.keys() and "sample" in a
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_a_run_folder_loads_its_latest_checkpoint(tmp_path):
    from ali.train import load_run, train

    cfg = tiny_toy("train.steps=2", "train.checkpoint_every=2")
    train(cfg, run_dir=tmp_path / "run")
    want, _, _ = load_run(tmp_path / "run")
    got = ali.load(tmp_path / "run")
    assert all(torch.equal(v, got.state_dict()[k]) for k, v in want.state_dict().items())
    # and a run's model saved as a pretrained folder is the same model again
    got.save_pretrained(tmp_path / "pre")
    again = ali.load(tmp_path / "pre")
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in want.state_dict().items())
    assert json.loads((tmp_path / "pre" / PRETRAINED_CONFIG).read_text())["model"] == \
        json.loads((tmp_path / "run" / "config.json").read_text())["model"]
    got.save_pretrained(tmp_path / "pre")                # a saved folder is overwritten
    # Saved into its run folder, it replaced the training config.json: the run then loaded
    # as these weights, and once training went on (rewriting config.json) not at all.
    before = (tmp_path / "run" / "config.json").read_text()
    (tmp_path / "file").write_text("x")
    for where in (tmp_path / "run", tmp_path / "file"):
        with pytest.raises(CheckpointError) as e:
            got.save_pretrained(where)
        assert "\n" not in str(e.value)
    assert (tmp_path / "run" / "config.json").read_text() == before
    assert not (tmp_path / "run" / PRETRAINED_WEIGHTS).exists()


@pytest.fixture
def saved(tmp_path):
    build_model(tiny_toy()).save_pretrained(tmp_path / "m")
    return tmp_path / "m"


def _damage(saved, how):
    w, c = saved / PRETRAINED_WEIGHTS, saved / PRETRAINED_CONFIG
    meta = json.loads(c.read_text())
    if how == "truncated weights":
        w.write_bytes(w.read_bytes()[:len(w.read_bytes()) // 2])
    elif how == "corrupted header":
        data = bytearray(w.read_bytes())
        data[8:24] = b"\xff" * 16
        w.write_bytes(bytes(data))
    elif how == "empty weights":
        w.write_bytes(b"")
    elif how == "truncated config":
        c.write_text(c.read_text()[:40])
    elif how == "missing config":
        c.unlink()
    elif how == "foreign config":
        c.write_text(json.dumps({"architectures": ["BertModel"]}))
    elif how == "invalid model key":
        meta["model"]["latent_dimm"] = 3
        c.write_text(json.dumps(meta))
    elif how == "config of another model":
        meta["model"]["width"] = 32
        c.write_text(json.dumps(meta))
    elif how == "not a folder":
        return w
    elif how == "nothing there":
        return saved / "nowhere"
    elif how == "empty folder":
        (saved / "empty").mkdir()
        return saved / "empty"
    return saved


@pytest.mark.parametrize("how, says", [
    ("truncated weights", "truncated or corrupted"),
    ("corrupted header", "truncated or corrupted"),
    ("empty weights", "truncated or corrupted"),
    ("truncated config", "truncated or corrupted"),
    ("missing config", "no config.json"),
    ("foreign config", "not an ali saved model"),
    ("invalid model key", "did you mean 'model.latent_dim'"),
    ("config of another model", "does not fit"),
    ("not a folder", "is a file"),
    ("nothing there", "no saved model"),
    ("empty folder", "neither a saved model"),
])
def test_a_damaged_or_foreign_folder_is_refused_in_one_line(saved, how, says):
    with pytest.raises(CheckpointError) as e:
        ali.load(_damage(saved, how))
    assert says in str(e.value) and "\n" not in str(e.value)


def test_the_cli_reports_a_damaged_model_in_one_line(saved, tmp_path):
    (saved / PRETRAINED_WEIGHTS).write_bytes(b"\x00" * 10)
    proc = subprocess.run([sys.executable, "-c", "import sys, ali.cli; sys.exit(ali.cli.main("
                           f"['sample', {str(saved)!r}]))"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.startswith("ali: error:") and proc.stderr.count("\n") == 1
    assert "Traceback" not in proc.stderr


def test_import_ali_does_not_import_torch():
    proc = subprocess.run([sys.executable, "-c", "import sys, ali; print(ali.__version__); "
                           "assert 'torch' not in sys.modules; assert callable(ali.load); "
                           "ali.ALI; assert 'torch' in sys.modules"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


# ---------------------------------------------------------------------------- features

def _mnist_like(**kw):
    from ali.build import build_model
    return build_model(get_config("tiny", [f"{k}={v}" for k, v in kw.items()])).eval()


def test_features_are_flat_detached_and_take_uint8_or_unit_floats():
    model = _mnist_like()
    x8 = torch.randint(0, 256, (7, 3, 8, 8), dtype=torch.uint8)
    f = model.features(x8)
    assert f.shape == (7, 4) and not f.requires_grad and f.dtype == torch.float32
    f.numpy()                                                  # detached: numpy works
    torch.testing.assert_close(model.features(x8.float() / 255), f)
    torch.testing.assert_close(model.features(x8.numpy()), f)  # numpy in
    # batching changes nothing (evaluation mode: batch norm on population statistics)
    torch.testing.assert_close(model.features(x8, batch_size=2), f)
    assert model.training is False
    model.train()
    model.features(x8)
    assert model.training is True                              # the mode it was in
    svm = model.features(x8, kind="svm")
    assert svm.shape == (7, 4 + 8 * 3 * 3 + 16)                # mu + the family's svm layers
    torch.testing.assert_close(svm[:, :4], model.eval().features(x8))


@pytest.mark.parametrize("x, message", [
    (torch.rand(2, 3, 16, 16), r"takes x of shape \(N, 3, 8, 8\); got \(2, 3, 16, 16\)"),
    (torch.rand(2, 8, 8, 3), r"channels first: x.permute\(0, 3, 1, 2\)"),
    (torch.rand(2, 3, 8, 8) * 255, r"pixels must be uint8 or floats in \[0, 1\].*divide by 255"),
    (torch.zeros(2, 3, 8, 8, dtype=torch.int64), "must be uint8 or floating point"),
    # NaN passed the range check and came out as NaN features
    (torch.rand(2, 3, 8, 8).index_put_((torch.tensor(1),), torch.tensor(float("nan"))),
     "^x holds 192 NaN or infinite values$"),
    (torch.rand(2, 3, 8, 8).index_put_((torch.tensor(0), torch.tensor(2)),
                                       torch.tensor(float("-inf"))),
     "^x holds 64 NaN or infinite values$"),
])
def test_features_refuse_a_mismatch_in_one_line(x, message):
    from ali.errors import DataError
    with pytest.raises(DataError, match=message) as e:
        _mnist_like().features(x)
    assert "\n" not in str(e.value)


def test_features_of_no_images_have_the_features_width():
    # They were (0, 0), which no classifier fitted on (N, D) features takes.
    model = _mnist_like()
    assert model.features(torch.rand(0, 3, 8, 8)).shape == (0, 4)
    assert model.features(torch.rand(0, 3, 8, 8), kind="svm").shape == (0, 4 + 8 * 3 * 3 + 16)


@pytest.mark.parametrize("batch_size", [0, -2])
def test_features_refuse_a_batch_size_below_one(batch_size):
    # 0 raised range()'s ValueError; -2 dropped the last two examples without a word
    from ali.errors import ArgumentError
    with pytest.raises(ArgumentError, match=f"^batch_size must be >= 1; got {batch_size}$"):
        _mnist_like().features(torch.rand(4, 3, 8, 8), batch_size=batch_size)


def test_anomaly_scores_refuse_nan_feature_vectors():
    model = build_model(tiny_toy()).eval()
    with pytest.raises(DataError, match="^x holds 1 NaN or infinite values$"):
        model.anomaly_score(torch.tensor([[0.5, float("nan")], [0.1, 0.2]]), "l1")


def test_features_of_a_model_without_encoder_or_without_y():
    from ali.errors import AliError
    with pytest.raises(AliError, match="has no encoder"):
        _mnist_like(**{"model.kind": "gan"}).features(torch.rand(2, 3, 8, 8))
    cond = _mnist_like(**{"model.conditional": "true", "model.label_dim": 3})
    with pytest.raises(AliError, match="give y"):
        cond.features(torch.rand(2, 3, 8, 8))
    assert cond.features(torch.rand(2, 3, 8, 8), torch.tensor([0, 2])).shape == (2, 4)


def test_ali_features_from_a_saved_folder(tmp_path):
    import ali
    model = _mnist_like()
    model.save_pretrained(tmp_path / "m")
    x = torch.randint(0, 256, (5, 3, 8, 8), dtype=torch.uint8)
    torch.testing.assert_close(ali.features(tmp_path / "m", x), model.features(x))


def test_encode_mean_refuses_images_of_another_size():
    """A 28x28 model given 32x32 images used to return a 2x2 latent map without a word."""
    model = _mnist_like()
    assert model.encode_mean(torch.rand(2, 3, 8, 8)).shape[0] == 2
    with pytest.raises(DataError) as e:
        model.encode_mean(torch.rand(2, 3, 16, 16))
    assert "(N, 3, 8, 8)" in str(e.value) and "\n" not in str(e.value)


def test_encoding_refuses_x_of_another_shape_or_an_integer_dtype():
    """encode, and reconstruct and interpolate through it, took 16x16 images into an 8x8 model
    and returned a 5x5 latent map (and larger images) without a word; other shapes and uint8
    failed deep in the networks (RuntimeError, ValueError)."""
    model = _mnist_like()
    x = torch.rand(2, 3, 8, 8)
    assert model.encode(x).shape == (2, *model.latent_shape)
    calls = {"encode": lambda v: model.encode(v), "reconstruct": lambda v: model.reconstruct(v),
             "interpolate": lambda v: model.interpolate(v, v, 3),
             "encode_mean": lambda v: model.encode_mean(v)}
    for name, call in calls.items():
        for bad in (torch.rand(2, 3, 16, 16), torch.rand(2, 1, 8, 8), torch.rand(3, 8, 8),
                    (x * 255).to(torch.uint8)):
            with pytest.raises(DataError) as e:
                call(bad)
            assert "\n" not in str(e.value), name
    toy = build_model(tiny_toy("model.runs=2")).eval()
    with pytest.raises(DataError, match=r"expand\(-1, 2, -1\)"):
        toy.encode(torch.randn(5, 2))                # a run-batched model takes (B, runs, 2)
    assert toy.encode(torch.randn(5, 2, 2)).shape == (5, 2, toy.latent_shape[-1])


def test_decode_refuses_z_of_another_shape():
    """A flat (N, L) z for an image model, or a z of another width, failed deep in the decoder
    (conv_transpose2d's RuntimeError, a matmul's)."""
    model = _mnist_like()
    lat = model.latent_shape
    assert model.decode(torch.randn(3, *lat)).shape == (3, 3, 8, 8)
    with pytest.raises(DataError, match=r"got \(3, 4\) \(z.view\(-1, 4, 1, 1\)\)$"):
        model.decode(torch.randn(3, lat[0]))
    with pytest.raises(DataError, match=r"takes z of shape \(N, 4, 1, 1\); got \(3, 5, 1, 1\)$"):
        model.decode(torch.randn(3, lat[0] + 1, 1, 1))
    toy = build_model(tiny_toy("model.runs=2")).eval()
    with pytest.raises(DataError, match=r"\(N, 2, "):
        toy.decode(torch.randn(5, toy.latent_shape[-1]))


def test_counts_that_are_not_whole_numbers_are_one_line():
    """sample(2.5), interpolate(x, x, 2.5) and sample_resampled(oversample=2.5) were torch's
    multi-line 'received an invalid combination of arguments' TypeErrors."""
    import numpy as np

    from ali.errors import ArgumentError
    model = _mnist_like()
    x = torch.rand(2, 3, 8, 8)
    calls = [lambda: model.sample(2.5), lambda: model.sample_prior("3"),
             lambda: model.interpolate(x, x, 2.5), lambda: model.sample_chain(2, 1.5),
             lambda: model.sample_resampled(2, oversample=2.5),
             lambda: model.features(x, batch_size=2.5)]
    for call in calls:
        with pytest.raises(ArgumentError, match=r"must be a whole number; got .*[^\n]$"):
            call()
    # integers of torch and numpy still count
    assert model.sample(torch.tensor(3)).shape[0] == 3 and model.sample(np.int64(2)).shape[0] == 2
