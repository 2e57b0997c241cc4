"""Your own images: a shuffled, class-stratified hold-out, ``ali train folder`` on any image
size, and the standard presets on a folder without split overrides (issue 21)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ali.cli import main
from ali.config import get_config
from ali.data import load_dataset, split_order
from ali.errors import ConfigError

PER_CLASS = 12
ROOT = Path(__file__).resolve().parent.parent


def digits_folder(root, per=PER_CLASS, side=16):
    """scikit-learn's 8x8 digits as grey PNGs of ``side`` pixels, in class subfolders (read
    in class order: every 0, then every 1, ...)."""
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    for k in range(10):
        (root / str(k)).mkdir(parents=True)
        for i, img in enumerate(d.images[d.target == k][:per]):
            px = (img * 255 / 16).astype(np.uint8)
            Image.fromarray(px).resize((side, side), Image.NEAREST).save(root / str(k) / f"{i}.png")
    return root


def colour_folder(root, classes=3, per=40, side=40):
    """RGB images of ``side`` pixels, one colour per class with noise, in class subfolders."""
    from PIL import Image

    g = np.random.default_rng(0)
    for k in range(classes):
        (root / f"c{k}").mkdir(parents=True)
        base = np.zeros(3)
        base[k % 3] = 200
        for i in range(per):
            px = np.clip(base + g.normal(0, 30, (side, side, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(px, "RGB").save(root / f"c{k}" / f"{i}.png")
    return root


def test_folder_in_class_order_gives_a_stratified_holdout(tmp_path):
    root = digits_folder(tmp_path / "digits")
    cfg = get_config("folder", [f"data.root={root}"])
    d = load_dataset(cfg.data)
    assert len(d.test) == 10 and sorted(d.test_labels.tolist()) == list(range(10))
    assert len(d.train) == 10 * (PER_CLASS - 1)
    assert torch.bincount(d.train_labels).tolist() == [PER_CLASS - 1] * 10
    # Another split_seed holds out other images, of every class too.
    other = load_dataset(get_config("folder", [f"data.root={root}", "data.split_seed=1"]).data)
    assert sorted(other.test_labels.tolist()) == list(range(10))
    assert not torch.equal(other.test, d.test)


def test_ranges_of_a_folder_cut_a_shuffled_order(tmp_path):
    """The issue's recipe: train_range and test_range of the one split of a folder read in
    class order no longer hold out the last classes only."""
    root = digits_folder(tmp_path / "digits")
    d = load_dataset(get_config("folder", [f"data.root={root}", "data.test_split=train",
                                           "data.train_range=0:100",
                                           "data.test_range=100:"]).data)
    assert len(d.train) == 100 and len(d.test) == 20
    assert len(set(d.test_labels.tolist())) >= 6      # a class-ordered cut would give 2
    assert len(set(d.train_labels.tolist())) == 10


def test_standard_datasets_keep_their_official_order():
    assert split_order(get_config("mnist").data, 5).tolist() == [0, 1, 2, 3, 4]
    shuffled = get_config("mnist", ["data.split_order=shuffled", "data.split_seed=3"]).data
    assert sorted(split_order(shuffled, 50).tolist()) == list(range(50))
    assert split_order(shuffled, 50).tolist() != list(range(50))
    assert split_order(get_config("folder").data, 50).tolist() != list(range(50))


@pytest.mark.parametrize("bad, needle", [("data.holdout=1", "data.holdout must be"),
                                          ("data.split_order=random", "data.split_order")])
def test_bad_split_settings_are_one_line(bad, needle):
    with pytest.raises(ConfigError) as e:
        get_config("folder", [bad])
    assert needle in str(e.value) and "\n" not in str(e.value)


def _train(capsys, *args):
    code = main(["train", *args])
    out = capsys.readouterr()
    assert code == 0, out.err
    return out


@pytest.mark.parametrize("kind, nets, shape", [("grey16", "mnist", (1, 28, 28)),
                                               ("rgb40", "cifar10", (3, 32, 32))])
def test_ali_train_folder_needs_no_override(tmp_path, capsys, kind, nets, shape):
    root = (digits_folder(tmp_path / "img") if kind == "grey16"
            else colour_folder(tmp_path / "img"))
    run = tmp_path / "run"
    _train(capsys, "folder", "--set", f"data.root={root}", "--set", "train.steps=2",
           "--out", str(run))
    saved = json.loads((run / "config.json").read_text())
    assert saved["model"]["nets"] == nets
    assert (saved["data"]["channels"], saved["data"]["image_size"]) == shape[:2]
    assert saved["data"]["split_seed"] == 0 and saved["data"]["holdout"] == 0.05
    assert (run / "samples.png").is_file() and (run / "reconstructions.png").is_file()
    assert main(["eval", str(run), "--metric", "knn"]) == 0, capsys.readouterr().err
    assert "knn" in capsys.readouterr().out


def test_non_square_folder_images_need_data_image_size_as_the_docs_say(tmp_path, capsys):
    # The docs once said the folder preset resizes any images; the reader refuses images that
    # are not square until data.image_size is set, which then picks the family.
    from PIL import Image

    root = tmp_path / "img"
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(PER_CLASS):
        Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(root / f"{i}.png")
    args = ["folder", "--set", f"data.root={root}", "--set", "train.steps=1", "--set",
            "train.batch_size=4", "--set", "train.progress=off"]
    assert main(["train", *args, "--out", str(tmp_path / "refused")]) == 2
    err = capsys.readouterr().err
    assert "is 50x40, not square; set data.image_size" in err and err.count("\n") == 1
    run = tmp_path / "run"
    _train(capsys, *args, "--set", "data.image_size=40", "--out", str(run))
    saved = json.loads((run / "config.json").read_text())
    assert (saved["model"]["nets"], saved["data"]["image_size"]) == ("cifar10", 32)
    for doc in ("README.md", "docs/data.md"):
        text = " ".join((ROOT / doc).read_text().split())
        assert "not square are refused until `--set data.image_size" in text or \
            "not square need `data.image_size`" in text, doc


def test_standard_presets_on_a_folder(tmp_path, capsys):
    root = digits_folder(tmp_path / "digits")
    run = tmp_path / "run"
    _train(capsys, "mnist", "--set", "data.name=folder", "--set", f"data.root={root}",
           "--set", "train.steps=1", "--out", str(run))
    saved = json.loads((run / "config.json").read_text())
    assert (saved["data"]["image_size"], saved["data"]["channels"]) == (28, 1)
    # svhn trains on its extra split, which a folder does not have: the message says what to do
    assert main(["train", "svhn", "--set", "data.name=folder", "--set", f"data.root={root}",
                 "--set", "train.steps=1", "--out", str(tmp_path / "svhn")]) == 2
    err = capsys.readouterr().err
    assert "no split 'extra'" in err and "--set data.train_split=train" in err
    assert err.count("\n") == 1


def test_the_readme_own_images_example_runs(tmp_path, capsys, monkeypatch):
    """The README's "Train on your own images" commands, run as written on a folder of
    digits (train.steps made small)."""
    import re
    import shlex
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("**Train on your own images.**", 1)[1]
    code = re.search(r"```bash\n(.*?)```", section, re.DOTALL).group(1)
    commands = [c.strip() for line in code.replace("\\\n", " ").splitlines()
                for c in line.split("&&") if c.strip()]
    assert commands[0].startswith("ali train folder")
    monkeypatch.chdir(tmp_path)
    digits_folder(Path("my_images"))
    for cmd in commands:
        args = shlex.split(cmd)[1:]
        if args[0] == "train":
            args += ["--set", "train.steps=2"]
        assert main(args) == 0, f"{cmd}: {capsys.readouterr().err}"
    assert (tmp_path / "runs" / "mine" / "report.html").is_file()


def test_runs_written_before_split_order_keep_their_stored_order():
    """A config.json without data.split_order (written before it existed) means the stored
    order its folder or npz file was cut in, and resumes without a difference."""
    from ali.checkpoint import config_differences
    from ali.config import Config

    cfg = get_config("tiny", ["data.root=x.npz"])
    old = cfg.to_dict()
    for key in ("split_order", "split_seed", "holdout"):
        del old["data"][key]
    read = Config.from_dict(old)
    assert read.data.split_order == "stored" and split_order(read.data, 4).tolist() == [0, 1, 2, 3]
    assert config_differences(old, read.to_dict()) == []


def test_train_from_python_leaves_a_folder_every_command_accepts(tmp_path, capsys):
    """train(cfg, dataset=...) records the data it was given (not the preset's) and writes the
    run images itself; report, reconstruct, sample and eval then work on the folder, and
    sample/reconstruct leave training's images alone."""
    from ali.train import train

    root = digits_folder(tmp_path / "digits")
    data = load_dataset(get_config("folder", [f"data.root={root}", "data.image_size=28",
                                              "data.channels=1"]).data)
    run = tmp_path / "run"
    train(get_config("mnist", ["train.steps=2", "train.progress=off"]), dataset=data,
          run_dir=run, quiet=True)
    saved = json.loads((run / "config.json").read_text())
    assert saved["data"]["name"] == "folder" and saved["data"]["root"] == str(root)
    training_images = {p: (run / p).read_bytes() for p in ("samples.png",
                                                           "reconstructions.png")}
    for args in (["report", str(run)], ["reconstruct", str(run)], ["sample", str(run)],
                 ["eval", str(run), "--metric", "knn"]):
        assert main(args) == 0, capsys.readouterr().err
    assert (run / "report.html").is_file()
    assert (run / "sample-seed0.png").is_file() and (run / "reconstruct-seed0.png").is_file()
    assert {p: (run / p).read_bytes() for p in training_images} == training_images
    assert main(["sample", str(run), "--seed", "3", "--out", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").is_file()


def test_commands_default_to_the_best_device(monkeypatch):
    from ali.cli import build_parser
    from ali.distributed import resolve_device

    parser = build_parser()
    for cmd in (["eval", "r", "--metric", "knn"], ["sample", "r"], ["reconstruct", "r"],
                ["interpolate", "r"], ["score", "r", "--input", "x", "--out", "y"]):
        assert parser.parse_args(cmd).device == "auto", cmd
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("auto", mps=True).type == "mps"
    assert resolve_device("auto").type == "cpu"        # training leaves mps out
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto", mps=True).type == "cuda"


def test_semi_supervised_on_mnist_names_the_fix():
    with pytest.raises(ConfigError) as e:
        get_config("mnist", ["model.semi_supervised=on"])
    assert "--set model.cycle=off" in str(e.value) and "mnist_ssl_100" in str(e.value)


def test_a_streamed_folder_is_held_out_the_same_way(tmp_path):
    root = digits_folder(tmp_path / "digits", per=4)
    over = [f"data.root={root}", "data.image_size=8"]
    mem = load_dataset(get_config("folder", over).data)
    streamed = load_dataset(get_config("folder", [*over, "data.stream=on"]).data)
    assert streamed.streamed and len(streamed.test) == len(mem.test) == 10
    assert torch.equal(streamed.test_labels, mem.test_labels)
    assert torch.equal(streamed.test.load_all(), mem.test)


def test_a_missing_training_split_names_the_one_there_is(tmp_path):
    from ali.data import _no_split_message
    from ali.data.readers import Spec

    cfg = get_config("celeba").data
    msg = _no_split_message(cfg, Spec({"all": lambda: None}), "train", "train")
    assert msg.endswith("add --set data.train_split=all"), msg


@pytest.mark.parametrize("preset, shape", [("celeba", (3, 64, 64)), ("imagenet64", (3, 64, 64)),
                                           ("cifar10", (3, 32, 32)), ("tiny", (3, 8, 8))])
def test_every_image_preset_reads_a_plain_folder(tmp_path, preset, shape):
    from ali.run import check_data_shape, resolve_shape

    root = digits_folder(tmp_path / "digits", per=3)
    cfg = resolve_shape(get_config(preset, ["data.name=folder", f"data.root={root}"]))
    data = load_dataset(cfg.data)
    assert data.data_shape == shape and len(data.test) == 10
    check_data_shape(cfg, data)


def test_a_valid_subfolder_is_the_held_out_split_and_other_names_are_not_replaced(tmp_path):
    digits_folder(tmp_path / "f" / "train", per=3)
    digits_folder(tmp_path / "f" / "valid", per=2)
    d = load_dataset(get_config("folder", [f"data.root={tmp_path / 'f'}"]).data)
    assert len(d.train) == 30 and len(d.test) == 20         # valid/ held out, nothing carved
    plain = digits_folder(tmp_path / "plain", per=3)
    with pytest.raises(ConfigError) as e:                   # a name the folder lacks: refused
        load_dataset(get_config("folder", [f"data.root={plain}",
                                           "data.test_split=valid"]).data)
    assert "no split 'valid'" in str(e.value) and "data.test_split=test" in str(e.value)


def test_16_bit_greyscale_images_read_as_their_8_bit_selves(tmp_path):
    # Pillow's convert("L") clips 16-bit pixels at 255: every non-black pixel came out white
    import numpy as np
    from PIL import Image

    from ali.data.images import read_image
    a = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4                 # 0 .. 252
    Image.fromarray(a, "L").save(tmp_path / "eight.png")
    Image.fromarray(a.astype(np.uint16) * 257).save(tmp_path / "sixteen.png")
    assert Image.open(tmp_path / "sixteen.png").mode.startswith("I")
    for channels in (1, 3):
        want = read_image(tmp_path / "eight.png", 0, channels)
        assert torch.equal(read_image(tmp_path / "sixteen.png", 0, channels), want)
        assert torch.equal(read_image(tmp_path / "sixteen.png", 4, channels),
                           read_image(tmp_path / "eight.png", 4, channels))
