"""MkDocs hook: the configuration reference, generated from ``ali.config`` at build time.

It also strips the Sphinx roles (``:class:``, ``:func:``, ...) of the docstrings from the
rendered pages (:func:`on_page_content`).

``docs/configuration.md`` holds two markers, replaced when the page is built:

- ``<!-- config-keys -->``: one table per section (``model``, each optional model section,
  ``data``, ``train``) with every key, its type, its default and its attribute docstring (the
  string literal under each dataclass field, read with ``ast``), then the legacy flat keys;
- ``<!-- config-presets -->``: every registered preset (``ali.config.config_names()``) with
  its docstring's first sentence and its main settings, read from the preset itself.

The build fails if a key that ``ali.config.all_keys()`` accepts is missing from the tables, so
the reference cannot fall behind the code. Nothing here is typed by hand.
"""

from __future__ import annotations

import ast
import dataclasses
import re
import sys
import typing
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"

KEYS_MARKER = "<!-- config-keys -->"
PRESETS_MARKER = "<!-- config-presets -->"


def _config_module():
    if str(SRC) not in sys.path:
        sys.path.insert(0, str(SRC))
    import ali.config as config  # noqa: PLC0415 (imports no torch)

    return config


def _clean(text: str) -> str:
    """A docstring as one Markdown table cell: reST roles and double backticks made plain."""
    text = re.sub(r":[a-z]+:`~?([^`]+)`", r"`\1`", text)
    text = text.replace("``", "`")
    text = " ".join(text.split())
    return text.replace("|", "\\|")


def attribute_docs(cls: type) -> dict[str, str]:
    """``{field: docstring}`` of the string literals written under the fields of ``cls``."""
    import inspect

    tree = ast.parse(inspect.getsource(sys.modules[cls.__module__]))
    node = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls.__name__)
    docs: dict[str, str] = {}
    body = node.body
    for a, b in zip(body, body[1:]):
        if (isinstance(a, ast.AnnAssign) and isinstance(a.target, ast.Name)
                and isinstance(b, ast.Expr) and isinstance(b.value, ast.Constant)
                and isinstance(b.value.value, str)):
            docs[a.target.id] = inspect.cleandoc(b.value.value)
    return docs


def _type_name(t: object) -> str:
    if typing.get_origin(t) in (typing.Union, getattr(__import__("types"), "UnionType")):
        args = [a for a in typing.get_args(t) if a is not type(None)]
        return " \\| ".join(_type_name(a) for a in args) + " \\| None"
    return getattr(t, "__name__", str(t))


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        v = f.default
    elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        v = f.default_factory()  # type: ignore[misc]
    else:
        return ""
    if v is None:
        return "off" if dataclasses.is_dataclass(_section_type(f)) else "None"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, str):
        return f'`"{v}"`'
    return f"`{v!r}`"


def _section_type(f: dataclasses.Field) -> object:
    config = _config_module()
    return config.SECTIONS.get(f.name)


def _table(prefix: str, cls: type, skip: set[str] = frozenset()) -> tuple[list[str], set[str]]:
    docs = attribute_docs(cls)
    hints = typing.get_type_hints(cls)
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    keys = set()
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        key = f"{prefix}.{f.name}"
        keys.add(key)
        rows.append(f"| `{key}` | {_type_name(hints[f.name])} | {_default(f)} | "
                    f"{_clean(docs.get(f.name, '')) or '(no docstring)'} |")
    return rows, keys


