"""Property tests: random and mutated input reaches the user only as one-line AliErrors.

Each property runs a modest number of examples (``deadline=None``: the machine is shared, and
a slow example is not a failure); ``ALI_FUZZ_EXAMPLES=5000 pytest tests/test_fuzz.py`` runs
more.
"""

import json
import math
import os
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ali.config import Config, all_keys, apply_overrides, get_config
from ali.errors import AliError, CheckpointError, ConfigError
from ali.train import load_checkpoint, train

from conftest import tiny_toy

EXAMPLES = int(os.environ.get("ALI_FUZZ_EXAMPLES", "200"))
FAST = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])

# ------------------------------------------------------------------------------- overrides

TOY = get_config("toy").to_dict()
KEYS = all_keys()
# Values of the right shape for some key, so that many overrides get past parsing and reach
# the validation of values and of combinations.
TYPICAL = sorted({json.dumps(v) if not isinstance(v, str) else v
                  for sec in ("model", "data", "train") for v in TOY[sec].values()}
                 | {"gan", "vae", "gaussian", "deterministic", "rollback", "linear", "ring",
                    "none", "null", "true", "off", "0", "-1", "1e3", "1.5", "nan", "inf", "-inf",
                    "1e400", "0x10", "1_000", "", " ", "9" * 5000})


def _mutate(text: str, data) -> str:
    """Drop, duplicate, replace or insert one character of ``text``."""
    if not text:
        return data.draw(st.text(max_size=3))
    i = data.draw(st.integers(0, len(text) - 1))
    op = data.draw(st.sampled_from(["drop", "dup", "replace", "insert"]))
    c = data.draw(st.characters())
    return {"drop": text[:i] + text[i + 1:], "dup": text[:i] + text[i] + text[i:],
            "replace": text[:i] + c + text[i + 1:], "insert": text[:i] + c + text[i:]}[op]


@st.composite
def override(draw):
    key = draw(st.sampled_from(KEYS))
    value = draw(st.one_of(
        st.sampled_from(TYPICAL),
        st.integers(-10**30, 10**30).map(str),
        st.floats(allow_nan=True, allow_infinity=True).map(repr),
        st.text(max_size=12)))
    item = f"{key}={value}"
    kind = draw(st.sampled_from(["valid-key", "valid-key", "mutated", "no-equals", "random"]))
    if kind == "mutated":
        item = _mutate(item, _Drawer(draw))
    elif kind == "no-equals":
        item = item.replace("=", "")
    elif kind == "random":
        item = draw(st.text(max_size=30))
    return item


class _Drawer:
    """``draw`` of a composite strategy, shaped like ``st.data()`` for :func:`_mutate`."""

    def __init__(self, draw):
        self.draw = draw


def _one_line_config_error(e: ConfigError) -> None:
    assert str(e) and "\n" not in str(e) and "\r" not in str(e), repr(str(e))


@FAST
@given(st.lists(override(), max_size=4))
def test_overrides_raise_only_config_errors(items):
    try:
        cfg = get_config("toy", items)
    except ConfigError as e:
        _one_line_config_error(e)
        return
    # Whatever got through is a valid config that survives its own JSON round trip.
    assert Config.from_dict(json.loads(cfg.to_json())) == cfg
    assert apply_overrides(cfg, []) == cfg


@st.composite
def config_name(draw):
    if draw(st.booleans()):
        return draw(st.text(max_size=12))
    return _mutate(draw(st.sampled_from(["toy", "toy_paper"])), _Drawer(draw))


@FAST
@given(config_name())
def test_config_names_raise_only_config_errors(name):
    try:
        assert get_config(name).name == name
    except ConfigError as e:
        _one_line_config_error(e)


# ------------------------------------------------------------------------------- from_dict

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-10**20, 10**20) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=3),
    max_leaves=10)


@st.composite
def mutated_config_dict(draw):
    """The toy config's dict with a few keys replaced, removed or added."""
    d = json.loads(json.dumps(TOY))
    for _ in range(draw(st.integers(1, 3))):
        section = draw(st.sampled_from(["model", "data", "train", "name", "extra"]))
        op = draw(st.sampled_from(["set", "set", "del", "add"]))
        if section in ("name", "extra") or not isinstance(d.get(section), dict):
            if op == "del":
                d.pop(section, None)
            else:
                d[section] = draw(JSON)
            continue
        key = draw(st.sampled_from(sorted(d[section]) or ["x"]))
        if op == "del":
            d[section].pop(key, None)
        elif op == "add":
            d[section][draw(st.text(max_size=8))] = draw(JSON)
        else:
            d[section][key] = draw(st.one_of(JSON, st.sampled_from(
                [0, -1, 1, 1.0, 0.5, 2, math.nan, math.inf, 10**400, True, "", "cpu"])))
    return d


