"""Multi-process training: 2 CPU processes with gloo, started by torchrun."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ali.cli import main
from ali.train import load_checkpoint

HERE = Path(__file__).parent
SRC = HERE.parent / "src"


@pytest.fixture
def tiny_npz(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, size=(64, 8, 8, 3), dtype=np.uint8)
    path = tmp_path / "tiny.npz"
    np.savez(path, x_train=x[:48], x_test=x[48:])
    return path


def _torchrun(*args: str) -> subprocess.CompletedProcess:
    path = os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])
    # faulthandler: a rank that dies of a signal prints its Python stack (or that it had none).
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node=2", *args], env=env, capture_output=True,
                          text=True, timeout=120)


def _failure(p: subprocess.CompletedProcess) -> str:
    """A failed torchrun's stdout, then its stderr without the launcher's traceback: the ranks'
    own messages (a rank once died of SIGABRT under heavy load, and the launcher's summary hid
    why)."""
    own = p.stderr.rpartition("Traceback (most recent call last)")[0] or p.stderr
    return p.stdout[-1500:] + "\n...\n" + own[-6000:] + "\n...\n" + p.stderr[-1500:]


def test_two_processes_end_identical_and_only_rank0_writes(tiny_npz, tmp_path):
    run, out = tmp_path / "run", tmp_path / "out"
    out.mkdir()
    # train.precision=auto made to take bf16 (any speed, any loss difference): rank 0 probes
    # and both processes train in its choice.
    over = [f"data.root={tiny_npz}", "train.steps=4", "train.log_every=2",
            "train.checkpoint_every=2", "train.device=cpu", "train.progress=off",
            "train.precision_probe_min_ms=0", "train.bf16_min_speedup=1e-9",
            "train.bf16_loss_tolerance=1"]
    p = _torchrun(str(HERE / "ddp_worker.py"), str(run), str(out), *over)
    assert p.returncode == 0, _failure(p)
    r0, r1 = (torch.load(out / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    assert r0["run_dir"] == run and r1["run_dir"] is None
    assert r0["precision"] == r1["precision"] == "bf16"
    assert r0["state"].keys() == r1["state"].keys()
    # train() left the process group it made: no gloo thread runs on after it (one that did
    # kept the group's last work and, freeing it at exit, aborted a finished rank now and then).
    for rank, r in enumerate((r0, r1)):
        assert not r["threads"], f"rank {rank} still runs {r['threads']}"
    for k, v in r0["state"].items():
        assert torch.equal(v, r1["state"][k]), k
    # Rank 0 alone wrote the run folder: one record per logging interval, not two.
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(l)["step"] for l in lines] == [2, 4]
    record = json.loads((run / "config.json").read_text())["run"]
    assert record["world_size"] == 2 and record["batch_per_process"] == 8
    assert record["precision"] == "bf16" and record["precision_auto"]["bf16_ms"] > 0
    ckpt = load_checkpoint(run / "checkpoints" / "latest.pt")
    assert all(torch.equal(ckpt["model"][k], v) for k, v in r0["state"].items())

    # Resume the 2-process run in one process, then with two again through the CLI.
    assert main(["train", "tiny", "--out", str(run), "--resume", "--set", "train.steps=6",
                 "--set", "train.progress=off"]) == 0
    assert load_checkpoint(run / "checkpoints" / "latest.pt")["step"] == 6
    assert json.loads((run / "config.json").read_text())["run"]["world_size"] == 1
    p = _torchrun("-m", "ali", "train", "tiny", "--out", str(run), "--resume",
                  "--set", "train.steps=8", "--set", "train.progress=off")
    assert p.returncode == 0, _failure(p)
    assert p.stdout.count("resuming tiny") == 1        # rank 1 prints nothing
    assert p.stdout.count("resumed at step 6; training 2 more steps") == 1
    assert load_checkpoint(run / "checkpoints" / "latest.pt")["step"] == 8
    assert json.loads((run / "config.json").read_text())["run"]["world_size"] == 2


def test_batch_must_split_over_processes(monkeypatch):
    from ali.distributed import Context, local_batch
    from ali.errors import ConfigError

    assert local_batch(100, Context(0, 4)) == 25
    with pytest.raises(ConfigError, match="does not split evenly over 3 processes"):
        local_batch(100, Context(0, 3))


def test_shards_split_the_same_global_batch():
    from ali.data import TensorSampler

    data = torch.arange(40.0).view(20, 2)
    whole = TensorSampler(data, 6, seed=3)
    parts = [TensorSampler(data, 6, seed=3, shard=(r, 2)) for r in range(2)]
    for _ in range(5):                                  # across an epoch boundary
        assert torch.equal(whole.next(), torch.cat([p.next() for p in parts]))


def test_two_processes_share_one_cache_built_once(tmp_path):
    """torchrun: the first process builds the decode-once cache while the other waits; each
    reads its share of every batch from the one memory map; the run is the one a single
    process trains (one global batch order)."""
    from test_cache import make_celeba_varied

    from ali.config import get_config

    root = make_celeba_varied(tmp_path / "c", n=40)
    out, cache_dir = tmp_path / "out", tmp_path / "cache"
    out.mkdir()
    over = ["data.name=celeba", f"data.root={root}", "data.verify=false", "data.test_split=",
            f"data.cache_dir={cache_dir}", "data.cache=on", "data.image_size=8",
            "train.steps=3", "train.log_every=3", "train.checkpoint_every=3",
            "train.device=cpu", "train.progress=off"]
    p = _torchrun(str(HERE / "ddp_worker.py"), str(tmp_path / "run"), str(out), *over)
    assert p.returncode == 0, _failure(p)
    assert p.stderr.count("data cache: 40 images") == 1, p.stderr[-3000:]
    assert len(list(cache_dir.iterdir())) == 2                  # one array, one manifest
    r0, r1 = (torch.load(out / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    for k, v in r0["state"].items():
        assert torch.equal(v, r1["state"][k]), k
    # Both processes' shares make the global batches: a single process, on the fly, sees them.
    from ali.data import load_dataset, make_sampler

    cfg = get_config("tiny", [*over, "data.cache=off"])
    ds, cached = load_dataset(cfg.data), load_dataset(get_config("tiny", over).data)
    whole = make_sampler(ds, 16, seed=0, workers=0)
    parts = [make_sampler(cached, 16, seed=0, shard=(r, 2)) for r in range(2)]
    for _ in range(4):
        assert torch.equal(whole.next(), torch.cat([s.next() for s in parts]))


def test_an_experiment_under_torchrun_trains_on_both_and_rank0_alone_reports(tmp_path):
    """`torchrun -m ali experiment`: one process group for every stage (each run records a
    world size of 2), rank 0 alone writes the synthetic data, evaluates and prints the table."""
    out = tmp_path / "exp"
    p = _torchrun("-m", "ali", "experiment", "figure6", "--out", str(out), "--device", "cpu")
    assert p.returncode == 0, _failure(p)
    assert p.stdout.count("# Figure 6") == 1 and p.stdout.count("writing synthetic") == 1
    run = json.loads((out / "runs" / "celeba-seed0" / "config.json").read_text())["run"]
    assert run["world_size"] == 2 and run["batch_per_process"] * 2 == 16
    assert load_checkpoint(out / "runs" / "celeba-seed0" / "checkpoints" / "latest.pt")[
        "step"] == 4
    result = json.loads((out / "results.json").read_text())
    assert result["experiment"] == "figure6" and result["rows"][0]["ours"] > 0


def test_a_side_by_side_experiment_refuses_torchrun_in_one_line(monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    assert main(["experiment", "figure8", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "run it without torchrun" in err
