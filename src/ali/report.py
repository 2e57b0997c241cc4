"""Run reports: one self-contained HTML page per run, and TensorBoard logging.

:func:`write_report` reads a run folder (``config.json``, ``metrics.jsonl``, the PNGs at its top
level, ``eval/*.json``) and writes ``report.html``: the config as a table, the loss and accuracy
curves as inline SVG, the images embedded as base64 PNGs and every metric computed so far. It
needs nothing beyond the standard library. Where the run has no ``interpolations.png`` (training
writes samples and reconstructions only) it renders one from the checkpoint when the run's data
can be read.

:class:`TensorBoard` is a training callback that sends the same scalars and images to
TensorBoard (``RUN_DIR/tensorboard``) when the ``tensorboard`` package is installed
(``pip install 'ali[tensorboard]'``); :func:`tensorboard_hook` is the same as a plain hook.
"""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path
from typing import Any, Callable

from .engine import Callback
from .errors import AliError

CURVES = (("losses", ("loss_d", "loss_g")), ("discriminator accuracy", ("acc_q", "acc_p")))
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")
IMAGE_ORDER = ("samples", "reconstructions", "interpolations")
INTERPOLATION_PAIRS = 8
"""Rows of the interpolations a report renders where training wrote none."""
TB_DIR = "tensorboard"


def read_records(run_dir: Path) -> list[dict[str, Any]]:
    """The records of ``metrics.jsonl`` (unreadable lines skipped)."""
    path = run_dir / "metrics.jsonl"
    out = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict) and "step" in rec:
                out.append(rec)
    return out


def read_metrics(run_dir: Path) -> dict[str, dict[str, Any]]:
    """Every ``eval/*.json`` of the run, by file stem."""
    out = {}
    for path in sorted((run_dir / "eval").glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(data, dict):
            out[path.stem] = data
    return out


def scalars(result: dict[str, Any]) -> dict[str, float]:
    """The finite numbers of a metric's result (not its bookkeeping)."""
    skip = {"step", "seconds", "seed"}
    return {k: float(v) for k, v in result.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in skip
            and math.isfinite(float(v))}


def svg_curves(records: list[dict[str, Any]], keys: tuple[str, ...], title: str,
               width: int = 460, height: int = 240) -> str:
    """An inline SVG line chart of ``keys`` against ``step``."""
    series = {k: [(r["step"], r[k]) for r in records
                  if isinstance(r.get(k), (int, float)) and math.isfinite(r[k])] for k in keys}
    series = {k: v for k, v in series.items() if v}
    if not series:
        return ""
    pts = [p for v in series.values() for p in v]
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    y0, y1 = min(p[1] for p in pts), max(p[1] for p in pts)
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1)
    left, right, top, bottom = 50, 10, 24, 30
    sx = lambda x: left + (x - x0) / (x1 - x0) * (width - left - right)  # noqa: E731
    sy = lambda y: height - bottom - (y - y0) / (y1 - y0) * (height - top - bottom)  # noqa: E731
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'class="chart"><text x="{left}" y="15" font-weight="bold">{html.escape(title)}'
             f'</text>',
             f'<rect x="{left}" y="{top}" width="{width - left - right}" '
             f'height="{height - top - bottom}" fill="none" stroke="#999"/>']
    for y in (y0, (y0 + y1) / 2, y1):
        parts.append(f'<text x="{left - 4}" y="{sy(y) + 4:.1f}" text-anchor="end" '
                     f'font-size="10">{y:.3g}</text>')
    for x in (x0, x1):
        parts.append(f'<text x="{sx(x):.1f}" y="{height - bottom + 14}" text-anchor="middle" '
                     f'font-size="10">{x:g}</text>')
    for i, (k, v) in enumerate(series.items()):
        c = COLOURS[i % len(COLOURS)]
        line = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in v)
        parts.append(f'<polyline fill="none" stroke="{c}" stroke-width="1.5" points="{line}"/>')
        parts.append(f'<text x="{width - right - 4}" y="{top + 14 + 13 * i}" text-anchor="end" '
                     f'font-size="11" fill="{c}">{html.escape(k)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _png_tag(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<figure><img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}"/>'
            f"<figcaption>{html.escape(path.name)}</figcaption></figure>")


def _images(run_dir: Path) -> list[Path]:
    pngs = sorted(run_dir.glob("*.png"))
    rank = lambda p: next((i for i, k in enumerate(IMAGE_ORDER) if p.stem.startswith(k)),  # noqa
                          len(IMAGE_ORDER))
    return sorted(pngs, key=lambda p: (rank(p), p.name))


