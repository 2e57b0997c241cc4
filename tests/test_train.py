import json

import pytest
import torch

from ali.errors import CheckpointError
from ali.train import load_checkpoint, load_run, run_config, train

from conftest import tiny_toy


def test_run_folder_holds_documented_files(tmp_path):
    cfg = tiny_toy()
    res = train(cfg, run_dir=tmp_path, quiet=True)
    assert res.step == cfg.train.steps
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["train"]["steps"] == cfg.train.steps and saved["name"] == "toy"
    lines = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [l["step"] for l in lines] == [2, 4]
    for key in ("loss_d", "loss_g", "acc_q", "acc_p", "steps_per_s", "lr"):
        assert all(key in l for l in lines)
    ckpt = load_checkpoint(tmp_path / "checkpoints" / "latest.pt")
    assert ckpt["step"] == 4 and ckpt["config"] == cfg.to_dict()
    assert set(ckpt["model"]) == set(res.model.state_dict())


def test_save_load_gives_identical_outputs(tmp_path):
    res = train(tiny_toy(), run_dir=tmp_path, quiet=True)
    model, cfg, step = load_run(tmp_path)
    z = res.model.sample_prior(16)
    x = torch.randn(16, 2)
    res.model.eval()
    assert torch.equal(model.decode(z), res.model.decode(z))
    assert torch.equal(model.encode_mean(x), res.model.encode_mean(x))
    assert step == 4 and cfg == tiny_toy()


def test_same_seed_same_result():
    a = train(tiny_toy(), quiet=True).model.state_dict()
    b = train(tiny_toy(), quiet=True).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    c = train(tiny_toy("train.seed=1"), quiet=True).model.state_dict()
    assert not all(torch.equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize("kind", ["ali", "gan_posthoc", "vae", "ali_lazy_r1", "ali_frozen_bn"])
def test_resume_is_bit_identical(tmp_path, kind):
    # ali_lazy_r1: R1 on steps 0 and 2 of 0..5 before the stop at 3, then on step 4 only.
    # ali_frozen_bn: the decoder's batch norm freezes at step 2, before the stop at 3.
    extra = {"ali_lazy_r1": ("model.r1_weight=1", "model.r1_every=2"),
             "ali_frozen_bn": ("model.freeze_decoder_bn_at=0.34",)}.get(kind, ())
    kind = kind.removesuffix("_lazy_r1").removesuffix("_frozen_bn")
    enc = "gaussian" if kind == "vae" else "noise"
    over = (f"model.kind={kind}", f"model.encoder={enc}", "train.lr_schedule=linear",
            "train.steps=6", "train.checkpoint_every=3", "train.log_every=3", *extra)
    full = train(tiny_toy(*over), quiet=True).model.state_dict()
    # Stop after 3 of 6 steps, then resume in a fresh call.
    train(tiny_toy(*over), run_dir=tmp_path, quiet=True, until=3)
    res = train(tiny_toy(*over), run_dir=tmp_path, resume=True, quiet=True)
    got = res.model.state_dict()
    for k in full:
        assert torch.equal(full[k], got[k]), k


def test_resume_refuses_other_config(tmp_path):
    train(tiny_toy(), run_dir=tmp_path, quiet=True)
    with pytest.raises(CheckpointError, match="train.lr"):
        train(tiny_toy("train.lr=0.5", "train.steps=8"), run_dir=tmp_path, resume=True,
              quiet=True)


def test_resume_a_run_written_before_a_setting_existed(tmp_path):
    """A checkpoint whose config lacks a setting added later (here model.r1) ran with that
    setting's default: resuming with the default works, with another value is refused."""
    train(tiny_toy(), run_dir=tmp_path, quiet=True)
    path = tmp_path / "checkpoints" / "latest.pt"
    ckpt = torch.load(path, weights_only=False)
    del ckpt["config"]["model"]["r1"]
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match=r"model.r1: None -> \{'weight': 1.0, 'every': 1\}"):
        train(tiny_toy("model.r1_weight=1", "train.steps=8"), run_dir=tmp_path, resume=True,
              quiet=True, extend=True)
    res = train(tiny_toy("train.steps=8"), run_dir=tmp_path, resume=True, quiet=True,
                extend=True)
    assert res.step == 8


def test_resume_a_run_written_with_the_flat_model_config(tmp_path):
    """Runs written before the variant sections hold flat keys (recon_weight, r1_weight,
    conditional: false, ...): they resume, and their settings read as the sections."""
    train(tiny_toy("model.cycle.weight=0.5"), run_dir=tmp_path, quiet=True)
    path = tmp_path / "checkpoints" / "latest.pt"
    ckpt = torch.load(path, weights_only=False)
    m = ckpt["config"]["model"]
    for key in ("cycle", "r1", "conditional", "semi_supervised"):
        del m[key]
    m.update(recon_weight=0.5, r1_weight=0.0, r1_every=1, conditional=False,
             semi_supervised=False, label_dim=0, attributes=False, embed_dim=64)
    torch.save(ckpt, path)
    assert run_config(tmp_path).model.cycle.weight == 0.5 and run_config(tmp_path).model.r1 is None
    with pytest.raises(CheckpointError, match=r"model.cycle: \{'weight': 0.5\} -> None"):
        train(tiny_toy("train.steps=8"), run_dir=tmp_path, resume=True, quiet=True)
    res = train(tiny_toy("model.cycle.weight=0.5", "train.steps=8"), run_dir=tmp_path,
                resume=True, extend=True, quiet=True)
    assert res.step == 8


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    p = tmp_path / "latest.pt"
    p.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_checkpoint(p)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")


