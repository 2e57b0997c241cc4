"""The engine's structure and its callbacks: the import graph, the loop's length, what the
metrics file holds after divergence, resume and rollback, TensorBoard, the samplers' release,
and ali bench on every label kind."""

import ast
import importlib
import inspect
import json
import pkgutil
from pathlib import Path

import pytest
import torch

import ali
from ali.cli import main
from ali.errors import DivergenceError
from ali.model import Losses
from ali.build import build_model
from ali.train import load_checkpoint, train

from conftest import tiny_toy

PACKAGE = Path(ali.__file__).resolve().parent


# --------------------------------------------------------------------------- structure

def _modules() -> dict[str, Path]:
    out = {"ali": PACKAGE / "__init__.py"}
    for info in pkgutil.walk_packages([str(PACKAGE)], prefix="ali."):
        spec = importlib.util.find_spec(info.name)
        out[info.name] = Path(spec.origin)
    return out


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The modules of ``ali`` that module ``name`` imports with relative imports, at the top
    level or inside functions (``from .x import y``, ``from .. import x``), but not those
    only a type checker reads."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    tree = ast.parse(path.read_text())
    # Imports under `if TYPE_CHECKING:` never run (ali/__init__ names its lazy exports so).
    typing_only = {id(n) for top in ast.walk(tree) if isinstance(top, ast.If)
                   and isinstance(top.test, ast.Name) and top.test.id == "TYPE_CHECKING"
                   for n in ast.walk(top)}
    for node in ast.walk(tree):
        if (not isinstance(node, ast.ImportFrom) or node.level == 0
                or id(node) in typing_only):
            continue
        base = package.split(".")
        base = base[:len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
        if node.module and target in known:
            out.add(target)
        for alias in node.names:        # from . import x, where x is a module
            if f"{target}.{alias.name}" in known:
                out.add(f"{target}.{alias.name}")
            elif not node.module and target in known:
                out.add(target)
    out.discard(name)
    return out


def test_every_module_imports_and_the_import_graph_has_no_cycle():
    modules = _modules()
    for name in modules:
        if not name.endswith("__main__"):       # that one runs the command line
            importlib.import_module(name)
    graph = {n: _imports(n, p, set(modules)) for n, p in modules.items()}
    assert graph["ali.train"] and graph["ali.speed"]          # the scan sees imports
    state: dict[str, int] = {}                                # 1: on the path, 2: done

    def visit(n: str, path: list[str]) -> None:
        state[n] = 1
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                cycle = path[path.index(m):] + [m] if m in path else [n, m]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if m not in state:
                visit(m, path + [m])
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n, [n])


def test_the_training_loop_fits_on_one_screen():
    from ali.engine import fit
    assert len(inspect.getsource(fit).splitlines()) <= 50


# --------------------------------------------------------------------------- metrics.jsonl

def _poison(model, bad_steps):
    """``model.losses`` returns NaN losses at the given 1-based calls."""
    real, calls = model.losses, [0]

    def losses(x, z):
        calls[0] += 1
        out = real(x, z)
        if calls[0] in bad_steps:
            nan = float("nan")
            return Losses(out.g * nan, None if out.d is None else out.d * nan, out.stats)
        return out

    model.losses = losses
    return model


def _records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_a_non_finite_record_is_not_written(tmp_path):
    cfg = tiny_toy("train.steps=6", "train.log_every=1", "train.checkpoint_every=2")
    with pytest.raises(DivergenceError, match="diverged at step 3: non-finite loss"):
        train(cfg, run_dir=tmp_path, quiet=True, model=_poison(build_model(cfg), {3}))
    assert [r["step"] for r in _records(tmp_path)] == [1, 2]


