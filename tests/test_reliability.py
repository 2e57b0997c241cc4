"""Reliability: checkpoint rotation and write failures, divergence, signals, bad run folders.

Everything here trains the tiny toy config for a handful of steps; the subprocess tests run the
real CLI for a fraction of a second before a signal stops it.
"""

import errno
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

import ali
from ali.cli import main
from ali.errors import CheckpointError, DivergenceError, TrainingInterrupted
from ali.model import Losses
from ali.build import build_model
from ali.train import atomic_save, load_checkpoint, load_run, train

from conftest import tiny_toy

SRC = str(Path(ali.__file__).resolve().parent.parent)


def _ckpts(run_dir: Path) -> list[str]:
    return sorted(p.name for p in (run_dir / "checkpoints").iterdir())


def _temporaries(run_dir: Path) -> list[str]:
    return [n for n in _ckpts(run_dir) if ".tmp" in n]


# --------------------------------------------------------------------------- checkpoint files

def test_step_files_are_rotated_and_latest_is_newest(tmp_path):
    train(tiny_toy("train.steps=6", "train.checkpoint_every=1", "train.keep_checkpoints=2"),
          run_dir=tmp_path, quiet=True)
    assert _ckpts(tmp_path) == ["latest.pt", "step-00000005.pt", "step-00000006.pt"]
    ck = tmp_path / "checkpoints"
    assert (ck / "latest.pt").read_bytes() == (ck / "step-00000006.pt").read_bytes()
    assert load_checkpoint(ck / "step-00000005.pt")["step"] == 5


def _fail_with_enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("target", ["torch.save", "os.fsync", "os.replace", "latest-only"])
def test_disk_full_leaves_previous_checkpoint(tmp_path, monkeypatch, target):
    cfg = tiny_toy("train.checkpoint_every=2")
    train(cfg, run_dir=tmp_path, quiet=True, until=2)
    latest = tmp_path / "checkpoints" / "latest.pt"
    before = latest.read_bytes()
    if target == "latest-only":
        # The step file is written, then latest.pt fails: latest.pt must still be step 2.
        real = os.replace
        monkeypatch.setattr(os, "replace", lambda a, b: _fail_with_enospc() if
                            Path(b).name == "latest.pt" else real(a, b))
    else:
        module, name = target.split(".")
        monkeypatch.setattr({"torch": torch, "os": os}[module], name, _fail_with_enospc)
    with pytest.raises(CheckpointError) as e:
        train(cfg, run_dir=tmp_path, resume=True, quiet=True)
    monkeypatch.undo()
    msg = str(e.value)
    assert "No space left on device" in msg and "\n" not in msg and "step" in msg
    assert latest.read_bytes() == before and load_checkpoint(latest)["step"] == 2
    assert _temporaries(tmp_path) == []


def test_disk_full_while_logging_metrics_is_one_line(tmp_path, monkeypatch):
    import builtins

    cfg = tiny_toy("train.checkpoint_every=2", "train.log_every=2")
    train(cfg, run_dir=tmp_path, quiet=True, until=2)
    latest = tmp_path / "checkpoints" / "latest.pt"
    before = latest.read_bytes()
    real_open = builtins.open

    def open_full_metrics(path, *args, **kwargs):
        f = real_open(path, *args, **kwargs)
        if str(path).endswith("metrics.jsonl"):
            f.write = _fail_with_enospc
        return f

    monkeypatch.setattr(builtins, "open", open_full_metrics)
    with pytest.raises(CheckpointError) as e:
        train(cfg, run_dir=tmp_path, resume=True, quiet=True)
    monkeypatch.undo()
    msg = str(e.value)
    assert "metrics.jsonl" in msg and "No space left" in msg and "\n" not in msg
    assert latest.read_bytes() == before


def test_atomic_save_failure_is_a_checkpoint_error(tmp_path, monkeypatch):
    target = tmp_path / "x.pt"
    atomic_save({"a": 1}, target)
    monkeypatch.setattr(os, "fsync", _fail_with_enospc)
    with pytest.raises(CheckpointError, match="No space left"):
        atomic_save({"a": 2}, target)
    monkeypatch.undo()
    assert torch.load(target) == {"a": 1} and sorted(os.listdir(tmp_path)) == ["x.pt"]


# --------------------------------------------------------------------------- divergence

def _poison(model, bad_steps):
    """Make ``model.losses`` return NaN losses (with NaN gradients) at the given 1-based calls."""
    real, calls = model.losses, [0]

    def losses(x, z):
        calls[0] += 1
        out = real(x, z)
        if bad_steps(calls[0]) if callable(bad_steps) else calls[0] in bad_steps:
            nan = float("nan")
            return Losses(out.g * nan, None if out.d is None else out.d * nan, out.stats)
        return out

    model.losses = losses
    return model


