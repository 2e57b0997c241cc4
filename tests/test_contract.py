"""The contract: every model kind x every variant x every command either works or refuses with
one line on stderr (``ali: error: ...``), never a traceback.

Each working (model, variant) is trained once per module with ``ali train`` (in-process) on a
tiny config, then every command runs on that run folder. Invalid combinations (a conditional
GAN, image networks with several runs, ...) must be refused when the config is built: by
``ali train``, ``ali arch`` and ``ali bench`` alike. Python API cells check the
``save_pretrained`` / ``ali.load`` round trip and what a conditional model does without y.

``expect`` below is the table of which cells work and which refuse (with a word of the
refusal).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import traceback
from dataclasses import dataclass

import numpy as np
import pytest
import torch

import ali
from ali.cli import main
from ali.errors import AliError
from ali.eval.registry import metrics

TOY = ["model.recon_weight=0", "model.r1_weight=0", "model.r1_every=1",
       "model.freeze_decoder_bn_at=1", "model.width=16", "model.disc_width=8",
       "model.maxout_pieces=2", "data.n_train=256", "data.n_test=128", "train.batch_size=32"]
TINY = ["model.dropout=false", "train.batch_size=16"]
TABLE = ["model.width=16", "model.disc_width=8", "train.batch_size=16"]
TABLE_WIDTH = 5
STEPS = ["train.steps=4", "train.log_every=2", "train.checkpoint_every=4", "train.progress=off",
         "train.device=cpu"]


@dataclass(frozen=True)
class Setup:
    """A (model kind, variant): the preset, its overrides and the data it trains on."""

    name: str
    preset: str
    sets: tuple[str, ...] = ()
    data: str | None = None          # "classes" | "attributes": the npz file of the tiny preset
    valid: bool = True

    @property
    def toy(self) -> bool:
        return self.preset == "toy"

    @property
    def vectors(self) -> bool:
        """Feature vectors (the table preset's mlp networks), not images."""
        return self.preset == "table"

    def has(self, key: str) -> bool:
        return any(s.startswith(key) and not s.endswith(("=0", "=false")) for s in self.sets)

    @property
    def kind(self) -> str:
        return next((s.split("=")[1] for s in self.sets if s.startswith("model.kind=")), "ali")

    @property
    def conditional(self) -> bool:
        return self.has("model.conditional")

    @property
    def attributes(self) -> bool:
        return self.conditional and self.data == "attributes"

    @property
    def semi_supervised(self) -> bool:
        return self.has("model.semi_supervised")

    @property
    def encoder(self) -> bool:
        return self.kind != "gan"


def _kinds(prefix, base, extra=()):
    enc = {"vae": "gaussian"}
    return [Setup(f"{prefix}-{k}", base, (f"model.kind={k}", *(
        [f"model.encoder={enc[k]}"] if k in enc and base == "toy" else []), *extra))
        for k in ("ali", "gan", "gan_inverse", "gan_posthoc", "vae")]


SETUPS = [
    # the 2-D family: every kind, the three encoders, cycle term, R1, runs > 1
    *_kinds("toy", "toy"),
    Setup("toy-ali-gaussian", "toy", ("model.encoder=gaussian",)),
    Setup("toy-ali-deterministic", "toy", ("model.encoder=deterministic",)),
    Setup("toy-ali-cycle", "toy", ("model.recon_weight=1",)),
    Setup("toy-ali-r1", "toy", ("model.r1_weight=0.1", "model.r1_every=2")),
    Setup("toy-gan-r1", "toy", ("model.kind=gan", "model.r1_weight=0.1")),
    Setup("toy-ali-alad-sn", "toy", ("model.alad=on", "model.spectral_norm=true")),
    *_kinds("toy-runs3", "toy", ("model.runs=3",)),
    Setup("toy-runs3-alad-sn", "toy", ("model.runs=3", "model.alad=on",
                                       "model.spectral_norm=true")),
    # the image family: every kind, both image encoders, cycle, R1 and the label variants
    *(Setup(s.name, "tiny", s.sets, "classes") for s in _kinds("img", "tiny")),
    Setup("img-ali-deterministic", "tiny", ("model.encoder=deterministic",), "classes"),
    Setup("img-ali-cycle", "tiny", ("model.recon_weight=1",), "classes"),
    Setup("img-ali-r1", "tiny", ("model.r1_weight=0.1",), "classes"),
    Setup("img-ali-alad-sn", "tiny", ("model.alad=on", "model.spectral_norm=true"), "classes"),
    Setup("img-gan-sn", "tiny", ("model.kind=gan", "model.spectral_norm=true"), "classes"),
    Setup("img-class-conditional", "tiny", ("model.conditional=true",), "classes"),
    Setup("img-class-conditional-cycle", "tiny", ("model.conditional=true",
                                                  "model.recon_weight=1"), "classes"),
    Setup("img-attribute-conditional", "tiny", ("model.conditional=true",), "attributes"),
    Setup("img-semi-supervised", "tiny", ("model.semi_supervised=true", "data.labels=20"),
          "classes"),
    # the feature-vector family (a table of 5 features): every kind, ALAD with spectral norm
    *(Setup(s.name, "table", s.sets, "table") for s in _kinds("table", "table")),
    Setup("table-ali-alad-sn", "table", ("model.alad=on", "model.spectral_norm=true"), "table"),
    Setup("table-runs2-sn", "table", ("model.runs=2", "model.spectral_norm=true"), "table"),
    # combinations the config cannot express: refused when it is built
    *(Setup(f"invalid-{k}-{v}", "tiny", (f"model.kind={k}", f"model.{v}=true", *(
        ["model.encoder=gaussian"] if k == "vae" else [])), "classes", valid=False)
      for k in ("gan", "gan_inverse", "gan_posthoc", "vae")
      for v in ("conditional", "semi_supervised")),
    Setup("invalid-attribute-gan", "tiny", ("model.kind=gan", "model.conditional=true"),
          "attributes", valid=False),
    Setup("invalid-conditional-semi-supervised", "tiny", (
        "model.conditional=true", "model.semi_supervised=true"), "classes", valid=False),
    Setup("invalid-image-runs3", "tiny", ("model.runs=3",), "classes", valid=False),
    Setup("invalid-toy-conditional", "toy", ("model.conditional=true", "model.label_dim=25"),
          valid=False),
    Setup("invalid-gan-cycle", "toy", ("model.kind=gan", "model.recon_weight=1"), valid=False),
    Setup("invalid-vae-r1", "toy", ("model.kind=vae", "model.encoder=gaussian",
                                     "model.r1_weight=1"), valid=False),
    Setup("invalid-image-noise-encoder", "tiny", ("model.encoder=noise",), "classes",
          valid=False),
    Setup("invalid-gan-alad", "toy", ("model.kind=gan", "model.alad=on"), valid=False),
    Setup("invalid-conditional-alad", "tiny", ("model.conditional=true", "model.alad=on"),
          "classes", valid=False),
    Setup("invalid-vae-spectral-norm", "toy", ("model.kind=vae", "model.encoder=gaussian",
                                               "model.spectral_norm=true"), valid=False),
]
VALID = [s for s in SETUPS if s.valid]
METRICS = sorted(metrics())
METRIC_OPTIONS = {
    "svm": ["--labels", "10", "--repeats", "2", "--c-grid=-1:1:2", "--val-size", "16"],
    "fid": ["--feature-net", "classifier"],
    "kid": ["--feature-net", "classifier", "--subsets", "2", "--subset-size", "8"],
    "conditional": ["--samples", "20"],
    "anomaly": ["--normal-class", "0"],
}
COMMANDS = ["resume", "bench", "arch", "sample", "sample-condition", "reconstruct", "interpolate",
            *(f"eval-{m}" for m in METRICS), "report", "pretrained"]
API_WITHOUT_Y = ["sample", "encode", "encode_mean", "reconstruct", "interpolate",
                 "interpolate-one-y"]


# ---------------------------------------------------------------------------- the table

def expect(s: Setup, cmd: str) -> str:
    """"ok", or a word of the one-line refusal."""
    if s.has("model.runs") and cmd.startswith("eval-") and cmd != "eval-anomaly":
        return "side by side"
    image_only = {"sample", "sample-condition", "reconstruct", "interpolate", "eval-fid",
                  "eval-kid"}
    if s.toy and cmd in image_only:
        return "2-D run" if cmd in ("reconstruct", "interpolate") else (
            "image run")
    if s.vectors and cmd in image_only:
        return "feature-vector run" if cmd in ("reconstruct", "interpolate") else (
            "image run")
    if not s.encoder and cmd in ("reconstruct", "interpolate", "eval-recon"):
        return "no encoder"
    if not s.encoder and cmd in ("eval-svm", "eval-knn"):
        return "no encoder"
    if cmd == "sample" and s.attributes:
        return "needs --condition"
    if cmd == "sample-condition" and not s.conditional:
        return "not a conditional run"
    if cmd == "eval-classify" and not s.semi_supervised:
        return "is not semi-supervised"
    if cmd == "eval-conditional" and not s.conditional:
        return "not a conditional run"
    if cmd in ("eval-svm", "eval-knn") and s.attributes:
        return "class labels"
    if cmd == "eval-anomaly":
        if not s.encoder:
            return "no encoder"
        if s.has("model.runs"):                      # its default score is not an ensemble's
            return "scores as an ensemble"
        if s.kind not in ("ali", "gan_posthoc"):     # its default score needs D(x, z)
            return "no joint discriminator"
        if s.attributes:
            return "class labels"
    return "ok"




# ---------------------------------------------------------------------------- running cells

def _npz(path, attributes):
    rng = np.random.default_rng(0)

    def images(n):
        # two kinds of 8x8 RGB images: bright top half (class 0), bright left half (class 1)
        x = rng.integers(0, 40, size=(n, 8, 8, 3), dtype=np.uint8)
        x[: n // 2, :4] += 200
        x[n // 2:, :, :4] += 200
        y = np.repeat(np.arange(2), n // 2)
        if attributes:
            y = np.stack([y, 1 - y, rng.integers(0, 2, n)], axis=1)
        return x, y

    x, y = images(64)
    xt, yt = images(32)
    np.savez(path, x_train=x, y_train=y, x_test=xt, y_test=yt)
    return path


def _table(path):
    """Feature vectors of two classes, the second shifted."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, TABLE_WIDTH))
    y = np.arange(96) % 2
    x[y == 1] += 3
    np.savez(path, x_train=x[:64], y_train=y[:64], x_test=x[64:], y_test=y[64:])
    return path


class Lab:
    """The module's data files and trained runs (each setup trained once, on first use)."""

    def __init__(self, root):
        self.root = root
        self.files = {"classes": _npz(root / "classes.npz", False),
                      "attributes": _npz(root / "attributes.npz", True),
                      "table": _table(root / "table.npz")}
        self.runs: dict[str, tuple] = {}

    def sets(self, s: Setup) -> list[str]:
        base = TOY if s.toy else [*(TABLE if s.vectors else TINY),
                                  f"data.root={self.files[s.data]}"]
        return [*base, *s.sets]

    def cli(self, s: Setup, args: list[str]) -> list[str]:
        return [a for kv in self.sets(s) for a in ("--set", kv)] + args

    def train(self, s: Setup, capsys):
        if s.name not in self.runs:
            out = self.root / s.name
            self.runs[s.name] = (out, *call(capsys, ["train", s.preset, *self.cli(
                s, [a for kv in STEPS for a in ("--set", kv)]), "--out", str(out)]))
        return self.runs[s.name]


def call(capsys, argv):
    """(exit status, stdout, stderr) of ``ali ARGV`` in-process; an exception that escapes
    main() is what a user would see as a traceback."""
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as e:                     # argparse
        code = e.code
    except BaseException:                       # noqa: BLE001 - the cell records it
        out, err = capsys.readouterr()
        return "traceback", out, err + traceback.format_exc()
    out, err = capsys.readouterr()
    return code, out, err


def check(result, want: str, files=()):
    code, out, err = result
    assert "Traceback" not in out + err, err[-3000:]
    if want == "ok":
        assert code == 0, err[-2000:]
        for f in files:
            assert f.exists(), f
    else:
        assert code == 2, (code, err[-2000:])
        assert err.startswith("ali: error:") and err.count("\n") == 1, err
        assert want in err, err


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    return Lab(tmp_path_factory.mktemp("contract"))


def _params(cells):
    return [pytest.param(s, cmd, id=f"{s.name}-{cmd}") for s, cmd in cells]


# ---------------------------------------------------------------------------- the cells

@pytest.mark.parametrize("s", VALID, ids=lambda s: s.name)
def test_train(lab, capsys, s):
    out, *result = lab.train(s, capsys)
    check(result, "ok", [out / "checkpoints" / "latest.pt", out / "metrics.jsonl",
                         out / "config.json"])
    if not (s.toy or s.vectors):     # images only for image runs
        assert (out / "samples.png").exists()
        assert (out / "reconstructions.png").exists() == s.encoder


@pytest.mark.parametrize("s, cmd", _params((s, c) for s in VALID for c in COMMANDS))
def test_command(lab, capsys, tmp_path, s, cmd):
    run, code, _, err = lab.train(s, capsys)
    assert code == 0, err[-2000:]
    want = expect(s, cmd)
    if cmd == "resume":
        copy = tmp_path / "run"
        shutil.copytree(run, copy)
        # the run's own settings come from its checkpoint; only the step count is new (--extend:
        # some presets' schedules follow train.steps)
        check(call(capsys, ["train", s.preset, "--out", str(copy), "--resume", "--extend",
                            "--set", "train.steps=6"]), want)
        steps = [int(line.split('"step": ')[1].split(",")[0])
                 for line in (copy / "metrics.jsonl").read_text().splitlines()]
        assert steps == [2, 4, 6]
    elif cmd == "bench":
        check(call(capsys, ["bench", s.preset, "--steps", "1", "--repeats", "1", "--json",
                            *lab.cli(s, _labels(s))]), want)
    elif cmd == "arch":
        check(call(capsys, ["arch", s.preset, "--json", *lab.cli(s, _labels(s))]), want)
    elif cmd in ("sample", "sample-condition"):
        png = tmp_path / "s.png"
        extra = (["--condition", "all", "--rows", "2"] + (["--vary", "0"] if s.attributes
                                                            else [])
                 if cmd == "sample-condition" else ["--n", "6"])
        check(call(capsys, ["sample", str(run), "--out", str(png), *extra]), want, [png])
    elif cmd == "reconstruct":
        png = tmp_path / "r.png"
        check(call(capsys, ["reconstruct", str(run), "--n", "4", "--out", str(png)]), want,
              [png])
    elif cmd == "interpolate":
        png = tmp_path / "i.png"
        check(call(capsys, ["interpolate", str(run), "--pairs", "2", "--steps", "3", "--out",
                            str(png)]), want, [png])
    elif cmd.startswith("eval-"):
        m = cmd[5:]
        res = tmp_path / f"{m}.json"
        options = METRIC_OPTIONS.get(m, [])
        if m == "svm" and s.toy:    # 25 mixture components: at least one label each
            options = [o if o != "10" else "50" for o in options]
        check(call(capsys, ["eval", str(run), "--metric", m, "--json", "--out", str(res),
                            *options]), want, [res])
    elif cmd == "report":
        html = tmp_path / "report.html"
        check(call(capsys, ["report", str(run), "--out", str(html)]), want, [html])
    elif cmd == "pretrained":
        _round_trip(run, tmp_path / "saved", s)
    else:
        raise AssertionError(cmd)


def _labels(s: Setup) -> list[str]:
    """What a user sets to build a labelled model of an npz file, or a model of a table,
    without its data (an npz file's label count and a table's width are not known in
    advance)."""
    if s.vectors:
        return ["--set", f"model.data_dim={TABLE_WIDTH}"]
    if not (s.conditional or s.semi_supervised):
        return []
    return ["--set", f"model.label_dim={3 if s.attributes else 2}",
            *(["--set", "model.attributes=true"] if s.attributes else [])]


def _condition(model, n):
    if not model.conditional:
        return None
    if model.attributes:
        return torch.arange(n * model.label_dim).view(n, -1) % 2
    return torch.arange(n) % model.label_dim


def _round_trip(run, folder, s):
    model = ali.load(run)
    model.save_pretrained(folder)
    again = ali.load(folder)
    assert type(again) is type(model) and again.config == model.config
    a, b = model.state_dict(), again.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    y = _condition(model, 4)
    outs = []
    for m in (model, again):
        torch.manual_seed(1)
        z = m.sample_prior(4)
        o = [m.sample(4, y), m.decode(z, y).detach()]
        if m.encoder is not None:
            o.append(m.encode_mean(o[0], y).detach())
        outs.append(o)
    assert all(torch.equal(p, q) for p, q in zip(*outs))


@pytest.mark.parametrize("s", [s for s in SETUPS if not s.valid], ids=lambda s: s.name)
@pytest.mark.parametrize("cmd", ["train", "arch", "bench"])
def test_invalid_combination_is_refused_when_the_config_is_built(lab, capsys, tmp_path, s, cmd):
    args = {"train": ["train", s.preset, *lab.cli(s, [a for kv in STEPS for a in ("--set", kv)]),
                      "--out", str(tmp_path / "run")],
            "arch": ["arch", s.preset, *lab.cli(s, _labels(s))],
            "bench": ["bench", s.preset, "--steps", "1", "--repeats", "1",
                      *lab.cli(s, _labels(s))]}[cmd]
    check(call(capsys, args), "")
    assert not (tmp_path / "run" / "checkpoints").exists()


COND = [s for s in VALID if s.conditional]


def _api_params():
    return [pytest.param(s, c, id=f"{s.name}-{c}") for s in COND for c in API_WITHOUT_Y]


@pytest.mark.parametrize("s, call_", _api_params())
def test_conditional_model_without_y_uses_a_default_or_refuses(lab, capsys, s, call_):
    """The API's side of the contract: a conditional model called without y either uses a
    documented default (class-conditional sampling: classes in turn) or raises a one-line
    AliError, which the command line prints as ``ali: error: ...``."""
    run = lab.train(s, capsys)[0]
    model = ali.load(run)
    x = model.sample(4, _condition(model, 4))
    y = _condition(model, 4)
    fn = {"sample": lambda: model.sample(4),
          "encode": lambda: model.encode(x),
          "encode_mean": lambda: model.encode_mean(x),
          "reconstruct": lambda: model.reconstruct(x),
          "interpolate": lambda: model.interpolate(x[:2], x[2:], 3),
          "interpolate-one-y": lambda: model.interpolate(x[:2], x[2:], 3, y[:2])}[call_]
    try:
        out = fn()
    except AliError as e:
        assert "\n" not in str(e) and str(e)
        return
    assert isinstance(out, torch.Tensor) and torch.isfinite(out).all()


def test_a_few_cells_as_a_user_runs_them(lab, capsys):
    """The console entry point in a real subprocess: one working and one refused cell."""
    s = next(s for s in VALID if s.name == "img-attribute-conditional")
    run = lab.train(s, capsys)[0]
    ok = subprocess.run([sys.executable, "-m", "ali", "eval", str(run), "--metric", "fid",
                         "--feature-net", "classifier", "--json", "--out",
                         str(lab.root / "fid-sub.json")], capture_output=True, text=True,
                        timeout=300)
    assert ok.returncode == 0 and "Traceback" not in ok.stderr, ok.stderr
    no = subprocess.run([sys.executable, "-m", "ali", "sample", str(run)], capture_output=True,
                        text=True, timeout=300)
    assert no.returncode == 2 and no.stderr.startswith("ali: error:")
    assert no.stderr.count("\n") == 1 and "--condition" in no.stderr


def test_matrix_size():
    """What the matrix holds (the counts are in the report of the change that added it)."""
    assert len(VALID) == 38 and len(SETUPS) - len(VALID) == 18
    assert {"svm", "knn", "recon", "fid", "kid", "classify", "conditional"} <= set(METRICS)
