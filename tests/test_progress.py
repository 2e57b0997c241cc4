"""Progress without a terminal: a first line at once, then a line at least every
``train.progress_every_s`` seconds; a report with too few records says so (issue 21)."""

from __future__ import annotations

import subprocess
import time

from test_reliability import _ali, _wait_for

SMALL = ["--set", "model.width=16", "--set", "model.disc_width=8", "--set", "data.n_train=256",
         "--set", "train.batch_size=32", "--set", "train.device=cpu",
         "--set", "train.log_every=1000000", "--set", "train.checkpoint_every=1000000"]


def test_a_run_without_a_terminal_prints_progress_lines(tmp_path):
    log = tmp_path / "out"
    with open(log, "w") as out:
        # stdout and stderr are files, not terminals: no bar, lines instead
        proc = _ali("train", "toy", *SMALL, "--set", "train.steps=10000000",
                    "--set", "train.progress_every_s=0.5", "--out", str(tmp_path / "run"),
                    stdout=out, stderr=subprocess.STDOUT)
        try:
            _wait_for(lambda: "progress: step 1/10000000" in log.read_text(),
                      "the first progress line", timeout=60)
            t0 = time.monotonic()
            _wait_for(lambda: log.read_text().count("progress:") >= 3, "two more lines",
                      timeout=30)
            assert time.monotonic() - t0 < 20
        finally:
            proc.kill()
            proc.wait(timeout=60)
    lines = [ln for ln in log.read_text().splitlines() if ln.startswith("progress:")]
    later = lines[1]
    assert "steps/s" in later and "left" in later and "loss_d=" in later, later


def test_progress_off_and_quiet_print_no_lines(tmp_path, capsys):
    from ali.config import get_config
    from ali.train import train

    cfg = get_config("toy", [*[s for s in SMALL if s != "--set"], "train.steps=3",
                             "train.progress_every_s=0.001"])
    train(cfg, quiet=True)
    assert "progress:" not in capsys.readouterr().out
    train(cfg)
    assert capsys.readouterr().out.count("progress:") >= 2    # no terminal under pytest
    train(get_config("toy", [*[s for s in SMALL if s != "--set"], "train.steps=3",
                             "train.progress=off"]))
    assert "progress:" not in capsys.readouterr().out


def test_a_report_with_too_few_records_says_so(tmp_path, capsys):
    import json

    from ali.report import write_report

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"name": "mnist",
                                                 "train": {"log_every": 500}}))
    page = write_report(run, render=False).read_text()
    assert "No training records yet" in page and "train.log_every=500" in page
    (run / "metrics.jsonl").write_text(json.dumps({"step": 300, "loss_d": 1.2}) + "\n")
    page = write_report(run, render=False).read_text()
    assert "Only one training record (step 300): too few points" in page
    assert "--set train.log_every=N" in page and "<svg" not in page
    with open(run / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": 400, "loss_d": 1.1}) + "\n")
    assert "<svg" in write_report(run, render=False).read_text()


def test_mnist_logs_often_enough_for_a_short_run():
    from ali.config import get_config

    assert 300 // get_config("mnist").train.log_every >= 3
    assert 300 // get_config("folder").train.log_every >= 3
