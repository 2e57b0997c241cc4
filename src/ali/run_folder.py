"""A run folder's own files besides the checkpoints: ``config.json`` (what the run is, and how
it ran) and ``metrics.jsonl`` (one JSON record per logging interval).

``metrics.jsonl`` never goes back in steps: when a run resumes (after a crash, a kill or an
interruption, the steps logged after its checkpoint were never saved) or rolls back, the records
after the step it continues from are dropped before new ones are appended, so each step is
logged once, by the run that the checkpoints hold.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .checkpoint import atomic_write, remove_stale_temporaries
from .errors import CheckpointError, one_line

METRICS = "metrics.jsonl"
CONFIG = "config.json"


def prepare_run_folder(run_dir: Path, record: dict[str, Any]) -> None:
    """Create ``run_dir``, write its ``config.json`` (``record``) and remove the temporary
    checkpoint files of killed writers; a one-line error when the folder cannot be used."""
    if run_dir.exists() and not run_dir.is_dir():
        raise CheckpointError(f"{run_dir} exists and is not a folder; choose another --out")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / CONFIG).write_text(json.dumps(record, indent=2) + "\n")
        remove_stale_temporaries(run_dir / "checkpoints")
    except OSError as e:
        raise CheckpointError(f"cannot use run folder {run_dir}: {one_line(e)}") from None


class MetricsFile:
    """``run_dir/metrics.jsonl``, opened for appending after the records of steps up to
    ``start`` (later ones are dropped: see the module's docstring)."""

    def __init__(self, run_dir: Path, start: int) -> None:
        self.path = run_dir / METRICS
        self.file = None
        self.truncate_after(start)

    def truncate_after(self, step: int) -> None:
        """Drop the records of steps after ``step`` (and any torn last line), atomically."""
        if self.file is not None:
            self.file.close()
            self.file = None
        try:
            if self.path.is_file():
                lines = self.path.read_text().splitlines()
                keep = [line for line in lines if _step_of(line) is not None
                        and _step_of(line) <= step]
                if keep != lines:
                    text = "".join(line + "\n" for line in keep).encode()
                    atomic_write(self.path, lambda f: f.write(text))
            self.file = open(self.path, "a")
        except (OSError, CheckpointError) as e:
            raise CheckpointError(f"cannot use {self.path}: {one_line(e)}") from None

    def write(self, record: dict[str, Any]) -> None:
        """Append ``record`` (flushed: a reader sees whole lines)."""
        assert self.file is not None
        try:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()
        except OSError as e:  # a full disk: the checkpoints on disk are still whole
            raise CheckpointError(f"cannot write {self.file.name} at step {record['step']}: "
                                  f"{e.strerror or e}") from None

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


def _step_of(line: str) -> int | None:
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None
    step = record.get("step") if isinstance(record, dict) else None
    return step if isinstance(step, int) else None