def keys_markdown() -> str:
    config = _config_module()
    out: list[str] = []
    covered: set[str] = set()
    sections = {"model": config.ModelConfig, "data": config.DataConfig,
                "train": config.TrainConfig}
    for name, cls in sections.items():
        out += [f"### `{name}`", "", _clean(cls.__doc__ or ""), ""]
        skip = set(config.SECTIONS) if name == "model" else set()
        rows, keys = _table(name, cls, skip)
        out += rows + [""]
        covered |= keys
        if name != "model":
            continue
        for sec, sec_cls in config.SECTIONS.items():
            kinds = [k for k, v in config.SECTIONS_OF_KIND.items() if sec in v]
            excl = config.EXCLUSIVE.get(sec, ())
            out += [f"#### `model.{sec}` (optional section, off by default)", "",
                    _clean(sec_cls.__doc__ or ""), "",
                    f"Switch it with `--set model.{sec}=on` or `off`; setting one of its keys "
                    f"switches it on. Applies to `model.kind` = "
                    f"{', '.join(f'`{k}`' for k in kinds)}"
                    + (f"; cannot be combined with {', '.join(f'`model.{e}`' for e in excl)}"
                       if excl else "")
                    + (" (needs image networks)" if sec in config.LABELLED_SECTIONS else "")
                    + ".", ""]
            rows, keys = _table(f"model.{sec}", sec_cls)
            out += rows + [""]
            covered |= keys | {f"model.{sec}"}
    out += ["### Legacy keys", "",
            "The flat model keys of earlier versions still work; each sets a field of a "
            "section:", "", "| key | sets |", "|---|---|"]
    for key, (sec, name, typ) in config.LEGACY_MODEL_KEYS.items():
        target = (f"`model.{sec}.{name}`" if sec else
                  " or ".join(f"`model.{s}.{name}`" for s in config.LABELLED_SECTIONS))
        note = ""
        if sec in ("cycle", "r1") and name == "weight":
            note = f" (0 switches `model.{sec}` off, > 0 switches it on)"
        elif sec is None:
            note = (" (only where one is on; another value than 0 where neither is, "
                    "refused on the command line)")
        elif name != "weight":
            note = " (only where that section is on)"
        out.append(f"| `model.{key}` ({typ.__name__}) | {target}{note} |")
        covered.add(f"model.{key}")
    missing = sorted(set(config.all_keys()) - covered)
    if missing:
        raise RuntimeError(f"configuration reference misses keys: {', '.join(missing)}")
    return "\n".join(out) + "\n"


def presets_markdown() -> str:
    config = _config_module()
    rows = ["| preset | what | model | data | steps x batch | sections on |",
            "|---|---|---|---|---|---|"]
    for name in config.config_names():
        cfg = config.get_config(name)
        first = _clean((config._REGISTRY[name].__doc__ or "").strip().split("\n\n")[0])
        m = cfg.model
        on = [s for s in config.SECTIONS if getattr(m, s) is not None]
        sec = ", ".join(f"`{s}`" for s in on) or "none"
        data = cfg.data.name + (f" ({cfg.data.train_split})" if m.images else "")
        rows.append(f"| `{name}` | {first} | {m.kind}, nets `{m.nets}`, latent {m.latent_dim} | "
                    f"{data} | {cfg.train.steps:,} x {cfg.train.batch_size} | {sec} |")
    return "\n".join(rows) + "\n"


def on_page_markdown(markdown: str, page, config, files) -> str:  # noqa: ANN001 (mkdocs hook)
    if KEYS_MARKER in markdown:
        markdown = markdown.replace(KEYS_MARKER, keys_markdown())
    if PRESETS_MARKER in markdown:
        markdown = markdown.replace(PRESETS_MARKER, presets_markdown())
    return markdown


_ROLE = re.compile(r"(?<![\w-]):?(?:class|func|meth|mod|data|attr|exc|obj):\s*(<code>)~?")


def on_page_content(html: str, page, config, files) -> str:  # noqa: ANN001 (mkdocs hook)
    """The docstrings use Sphinx roles (:class:`x`); mkdocstrings renders them as text plus
    code, so drop the role and a leading ``~``, keeping the code."""
    return _ROLE.sub(r"\1", html)


if __name__ == "__main__":  # python docs/gen_config.py: print the generated reference
    print(presets_markdown())
    print(keys_markdown())