def test_linear_schedule_reaches_zero():
    res = train(tiny_toy("train.lr_schedule=linear", "train.lr=1e-3"), quiet=True)
    lrs = [h["lr"] for h in res.history]
    assert lrs[0] < 1e-3 and lrs[-1] == pytest.approx(1e-3 / 4)


def test_discriminator_learning_rate():
    # Constant schedule: the toy preset decays linearly, which would scale both rates.
    res = train(tiny_toy("train.lr=1e-4", "train.lr_d=4e-4", "train.lr_schedule=constant"),
                quiet=True)
    assert res.history[-1]["lr"] == pytest.approx(1e-4)
    assert res.history[-1]["lr_d"] == pytest.approx(4e-4)


def test_batch_larger_than_dataset_is_rejected():
    from ali.errors import ConfigError
    with pytest.raises(ConfigError, match="larger than the dataset"):
        train(tiny_toy("data.n_train=10"), quiet=True)


def _cli_params(run):
    return load_checkpoint(run / "checkpoints" / "latest.pt")["model"]


def test_training_in_pieces_reaches_the_straight_run_bit_identically(tmp_path, capsys):
    """200 steps straight == 100 then resumed to 200: with --until (the toy preset's linear
    decay and batch-norm freeze follow train.steps) and, where the schedule does not follow
    train.steps, with train.steps=100 then --set train.steps=200."""
    from ali.cli import main
    from test_cli import TINY

    def run(out, *extra):
        assert main(["train", "toy", *TINY, "--set", "train.seed=3", "--set",
                     "train.log_every=50", *extra, "--out", str(tmp_path / out)]) == 0, \
            capsys.readouterr().err
        return _cli_params(tmp_path / out)

    def same(a, b):
        return all(torch.equal(a[k], b[k]) for k in a)

    straight = run("straight", "--set", "train.steps=200")
    run("pieces", "--set", "train.steps=200", "--until", "100")
    assert load_checkpoint(tmp_path / "pieces" / "checkpoints" / "latest.pt")["step"] == 100
    # (TINY's train.steps=4 is overridden again: the run's own 200)
    assert same(run("pieces", "--resume", "--set", "train.steps=200"), straight)

    const = ("--set", "train.lr_schedule=constant", "--set", "model.freeze_decoder_bn_at=1")
    straight = run("c-straight", *const, "--set", "train.steps=200")
    run("c-pieces", *const, "--set", "train.steps=100")
    assert same(run("c-pieces", "--resume", "--set", "train.steps=200"), straight)


@pytest.mark.parametrize("extra, named", [
    ((), "train.lr_schedule=linear, model.freeze_decoder_bn_at=0.5"),
    (("train.lr_schedule=constant", "model.kind=gan_posthoc", "model.recon_weight=0",
      "model.freeze_decoder_bn_at=1"), "model.kind=gan_posthoc"),
])
def test_a_longer_run_that_stretches_the_schedule_is_refused_unless_extended(
        tmp_path, capsys, extra, named):
    from ali.cli import main
    from test_cli import TINY

    sets = [a for o in extra for a in ("--set", o)]
    assert main(["train", "toy", *TINY, *sets, "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    longer = ["train", "toy", "--out", str(tmp_path), "--resume", "--set", "train.steps=6"]
    assert main(longer) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and named in err and "--extend" in err, err
    assert main([*longer, "--extend"]) == 0
    assert load_checkpoint(tmp_path / "checkpoints" / "latest.pt")["step"] == 6


def test_resume_refuses_to_shorten_a_run_and_extend_needs_resume(tmp_path, capsys):
    from ali.cli import main
    from test_cli import TINY

    assert main(["train", "toy", *TINY, "--out", str(tmp_path)]) == 0      # at step 4
    capsys.readouterr()
    for extra in ([], ["--extend"]):
        assert main(["train", "toy", "--out", str(tmp_path), "--resume", "--set",
                     "train.steps=2", *extra]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "a run cannot be shortened" in err, err
    assert json.loads((tmp_path / "config.json").read_text())["train"]["steps"] == 4
    assert main(["train", "toy", *TINY, "--out", str(tmp_path / "new"), "--extend"]) == 2
    assert "--extend goes with --resume" in capsys.readouterr().err
    # --until at or before the run's step trains nothing, and says why
    assert main(["train", "toy", "--out", str(tmp_path), "--resume", "--until", "2"]) == 0
    assert "nothing to train: until=2 is not past it" in capsys.readouterr().out


def test_until_is_one_line_when_not_positive(capsys):
    from ali.cli import main
    assert main(["train", "toy", "--until", "0"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
