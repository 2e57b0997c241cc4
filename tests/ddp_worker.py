"""One process of a multi-process run, started by torchrun from test_distributed.py.

    python -m torch.distributed.run --standalone --nproc_per_node=2 tests/ddp_worker.py \
        RUN_DIR OUT_DIR KEY=VALUE...

Trains config ``tiny`` with the overrides into RUN_DIR and saves this rank's final state dict
to OUT_DIR/rank<RANK>.pt, with the gloo threads still running after training has returned.
"""

import os
import sys
import time
from pathlib import Path

import torch

import ali.run
import ali.speed
from ali.config import get_config
from ali.train import train

torch.set_num_threads(1)
run_dir, out_dir, overrides = sys.argv[1], sys.argv[2], sys.argv[3:]
# What train.precision=auto settled on in this process (every rank must take rank 0's choice);
# the probe, which auto runs on GPUs only, is made to run on this CPU (the test's overrides
# decide what it picks).
ali.speed.probes_bf16 = lambda device: True
seen = {}
probe = ali.run.probe_precision


def spy(*args, **kwargs):
    settings = probe(*args, **kwargs)
    seen["precision"] = settings.precision
    return settings


def gloo_threads() -> list[str] | None:
    """The gloo threads this process runs, by the names Linux gives them in /proc (None
    elsewhere): they live as long as the process group."""
    tasks = "/proc/self/task"
    if not os.path.isdir(tasks):
        return None
    names = []
    for t in os.listdir(tasks):
        try:
            names.append(Path(tasks, t, "comm").read_text().strip())
        except OSError:                 # a thread that ended while this looked
            pass
    return [n for n in names if "gloo" in n]


ali.run.probe_precision = spy
result = train(get_config("tiny", overrides), run_dir=run_dir, quiet=True)
# A thread can stay listed for a moment after it is joined (the kernel reaps its task after it
# wakes the join): CI, loaded, once saw gloo's tcp loop so. One listed for seconds is alive.
deadline = time.monotonic() + 5
while (threads := gloo_threads()) and time.monotonic() < deadline:
    time.sleep(0.01)
torch.save({"state": result.model.state_dict(), "run_dir": result.run_dir, "threads": threads,
            **seen},
           os.path.join(out_dir, f"rank{os.environ['RANK']}.pt"))
