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

from conftest import own_data, tiny_toy

CPU = torch.device("cpu")


def test_bench_json_has_the_documented_keys(capsys):
    assert main(["bench", "tiny", "--steps", "2", "--repeats", "1", "--json",
                 "--set", "train.device=cpu"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["config"] == "tiny" and r["precision"] == "fp32" and r["batch_size"] == 16
    assert r["precision_auto"]["chose"] == "fp32"
    assert r["device"].startswith("cpu")
    for key in ("images_per_s", "step_ms", "flops_per_image", "achieved_gflops"):
        assert r[key] > 0, key


def test_bench_bf16_and_toy_runs(capsys):
    assert main(["bench", "toy", "--steps", "1", "--repeats", "1", "--batch-size", "8",
                 "--precision", "bf16", "--set", "model.runs=3", "--set", "model.width=8",
                 "--set", "model.disc_width=4", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["precision"] == "bf16" and r["runs"] == 3 and r["flops_per_image"] > 0


@pytest.mark.parametrize("preset", ["table", "folder"])
def test_bench_of_the_presets_for_your_own_data_reads_what_they_leave_open_from_data_root(
        tmp_path, capsys, preset):
    # table's model.data_dim and folder's model.nets=auto come from the data, as in training
    # (the one-line 'set model.data_dim' / 'set model.nets' error before, data.root given).
    root = own_data(tmp_path, preset, 200 if preset == "table" else 20, 8)
    args = ["bench", preset, "--steps", "1", "--repeats", "1", "--batch-size", "4", "--json",
            "--set", "train.device=cpu"]
    assert main([*args, "--set", f"data.root={root}"]) == 0, capsys.readouterr().err
    r = json.loads(capsys.readouterr().out)
    assert r["data_images_per_s"] > 0 and r["bound_by"] in ("data", "step")
    if preset == "table":   # the step of the width set by hand
        assert main([*args, "--set", "model.data_dim=3"]) == 0
        assert json.loads(capsys.readouterr().out)["flops_per_image"] == r["flops_per_image"]


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
    (["train", "tiny", "--set", "train.bf16_min_speedup=0"], "train.bf16_min_speedup must be > 0"),
    (["train", "tiny", "--set", "train.precision_probe_steps=0"],
     "train.precision_probe_steps must be >= 1"),
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


def test_auto_precision_rule():
    from ali.speed import choose_precision

    t = get_config("svhn").train          # bf16_min_speedup 1.1, bf16_loss_tolerance 0.05
    faster = choose_precision(t, 0.30, 0.20, 0.01)
    assert faster["chose"] == "bf16" and faster["speedup"] == 1.5 and faster["bf16_ms"] == 200
    assert choose_precision(t, 0.30, 0.29, 0.01)["chose"] == "fp32"      # within the margin
    slower = choose_precision(t, 0.20, 0.30, 0.0)
    assert slower["chose"] == "fp32" and "bf16_min_speedup" in slower["why"]
    for diff in (0.2, float("nan")):                                     # losses disagree
        rec = choose_precision(t, 0.30, 0.10, diff)
        assert rec["chose"] == "fp32" and "bf16_loss_tolerance" in rec["why"]
    short = choose_precision(t, 0.001, None, 0.0)
    assert short["chose"] == "fp32" and short["bf16_ms"] is None
    assert "precision_probe_min_ms" in short["why"]


def _probe_on(monkeypatch):
    import ali.speed

    monkeypatch.setattr(ali.speed, "probes_bf16", lambda device: True)


def test_auto_keeps_fp32_after_a_full_probe_and_trains_exactly_as_fp32(tmp_path, monkeypatch):
    # The probe times both precisions on copies, aside: the run that keeps fp32 is the run of
    # train.precision=fp32, bit for bit (samplers, RNG and model untouched).
    fp32 = train(tiny_toy("train.precision=fp32"), quiet=True)
    _probe_on(monkeypatch)
    cfg = tiny_toy("train.precision_probe_min_ms=0", "train.bf16_min_speedup=1000")
    auto = train(cfg, run_dir=tmp_path, quiet=True)
    for (k, a), b in zip(auto.model.state_dict().items(), fp32.model.state_dict().values()):
        assert torch.equal(a, b), k
    run = json.loads((tmp_path / "config.json").read_text())["run"]
    rec = run["precision_auto"]
    assert run["precision"] == "fp32" and rec["chose"] == "fp32"
    # bf16 timed (first steps or medians), found slower than 1000x fp32's speed
    assert rec["fp32_ms"] > 0 and rec["bf16_ms"] > 0 and rec["loss_rel_diff"] < 0.05
    assert "bf16_min_speedup=1000" in rec["why"]


def test_auto_short_steps_keep_fp32_without_timing_bf16(tmp_path, monkeypatch):
    _probe_on(monkeypatch)
    train(tiny_toy("train.precision_probe_min_ms=1e9"), run_dir=tmp_path, quiet=True)
    rec = json.loads((tmp_path / "config.json").read_text())["run"]["precision_auto"]
    assert rec["chose"] == "fp32" and rec["bf16_ms"] is None and rec["fp32_ms"] > 0


def test_auto_bf16_choice_is_kept_on_resume(tmp_path, monkeypatch):
    from ali.train import load_checkpoint

    _probe_on(monkeypatch)
    pick_bf16 = ("train.precision_probe_min_ms=0", "train.bf16_min_speedup=1e-9",
                 "train.bf16_loss_tolerance=1")
    train(tiny_toy(*pick_bf16), run_dir=tmp_path, quiet=True, until=2)
    run = json.loads((tmp_path / "config.json").read_text())["run"]
    assert run["precision"] == "bf16" and run["precision_auto"]["chose"] == "bf16"
    ckpt = tmp_path / "checkpoints" / "latest.pt"
    assert load_checkpoint(ckpt)["precision"] == "bf16"
    # The probe would now keep fp32; the resumed run keeps its own choice without probing.
    import ali.run

    monkeypatch.setattr(ali.run, "probe_precision", lambda *a, **k: pytest.fail("probed"))
    res = train(tiny_toy("train.bf16_min_speedup=1000"), run_dir=tmp_path, resume=True,
                quiet=True)
    run = json.loads((tmp_path / "config.json").read_text())["run"]
    assert res.step == 4 and run["precision"] == "bf16"
    assert run["precision_auto"]["why"].startswith("resumed")


def test_checkpoint_from_before_the_probe_resumes_in_fp32(tmp_path, monkeypatch):
    from ali.train import load_checkpoint

    train(tiny_toy(), run_dir=tmp_path, quiet=True, until=2)
    path = tmp_path / "checkpoints" / "latest.pt"
    ckpt = load_checkpoint(path)
    del ckpt["precision"]                 # as written before train.precision=auto probed
    torch.save(ckpt, path)
    _probe_on(monkeypatch)
    train(tiny_toy("train.precision_probe_min_ms=0", "train.bf16_min_speedup=1e-9",
                   "train.bf16_loss_tolerance=1"), run_dir=tmp_path, resume=True, quiet=True)
    run = json.loads((tmp_path / "config.json").read_text())["run"]
    assert run["precision"] == "fp32" and run["precision_auto"]["why"].startswith("resumed")


def test_bench_says_what_auto_chose(capsys, monkeypatch):
    _probe_on(monkeypatch)
    assert main(["bench", "tiny", "--steps", "1", "--repeats", "1", "--set", "train.device=cpu",
                 "--set", "train.precision_probe_min_ms=0",
                 "--set", "train.bf16_min_speedup=1000"]) == 0
    out = capsys.readouterr().out
    assert "precision=auto chose fp32: bf16" in out and "bf16_min_speedup=1000" in out


def test_auto_gives_up_on_bf16_whose_first_step_is_far_slower():
    from ali.speed import choose_precision, hopeless

    t = get_config("svhn").train                              # bf16_min_speedup 1.1
    assert hopeless(t, 0.10, 1.0) and not hopeless(t, 0.10, 0.15)
    rec = choose_precision(t, 0.10, 1.0, 0.0, first_steps=True)
    assert rec["chose"] == "fp32" and rec["speedup"] == 0.1 and "not timed further" in rec["why"]


def test_auto_is_fp32_without_a_probe_on_a_cpu(tmp_path, monkeypatch):
    # A timed choice follows the machine's load: on a CPU auto never probes, so one command
    # and seed train one model (the probe's own tests turn it on with _probe_on).
    import ali.run

    monkeypatch.setattr(ali.run, "probe_precision", lambda *a, **k: pytest.fail("probed"))
    s = resolve(get_config("svhn").train, CPU)
    assert s.precision == "fp32" and "reproducible" in s.precision_auto["why"]
    cfg = tiny_toy("train.precision_probe_min_ms=0", "train.bf16_min_speedup=1e-9")
    first = train(cfg, run_dir=tmp_path, quiet=True)
    run = json.loads((tmp_path / "config.json").read_text())["run"]
    assert run["precision"] == "fp32" and "reproducible" in run["precision_auto"]["why"]
    again = train(cfg, quiet=True)
    for (k, a), b in zip(first.model.state_dict().items(), again.model.state_dict().values()):
        assert torch.equal(a, b), k


PICK_BF16 = ("train.precision_probe_min_ms=0", "train.bf16_min_speedup=1e-9",
             "train.bf16_loss_tolerance=1")
"""train.precision=auto made to take bf16 after a full probe, whatever this machine's speed."""


@pytest.mark.parametrize("kind", ["ali", "gan", "gan_inverse", "gan_posthoc", "vae"])
def test_the_probe_runs_on_every_model_kind(kind, tmp_path, monkeypatch):
    _probe_on(monkeypatch)
    over = [f"model.kind={kind}", *(["model.encoder=gaussian"] if kind == "vae" else [])]
    train(tiny_toy(*over, *PICK_BF16), run_dir=tmp_path, quiet=True)
    run = json.loads((tmp_path / "config.json").read_text())["run"]
    assert run["precision"] == "bf16" and run["precision_auto"]["bf16_ms"] > 0


def test_bench_times_whole_lazy_r1_intervals():
    """With the R1 penalty on one step in 3, every timed chunk spans whole intervals (so each
    carries the penalty's share): 2 steps in 2 chunks become 2 chunks of 3."""
    from ali.bench import bench

    r = bench("toy", steps=2, warmup=0, repeats=2, overrides=["model.r1.every=3"])
    assert r["steps"] == 6
    assert bench("toy", steps=2, warmup=0, repeats=2,
                 overrides=["model.r1=off"])["steps"] == 2