def render_interpolations(run_dir: Path) -> str | None:
    """Write ``interpolations.png`` from the checkpoint; None, or why it could not."""
    from .data import load_dataset
    from .checkpoint import load_run
    from .viz import grid_scale, held_out, held_out_labels, interpolation_grid, save_grid

    import torch

    try:
        model, cfg, _ = load_run(run_dir)
        if not cfg.model.images or model.encoder is None:
            return None
        data = load_dataset(cfg.data)
        x = held_out(data, 2 * INTERPOLATION_PAIRS)
        # Each row interpolates between two images, so an odd last image has no partner.
        pairs = len(x) // 2
        if not pairs:
            return ("interpolations not rendered: an interpolation needs two held-out images "
                    f"and the run data holds {len(x)}")
        x = x[:2 * pairs]
        y = held_out_labels(data, 2 * pairs) if model.conditional else None
        torch.manual_seed(0)
        imgs = interpolation_grid(model, x[0::2], x[1::2], 8, *((y[0::2], y[1::2]) if
                                                                 y is not None else ()))
        save_grid(imgs, run_dir / "interpolations.png", 10, grid_scale(imgs))
    except AliError as e:
        return f"interpolations not rendered: {' '.join(str(e).split())}"
    return None


def _config_rows(config: dict[str, Any]) -> str:
    rows = []
    for section, values in config.items():
        if isinstance(values, dict):
            for k, v in values.items():
                rows.append(f"<tr><td>{html.escape(section)}.{html.escape(k)}</td>"
                            f"<td>{html.escape(json.dumps(v))}</td></tr>")
        else:
            rows.append(f"<tr><td>{html.escape(section)}</td>"
                        f"<td>{html.escape(json.dumps(values))}</td></tr>")
    return "\n".join(rows)


def _metric_rows(metrics: dict[str, dict[str, Any]]) -> str:
    rows = []
    for name, res in metrics.items():
        vals = ", ".join(f"{k} = {v:.4g}" for k, v in scalars(res).items())
        opts = res.get("options")
        opts = ", ".join(f"{k}={v}" for k, v in opts.items()) if isinstance(opts, dict) else ""
        rows.append(f"<tr><td>{html.escape(name)}</td><td>{html.escape(vals)}</td>"
                    f"<td>{html.escape(str(res.get('step', '')))}</td>"
                    f"<td>{html.escape(opts)}</td></tr>")
    return "\n".join(rows)


STYLE = """body{font-family:sans-serif;margin:2em;max-width:1100px}
table{border-collapse:collapse;margin-bottom:1em}td,th{border:1px solid #ccc;padding:2px 8px;
text-align:left;font-size:13px}figure{display:inline-block;margin:0 1em 1em 0}
img{image-rendering:pixelated;max-width:520px}.chart{margin-right:1em}"""


MIN_CURVE_POINTS = 2
"""Logged records a curve needs: one is a point, not a line."""


def _curves_or_why(records: list[dict[str, Any]], charts: list[str],
                   config: dict[str, Any]) -> str:
    """The charts, or in words why there are none (no records, or too few for a line)."""
    every = (config.get("train") or {}).get("log_every", "?")
    if len(records) >= MIN_CURVE_POINTS:
        return "".join(c for c in charts if c) or "<p>no records</p>"
    if not records:
        return ("<p>No training records yet: <code>metrics.jsonl</code> gets one every "
                f"train.log_every={every} steps.</p>")
    r = records[-1]
    shown = ", ".join(f"{k}={v:.4g}" for k, v in r.items()
                      if k != "step" and isinstance(v, (int, float)))
    return (f"<p>Only one training record (step {r['step']}): too few points to draw curves. "
            f"This run logged every train.log_every={every} steps; a shorter interval "
            f"(<code>--set train.log_every=N</code>) gives curves.</p><p>{html.escape(shown)}</p>")


def write_report(run_dir: Path, out: Path | None = None, render: bool = True) -> Path:
    """Write ``run_dir``'s HTML report (default ``run_dir/report.html``); its path."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise AliError(f"no run folder at {run_dir}")
    config_path = run_dir / "config.json"
    if not config_path.is_file():
        raise AliError(f"{run_dir} is not an ali run folder (it has no config.json)")
    try:
        config = json.loads(config_path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise AliError(f"cannot read {config_path}: {type(e).__name__}") from None
    if not isinstance(config, dict):
        raise AliError(f"{run_dir} is not an ali run folder (its config.json holds a JSON "
                       f"{type(config).__name__}, not a config's object)")
    notes = []
    if render and not (run_dir / "interpolations.png").exists() and \
            (run_dir / "checkpoints" / "latest.pt").is_file():
        note = render_interpolations(run_dir)
        if note:
            notes.append(note)
    records = read_records(run_dir)
    metrics = read_metrics(run_dir)
    step = records[-1]["step"] if records else "?"
    charts = [svg_curves(records, keys, title) for title, keys in CURVES]
    others = sorted({k for r in records for k in r} - {"step"} - {k for _, ks in CURVES
                                                                   for k in ks})
    charts += [svg_curves(records, (k,), k) for k in others]
    title = f"ali run {run_dir.name}: {config.get('name', '?')} at step {step}"
    body = [f"<h1>{html.escape(title)}</h1>",
            f"<p>{html.escape(str(run_dir.resolve()))}</p>",
            *(f"<p><em>{html.escape(n)}</em></p>" for n in notes),
            "<h2>Metrics</h2>",
            ("<table><tr><th>file</th><th>values</th><th>step</th><th>options</th></tr>"
             f"{_metric_rows(metrics)}</table>" if metrics
             else "<p>No metrics yet: run <code>ali eval RUN_DIR --metric NAME</code>.</p>"),
            "<h2>Images</h2>", "".join(_png_tag(p) for p in _images(run_dir)) or "<p>none</p>",
            "<h2>Training curves</h2>", _curves_or_why(records, charts, config),
            "<h2>Config</h2>", f"<table>{_config_rows(config)}</table>"]
    page = (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}"
            f"</title><style>{STYLE}</style></head><body>\n" + "\n".join(body)
            + "\n</body></html>\n")
    out = Path(out) if out else run_dir / "report.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    writer = summary_writer(run_dir)
    if writer is not None:
        for name, res in metrics.items():
            for k, v in scalars(res).items():
                writer.add_scalar(f"eval/{name}/{k}", v, res.get("step", 0))
        writer.close()
    return out


def summary_writer(run_dir: Path):
    """A TensorBoard ``SummaryWriter`` on ``run_dir/tensorboard``, or None when the
    ``tensorboard`` package is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(Path(run_dir) / TB_DIR))