def test_a_rollback_drops_the_records_after_the_good_step(tmp_path):
    # Good checkpoint at 2, a logged step 3, NaN at 4: the run continues from 2, and the
    # file holds each step once, in order.
    cfg = tiny_toy("train.steps=6", "train.log_every=1", "train.checkpoint_every=2",
                   "train.on_divergence=rollback")
    res = train(cfg, run_dir=tmp_path, quiet=True, model=_poison(build_model(cfg), {4}))
    assert [r["step"] for r in _records(tmp_path)] == [1, 2, 3, 4, 5, 6]
    assert [r["step"] for r in res.history] == [1, 2, 3, 4, 5, 6]


def test_a_resume_after_a_crash_logs_each_step_once(tmp_path):
    over = ("train.steps=6", "train.log_every=1", "train.checkpoint_every=4")

    def crash(step, model, run_dir):
        if step == 5:
            raise RuntimeError("power cut")

    with pytest.raises(RuntimeError, match="power cut"):
        train(tiny_toy(*over), run_dir=tmp_path, quiet=True, hooks=[crash])
    assert [r["step"] for r in _records(tmp_path)] == [1, 2, 3, 4, 5]
    assert load_checkpoint(tmp_path / "checkpoints" / "latest.pt")["step"] == 4
    train(tiny_toy(*over), run_dir=tmp_path, resume=True, quiet=True)
    assert [r["step"] for r in _records(tmp_path)] == [1, 2, 3, 4, 5, 6]


# --------------------------------------------------------------------------- callbacks

class _Writer:
    def __init__(self):
        self.calls = []

    def add_scalar(self, tag, value, step):
        self.calls.append(("scalar", tag, step))

    def add_image(self, tag, img, step, dataformats):
        self.calls.append(("image", tag, step))

    def flush(self):
        pass


def test_tensorboard_gets_each_record_without_reading_the_metrics_file(tmp_path, monkeypatch):
    from ali import report

    def no_reading(*args, **kwargs):
        raise AssertionError("metrics.jsonl was read")

    monkeypatch.setattr(report, "read_records", no_reading)
    monkeypatch.setattr(report, "_last_record", no_reading)
    writer = _Writer()
    tb = report.TensorBoard(2, None, writer_factory=lambda d: writer)
    train(tiny_toy("train.steps=6", "train.log_every=2"), run_dir=tmp_path, quiet=True,
          callbacks=[tb])
    assert [c[2] for c in writer.calls if c[1] == "train/loss_d"] == [2, 4, 6]


def test_the_samplers_are_closed_at_the_end_even_on_an_error(monkeypatch):
    import ali.run
    closed = []
    real = ali.run.make_sampler

    def spying(*args, **kwargs):
        sampler = real(*args, **kwargs)
        sampler.close = lambda: closed.append(True)
        return sampler

    monkeypatch.setattr(ali.run, "make_sampler", spying)
    train(tiny_toy(), quiet=True)
    assert closed == [True]
    cfg = tiny_toy("train.log_every=1")
    with pytest.raises(DivergenceError):
        train(cfg, quiet=True, model=_poison(build_model(cfg), {1}))
    assert closed == [True, True]


# --------------------------------------------------------------------------- bench

@pytest.mark.parametrize("variant", [
    ["model.conditional=true", "model.label_dim=2"],
    ["model.conditional=true"],
    ["model.conditional=true", "model.attributes=true", "model.label_dim=3"],
    ["model.semi_supervised=true"],
])
def test_bench_draws_labels_of_the_model_kind(variant, capsys):
    sets = [a for v in variant for a in ("--set", v)]
    assert main(["bench", "tiny", "--steps", "1", "--repeats", "1", "--json", *sets]) == 0
    assert json.loads(capsys.readouterr().out)["flops_per_image"] > 0


# --------------------------------------------------------------------------- private RNGs

