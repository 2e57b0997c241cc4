import json
import subprocess
import sys

import pytest
from conftest import own_data

from ali.cli import main

TINY = ["--set", "model.width=16", "--set", "model.disc_width=8", "--set", "data.n_train=256",
        "--set", "train.batch_size=32", "--set", "train.steps=4", "--set", "train.log_every=2",
        "--set", "train.progress=off"]


def test_train_writes_run_folder(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "toy", *TINY, "--out", str(out)]) == 0
    assert (out / "config.json").exists() and (out / "metrics.jsonl").exists()
    assert (out / "checkpoints" / "latest.pt").exists()
    text = capsys.readouterr().out
    assert "2-D metrics per run" in text and str(out) in text
    # A second run into the same folder must not overwrite it silently.
    assert main(["train", "toy", *TINY, "--out", str(out)]) == 2
    assert "already holds a run" in capsys.readouterr().err
    # Resuming with more steps continues from step 4 (--extend: the toy preset's linear decay
    # and batch-norm freeze follow train.steps, so more steps stretch them).
    assert main(["train", "toy", *TINY, "--set", "train.steps=6", "--out", str(out),
                 "--resume", "--extend"]) == 0
    steps = [json.loads(l)["step"] for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [2, 4, 6]


def test_train_toy_with_a_small_held_out_set(tmp_path, capsys):
    # Fewer held-out points than the 10,000 samples the 2-D metrics draw.
    out = tmp_path / "run"
    assert main(["train", "toy", *TINY, "--set", "data.n_test=100", "--out", str(out)]) == 0
    assert "2-D metrics per run" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["train", "toy", "--set", "train.step=5"], "did you mean 'train.steps'"),
    (["train", "toy", "--set", "train.lr=abc"], "train.lr expects a number"),
    (["train", "tyo"], "did you mean 'toy'"),
    (["train", "toy", "--resume"], "--resume needs --out"),
    (["toy", "--runs", "0"], "--runs must be >= 1"),
    (["toy", "--models", "ali,wgan"], "unknown model 'wgan'"),
    (["toy", "--models", "ali,gan,ali"], "--models names 'ali' more than once"),
    # argparse's own refusals: one line too, not its usage block
    (["sampel"], "invalid choice: 'sampel'"),
    (["train"], "the following arguments are required: name"),
    (["sample", "run", "--seed", "x"], "argument --seed: invalid int value: 'x'"),
    (["sample", "run", "--condition", "all", "--rows", "0"], "--rows must be >= 1; got 0"),
    (["sample", "run", "--condition", "all", "--rows", "-2"], "--rows must be >= 1; got -2"),
    (["toy", "--set", "model.r1_wieght=1"], "did you mean 'model.r1_weight'"),
])
def test_user_errors_are_one_line(args, message, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    """A finished tiny image run (random 8x8 colour images) and a save_pretrained copy."""
    import numpy as np

    import ali
    root = tmp_path_factory.mktemp("images")
    np.savez(root / "x.npz", x_train=np.random.default_rng(0).integers(
        0, 255, (64, 8, 8, 3), dtype=np.uint8))
    run = root / "run"
    assert main(["train", "tiny", *TINY, "--set", f"data.root={root / 'x.npz'}",
                 "--out", str(run)]) == 0
    ali.load(run).save_pretrained(root / "saved")
    np.savez(root / "none.npz", x=np.zeros((0, 8, 8, 3), dtype=np.uint8))
    (root / "a_file").write_text("")
    (root / "a_folder").mkdir()
    return root


@pytest.mark.parametrize("args, message", [
    (["sample", "{run}", "--out", "{root}/a_folder"], "is a folder; give a file path"),
    (["sample", "{run}", "--out", "{root}/grid.txt"], "not an image format Pillow writes (.txt)"),
    (["reconstruct", "{run}", "--out", "{root}/grid"], "not an image format Pillow writes (no"),
    (["interpolate", "{run}", "--out", "{root}/a_folder"], "is a folder"),
    (["report", "{run}", "--out", "{root}/a_folder"], "is a folder"),
    (["eval", "{run}", "--metric", "knn", "--out", "{root}/a_folder"], "is a folder"),
    (["score", "{run}", "--input", "{root}/x.npz", "--out", "{root}/a_folder"], "is a folder"),
    # a parent that is a file cannot be made: the system's reason, in one line
    (["sample", "{run}", "--out", "{root}/a_file/grid.png"], "a_file"),
    (["sample", "{run}", "--device", "foo"], "unknown device 'foo'"),
    (["sample", "{run}", "--device", "cuda:0"], "no CUDA device is available"),
    (["reconstruct", "{run}", "--device", "xpu"], "unknown device 'xpu'"),
    (["eval", "{run}", "--metric", "knn", "--device", "foo"], "unknown device 'foo'"),
    (["score", "{run}", "--input", "{root}/x.npz", "--out", "{root}/s.csv", "--device", "foo"],
     "unknown device 'foo'"),
    (["experiment", "mnist", "--scale", "smoke", "--device", "foo"], "unknown device 'foo'"),
    (["reconstruct", "{run}", "--set", "train.steps=3"], "--set train.steps: only data.*"),
    (["eval", "{run}", "--metric", "knn", "--set", "model.kind=gan"], "--set model.kind: only"),
    (["score", "{run}", "--input", "{root}/none.npz", "--out", "{root}/s.csv"], "holds no items"),
    (["reconstruct", "{root}/saved"], "is a saved model (save_pretrained), not a run folder"),
    (["interpolate", "{root}/saved"], "is a saved model (save_pretrained), not a run folder"),
])
def test_commands_on_a_run_refuse_bad_paths_devices_and_settings_in_one_line(
        image_run, capsys, args, message):
    if "cuda:0" in args:
        import torch
        if torch.cuda.is_available():
            pytest.skip("a CUDA device is visible")
    args = [a.format(run=image_run / "run", root=image_run) for a in args]
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err, err


def test_load_refuses_a_device_it_cannot_use_in_one_line(image_run):
    import ali
    from ali.errors import ConfigError
    with pytest.raises(ConfigError, match="unknown device 'foo'"):
        ali.load(image_run / "saved", device="foo")
    model = ali.load(image_run / "saved", device="auto")    # the best available
    assert next(model.parameters()).device.type in ("cpu", "cuda", "mps")


def test_toy_writes_results_figure_and_table(tmp_path):
    out = tmp_path / "toy"
    # A real subprocess through the console entry point, as a user runs it.
    proc = subprocess.run([sys.executable, "-m", "ali", "toy", "--quick", "--runs", "2",
                           "--steps", "3", "--samplers", "--out", str(out)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    res = json.loads((out / "results.json").read_text())
    assert res["dataset"] == "grid" and res["protocol"] == "tuned" and res["runs"] == 2
    assert set(res["models"]) == {"ali", "gan", "gan_inverse", "gan_posthoc", "vae"}
    for kind, scores in res["models"].items():
        assert set(scores) == {"modes", "modes_hq", "hq", "spread", "mode_kl", "recon_mode",
                               "seconds", "samplers"}
        assert all(len(v) == 2 for k, v in scores.items() if k != "samplers")
        samplers = scores["samplers"]
        assert set(samplers) == {"resampled", "chain"}
        for name, has in (("resampled", kind != "vae"), ("chain", kind != "gan")):
            assert set(samplers[name]) == {"modes", "modes_hq", "hq", "spread", "mode_kl"}
            assert all((h is not None) == has for h in samplers[name]["hq"]), (kind, name)
        assert all(1 <= m <= 25 for m in scores["modes"])
        assert all(0 <= h <= 1 for h in scores["hq"])
    assert res["models"]["gan"]["recon_mode"] == [None, None]
    assert all(0 <= r <= 1 for r in res["models"]["ali"]["recon_mode"])
    png = (out / "figure.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    table = (out / "table.md").read_text()
    assert "| ali |" in table and "13.4" in table
    assert "| ali | resampled |" in table and "| gan | chain |" not in table
    assert str(out / "figure.png") in proc.stdout and str(out / "results.json") in proc.stdout


def test_toy_set_applies_to_every_adversarial_run(tmp_path, monkeypatch):
    """--set reaches each model's config; the VAE, which has no discriminator, drops R1, and
    only ALI keeps the preset's cycle term."""
    from ali.config import TOY_RECON
    from ali.experiments import toy
    seen = {}
    real = toy._train_and_score

    def spy(cfg, data, samplers):
        seen[cfg.model.kind] = (cfg.model.r1 and cfg.model.r1.weight, cfg.train.batch_size,
                               cfg.model.cycle and cfg.model.cycle.weight)
        return real(cfg, data, samplers)

    monkeypatch.setattr(toy, "_train_and_score", spy)
    assert main(["toy", "--quick", "--runs", "1", "--steps", "2", "--models", "ali,gan,vae",
                 "--set", "model.r1_weight=2.5", "--set", "train.batch_size=16",
                 "--out", str(tmp_path / "t")]) == 0
    assert seen == {"ali": (2.5, 16, TOY_RECON), "gan": (2.5, 16, None), "vae": (None, 16, None)}


def test_toy_long_protocol_trains_ali_and_gan_and_checks_the_targets(tmp_path, monkeypatch,
                                                                    capsys):
    """`ali toy --protocol long`: ALI and the GAN by default, the long budget unless --steps,
    an estimate of the training time before it starts, PacGAN's ALI figures and the targets in
    results.json, the same schema otherwise."""
    from ali.experiments import toy
    steps = []
    real = toy._train_and_score
    monkeypatch.setattr(toy, "_train_and_score", lambda cfg, data, samplers: steps.append(
        cfg.train.steps) or real(cfg, data, samplers))
    monkeypatch.setattr(toy, "LONG_STEPS", 3)        # the protocol's own budget, made tiny
    out = tmp_path / "long"
    assert main(["toy", "--protocol", "long", "--dataset", "ring", "--runs", "2",
                 "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["protocol"] == "long" and set(res["models"]) == {"ali", "gan"} and steps == [3, 3]
    assert res["samples_per_run"] == 3 * 32 and res["pacgan_ali"] == toy.PACGAN_ALI["ring"]
    assert set(res["targets"]) == {"ali", "gan"}
    assert res["targets"]["ali"]["hq_target"] == 0.98 and res["targets"]["ali"]["met"] is False
    assert "Targets" in (out / "table.md").read_text()
    printed = capsys.readouterr().out
    assert printed.index("estimated training time") < printed.index("ali   ")
    assert "ms per step of 2 batched runs" in printed


def test_long_protocol_estimate_is_each_models_timed_step_times_its_steps(monkeypatch):
    import ali.bench
    from ali.config import TOY_R1_EVERY, get_config
    from ali.experiments import toy

    timed = []
    monkeypatch.setattr(ali.bench, "bench", lambda cfg, steps, warmup, repeats: timed.append(
        steps) or {"step_ms": 20.0 if cfg.model.kind == "ali" else 10.0, "device": "cpu"})
    cfgs = [get_config("toy", ["train.steps=150000"]),
            get_config("toy", ["model.kind=gan", "model.cycle=off", "train.steps=1000"])]
    lines = []
    assert toy.estimate(cfgs, lines.append) == pytest.approx(0.020 * 150_000 + 0.010 * 1_000)
    assert timed == [toy.ESTIMATE_STEPS] * 2
    assert toy.ESTIMATE_STEPS % TOY_R1_EVERY == 0      # the lazy penalty's share is timed
    assert lines[0].endswith("about 50 min") and lines[-1] == "estimated training time: 50 min"


def test_long_targets_need_every_mode_in_every_run_hq_and_the_budget():
    from ali.experiments.toy import long_targets
    good = {"modes_hq": [8, 8, 8], "hq": [0.99, 0.98, 0.975]}              # mean 0.9817
    assert long_targets(good, "ring", 8, 4_800_000)["met"] is True
    assert long_targets(good, "ring", 8, 12_000_000) == {
        "every_run_every_mode": True, "hq": pytest.approx(0.98166, abs=1e-4),
        "hq_target": 0.98, "within_budget": False, "met": False}
    one_short = {"modes_hq": [8, 7, 8], "hq": [0.99, 0.99, 0.99]}
    assert long_targets(one_short, "ring", 8, 1)["met"] is False
    low = {"modes_hq": [25] * 10, "hq": [0.959] * 10}
    assert long_targets(low, "grid", 25, 1)["met"] is False
    assert long_targets({"modes_hq": [25] * 10, "hq": [0.96] * 10}, "grid", 25, 1)["met"]


@pytest.mark.parametrize("name, label_dim", [
    ("mnist_conditional", 10), ("cifar10_ssl_1000", 10), ("svhn_conditional", 10),
    ("celeba_conditional", 40)])
def test_presets_with_known_labels_build_without_data(name, label_dim, capsys):
    """MNIST, CIFAR-10 and SVHN have 10 classes and CelebA 40 attributes: ali arch needs no
    dataset (and no --set model.label_dim) to build their labelled models."""
    from ali.config import get_config
    from ali.data import with_known_labels

    cfg = with_known_labels(get_config(name))
    assert cfg.model.label_dim == label_dim
    assert cfg.model.attributes == name.startswith("celeba")
    assert main(["arch", name, "--json"]) == 0
    desc = json.loads(capsys.readouterr().out)
    # the conditional decoder takes z and the embedded condition
    assert desc["networks"]["decoder"]["out_shape"] == desc["image_shape"]


@pytest.mark.parametrize("args, message", [
    (["arch", "mnist_conditional", "--set", "model.label_dim=5"], "mnist has 10 classes"),
    (["arch", "celeba", "--set", "model.semi_supervised=true"], "celeba has attributes"),
    (["arch", "tiny", "--set", "model.conditional=true"], "model.label_dim is 0"),
])
def test_labels_that_cannot_serve_the_model_are_one_line(args, message, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize("preset, by_hand", [
    ("table", ["--set", "model.data_dim=3"]),
    # 28x28 colour images: training picks cifar10's networks and latent size (32x32 input)
    ("folder", ["--set", "model.nets=cifar10", "--set", "model.latent_dim=64"])])
def test_arch_of_the_presets_for_your_own_data_builds_what_train_builds_from_data_root(
        tmp_path, capsys, preset, by_hand):
    # docs/images.md: ali arch prints what ali train builds with the same --sets; with
    # data.root given, table and folder failed with 'model.data_dim is 0' / 'set model.nets'.
    root = own_data(tmp_path, preset, 50 if preset == "table" else 4, 28)
    assert main(["arch", preset, "--json", "--set", f"data.root={root}"]) == 0, \
        capsys.readouterr().err
    got = json.loads(capsys.readouterr().out)
    assert main(["arch", preset, "--json", *by_hand]) == 0
    assert got == json.loads(capsys.readouterr().out)


def test_a_relative_data_root_is_recorded_absolute(tmp_path, monkeypatch, capsys):
    # ali eval / report read the run's data from wherever they are started
    import numpy as np
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    np.savez(tmp_path / "a" / "x.npz", x_train=np.random.default_rng(0).integers(
        0, 255, (64, 8, 8, 3), dtype=np.uint8))
    monkeypatch.chdir(tmp_path / "a")
    assert main(["train", "tiny", *TINY, "--set", "data.root=x.npz", "--out", "run"]) == 0
    cfg = json.loads((tmp_path / "a" / "run" / "config.json").read_text())
    assert cfg["data"]["root"] == str(tmp_path / "a" / "x.npz")
    # resuming with the same relative root is the same run
    assert main(["train", "tiny", "--set", "data.root=x.npz", "--set", "train.steps=5",
                 "--out", "run", "--resume"]) == 0
    monkeypatch.chdir(tmp_path / "b")
    capsys.readouterr()
    assert main(["report", str(tmp_path / "a" / "run")]) == 0, capsys.readouterr().err


@pytest.mark.parametrize("text", ["[1, 2]", '"tiny"', "3", "null"])
def test_report_of_a_folder_whose_config_json_is_not_an_object_is_one_line(
        tmp_path, capsys, text):
    # Valid JSON that is no config (a list, a string): an AttributeError traceback before.
    (tmp_path / "config.json").write_text(text)
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "is not an ali run folder" in err and err.count("\n") == 1, err
    assert not (tmp_path / "report.html").exists()