def _last_record(run_dir: Path) -> dict[str, Any] | None:
    """The last record of ``metrics.jsonl``, read from the file's end (not the whole file)."""
    path = run_dir / "metrics.jsonl"
    try:
        with open(path, "rb") as f:
            size = f.seek(0, 2)
            f.seek(max(0, size - 65536))
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and "step" in rec:
            return rec
    return None


def _tensorboard_installed() -> bool:
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        return False
    return True


class TensorBoard(Callback):
    """A training callback sending each logged record's scalars to TensorBoard
    (``RUN_DIR/tensorboard``; the record is passed, the metrics file is not read) and
    sample/reconstruction grids every ``every_images`` steps, drawn on its own RNG stream (the
    training RNG is untouched, so a run with TensorBoard trains as one without)."""

    main_only = True

    def __init__(self, every_images: int, dataset: Any = None,
                 writer_factory: Callable[[Path], Any] | None = None, seed: int = 0) -> None:
        self.every_images, self.dataset, self.seed = every_images, dataset, seed
        self.writer_factory = writer_factory or summary_writer
        self.writer = None

    @staticmethod
    def available() -> bool:
        """Whether the ``tensorboard`` package is installed."""
        return _tensorboard_installed()

    def due(self, step: int, loop) -> bool:
        return loop.run_dir is not None and (loop.record is not None or self._images_due(step))

    def __call__(self, step: int, loop) -> None:
        self.log(step, loop.run.model, loop.run_dir, loop.record)

    def _images_due(self, step: int) -> bool:
        return self.dataset is not None and step % self.every_images == 0

    def log(self, step: int, model, run_dir: Path, record: dict[str, Any] | None) -> None:
        """Send ``record``'s numbers (when given) and, at an image step, the grids."""
        if self.writer is None:
            self.writer = self.writer_factory(Path(run_dir))
        w = self.writer
        if record is not None:
            for k, v in record.items():
                if k != "step" and isinstance(v, (int, float)):
                    w.add_scalar(f"train/{k}", v, step)
        if self._images_due(step):
            from .callbacks import callback_seed, private_rng
            from .model import evaluating
            from .viz import grid, held_out, held_out_labels, reconstruction_grid

            dataset = self.dataset
            device = next(model.parameters()).device
            with private_rng(callback_seed(self.seed, "tensorboard", step), device), \
                    evaluating(model):
                # Conditional runs: attribute samples take held-out images' attributes; class
                # samples cycle through the classes.
                y_s = (held_out_labels(dataset, 64).to(device)
                       if model.conditional and model.attributes else None)
                w.add_image("samples", grid(model.sample(64, y_s), 8), step, dataformats="HWC")
                if model.encoder is not None:
                    x = held_out(dataset, 32).to(device)
                    y = held_out_labels(dataset, 32).to(device) if model.conditional else None
                    w.add_image("reconstructions", grid(reconstruction_grid(model, x, y), 8),
                                step, dataformats="HWC")
        w.flush()

    def close(self) -> None:
        if self.writer is not None and hasattr(self.writer, "close"):
            self.writer.close()
        self.writer = None


def tensorboard_hook(every_images: int, dataset: Any = None,
                     writer_factory: Callable[[Path], Any] = summary_writer):
    """A plain training hook ``hook(step, model, run_dir, record=None)`` doing what
    :class:`TensorBoard` does (for ``train(hooks=...)``); without ``record`` it sends the last
    record of ``metrics.jsonl`` when that is of ``step``. None when TensorBoard is not
    installed."""
    if writer_factory is summary_writer and not _tensorboard_installed():
        return None
    tb = TensorBoard(every_images, dataset, writer_factory)

    def hook(step: int, model, run_dir: Path | None,
             record: dict[str, Any] | None = None) -> None:
        if run_dir is None:
            return
        if record is None:
            last = _last_record(Path(run_dir))
            record = last if last is not None and last["step"] == step else None
        tb.log(step, model, Path(run_dir), record)

    return hook
