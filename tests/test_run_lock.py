"""A run folder is owned by the training writing it (``train.lock``): a second ``ali train``
into it refuses in one line and changes nothing; a lock left by a killed training is taken
over (issue 21)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from test_reliability import _ali, _wait_for

from ali.errors import CheckpointError
from ali.run_folder import LOCK, RunLock

SMALL = ["--set", "model.width=16", "--set", "model.disc_width=8", "--set", "data.n_train=256",
         "--set", "train.batch_size=32", "--set", "train.progress=off",
         "--set", "train.device=cpu", "--set", "train.log_every=5",
         "--set", "train.checkpoint_every=5", "--set", "train.lr_schedule=constant",
         "--set", "model.freeze_decoder_bn_at=1"]


def _run(*args):
    proc = _ali(*args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=300)
    return proc.returncode, out, err


def test_lock_in_one_process(tmp_path):
    with RunLock(tmp_path / "run") as lock:
        info = json.loads((tmp_path / "run" / LOCK).read_text())
        assert info["pid"] == os.getpid()
        with pytest.raises(CheckpointError) as e:
            RunLock(tmp_path / "run").acquire()
        assert "in use by a training" in str(e.value) and f"pid {os.getpid()}" in str(e.value)
        with pytest.raises(CheckpointError):
            RunLock(tmp_path / "run").check()
        assert lock.fd is not None
    assert not (tmp_path / "run" / LOCK).exists()        # released: the file goes ...
    assert not (tmp_path / "run").exists()               # ... and the folder it made, empty
    RunLock(tmp_path / "run").check()
    (tmp_path / "kept").mkdir()
    with RunLock(tmp_path / "kept"):
        pass
    assert (tmp_path / "kept").is_dir()                  # a folder it did not make stays


def test_stale_lock_of_a_dead_pid_is_taken_over(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / LOCK).write_text(json.dumps({"pid": dead.pid, "host": os.uname().nodename,
                                             "since": time.time()}))
    RunLock(tmp_path).check()
    with RunLock(tmp_path):
        assert json.loads((tmp_path / LOCK).read_text())["pid"] == os.getpid()


def test_resuming_a_folder_whose_training_has_no_checkpoint_yet_says_it_is_in_use(
        tmp_path, capsys):
    # the first training holds the lock but has written no checkpoint: "in use", not "not a run"
    from ali.cli import main
    with RunLock(tmp_path / "run"):
        assert main(["train", "toy", "--out", str(tmp_path / "run"), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "in use by a training" in err and err.count("\n") == 1, err


def test_a_second_training_into_a_running_folder_refuses(tmp_path):
    run, log = tmp_path / "run", tmp_path / "first.out"
    with open(log, "w") as out, open(tmp_path / "first.err", "w") as err:
        first = _ali("train", "toy", *SMALL, "--set", "train.steps=10000000", "--out", str(run),
                     stdout=out, stderr=err)
        try:
            _wait_for(lambda: (run / "checkpoints" / "latest.pt").is_file()
                      and "step=10 " in log.read_text(), "the first run's checkpoint")
            config = (run / "config.json").read_text()
            for extra in ([], ["--resume"]):
                code, _, msg = _run("train", "toy", *SMALL, "--set", "train.steps=20",
                                    "--out", str(run), *extra)
                assert code == 2 and msg.count("\n") == 1 and "Traceback" not in msg, msg
                assert "in use by a training" in msg and f"pid {first.pid}" in msg, msg
            assert first.poll() is None                      # the first run goes on ...
            assert (run / "config.json").read_text() == config   # ... its files its own
            _wait_for(lambda: "step=20 " in log.read_text(), "more of the first run")
        finally:
            first.send_signal(signal.SIGKILL)                # no clean-up: the lock file stays
            first.wait(timeout=60)
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps))                       # one writer: no step twice
    assert (run / LOCK).is_file()
    # The killed training's lock is stale: a resume takes it over and continues.
    from ali.checkpoint import load_checkpoint

    step = load_checkpoint(run / "checkpoints" / "latest.pt")["step"]
    code, out, err = _run("train", "toy", "--out", str(run), "--resume",
                          "--set", f"train.steps={step + 2}")
    assert code == 0, err
    assert f"resumed at step {step}; training 2 more steps" in out
    assert f"done: 2 steps (step {step} to {step + 2})" in out
    assert not (run / LOCK).exists()