@FAST
@given(st.one_of(JSON, mutated_config_dict()))
def test_from_dict_raises_only_config_errors(d):
    try:
        cfg = Config.from_dict(d)
    except ConfigError as e:
        _one_line_config_error(e)
        return
    assert Config.from_dict(json.loads(cfg.to_json())) == cfg


# ------------------------------------------------------------------------------- checkpoints

class _Real(tuple):
    """(bytes, folder) with a short repr: hypothesis prints its arguments on failure."""

    def __repr__(self) -> str:
        return f"<checkpoint of {len(self[0])} bytes>"


@pytest.fixture(scope="module")
def real_checkpoint(tmp_path_factory):
    """The bytes of a real tiny checkpoint, and a folder for the mutants."""
    run = tmp_path_factory.mktemp("fuzz-run")
    train(tiny_toy("train.steps=2"), run_dir=run, quiet=True)
    return _Real(((run / "checkpoints" / "latest.pt").read_bytes(),
                  tmp_path_factory.mktemp("mutants")))


@st.composite
def mutation(draw, size):
    """A list of byte edits: flips, truncation, overwritten runs, inserted junk."""
    edits = []
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "flip", "truncate", "zero", "insert"]))
        pos = draw(st.integers(0, size - 1))
        edits.append((op, pos, draw(st.integers(0, 255)), draw(st.integers(1, 64))))
    return edits


def _apply(data: bytes, edits) -> bytes:
    b = bytearray(data)
    for op, pos, byte, n in edits:
        pos = min(pos, max(len(b) - 1, 0))
        if op == "flip" and b:
            b[pos] ^= (byte or 1)
        elif op == "truncate":
            del b[pos:]
        elif op == "zero":
            b[pos:pos + n] = bytes(len(b[pos:pos + n]))
        elif op == "insert":
            b[pos:pos] = bytes([byte]) * n
    return bytes(b)


def _mutant(real_checkpoint, data_or_edits) -> Path:
    data, folder = real_checkpoint
    path = folder / "latest.pt"
    path.write_bytes(data_or_edits if isinstance(data_or_edits, bytes)
                     else _apply(data, data_or_edits))
    return path


@FAST
@given(st.data())
def test_mutated_checkpoints_raise_only_checkpoint_errors(real_checkpoint, data):
    size = len(real_checkpoint[0])
    source = data.draw(st.one_of(mutation(size), mutation(size), st.binary(max_size=256)))
    path = _mutant(real_checkpoint, source)
    try:
        ckpt = load_checkpoint(path)
    except CheckpointError as e:
        assert str(e).isprintable(), repr(str(e))  # one line, no terminal escapes
        return
    assert isinstance(ckpt["model"], dict) and isinstance(ckpt["step"], int)


# Each example trains 2 steps.
@settings(max_examples=max(1, EXAMPLES // 5), deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_resume_from_mutated_checkpoint_raises_only_ali_errors(real_checkpoint, tmp_path, data):
    """A mutant that still unpickles must not crash the restore (wrong shapes, keys, types)."""
    size = len(real_checkpoint[0])
    mutant = _apply(real_checkpoint[0], data.draw(mutation(size)))
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True, exist_ok=True)
    (run / "checkpoints" / "latest.pt").write_bytes(mutant)
    try:
        res = train(tiny_toy("train.steps=2"), run_dir=run, resume=True, quiet=True)
    except AliError as e:
        assert "\n" not in str(e), repr(str(e))
        return
    assert res.step == 2


def test_checkpoints_are_not_executable_pickles(real_checkpoint, tmp_path):
    """weights_only loading: a pickle that would call a function is refused, not run."""
    import pickle

    class Boom:
        def __reduce__(self):
            return (print, ("this must never run",))

    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "step": 0, "config": {}, "x": Boom()}, path,
               pickle_module=pickle)
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_checkpoint(path)
