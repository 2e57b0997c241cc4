"""The documentation cannot drift from the code.

- The ```python blocks of README.md and docs/getting-started.md are executed, in order, in one
  namespace per file, in a temporary folder. To keep them fast, two documented spellings are
  made small before running: ``train.steps=N`` (in a config override) becomes
  ``train.steps=SMALL_STEPS``, and a line ``STEPS = N`` becomes ``STEPS = SMALL_STEPS``. Write
  examples with those spellings and they run here as they would for a reader.
- Every ``ali ...`` command in a ```bash block of README.md and docs/*.md (also after
  ``torchrun ... -m ali``) is parsed by the real command-line parser, its ``--set`` keys are
  checked against :func:`ali.config.all_keys`, and ``ali train|arch|bench PRESET --set ...``
  builds the preset with those overrides. Shell variables (``$SPLIT``) are left out. ``python benchmarks/X.py`` names an existing script.
- The Quick start block is exactly the two commands that ``.ci/run`` runs.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
EXECUTED = [README, DOCS / "getting-started.md"]
SMALL_STEPS = 30

QUICK_START = [
    'pip install torch==2.13.0 -e ".[plots]" && ali toy --quick',
    'pip install torch==2.13.0 -e ".[test]" && python -m pytest -q tests',
]

FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.S | re.M)


def blocks(path: Path, lang: str) -> list[tuple[int, str]]:
    """(line number, code) of each fenced block of ``lang`` in ``path``."""
    text = path.read_text()
    return [(text[:m.start()].count("\n") + 1, m.group(2))
            for m in FENCE.finditer(text) if m.group(1) == lang]


def shrink(code: str) -> str:
    code = re.sub(r"train\.steps=\d[\d_]*", f"train.steps={SMALL_STEPS}", code)
    return re.sub(r"^(\s*)STEPS = \d[\d_]*\s*$", rf"\g<1>STEPS = {SMALL_STEPS}", code, flags=re.M)


@pytest.mark.parametrize("path", EXECUTED, ids=lambda p: p.name)
def test_python_examples_run(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("sklearn")
    found = blocks(path, "python")
    assert found, f"{path.name} has no python examples"
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__docs__"}
    for line, code in found:
        try:
            exec(compile(shrink(code), f"{path.name}:{line}", "exec"), namespace)
        except Exception as e:  # noqa: BLE001 (say which example broke)
            pytest.fail(f"the python example at {path.name} line {line} failed: "
                        f"{type(e).__name__}: {e}")


def test_quick_start_is_the_two_commands() -> None:
    text = README.read_text()
    section = text.split("## Quick start", 1)[1]
    lang, code = FENCE.search(section).groups()
    lines = [ln for ln in code.splitlines() if ln.strip()]
    assert lines == QUICK_START, lines
    assert QUICK_START[1] in (ROOT / ".ci" / "run").read_text().splitlines()


def _commands(code: str) -> list[str]:
    """The shell commands of a bash block: continuations joined, comments dropped, ``&&``
    chains split."""
    code = code.replace("\\\n", " ")
    out = []
    for line in code.splitlines():
        line = line.split(" #", 1)[0].strip()
        if line and not line.startswith("#"):
            out += [c.strip() for c in line.split("&&")]
    return out


def documented_commands() -> list[tuple[str, str]]:
    found = []
    for path in [README, *sorted(DOCS.glob("*.md"))]:
        for line, code in blocks(path, "bash"):
            for cmd in _commands(code):
                found.append((f"{path.name}:{line}", cmd))
    return found


def test_documented_commands_parse() -> None:
    from ali.cli import build_parser
    from ali.config import all_keys, config_names, get_config

    parser = build_parser()
    keys = set(all_keys())
    presets = set(config_names())
    checked = 0
    problems = []
    for where, cmd in documented_commands():
        if re.match(r"^[A-Z_]+=", cmd):        # a shell variable, e.g. SPLIT="--set ..."
            continue
        words = [w for w in shlex.split(cmd) if not w.startswith("$")]
        if words[:1] == ["python"] and len(words) > 1 and words[1].startswith("benchmarks/"):
            if not (ROOT / words[1]).is_file():
                problems.append(f"{where}: no script {words[1]}")
            continue
        if words[:1] == ["torchrun"] and "-m" in words:
            i = words.index("-m")
            words = words[i + 1:]
        if words[:1] == ["python"] and words[1:3] == ["-m", "ali"]:
            words = words[2:]
        if words[:1] != ["ali"]:
            continue
        args = words[1:]
        checked += 1
        try:
            ns = parser.parse_args(args)
        except SystemExit:
            problems.append(f"{where}: `{cmd}` does not parse")
            continue
        sets = list(getattr(ns, "set", None) or [])
        for s in sets:
            key = s.split("=", 1)[0]
            if key not in keys:
                problems.append(f"{where}: unknown key {key!r} in `{cmd}`")
        name = getattr(ns, "name", None)
        if args and args[0] in ("train", "arch", "bench") and name:
            if name not in presets:
                if name.islower():
                    problems.append(f"{where}: unknown preset {name!r} in `{cmd}`")
                continue
            if not any(re.search(r"[A-Z]{2,}", s.split("=", 1)[1]) for s in sets):
                try:
                    get_config(name, sets)
                except Exception as e:  # noqa: BLE001
                    problems.append(f"{where}: `{cmd}`: {e}")
    assert not problems, "\n".join(problems)
    assert checked >= 20, checked


def test_images_md_gives_the_fix_for_a_baseline_on_a_preset_with_the_cycle_term(capsys) -> None:
    # `--set model.kind=gan` alone is refused on mnist (the cycle term is ALI's): the page that
    # says the baselines work with every family must give the override, in a command that builds.
    from ali.cli import main

    assert main(["arch", "mnist", "--set", "model.kind=gan"]) == 2
    assert "add --set model.cycle=off" in capsys.readouterr().err
    cmd = "ali train mnist --set model.cycle=off --set model.kind=gan"
    assert cmd in " ".join((DOCS / "images.md").read_text().split())
    assert main(["arch", *cmd.split()[2:]]) == 0
