"""ali experiment: every experiment at smoke scale on its synthetic data, and the runner's
protocol details (rows, error bars, reuse of finished stages, refusals) on hand-built inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ali.cli import main
from ali.config import get_config
from ali.data import load_dataset
from ali.errors import AliError
from ali.experiments import paper, runner

pytest.importorskip("sklearn")
pytest.importorskip("scipy")


def test_rows_follow_the_error_bar_conventions():
    m = paper.Measure("s", "classify", "error", "st", 20.0, 1.0, std_times=3)
    r = runner.row(m, [{"error": 10.0}, {"error": 14.0}])
    assert r["ours"] == 12.0 and r["ours_std"] == pytest.approx(6.0)    # 3 x pstdev 2
    assert (r["paper"], r["paper_std"], r["seeds"]) == (20.0, 1.0, 2)
    svm = paper.Measure("s", "svm", "error_mean", "st", std_key="error_std")
    assert runner.row(svm, [{"error_mean": 5.0, "error_std": 0.7}])["ours_std"] == 0.7
    assert runner.row(paper.Measure("s", "m", "k", "st"), [{"k": 1}])["ours_std"] is None
    # KID, as it is reported: the mean and std over its subsets (the table showed no spread)
    kid = next(m for m in paper.EXPERIMENTS["figure2"].measures if m.metric == "kid")
    assert runner.row(kid, [{"kid_mean": 0.02, "kid_std": 0.003}])["ours_std"] == 0.003


def test_experiments_match_the_paper_tables():
    t2 = paper.EXPERIMENTS["table2"]
    assert [(r.paper, r.paper_std) for r in t2.measures] == [
        (19.98, 0.89), (19.09, 0.44), (17.99, 1.62), (17.05, 1.49)]
    assert all(r.std_times == 3 for r in t2.measures)       # "error bars: 3 std" (Table 2)
    t1 = {r.metric: r for r in paper.EXPERIMENTS["table1"].measures}
    assert (t1["svm"].paper, t1["classify"].paper) == (19.14, 7.42)
    assert not t1["svm"].options                            # full scale: the svhn protocol
    mnist = paper.EXPERIMENTS["mnist"].data
    assert "data.train_range=0:8000" in mnist["full"] and "data.test_range=9000:" in mnist["full"]


@pytest.mark.parametrize("args, message", [
    (["figure8", "--data-root", "."], "--data-root does not apply"),
    (["table9"], "unknown experiment 'table9'"),
    (["table1", "--scale", "full"], "--scale full needs --data-root"),
    (["table1", "--seeds", "0"], "--seeds must be >= 1"),
    (["table1", "--data-root", "/nonexistent/x"], "does not exist"),
])
def test_experiment_user_errors_are_one_line(args, message, capsys, tmp_path):
    assert main(["experiment", *args, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize("name", list(paper.EXPERIMENTS))
def test_every_experiment_runs_at_smoke_scale(name, tmp_path, capsys):
    out = tmp_path / name
    assert main(["experiment", name, "--out", str(out), "--device", "cpu"]) == 0
    res = json.loads((out / "results.json").read_text())
    exp = paper.EXPERIMENTS[name]
    assert res["experiment"] == name and res["scale"] == "smoke"
    assert all(isinstance(r["ours"], float) for r in res["rows"])
    table = (out / "table.md").read_text()
    assert table.startswith(f"# {exp.title}") and table.count("\n| ") == len(res["rows"]) + 1
    if exp.protocol == "figure8":
        assert {r["setting"] for r in res["rows"]} == {
            f"{d}: {k}" for d in ("grid", "ring")
            for k in ("ali", "gan", "gan_inverse", "gan_posthoc", "vae")}
        assert [r["paper"] for r in res["rows"] if r["metric"] == "modes"][:2] == [13.4, 10.4]
        assert res["seeds"] == 2 and len(res["figures"]) == 2
    else:
        # smoke scale measures FID and KID in the pixel classifier's features, and says so
        assert [r["setting"] for r in res["rows"]] == [
            m.setting + (" (pixel classifier features)" if m.metric in ("fid", "kid") else "")
            for m in exp.measures]
        assert [r["paper"] for r in res["rows"]] == [m.paper for m in exp.measures]
        assert len(res["figures"]) == len(exp.figures)
    for f in res["figures"]:
        from PIL import Image
        assert Image.open(f).size[0] > 50
    if name == "table1":
        # Rerun: the finished stages are reused, not trained again, also where the folder
        # has moved since (its synthetic data with it).
        capsys.readouterr()
        out = out.rename(tmp_path / "moved")
        assert main(["experiment", name, "--out", str(out), "--device", "cpu"]) == 0
        log = capsys.readouterr()
        assert (log.out + log.err).count("finished earlier, reused") == len(exp.stages)
        # A rerun on other data is refused: its finished runs were trained on the first.
        import shutil
        other = shutil.copytree(out / "data" / "svhn", tmp_path / "other")
        assert main(["experiment", name, "--out", str(out), "--device", "cpu",
                     "--data-root", str(other)]) == 2
        err = capsys.readouterr().err
        assert "was trained with another config (data.root:" in err and err.count("\n") == 1


def test_full_scale_estimate_times_each_stage_once_and_counts_only_steps_left(monkeypatch):
    import ali.bench
    from ali.config import get_config
    timed = []
    monkeypatch.setattr(ali.bench, "bench", lambda cfg, **kw: timed.append(cfg.name) or {
        "step_ms": 10.0, "device": "cpu", "flops_per_image": 2e6})
    lines = []
    tiny, mnist = get_config("tiny"), get_config("mnist")
    # stage a: two seeds, 1,000 and 400 steps left; stage b: 2,000; stage c: finished
    total = runner.estimate([("a", tiny, 1000), ("a", tiny, 400), ("b", mnist, 2000),
                             ("c", mnist, 0)], lines.append)
    assert total == pytest.approx(0.01 * (1000 + 400 + 2000))
    assert timed == ["tiny", "mnist"] and "10 ms/step on cpu (2 MFLOP per image)" in lines[0]


def test_full_scale_rerun_times_only_the_unfinished_stages(tmp_path, monkeypatch, capsys):
    """An interrupted full-scale experiment, rerun: finished stages are neither timed nor
    counted, a half-trained one counts its steps left."""
    import ali.bench
    exp = runner.get("mnist")
    stages = [st.name for st in exp.stages]
    done = {stages[0]: 10**9, stages[1]: 100}                # finished; resumable at 100
    monkeypatch.setattr(runner, "_steps_done", lambda d: done.get(d.name.split("-seed")[0]))
    timed = []
    monkeypatch.setattr(ali.bench, "bench", lambda cfg, **kw: timed.append(cfg.name) or {
        "step_ms": 1000.0, "device": "cpu", "flops_per_image": 2e6})
    monkeypatch.setattr(runner, "_train", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))
    plan = {st.name: runner.stage_config(exp, st, "full", tmp_path, 0, "cpu", False)
            for st in exp.stages}
    with pytest.raises(KeyboardInterrupt):
        runner.run("mnist", "full", data_root=tmp_path, out=tmp_path / "out", device="cpu")
    out = capsys.readouterr().out
    assert timed == [plan[s].name for s in stages[1:]]
    left = (plan[stages[1]].train.steps - 100) + sum(plan[s].train.steps for s in stages[2:])
    assert f"about {left / 3600:.1f} h of training left (1 of {len(stages)} runs finished)" in out


def test_figure7_conditions_follow_the_caption():
    from ali.data.synthetic import CELEBA_ATTRIBUTES as names
    from ali.viz import figure7_conditions

    y = figure7_conditions(list(names)).view(4, 12, 40)
    on = lambda i, j: {names[k] for k in range(40) if y[i, j, k] == 1}  # noqa: E731
    assert on(0, 0) == {"Male", "Attractive", "Young"}                  # row I, column (a)
    assert on(1, 3) == {"Male", "Attractive", "Blond_Hair"}             # row II (older), (d)
    assert on(2, 7) == {"Attractive", "Young", "Blond_Hair", "Bald"}    # row III (female), (h)
    assert on(3, 11) == {"Attractive", "Black_Hair", "Smiling", "Mouth_Slightly_Open",
                         "Eyeglasses", "Wearing_Hat"}                   # row IV, (l)
    with pytest.raises(AliError, match="lacks Attractive, Male, Young"):
        figure7_conditions([n for n in names if n not in ("Male", "Young", "Attractive")])


def test_synthetic_celeba_and_imagenet64_read_back_in_their_official_formats(tmp_path):
    from ali.data import load_dataset, synthetic

    synthetic.write("celeba", tmp_path / "c", 30, 10)
    synthetic.write("imagenet64", tmp_path / "i", 30, 10)
    c = load_dataset(get_config("celeba", [f"data.root={tmp_path / 'c'}", "data.verify=false",
                                           "data.test_split=valid", "data.cache=off"]).data)
    assert c.label_names == list(synthetic.CELEBA_ATTRIBUTES)
    assert len(c.train) == 30 and len(c.test) == 10 and c.train_labels.shape == (30, 40)
    assert c.test_labels.float().mean() > 0           # attributes, not all off
    from PIL import Image
    assert Image.open(tmp_path / "c" / "img_align_celeba" / "000001.jpg").size == (178, 218)
    i = load_dataset(get_config("imagenet64", [f"data.root={tmp_path / 'i'}",
                                               "data.verify=false", "data.cache=off"]).data)
    assert len(i.train) == 30 and len(i.test) == 10 and i.data_shape == (3, 64, 64)
    assert sorted(set(i.train_labels.tolist())) == list(range(10))      # 1-based on disk


@pytest.mark.parametrize("seeds, runs", [(["--seeds", "1"], 1), (["--seeds", "3"], 3), ([], 2)])
def test_figure8_seeds_are_its_runs_per_model(seeds, runs, tmp_path, monkeypatch, capsys):
    """--seeds 1 trained 2 runs per model at smoke scale (10 at full): 1 could not be told from
    the option's default."""
    from ali.experiments import toy
    asked = []

    def stop(dataset, n, *a, **kw):
        asked.append(n)
        raise AliError("stop here")
    monkeypatch.setattr(toy, "figure8", stop)
    assert main(["experiment", "figure8", *seeds, "--out", str(tmp_path / "o"),
                 "--device", "cpu"]) == 2
    assert asked == [runs]


