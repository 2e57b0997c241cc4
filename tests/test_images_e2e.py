"""Training an image model end to end through the CLI, on a tiny npz dataset."""

import numpy as np
import pytest
import torch

from ali.cli import main
from ali.config import get_config
from ali.nets.conv import PixelBias
from ali.train import train


@pytest.fixture
def tiny_npz(tmp_path):
    rng = np.random.default_rng(0)
    # Two kinds of 8x8 RGB images: bright top half or bright left half.
    x = rng.integers(0, 40, size=(64, 8, 8, 3), dtype=np.uint8)
    x[:32, :4] += 200
    x[32:, :, :4] += 200
    y = np.repeat(np.arange(2), 32)
    path = tmp_path / "tiny.npz"
    np.savez(path, x_train=x[:48], y_train=y[:48], x_test=x[48:], y_test=y[48:])
    return path


def test_train_sample_reconstruct_interpolate(tiny_npz, tmp_path, capsys):
    run = tmp_path / "run"
    over = ["--set", f"data.root={tiny_npz}", "--set", "train.steps=6",
            "--set", "train.checkpoint_every=3", "--set", "train.log_every=3",
            "--set", "train.progress=off"]
    assert main(["train", "tiny", *over, "--out", str(run)]) == 0
    for name in ("samples.png", "reconstructions.png", "images/samples-00000003.png",
                 "images/reconstructions-00000006.png", "checkpoints/latest.pt"):
        assert (run / name).exists(), name
    from PIL import Image
    for cmd, name in (("sample", "s.png"), ("reconstruct", "r.png"), ("interpolate", "i.png")):
        extra = ["--pairs", "4", "--steps", "3"] if cmd == "interpolate" else []
        assert main([cmd, str(run), "--out", str(tmp_path / name), *extra]) == 0
        assert Image.open(tmp_path / name).size[0] > 64
    # 16 held-out images -> 8 reconstructions side by side with their originals.
    assert main(["reconstruct", str(run), "--n", "8", "--nrow", "4",
                 "--out", str(tmp_path / "r8.png")]) == 0
    img = np.asarray(Image.open(tmp_path / "r8.png"))
    assert img.shape[0] == img.shape[1]  # 4 rows of 4 tiles: 2 (original, reconstruction) pairs each
    assert main(["interpolate", str(run), "--pairs", "0"]) == 2
    assert "--pairs must be >= 1" in capsys.readouterr().err


def test_decoder_bias_starts_at_data_log_odds(tiny_npz):
    cfg = get_config("tiny", [f"data.root={tiny_npz}", "train.steps=1"])
    res = train(cfg, quiet=True)
    bias = next(m for m in res.model.decoder.modules() if isinstance(m, PixelBias)).bias
    # One Adam step of lr 1e-4 moves it by at most ~1e-4 from logit(mean of the training images).
    x = np.load(tiny_npz)["x_train"].astype(np.float64) / 255
    want = torch.logit(torch.tensor(x.mean(0)).permute(2, 0, 1).clamp(1e-7, 1 - 1e-7))
    assert torch.allclose(bias.double(), want, atol=2e-4)


def test_image_size_mismatch_is_one_line(tiny_npz, capsys):
    # An npz file's images are resized to the networks' shape unless the size and channels
    # are given, as here.
    assert main(["train", "mnist", "--set", "data.name=npz", "--set", f"data.root={tiny_npz}",
                 "--set", "data.image_size=8", "--set", "data.channels=3",
                 "--set", "train.steps=1"]) == 2
    err = capsys.readouterr().err
    assert "expects [1, 28, 28]" in err and err.count("\n") == 1


def test_r1_penalty_trains_an_image_model(tiny_npz):
    """R1 through convolutions, batch norm and dropout: the penalty is logged and positive,
    and only the discriminator's loss carries it."""
    cfg = get_config("tiny", [f"data.root={tiny_npz}", "train.steps=3", "train.log_every=1",
                              "model.r1_weight=10"])
    res = train(cfg, quiet=True)
    rows = [r for r in res.history if "r1" in r]
    assert len(rows) == 3 and all(r["r1"] > 0 for r in rows)
    assert all(np.isfinite(r["loss_d"]) and np.isfinite(r["loss_g"]) for r in rows)
