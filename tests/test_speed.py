"""The fast step: ali bench, precision and memory-format settings, the fast layers."""

import json

import pytest
import torch
from torch import nn

from ali.cli import main
from ali.config import get_config
from ali.errors import ConfigError
from ali.nets.layers import Conv2d, ConvTranspose2d, Dropout
from ali.speed import resolve
from ali.train import train

from conftest import tiny_toy

CPU = torch.device("cpu")


def test_bench_json_has_the_documented_keys(capsys):
    assert main(["bench", "tiny", "--steps", "2", "--repeats", "1", "--json",
                 "--set", "train.device=cpu"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["config"] == "tiny" and r["precision"] == "fp32" and r["batch_size"] == 16
    assert r["device"].startswith("cpu")
    for key in ("images_per_s", "step_ms", "flops_per_image", "achieved_gflops"):
        assert r[key] > 0, key


def test_bench_bf16_and_toy_runs(capsys):
    assert main(["bench", "toy", "--steps", "1", "--repeats", "1", "--batch-size", "8",
                 "--precision", "bf16", "--set", "model.runs=3", "--set", "model.width=8",
                 "--set", "model.disc_width=4", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["precision"] == "bf16" and r["runs"] == 3 and r["flops_per_image"] > 0


def test_bench_steps_follow_the_schedule_so_lazy_r1_is_timed_as_trained():
    from ali.bench import prepare
    s = prepare(tiny_toy("model.r1_weight=1", "model.r1_every=4"))
    seen = []
    for _ in range(6):
        s.step()
        r1 = next(t for t in s.model.objective.terms if type(t).__name__ == "R1")
        seen.append(r1.now)
    assert s.taken == 6 and seen == [True, False, False, False, True, False]


@pytest.mark.parametrize("argv, msg", [
    (["bench", "tiny", "--precision", "fp16", "--set", "train.device=cpu"], "needs a GPU"),
    (["bench", "tiny", "--steps", "0"], "--steps must be >= 1"),
    (["train", "tiny", "--set", "train.precision=fp8"], "train.precision must be one of"),
])
def test_bad_speed_settings_are_one_line(argv, msg, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert msg in err and err.count("\n") == 1


def test_auto_settings_on_cpu():
    s = resolve(get_config("svhn").train, CPU)
    assert (s.precision, s.channels_last, s.compile) == ("fp32", True, False)
    s = resolve(get_config("svhn", ["train.channels_last=on"]).train, CPU, images=False)
    assert not s.channels_last                          # 2-D networks have no image format
    with pytest.raises(ConfigError, match="fp16 needs a GPU"):
        resolve(get_config("svhn", ["train.precision=fp16"]).train, CPU)


@pytest.mark.parametrize("over, precision", [("train.precision=bf16", "bf16"),
                                             ("train.channels_last=on", "fp32")])
def test_training_with_speed_settings_is_finite_and_recorded(tmp_path, over, precision):
    res = train(tiny_toy(over), run_dir=tmp_path, quiet=True)
    assert all(torch.isfinite(p).all() and p.dtype == torch.float32
               for p in res.model.parameters())
    assert all(torch.isfinite(torch.tensor(h["loss_d"])) for h in res.history)
    run = json.loads((tmp_path / "config.json").read_text())["run"]
    assert run["world_size"] == 1 and run["precision"] == precision


def test_resume_may_change_precision(tmp_path):
    train(tiny_toy(), run_dir=tmp_path, quiet=True, until=2)
    res = train(tiny_toy("train.precision=bf16"), run_dir=tmp_path, resume=True, quiet=True)
    assert res.step == 4


@pytest.mark.parametrize("make, base, shape", [
    (lambda: Conv2d(8, 6, 4, 2), nn.Conv2d(8, 6, 4, 2), (5, 8, 4, 4)),
    (lambda: Conv2d(8, 6, 1, bias=False), nn.Conv2d(8, 6, 1, bias=False), (5, 8, 1, 1)),
    (lambda: Conv2d(8, 6, 3), nn.Conv2d(8, 6, 3), (5, 8, 7, 7)),       # the conv path
    (lambda: ConvTranspose2d(8, 6, 4, 2), nn.ConvTranspose2d(8, 6, 4, 2), (5, 8, 1, 1)),
])
def test_one_pixel_layers_match_torch(make, base, shape):
    fast = make()
    fast.load_state_dict(base.state_dict())
    x = torch.randn(shape, requires_grad=True)
    for xin in (x, x.contiguous(memory_format=torch.channels_last)):
        a, b = fast(xin), base(xin)
        assert a.shape == b.shape and torch.allclose(a, b, atol=1e-5)
        ga = torch.autograd.grad(a.square().sum(), [x, fast.weight])
        gb = torch.autograd.grad(b.square().sum(), [x, base.weight])
        assert all(torch.allclose(p, q, atol=1e-4) for p, q in zip(ga, gb))


def test_fast_dropout_rate_and_scale():
    d = Dropout(0.2)
    x = torch.ones(400, 500, requires_grad=True)
    y = d(x)
    assert abs((y > 0).float().mean().item() - 0.8) < 0.005
    assert set(y.unique().tolist()) == {0.0, 1.25}
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())
    d.eval()
    assert torch.equal(d(x), x)


def test_compile_failure_is_one_line(monkeypatch, capsys):
    def broken(fn):
        def run(*a, **k):
            raise RuntimeError("inductor says\nmany\nlines")
        return run

    monkeypatch.setattr(torch, "compile", broken)
    assert main(["bench", "tiny", "--compile", "--steps", "1", "--repeats", "1",
                 "--set", "train.device=cpu"]) == 2
    err = capsys.readouterr().err
    assert "torch.compile failed (RuntimeError: inductor says many lines)" in err
    assert err.count("\n") == 1


def test_auto_precision_is_fp32_on_every_device():
    # bf16 cost MNIST reconstructions (README, "Speed"): mixed precision is opt-in.
    from ali.speed import auto_precision

    assert auto_precision(torch.device("cpu")) == "fp32"
    assert auto_precision(torch.device("cuda")) == "fp32"