@pytest.mark.parametrize("command", [["experiment", "figure8"], ["experiment", "table1"],
                                     ["toy", "--runs", "1"]])
def test_an_out_that_cannot_be_a_folder_is_refused_before_training(command, tmp_path,
                                                                   monkeypatch, capsys):
    """ali toy and ali experiment figure8 trained every run, for hours at full scale, and then
    failed to write results.json into an --out that is a file (FileExistsError)."""
    from ali.experiments import toy
    trained = []
    monkeypatch.setattr(toy, "figure8", lambda *a, **kw: trained.append(a) or ({}, {}))
    monkeypatch.setattr(toy, "run", lambda *a, **kw: trained.append(a) or ({}, {}))
    (tmp_path / "file").write_text("x")
    for out in (tmp_path / "file", tmp_path / "file" / "sub"):
        assert main([*command, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert str(tmp_path / "file") in err and err.count("\n") == 1
    assert not trained


def test_a_write_interrupted_in_the_figure_leaves_no_results_to_reuse(tmp_path, monkeypatch):
    """toy.write wrote results.json first: a kill while drawing figure.png left a folder that
    figure8's rerun took for finished (with an earlier or truncated figure)."""
    from ali.experiments import toy
    data = load_dataset(get_config("toy", ["data.n_train=64", "data.n_test=64"]).data)
    res = {"dataset": "grid", "protocol": "figure8", "runs": 1, "steps": 5,
           "models": {"ali": {m: [1.0] for m in ("modes", "modes_hq", "hq", "recon_mode",
                                                 "seconds")}}, "best_run": {"ali": 0}}
    pts = {"x": np.zeros((4, 2)), "samples": np.zeros((4, 2)), "labels": np.zeros(4, int)}
    out = tmp_path / "grid"
    toy.write(res, {"ali": pts}, data, out)
    assert runner._figure8_done(out, 1, 5) == res

    def killed(figures, data, path):
        path.write_bytes(b"\x89PNG half")
        raise KeyboardInterrupt
    monkeypatch.setattr(toy, "figure", killed)
    with pytest.raises(KeyboardInterrupt):
        toy.write(res, {"ali": pts}, data, out)
    assert runner._figure8_done(out, 1, 5) is None


def test_figure8_rerun_keeps_the_datasets_it_finished(tmp_path, monkeypatch, capsys):
    """The help's 'rerun with the same folder to continue an interrupted experiment': figure8
    trained both datasets again from the start."""
    from ali.experiments import toy
    trained = []

    def fake(dataset, runs, steps, *a, **kw):
        if dataset == "ring" and not trained[1:]:
            trained.append(dataset)
            raise KeyboardInterrupt          # interrupted after the grid was written
        trained.append(dataset)
        scores = {m: [1.0] * runs for m in runner.FIGURE8_METRICS}
        return ({"dataset": dataset, "protocol": "figure8", "runs": runs, "steps": steps,
                 "models": {"ali": scores}, "best_run": {"ali": 0}}, {})

    def write(res, figs, data, out):
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(res))
        (out / "figure.png").write_bytes(b"png")
    monkeypatch.setattr(toy, "figure8", fake)
    monkeypatch.setattr(toy, "write", write)
    out = tmp_path / "o"
    with pytest.raises(KeyboardInterrupt):
        runner.run("figure8", out=out, device="cpu", log=lambda s: None)
    assert trained == ["grid", "ring"]
    res = runner.run("figure8", out=out, device="cpu", log=lambda s: None)
    assert trained == ["grid", "ring", "ring"] and len(res["rows"]) == 8
    runner.run("figure8", out=out, seeds=3, device="cpu", log=lambda s: None)
    assert trained[3:] == ["grid", "ring"]               # other runs per model: trained again


def test_synthetic_data_interrupted_while_written_is_written_again(tmp_path, monkeypatch):
    """A smoke experiment interrupted while it wrote its synthetic data left the folder half
    written; the rerun took it for the data and failed on a missing file, every time."""
    from ali.data import synthetic
    real = synthetic.WRITERS["svhn"]

    def cut(root, *a):
        (root / "train_32x32.mat").write_bytes(b"half")
        raise KeyboardInterrupt
    monkeypatch.setitem(synthetic.WRITERS, "svhn", cut)
    out = tmp_path / "o"
    with pytest.raises(KeyboardInterrupt):
        runner.run("table1", out=out, device="cpu", log=lambda s: None)
    assert not (out / "data" / "svhn").exists()
    written = []
    monkeypatch.setitem(synthetic.WRITERS, "svhn",
                        lambda root, *a: written.append(sorted(root.iterdir())) or real(root, *a))
    monkeypatch.setattr(runner, "_train", lambda *a: (_ for _ in ()).throw(AliError("stop")))
    with pytest.raises(AliError, match="stop"):
        runner.run("table1", out=out, device="cpu", log=lambda s: None)
    assert written == [[]]                       # from an empty folder
    assert {p.name for p in (out / "data" / "svhn").iterdir()} == {
        "train_32x32.mat", "test_32x32.mat", "extra_32x32.mat"}


def test_an_interrupted_experiment_says_how_to_continue_it(tmp_path, monkeypatch, capsys):
    """Interrupted in a stage, the experiment passed on train's hint, 'resume with: ali train
    svhn --out OUT/runs/svhn-seed0 --resume', which trains that stage alone."""
    import ali.train
    from ali.errors import TrainingInterrupted

    def stop(cfg, run_dir=None, **kw):
        raise TrainingInterrupted(f"interrupted; resume with: ali train {cfg.name} --resume",
                                  2, 3)
    monkeypatch.setattr(ali.train, "train", stop)
    out = tmp_path / "my out"
    assert main(["experiment", "table1", "--out", str(out), "--seeds", "2"]) == 128 + 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ali train" not in err
    assert "step 3 of svhn-seed0" in err and err.strip().endswith(
        f"continue the experiment with: ali experiment table1 --scale smoke --out '{out}' "
        "--seeds 2")
