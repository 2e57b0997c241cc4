"""Feature vectors: the ``table`` dataset (CSV, npz, a folder of CSVs), the ``mlp`` networks
(``model.data_dim`` filled in from the data), the training split's standardisation saved with
the model, and `ali score` on a CSV with such a model."""

import csv
import json

import numpy as np
import pytest
import torch

import ali
from ali.build import build_model
from ali.cli import main
from ali.config import get_config
from ali.data import load_dataset
from ali.errors import AliError, ConfigError, DataError
from ali.train import train

WIDTH = 5
SMALL = ["model.width=16", "model.disc_width=8", "model.latent_dim=2", "train.batch_size=16",
         "train.steps=30", "train.log_every=10", "train.checkpoint_every=30",
         "train.progress=off", "train.device=cpu"]


def _table(n=60, seed=0):
    """Two classes of 5 features on very different scales (feature j ~ 10^j)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = rng.normal(size=(n, WIDTH)) + 3 * y[:, None]
    return x * 10.0 ** np.arange(WIDTH), y


def _write_csv(path, x, labels=None, header=True):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        if header:
            w.writerow([f"f{j}" for j in range(x.shape[1])] + (["kind"] if labels is not None
                                                               else []))
        for i, row in enumerate(x):
            w.writerow([*row, *([labels[i]] if labels is not None else [])])
    return path


def _cfg(root, *sets):
    return get_config("table", [f"data.root={root}", *SMALL, *sets])


def test_csv_with_a_text_label_column(tmp_path):
    x, y = _table()
    names = np.array(["normal", "odd"])[y]
    path = _write_csv(tmp_path / "t.csv", x, list(names))
    d = load_dataset(_cfg(path, "data.label_column=kind", "data.test_split=all",
                          "data.train_range=0:40", "data.test_range=40:",
                          "data.split_order=stored").data)
    assert d.train.shape == (40, WIDTH) and d.test.shape == (20, WIDTH)
    assert d.train.dtype == torch.float32 and d.data_shape == (WIDTH,)
    np.testing.assert_allclose(d.train.numpy(), x[:40], rtol=1e-6)
    assert d.label_names == ["normal", "odd"] and d.num_classes == 2
    assert d.train_labels.tolist() == y[:40].tolist()
    # By default a table is cut in a shuffled order and held out by class, like a folder: the
    # two parts hold every row once, and both classes are held out.
    d = load_dataset(_cfg(path, "data.label_column=kind").data)
    rows = np.concatenate([d.train.numpy(), d.test.numpy()])
    assert sorted(map(tuple, rows)) == sorted(map(tuple, x.astype(np.float32)))
    assert set(d.test_labels.tolist()) == {0, 1} and len(d.test) < len(d.train)
    # by 0-based index too, and data.normal_class keeps class 1 in training only
    d = load_dataset(_cfg(path, f"data.label_column={WIDTH}", "data.normal_class=1",
                          "data.test_split=").data)
    assert set(d.train_labels.tolist()) == {1} and len(d.train) == 30


def test_npz_and_folder_tables(tmp_path):
    x, y = _table()
    np.savez(tmp_path / "t.npz", x_train=x[:40], y_train=y[:40], x_test=x[40:], y_test=y[40:])
    d = load_dataset(_cfg(tmp_path / "t.npz").data)
    assert d.train.shape == (40, WIDTH) and d.test.shape == (20, WIDTH) and d.num_classes == 2
    np.savez(tmp_path / "one.npz", x=x)                  # one array: the split "all" / "train"
    d = load_dataset(_cfg(tmp_path / "one.npz", "data.test_split=").data)
    assert d.train.shape == (60, WIDTH) and d.train_labels is None
    (tmp_path / "f").mkdir()
    _write_csv(tmp_path / "f" / "train.csv", x[:40], list(y[:40]))
    _write_csv(tmp_path / "f" / "test.csv", x[40:], list(y[40:]))
    d = load_dataset(_cfg(tmp_path / "f", "data.label_column=kind",
                          "data.split_order=stored").data)
    assert d.test.shape == (20, WIDTH) and d.test_labels.tolist() == y[40:].tolist()
    assert d.num_classes == 2 and d.label_names is None      # integer labels stay numbers
    _write_csv(tmp_path / "f" / "train.csv", x[:40], [f"{v}.0" for v in y[:40]])
    d = load_dataset(_cfg(tmp_path / "f", "data.label_column=kind",
                          "data.split_order=stored").data)
    assert d.train_labels.tolist() == y[:40].tolist() and d.label_names is None


@pytest.mark.parametrize("content, sets, message", [
    ("a,b\n1,2\n3,x\n", [], "row 2 has a non-numeric value 'x'"),
    ("a,b\n1,2\n3,nan\n", [], "1 values are NaN or infinite"),
    ("a,b\n1,2\n3\n", [], "same number of values"),
    ("", [], "holds no rows of values"),
    ("a,b\n", [], "holds no rows of values (a header only)"),
    ("a,b\n1,2\n3,4\n", ["data.label_column=c"], "has no column 'c' (columns: a, b)"),
    ("1,2\n3,4\n", ["data.label_column=7"], "label column 7 is out of range"),
    # a header of numbers over text labels: read as data, its name '2' would be a class
    ("0,1,2\n1,2,a\n3,4,b\n", ["data.label_column=2"],
     "row 1 is all numbers, so it is read as data, but its label '2' is a number"),
])
def test_bad_tables_are_one_line(tmp_path, content, sets, message):
    (tmp_path / "bad.csv").write_text(content)
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")) as e:
        load_dataset(_cfg(tmp_path / "bad.csv", "data.test_split=", *sets).data)
    assert "\n" not in str(e.value)


def test_bad_table_files_are_one_line(tmp_path):
    x, y = _table()
    (tmp_path / "f").mkdir()
    _write_csv(tmp_path / "f" / "train.csv", x)
    _write_csv(tmp_path / "f" / "test.csv", x[:, :3])
    with pytest.raises(DataError, match="different widths"):
        load_dataset(_cfg(tmp_path / "f").data)
    np.savez(tmp_path / "s.npz", x_train=np.array(["a", "b"]))
    with pytest.raises(DataError, match="must be numbers of shape"):
        load_dataset(_cfg(tmp_path / "s.npz").data)
    # complex numbers too, as ali score refuses them (their imaginary part would be dropped)
    np.savez(tmp_path / "c.npz", x_train=x.astype(np.complex64))
    with pytest.raises(DataError, match="'x_train' must be numbers of shape .* got complex64"):
        load_dataset(_cfg(tmp_path / "c.npz").data)
    (tmp_path / "t.txt").write_text("1,2\n")
    with pytest.raises(DataError, match="a .csv or .npz file"):
        load_dataset(_cfg(tmp_path / "t.txt").data)
    # one-line refusals from the command line, with a non-zero exit
    _write_csv(tmp_path / "text.csv", x, ["a"] * len(x))        # a text column, unnamed
    assert main(["train", "table", "--set", f"data.root={tmp_path / 'text.csv'}",
                 "--set", "data.test_split=", "--out", str(tmp_path / "run")]) == 2


def test_mlp_networks_take_their_width_from_config_or_data(tmp_path):
    with pytest.raises(ConfigError, match="model.data_dim is 0"):
        build_model(get_config("table"))
    m = build_model(get_config("table", ["model.data_dim=7"]))
    assert m.data_shape == (7,) and m.scaler.mean.shape == (7,)
    assert m.sample(3).shape == (3, 7)
    x, _ = _table()
    np.savez(tmp_path / "t.npz", x_train=x, x_test=x)
    with pytest.raises(ConfigError, match=f"model.data_dim=7 but dataset 'table' has {WIDTH}"):
        train(_cfg(tmp_path / "t.npz", "model.data_dim=7"), quiet=True)


@pytest.fixture(scope="module")
def table_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("table")
    x, y = _table(200)
    np.savez(root / "t.npz", x_train=x[:120], y_train=y[:120], x_test=x[120:], y_test=y[120:])
    run = root / "run"
    assert main(["train", "table", *[a for kv in [f"data.root={root / 't.npz'}",
                                                   "data.normal_class=0", *SMALL]
                                     for a in ("--set", kv)], "--out", str(run)]) == 0
    return root, run, x, y


def test_a_table_run_records_its_width_and_standardisation(table_run):
    root, run, x, y = table_run
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["model"]["data_dim"] == WIDTH and cfg["model"]["nets"] == "mlp"
    model = ali.load(run)
    normal = x[:120][y[:120] == 0]                    # the training split: class 0 alone
    np.testing.assert_allclose(model.scaler.mean.numpy(), normal.mean(0), rtol=1e-5)
    np.testing.assert_allclose(model.scaler.std.numpy(), normal.std(0, ddof=1), rtol=1e-5)
    # the networks see standardised features
    z = model.as_input(torch.tensor(normal, dtype=torch.float32))
    torch.testing.assert_close(z.mean(0), torch.zeros(WIDTH), atol=1e-5, rtol=0)
    # saved and reloaded, the standardisation travels with the weights
    model.save_pretrained(root / "saved")
    again = ali.load(root / "saved")
    torch.testing.assert_close(again.scaler.std, model.scaler.std)
    torch.testing.assert_close(again.anomaly_score(x, "l1"), model.anomaly_score(x, "l1"))


def test_eval_and_score_a_table_run(table_run, tmp_path, capsys):
    root, run, x, y = table_run
    assert main(["eval", str(run), "--metric", "anomaly", "--score", "l1", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["n_normal"] + res["n_anomalous"] == 80 and 0 <= res["auroc"] <= 1
    _write_csv(tmp_path / "new.csv", x[120:])
    assert main(["score", str(run), "--input", str(tmp_path / "new.csv"), "--out",
                 str(tmp_path / "s.csv"), "--score", "egbad", "--device", "cpu"]) == 0
    rows = list(csv.reader(open(tmp_path / "s.csv")))
    assert rows[0] == ["name", "egbad"] and len(rows) == 81
    want = ali.load(run).anomaly_score(torch.tensor(x[120:], dtype=torch.float32), "egbad")
    np.testing.assert_allclose([float(r[1]) for r in rows[1:]], want.numpy(), rtol=1e-4)
    # a CSV of another width, or with a text column: one line, exit 2
    _write_csv(tmp_path / "narrow.csv", x[:5, :3])
    _write_csv(tmp_path / "text.csv", x[:5], ["a"] * 5)
    np.savez(tmp_path / "text.npz", x=np.full((2, WIDTH), "1.5"))
    np.savez(tmp_path / "complex.npz", x=np.ones((2, WIDTH), np.complex64))
    np.savez(tmp_path / "none.npz", x=np.zeros((0, WIDTH), np.float32))
    _write_csv(tmp_path / "huge.csv", np.where(np.arange(WIDTH) == 0, 1e39, x[:2]))
    for bad, needle in (("narrow.csv", "items of shape [3], but the model takes [5]"),
                        ("text.csv", "non-numeric value 'a'"),
                        ("text.npz", "feature vectors must be numbers of shape (N, D); got <U3"),
                        ("complex.npz", "must be numbers of shape (N, D); got complex64"),
                        ("none.npz", "holds no items"),
                        ("huge.csv", "2 values are beyond float32's range")):
        capsys.readouterr()
        assert main(["score", str(run), "--input", str(tmp_path / bad), "--out",
                     str(tmp_path / "b.csv"), "--device", "cpu"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and needle in err, err
    # a value far outside the training data overflows: written as inf, with a warning
    _write_csv(tmp_path / "far.csv", np.where(np.arange(WIDTH) == 0, [[1e37], [0.0]], x[:2]))
    assert main(["score", str(run), "--input", str(tmp_path / "far.csv"), "--out",
                 str(tmp_path / "far-s.csv"), "--score", "latent"]) == 0
    assert "1 scores are not finite" in capsys.readouterr().err
    assert [r[1] for r in csv.reader(open(tmp_path / "far-s.csv"))][1] == "inf"
    # and eval's options, in one line too
    for args, needle in ((["--batch-size", "0"], "--batch-size: must be >= 1; got 0"),
                         (["--normal-class=-3"], "--normal-class must be a class index"),
                         (["--normal-class", "abc"], "invalid int value: 'abc'")):
        assert main(["eval", str(run), "--metric", "anomaly", *args]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and needle in err, err


def test_a_table_run_refuses_image_commands(table_run, tmp_path, capsys):
    _, run, _, _ = table_run
    assert main(["reconstruct", str(run), "--out", str(tmp_path / "r.png")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    with pytest.raises(AliError):
        ali.load(run).anomaly_score(torch.zeros(3, WIDTH + 1))


def test_score_leaves_out_the_label_column_of_a_csv_laid_out_as_the_training_one(tmp_path):
    x, y = _table(80)
    names = np.array(["benign", "malignant"])[y]
    _write_csv(tmp_path / "train.csv", x, names)
    run = tmp_path / "run"
    assert main(["train", "table", *[a for kv in [f"data.root={tmp_path / 'train.csv'}",
                                                   "data.label_column=kind", *SMALL]
                                     for a in ("--set", kv)], "--out", str(run)]) == 0
    _write_csv(tmp_path / "plain.csv", x[:10])
    for name in ("train.csv", "plain.csv"):     # with its label column, and without
        assert main(["score", str(run), "--input", str(tmp_path / name), "--out",
                     str(tmp_path / f"s-{name}"), "--score", "l1"]) == 0
    with_labels, plain = (list(csv.reader(open(tmp_path / f"s-{n}")))
                          for n in ("train.csv", "plain.csv"))
    assert len(with_labels) == 81 and with_labels[1:11] == plain[1:]


def test_score_reads_a_csv_once_when_the_label_column_is_absent(tmp_path, monkeypatch):
    from ali.data import inputs

    x, _ = _table(10)
    path = _write_csv(tmp_path / "plain.csv", x)             # no 'kind' column
    opened = []
    reader = inputs.csv.reader
    monkeypatch.setattr(inputs.csv, "reader", lambda f: opened.append(f) or reader(f))
    got, names = inputs.read_inputs(path, (WIDTH,), "kind")
    assert len(opened) == 1
    np.testing.assert_allclose(got.numpy(), x, rtol=1e-6)
    assert names == [str(i) for i in range(10)]
    # the same one-line errors as before: those of every column when the label column is not
    # there to leave out
    (tmp_path / "bad.csv").write_text("f0,f1\n1,x\n")
    with pytest.raises(DataError, match="row 1 has a non-numeric value 'x'"):
        inputs.read_inputs(tmp_path / "bad.csv", (2,), "kind")


def test_a_header_of_numbers_is_a_header_where_the_label_column_names_it(tmp_path):
    x, y = _table()
    path = tmp_path / "t.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(range(1, WIDTH + 2))     # 1..6: the label column's name 6 is no index
        w.writerows([*row, k] for row, k in zip(x, y))
    d = load_dataset(_cfg(path, f"data.label_column={WIDTH + 1}", "data.test_split=",
                          "data.split_order=stored").data)
    assert d.train.shape == (len(x), WIDTH) and d.train_labels.tolist() == y.tolist()
    np.testing.assert_allclose(d.train.numpy(), x, rtol=1e-6)
    # a label column that can be an index of it: the first row is data, as before
    d = load_dataset(_cfg(path, f"data.label_column={WIDTH}", "data.test_split=").data)
    assert len(d.train) == len(x) + 1