def test_nan_loss_stops_with_last_good_checkpoint_kept(tmp_path):
    cfg = tiny_toy("train.steps=6", "train.log_every=1", "train.checkpoint_every=2")
    with pytest.raises(DivergenceError, match="diverged at step 3: non-finite loss") as e:
        train(cfg, run_dir=tmp_path, quiet=True, model=_poison(build_model(cfg), {3}))
    assert e.value.step == 3 and "step 2" in str(e.value)
    ckpt = load_checkpoint(tmp_path / "checkpoints" / "latest.pt")
    assert ckpt["step"] == 2 and _ckpts(tmp_path) == ["latest.pt", "step-00000002.pt"]
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


def test_nan_parameters_are_caught_before_a_save(tmp_path):
    # No log between steps 3 and 4: only the check before the step-4 save sees the NaN.
    cfg = tiny_toy("train.steps=6", "train.log_every=100", "train.checkpoint_every=2")
    with pytest.raises(DivergenceError, match="diverged at step 4: non-finite parameter"):
        train(cfg, run_dir=tmp_path, quiet=True, model=_poison(build_model(cfg), {3}))
    assert load_checkpoint(tmp_path / "checkpoints" / "latest.pt")["step"] == 2


def test_rollback_reloads_last_good_state_and_halves_lr(tmp_path):
    cfg = tiny_toy("train.steps=6", "train.log_every=1", "train.checkpoint_every=2",
                   "train.lr_schedule=constant", "train.on_divergence=rollback")
    res = train(cfg, run_dir=tmp_path, quiet=True, model=_poison(build_model(cfg), {3}))
    assert res.step == 6
    steps = [h["step"] for h in res.history]
    assert steps == [1, 2, 3, 4, 5, 6]  # the NaN record of step 3 is not in the history
    lrs = {h["step"]: h["lr"] for h in res.history}
    assert lrs[2] == pytest.approx(cfg.train.lr) and lrs[3] == pytest.approx(cfg.train.lr / 2)
    ckpt = load_checkpoint(tmp_path / "checkpoints" / "latest.pt")
    assert ckpt["lr_scale"] == 0.5 and ckpt["rollbacks"] == 1
    assert all(torch.isfinite(p).all() for p in res.model.parameters())


def test_rollback_gives_up_after_max_rollbacks():
    # No run folder: the last good state is held in memory.
    cfg = tiny_toy("train.steps=6", "train.log_every=1", "train.checkpoint_every=2",
                   "train.on_divergence=rollback", "train.max_rollbacks=2")
    with pytest.raises(DivergenceError, match="after 2 rollbacks"):
        train(cfg, quiet=True, model=_poison(build_model(cfg), lambda n: n >= 3))