@pytest.fixture
def tiny_npz(tmp_path):
    import numpy as np
    rng = np.random.default_rng(0)
    path = tmp_path / "tiny.npz"
    np.savez(path, x_train=rng.integers(0, 256, (64, 8, 8, 3), dtype=np.uint8),
             x_test=rng.integers(0, 256, (16, 8, 8, 3), dtype=np.uint8))
    return path


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_images_and_tensorboard_leave_the_training_rng_alone(tiny_npz, tmp_path, capsys):
    """`ali train` (run images every checkpoint) and train() with a TensorBoard callback
    reach the parameters of a plain train() with the same seed."""
    from ali.config import get_config
    from ali.data import load_dataset
    from ali.report import TensorBoard

    over = [f"data.root={tiny_npz}", "train.steps=6", "train.checkpoint_every=2",
            "train.log_every=2", "train.device=cpu", "train.progress=off"]
    plain = train(get_config("tiny", over), quiet=True).model.state_dict()
    run = tmp_path / "run"
    assert main(["train", "tiny", *[a for o in over for a in ("--set", o)],
                 "--out", str(run)]) == 0
    assert sorted(p.name for p in (run / "images").iterdir())[:2] == [
        "reconstructions-00000002.png", "reconstructions-00000004.png"]
    assert _same(load_checkpoint(run / "checkpoints" / "latest.pt")["model"], plain)
    cfg = get_config("tiny", over)
    writer = _Writer()
    tb = TensorBoard(2, load_dataset(cfg.data), writer_factory=lambda d: writer)
    res = train(cfg, run_dir=tmp_path / "tb", quiet=True, callbacks=[tb])
    assert ("image", "samples", 4) in writer.calls
    assert _same(res.model.state_dict(), plain)


def test_run_images_follow_their_own_interval_not_the_log_steps(tiny_npz, tmp_path, capsys):
    # Logs at 3 and 6 (and the end), images every 2 steps: 2, 4, 6.
    over = [f"data.root={tiny_npz}", "train.steps=6", "train.checkpoint_every=2",
            "train.log_every=3", "train.device=cpu", "train.progress=off"]
    run = tmp_path / "run"
    assert main(["train", "tiny", *[a for o in over for a in ("--set", o)],
                 "--out", str(run)]) == 0
    assert sorted(p.name for p in (run / "images").iterdir() if p.name.startswith("samples")) \
        == ["samples-00000002.png", "samples-00000004.png", "samples-00000006.png"]


def test_a_trained_model_given_to_train_keeps_its_data_initialisation(tiny_npz, tmp_path):
    """ali.load, then train(cfg, model=...) to train it further: the engine set the decoder's
    per-pixel bias back to the data's log-odds (and refitted a table model's standardisation),
    overwriting what the model had learned. A model as built is still initialised from the
    data."""
    import numpy as np

    from ali.config import get_config
    from ali.nets.conv import PixelBias

    cfg = get_config("tiny", [f"data.root={tiny_npz}", "train.steps=1", "train.progress=off"])
    fresh = train(cfg, quiet=True).model
    bias = next(m for m in fresh.decoder.modules() if isinstance(m, PixelBias)).bias
    with torch.no_grad():
        bias.fill_(0.5)
    again = next(m for m in train(cfg, model=fresh, quiet=True).model.decoder.modules()
                 if isinstance(m, PixelBias)).bias
    assert torch.allclose(again, torch.full_like(again, 0.5), atol=2e-4)   # one Adam step
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "t.npz", x=rng.normal(3, 2, (64, 3)).astype(np.float32),
             y=rng.integers(0, 2, 64))
    tab = get_config("table", [f"data.root={tmp_path / 't.npz'}", "train.steps=1",
                               "train.progress=off", "train.batch_size=16"])
    model = train(tab, quiet=True).model
    assert abs(float(model.scaler.mean.mean()) - 3) < 1         # fitted to the data
    with torch.no_grad():
        model.scaler.mean.fill_(-1.0)
    assert torch.equal(train(tab, model=model, quiet=True).model.scaler.mean,
                       torch.full_like(model.scaler.mean, -1.0))