def test_huge_learning_rate_is_one_line_from_cli(tmp_path, capsys):
    from test_cli import TINY
    assert main(["train", "toy", *TINY, "--set", "train.lr=1e30", "--set", "train.steps=2",
                 "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "diverged at step 2" in err and err.count("\n") == 1


# --------------------------------------------------------------------------- signals in-process

def _signal_at(step, *signums):
    def hook(done, model, run_dir):
        if done == step:
            for s in signums:
                os.kill(os.getpid(), s)
    return hook


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_checkpoints_and_resume_is_bit_identical(tmp_path, signum):
    over = ("train.steps=6", "train.log_every=1", "train.checkpoint_every=100",
            "train.lr_schedule=linear")
    full = train(tiny_toy(*over), quiet=True).model.state_dict()
    before = signal.getsignal(signum)
    with pytest.raises(TrainingInterrupted) as e:
        train(tiny_toy(*over), run_dir=tmp_path, quiet=True, hooks=[_signal_at(2, signum)])
    assert signal.getsignal(signum) is before  # handlers restored
    assert e.value.signum == signum and e.value.step == 2 and e.value.result.step == 2
    assert f"ali train toy --out {tmp_path} --resume" in str(e.value)
    assert load_checkpoint(tmp_path / "checkpoints" / "latest.pt")["step"] == 2
    got = train(tiny_toy(*over), run_dir=tmp_path, resume=True, quiet=True).model.state_dict()
    for k in full:
        assert torch.equal(full[k], got[k]), k


def test_second_signal_stops_at_once(tmp_path):
    cfg = tiny_toy("train.steps=6", "train.log_every=1", "train.checkpoint_every=1")
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, run_dir=tmp_path, quiet=True,
              hooks=[_signal_at(3, signal.SIGINT, signal.SIGINT)])
    assert signal.getsignal(signal.SIGINT) is before
    assert load_checkpoint(tmp_path / "checkpoints" / "latest.pt")["step"] == 2
    assert _temporaries(tmp_path) == []


def test_training_in_a_thread_leaves_signals_alone():
    before = signal.getsignal(signal.SIGINT)
    seen = []
    th = threading.Thread(target=lambda: seen.append(train(tiny_toy(), quiet=True).step))
    th.start()
    th.join()
    assert seen == [4] and signal.getsignal(signal.SIGINT) is before


# --------------------------------------------------------------------------- real processes

# A schedule that does not follow train.steps (constant learning rate, no batch-norm freeze),
# so a run resumed with another length continues as an uninterrupted run of that length would.
SUB = ["--set", "model.width=16", "--set", "model.disc_width=8", "--set", "data.n_train=256",
       "--set", "train.batch_size=32", "--set", "train.progress=off", "--set", "train.device=cpu",
       "--set", "train.lr_schedule=constant", "--set", "model.freeze_decoder_bn_at=1",
       "--set", "train.steps=10000000"]


def _ali(*args, **kw):
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen([sys.executable, "-m", "ali", *args], env=env, **kw)


def _wait_for(cond, what, timeout=120.0):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _resume(run: Path, steps: int) -> subprocess.CompletedProcess:
    proc = _ali("train", "toy", "--out", str(run), "--resume", "--set", f"train.steps={steps}",
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_cli_signal_stops_cleanly_and_resumes_bit_identically(tmp_path, signum, status):
    run, log = tmp_path / "run", tmp_path / "stdout"
    with open(log, "w") as out, open(tmp_path / "stderr", "w") as err:
        proc = _ali("train", "toy", *SUB, "--set", "train.log_every=5",
                    "--set", "train.checkpoint_every=1000000", "--out", str(run),
                    stdout=out, stderr=err)
        try:
            _wait_for(lambda: "step=5 " in log.read_text(), "the first metrics line")
            proc.send_signal(signum)
            assert proc.wait(timeout=120) == status
        finally:
            if proc.poll() is None:
                proc.kill()
    err = (tmp_path / "stderr").read_text()
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert f"interrupted by {signal.Signals(signum).name}" in err
    assert f"resume with: ali train toy --out {run} --resume" in err
    step = load_checkpoint(run / "checkpoints" / "latest.pt")["step"]
    assert step >= 5
    # The printed command, with only the length changed, continues from the saved step ...
    done = _resume(run, step + 3)
    assert done.returncode == 0, done.stderr
    assert f"resumed at step {step}; training 3 more steps (to step {step + 3})" in done.stdout
    assert f"done: 3 steps (step {step} to {step + 3})" in done.stdout
    # ... to the parameters of an uninterrupted run of that many steps.
    overrides = [s for s in SUB if s != "--set"][:-1] + [
        f"train.steps={step + 3}", "train.log_every=5", "train.checkpoint_every=1000000"]
    from ali.config import get_config
    full = train(get_config("toy", overrides), quiet=True).model.state_dict()
    got = load_run(run)[0].state_dict()
    for k in full:
        assert torch.equal(full[k], got[k]), k


def test_sigkill_at_a_random_moment_leaves_a_loadable_checkpoint(tmp_path):
    run = tmp_path / "run"
    # A random moment, but the same one in every session: a failure can be reproduced.
    delay = random.Random(20161202).uniform(0.0, 0.5)
    proc = _ali("train", "toy", *SUB, "--set", "train.log_every=1000",
                "--set", "train.checkpoint_every=2", "--out", str(run),
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(lambda: (run / "checkpoints" / "latest.pt").exists(), "the first checkpoint")
        time.sleep(delay)
        proc.kill()
        assert proc.wait(timeout=60) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
    ckpt = load_checkpoint(run / "checkpoints" / "latest.pt")
    step = ckpt["step"]
    steps = [n for n in _ckpts(run) if n.startswith("step-")]
    assert 1 <= len(steps) <= 3 + 1, (delay, steps)  # pruning follows the writes
    done = _resume(run, step + 2)
    assert done.returncode == 0, (delay, done.stderr)
    assert load_checkpoint(run / "checkpoints" / "latest.pt")["step"] == step + 2
    assert _temporaries(run) == []  # a temporary the kill left behind is cleaned up


# --------------------------------------------------------------------------- bad run folders

@pytest.fixture(scope="module")
def made_run(tmp_path_factory):
    """One finished tiny CLI run, copied by each test that damages it."""
    from test_cli import TINY
    run = tmp_path_factory.mktemp("made") / "run"
    assert main(["train", "toy", *TINY, "--out", str(run)]) == 0
    return run


def _damage(run: Path, how: str) -> None:
    latest = run / "checkpoints" / "latest.pt"
    data = latest.read_bytes()
    if how == "truncated":
        latest.write_bytes(data[:len(data) // 2])
    elif how == "empty":
        latest.write_bytes(b"")
    elif how == "garbage":
        latest.write_bytes(bytes(random.Random(0).getrandbits(8) for _ in range(4096)))
    elif how == "not-a-checkpoint":
        torch.save({"hello": 1}, latest)


@pytest.mark.parametrize("case, extra, message", [
    ("missing-folder", [], "no run folder at"),
    ("empty-folder", [], "is not an ali run folder"),
    ("junk-folder", [], "is not an ali run folder"),
    ("truncated", [], "cannot read checkpoint"),
    ("empty", [], "cannot read checkpoint"),
    ("garbage", [], "cannot read checkpoint"),
    ("not-a-checkpoint", [], "is not an ali checkpoint"),
    ("other-config", ["--set", "model.width=32"], "different config (model.width: 16 -> 32)"),
    ("other-name", [], "holds a run of config 'toy', not 'toy_paper'"),
])
def test_bad_run_folders_are_one_line(made_run, tmp_path, capsys, case, extra, message):
    run = tmp_path / "run"
    if case == "empty-folder":
        run.mkdir()
    elif case == "junk-folder":
        run.mkdir()
        (run / "notes.txt").write_text("hello")
    elif case != "missing-folder":
        shutil.copytree(made_run, run)
        _damage(run, case)
    capsys.readouterr()
    name = "toy_paper" if case == "other-name" else "toy"
    assert main(["train", name, "--out", str(run), "--resume", *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err, err


def test_out_that_is_a_file_is_one_line(tmp_path, capsys):
    from test_cli import TINY
    (tmp_path / "f").write_text("x")
    assert main(["train", "toy", *TINY, "--out", str(tmp_path / "f")]) == 2
    err = capsys.readouterr().err
    assert "is not a folder" in err and err.count("\n") == 1


@pytest.mark.parametrize("item, message", [
    ("train.keep_checkpoints=0", "train.keep_checkpoints must be >= 1"),
    ("train.on_divergence=retry", "train.on_divergence must be one of stop, rollback"),
    ("train.rollback_lr_factor=1", "train.rollback_lr_factor must be in (0, 1)"),
    ("train.rollback_lr_factor=0", "train.rollback_lr_factor must be in (0, 1)"),
    ("train.max_rollbacks=-1", "train.max_rollbacks must be >= 0"),
    ("train.max_rollbacks=two", "train.max_rollbacks expects an integer"),
    ("train.steps=0", "train.steps must be >= 1"),
])
def test_new_keys_are_validated_in_one_line(item, message, capsys):
    assert main(["train", "toy", "--set", item]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_corrupted_checkpoint_in_a_real_process_has_no_traceback(made_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(made_run, run)
    _damage(run, "truncated")
    done = _resume(run, 10)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "Traceback" not in done.stderr and "cannot read checkpoint" in done.stderr


@pytest.mark.parametrize("args", [["train", "nosuch"], ["train", "tyo", "--out", "x"]])
def test_an_unknown_config_for_train_is_one_line(args, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown config" in err and "Traceback" not in err


def test_sample_on_a_truncated_checkpoint_is_one_short_line(made_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(made_run, run)
    latest = run / "checkpoints" / "latest.pt"
    latest.write_bytes(latest.read_bytes()[:1000])     # torch: a paragraph after the cause
    capsys.readouterr()
    assert main(["sample", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot read checkpoint" in err, err
    # The cause, not torch's paragraph of advice after it.
    assert len(err.replace(str(run), "")) < 200, err


def test_resume_removes_temporaries_of_dead_writers(tmp_path):
    cfg = tiny_toy("train.checkpoint_every=2")
    train(cfg, run_dir=tmp_path, quiet=True, until=2)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    stale = tmp_path / "checkpoints" / f".latest.pt.tmp-{dead}"
    stale.write_bytes(b"half a checkpoint")  # what a writer killed mid-write leaves
    train(cfg, run_dir=tmp_path, resume=True, quiet=True)
    assert _temporaries(tmp_path) == []
