"""The decode-once cache (ali.data.cache): the same batches as decoding on the fly, exact
resume, and every way a cache can be wrong (unreadable image, changed source, another size,
an interrupted build, a damaged array, no disk space) is one line and nothing half-built is
trusted."""

import os

import numpy as np
import pytest
import torch
from test_datasets import data_cfg, make_celeba, one_line_error

from ali.cli import main
from ali.data import CachedSampler, StreamSampler, cache, load_dataset, make_sampler
from ali.data.cache import CachedImages
from ali.errors import DataError


def make_celeba_varied(root, n=40):
    """A CelebA-format folder whose JPEGs differ (noise), so an order mix-up shows."""
    from PIL import Image

    make_celeba(root, n=n, partition=[0] * (n - 8) + [1] * 4 + [2] * 4)
    rng = np.random.default_rng(1)
    for i in range(n):
        a = rng.integers(0, 256, (218, 178, 3), dtype=np.uint8)
        Image.fromarray(a).save(root / "img_align_celeba" / f"{i + 1:06d}.jpg", quality=90)
    return root


def cfg(root, tmp_path, *overrides):
    return data_cfg("celeba", root, f"data.cache_dir={tmp_path / 'cache'}", *overrides)


def files(tmp_path):
    d = tmp_path / "cache"
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


def test_cached_batches_are_the_on_the_fly_batches_and_resume_exactly(tmp_path, capsys):
    root = make_celeba_varied(tmp_path / "c")
    d = load_dataset(cfg(root, tmp_path))
    assert isinstance(d.train.base, CachedImages) and d.streamed and len(d.train) == 32
    err = capsys.readouterr().err
    assert "data cache: 40 images" in err and str(tmp_path / "cache") in err and "KB" in err
    names = files(tmp_path)
    assert len(names) == 2 and names[1].endswith(".json")           # the array and manifest
    fly = load_dataset(cfg(root, tmp_path, "data.cache=off"))
    assert not isinstance(fly.train.base, CachedImages)
    for runs in (1, 2):
        a = make_sampler(d, 6, runs=runs, seed=5, with_labels=True)
        b = make_sampler(fly, 6, runs=runs, seed=5, with_labels=True)
        assert isinstance(a, CachedSampler) and type(b) is StreamSampler
        for _ in range(12):                                         # crosses epochs (32 // 6)
            (xa, ya), (xb, yb) = a.next(), b.next()
            assert xa.dtype == torch.float32 and torch.equal(xa, xb) and torch.equal(ya, yb)
        b.close()
    # The CPU path converts with numpy in one pass: the same bits as .float().div_(255).
    every = torch.arange(256, dtype=torch.uint8)
    x = torch.empty(256)
    np.divide(every.numpy(), np.float32(255), out=x.numpy(), dtype=np.float32)
    assert torch.equal(x, every.float().div_(255))
    # Exact resume: the state of either path resumes either path.
    a = make_sampler(d, 6, runs=2, seed=5)
    for _ in range(3):
        a.next()
    state = a.state_dict()
    want = [a.next() for _ in range(7)]
    for ds in (d, fly):
        r = make_sampler(ds, 6, runs=2, seed=123, workers=0)
        r.load_state_dict(state)
        assert all(torch.equal(w, r.next()) for w in want)
    # The held-out split and load_all read the same cache.
    assert torch.equal(d.test.load_all(), fly.test.load_all())
    # A second load maps the same cache: nothing rebuilt, nothing said.
    again = load_dataset(cfg(root, tmp_path))
    assert again.train.base.path == d.train.base.path and capsys.readouterr().err == ""
    assert files(tmp_path) == names


def test_training_on_the_cache_gives_the_same_model(tmp_path):
    from ali.config import get_config
    from ali.train import train

    root = make_celeba_varied(tmp_path / "c", n=24)
    over = ["data.name=celeba", f"data.root={root}", "data.verify=false", "data.workers=0",
            f"data.cache_dir={tmp_path / 'cache'}", "train.steps=3", "train.batch_size=8",
            "train.log_every=3", "train.checkpoint_every=3", "train.progress=off",
            "train.device=cpu", "model.nets=tiny", "data.image_size=8"]
    models = []
    for mode in ("on", "off"):
        r = train(get_config("tiny", [*over, f"data.cache={mode}"]), quiet=True)
        models.append(r.model.state_dict())
    # Exact resume: stopped at step 2 and resumed, on either path, the same model again.
    for first, then in (("on", "on"), ("off", "on"), ("on", "off")):
        run = tmp_path / f"run-{first}-{then}"
        train(get_config("tiny", [*over, f"data.cache={first}", "train.checkpoint_every=1"]),
              run_dir=run, quiet=True, until=2)
        r = train(get_config("tiny", [*over, f"data.cache={then}", "train.checkpoint_every=1"]),
                  run_dir=run, resume=True, quiet=True)
        models.append(r.model.state_dict())
    for m in models[1:]:
        for k, v in models[0].items():
            assert torch.equal(v, m[k]), k


def test_unreadable_image_is_one_line_and_leaves_no_cache(tmp_path, capsys):
    root = make_celeba_varied(tmp_path / "c")
    (root / "img_align_celeba" / "000007.jpg").write_bytes(b"garbage")
    with pytest.raises(DataError) as e:
        load_dataset(cfg(root, tmp_path))
    one_line_error(e, "000007.jpg", "not a readable image")
    assert files(tmp_path) == []
    code = main(["train", "celeba", "--set", "data.root=" + str(root), "--set",
                 f"data.cache_dir={tmp_path / 'cache'}", "--set", "train.device=cpu",
                 "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code != 0 and err.count("\n") == 1 and "000007.jpg" in err, err
    assert "Traceback" not in err and files(tmp_path) == []


def test_parallel_build_matches_and_its_errors_stop_it(tmp_path, monkeypatch):
    monkeypatch.setattr(cache, "CHUNK", 4)                 # 10 blocks over 2 processes
    root = make_celeba_varied(tmp_path / "c")
    fly = load_dataset(cfg(root, tmp_path, "data.cache=off", "data.train_split=all",
                           "data.test_split="))
    src = fly.train
    built = cache.build_cache(src.base, src.shape, tmp_path / "cache", workers=2)
    assert torch.equal(torch.from_numpy(built.gather(np.arange(40))), src.load_all())
    opened, why = cache.open_cache(src.base, src.shape, tmp_path / "cache")
    assert why == "" and opened.path == built.path
    (root / "img_align_celeba" / "000033.jpg").write_bytes(b"\xff\xd8garbage")
    with pytest.raises(DataError) as e:
        cache.build_cache(src.base, src.shape, tmp_path / "other", workers=2)
    one_line_error(e, "000033.jpg")
    assert list((tmp_path / "other").iterdir()) == []


def test_changed_source_is_detected_and_rebuilt(tmp_path, capsys):
    from PIL import Image

    root = make_celeba_varied(tmp_path / "c")
    d = load_dataset(cfg(root, tmp_path, "data.train_split=all", "data.test_split="))
    before = d.train.load_all()
    capsys.readouterr()
    f = root / "img_align_celeba" / "000003.jpg"
    Image.fromarray(np.zeros((218, 178, 3), np.uint8)).save(f)
    os.utime(f, ns=(1, 1))                                 # a different mtime, surely
    d = load_dataset(cfg(root, tmp_path, "data.train_split=all", "data.test_split="))
    err = capsys.readouterr().err
    assert "000003.jpg changed since it was cached" in err and "rebuilding" in err
    after = d.train.load_all()
    assert int(after[2].max()) == 0 and torch.equal(after[3], before[3])
    assert len(files(tmp_path)) == 2                        # the old array was removed
    f.unlink()                                             # a partial source
    with pytest.raises(DataError) as e:
        load_dataset(cfg(root, tmp_path, "data.train_split=all", "data.test_split="))
    one_line_error(e, "000003.jpg")


def test_cache_of_another_size_is_not_reused(tmp_path):
    root = make_celeba_varied(tmp_path / "c")
    d64 = load_dataset(cfg(root, tmp_path))
    d32 = load_dataset(cfg(root, tmp_path, "data.image_size=32"))
    assert d64.train.base.path != d32.train.base.path
    assert d32.train.load_all().shape == (32, 3, 32, 32)
    # A manifest of another transform under this key (copied by hand) is not trusted.
    (m32,) = (tmp_path / "cache").glob("*32x32x3*.json")
    (m64,) = (tmp_path / "cache").glob("*64x64x3*.json")
    m64.write_text(m32.read_text())
    src = load_dataset(cfg(root, tmp_path, "data.cache=off")).train
    assert cache.open_cache(src.base, src.shape, tmp_path / "cache") == (
        None, "it holds another transform")


def test_interrupted_build_leaves_nothing_trusted(tmp_path, monkeypatch):
    root = make_celeba_varied(tmp_path / "c")
    src = load_dataset(cfg(root, tmp_path, "data.cache=off")).train
    real = cache._decode_chunk
    calls = []

    def interrupted(start, stop):
        calls.append(start)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(start, stop)

    monkeypatch.setattr(cache, "CHUNK", 8)
    monkeypatch.setattr(cache, "_decode_chunk", interrupted)
    with pytest.raises(KeyboardInterrupt):
        cache.build_cache(src.base, src.shape, tmp_path / "cache", workers=1)
    assert files(tmp_path) == []
    monkeypatch.setattr(cache, "_decode_chunk", real)
    # A build killed outright (no clean-up): its temporary file and an array without a
    # manifest are never trusted, and the next build removes them.
    folder, stem = cache._location(tmp_path / "cache", src.base, src.shape)
    (folder / f"{stem}-dead.npy.tmp-999999999").write_bytes(b"x" * 100)
    (folder / f"{stem}-0123abcd.npy").write_bytes(b"y" * 100)
    assert cache.open_cache(src.base, src.shape, tmp_path / "cache") == (None, "")
    d = load_dataset(cfg(root, tmp_path))
    assert isinstance(d.train.base, CachedImages) and len(files(tmp_path)) == 2


def test_damaged_array_fails_its_checksum_and_is_rebuilt(tmp_path, capsys):
    root = make_celeba_varied(tmp_path / "c")
    d = load_dataset(cfg(root, tmp_path))
    want = d.train.load_all()
    path = d.train.base.path
    with open(path, "r+b") as f:                           # one byte, same size and mtime
        f.seek(cache.HEADER_BYTES + 1000)
        b = f.read(1)
        f.seek(cache.HEADER_BYTES + 1000)
        f.write(bytes([b[0] ^ 0xFF]))
    cache._VERIFIED.clear()                                # as a new process
    capsys.readouterr()
    d = load_dataset(cfg(root, tmp_path, "data.verify=true"))
    assert "does not match its checksum" in capsys.readouterr().err
    assert torch.equal(d.train.load_all(), want)
    with open(d.train.base.path, "r+b") as f:              # truncated
        f.truncate(5000)
    d = load_dataset(cfg(root, tmp_path, "data.verify=false"))
    assert torch.equal(d.train.load_all(), want)


@pytest.mark.parametrize("damage", ["list", "files-none", "header"])
def test_a_damaged_manifest_or_array_header_is_rebuilt_not_a_traceback(tmp_path, capsys,
                                                                        damage):
    import json
    root = make_celeba_varied(tmp_path / "c")
    d = load_dataset(cfg(root, tmp_path))
    want = d.train.load_all()
    (manifest,) = (tmp_path / "cache").glob("*.json")
    if damage == "list":                                   # valid JSON, not a manifest
        manifest.write_text("[1, 2]")
    elif damage == "files-none":
        m = json.loads(manifest.read_text())
        manifest.write_text(json.dumps({**m, "files": None}))
    else:                                                  # unverified: the header is read
        with open(d.train.base.path, "r+b") as f:
            f.write(b"X" * 10)
    cache._VERIFIED.clear()
    capsys.readouterr()
    d = load_dataset(cfg(root, tmp_path, "data.verify=false"))
    err = capsys.readouterr().err
    assert "is stale" in err and "rebuilding" in err and str(root) in err, err
    assert torch.equal(d.train.load_all(), want)


def test_a_folder_named_relatively_or_absolutely_is_one_cache(tmp_path, monkeypatch, capsys):
    # ali bench passes data.root as typed, ali train as an absolute path: one cache serves both
    root = make_celeba_varied(tmp_path / "c")
    load_dataset(cfg(root, tmp_path))
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    d = load_dataset(cfg("c", tmp_path))
    assert "stale" not in capsys.readouterr().err and isinstance(d.train.base, CachedImages)
    assert len(files(tmp_path)) == 2


def test_no_space_refuses_or_falls_back_in_one_line(tmp_path, monkeypatch, capsys):
    root = make_celeba_varied(tmp_path / "c")
    usage = cache.shutil.disk_usage(tmp_path)
    monkeypatch.setattr(cache.shutil, "disk_usage",
                        lambda p: usage._replace(free=1000))
    with pytest.raises(DataError) as e:
        load_dataset(cfg(root, tmp_path, "data.cache=on"))
    one_line_error(e, "data cache needs", "free", "data.cache=off")
    capsys.readouterr()
    d = load_dataset(cfg(root, tmp_path))                   # auto: on the fly instead
    assert not isinstance(d.train.base, CachedImages)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "decoding on the fly instead" in err
    assert files(tmp_path) == []
    # A write that fails part-way (a disk filling up under us) leaves nothing either.
    monkeypatch.undo()

    def full(*a):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cache.os, "pwrite", full)
    with pytest.raises(DataError) as e:
        load_dataset(cfg(root, tmp_path, "data.cache=on"))
    one_line_error(e, "No space left on device")
    assert files(tmp_path) == []


def test_default_workers_come_from_the_machine(tmp_path):
    root = make_celeba_varied(tmp_path / "c", n=12)
    d = load_dataset(data_cfg("celeba", root, "data.workers=-1", "data.cache=off",
                              "data.train_split=all", "data.test_split="))
    assert d.workers == cache.default_workers() >= 1
    assert cache.default_workers() <= len(os.sched_getaffinity(0))


def test_bench_reports_the_data_rate_beside_the_step(tmp_path, capsys):
    from ali.bench import bench

    root = make_celeba_varied(tmp_path / "c", n=24)
    over = ["data.name=celeba", f"data.root={root}", "data.verify=false", "data.test_split=",
            f"data.cache_dir={tmp_path / 'cache'}", "train.device=cpu", "data.image_size=8",
            "train.batch_size=8"]
    r = bench("tiny", steps=2, warmup=1, repeats=1, overrides=over)
    assert r["data_path"] == "cache" and r["data_images_per_s"] > 0
    assert r["bound_by"] == ("data" if r["data_images_per_s"] < r["images_per_s"] else "step")
    r = bench("tiny", steps=2, warmup=1, repeats=1,
              overrides=[*over, "data.cache=off", "data.workers=0"])
    assert r["data_path"] == "on the fly (0 workers)"
    assert "data_images_per_s" not in bench("tiny", steps=1, warmup=0, repeats=1,
                                            overrides=["train.device=cpu"])
    capsys.readouterr()
    assert main(["bench", "tiny", "--steps", "1", "--repeats", "1",
                 *[a for o in over for a in ("--set", o)]]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1].startswith("precision=auto chose fp32: ")
    assert len(out) == 3 and out[2].startswith("data: ") and "(cache)" in out[2]
    assert "training is bound by the" in out[2]


def _die(start, stop):
    os._exit(9)                                            # a worker killed mid-build (OOM)


def test_a_worker_killed_mid_build_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    root = make_celeba_varied(tmp_path / "c", n=12)
    src = load_dataset(cfg(root, tmp_path, "data.cache=off", "data.train_split=all",
                           "data.test_split=")).train
    monkeypatch.setattr(cache, "CHUNK", 4)
    monkeypatch.setattr(cache, "_decode_chunk", _die)      # forked workers inherit it
    with pytest.raises(DataError) as e:
        cache.build_cache(src.base, src.shape, tmp_path / "cache", workers=2)
    one_line_error(e, "worker died", "data.cache=off")
    assert files(tmp_path) == []


def test_ctrl_c_during_a_parallel_build_stops_the_workers_and_leaves_nothing(tmp_path,
                                                                             monkeypatch):
    import tqdm.auto

    class Interrupted(tqdm.auto.tqdm):
        done = 0

        def update(self, n=1):
            super().update(n)
            Interrupted.done += n
            if Interrupted.done >= 8:                       # Ctrl-C after two blocks
                raise KeyboardInterrupt

    root = make_celeba_varied(tmp_path / "c", n=40)
    src = load_dataset(cfg(root, tmp_path, "data.cache=off", "data.train_split=all",
                           "data.test_split=")).train
    monkeypatch.setattr(cache, "CHUNK", 4)
    monkeypatch.setattr(tqdm.auto, "tqdm", Interrupted)
    with pytest.raises(KeyboardInterrupt):
        cache.build_cache(src.base, src.shape, tmp_path / "cache", workers=2)
    assert files(tmp_path) == []
    import multiprocessing

    assert multiprocessing.active_children() == []          # no worker left running


def test_the_sampler_threads_never_parse_the_array_header(tmp_path, monkeypatch):
    """np.load parses the .npy header with ast.literal_eval, which CPython 3.11 cannot run in
    two threads at once (SystemError: AST constructor recursion depth mismatch, seen in CI):
    the array is mapped in the caller's thread before the prefetch threads start."""
    import ast
    import threading

    root = make_celeba_varied(tmp_path / "c", n=12)
    d = load_dataset(cfg(root, tmp_path, "data.train_split=all", "data.test_split="))
    threads = []
    real = ast.literal_eval

    def spy(*a, **k):
        threads.append(threading.current_thread().name)
        return real(*a, **k)

    monkeypatch.setattr(ast, "literal_eval", spy)
    d.train.base._a = None                      # as a fresh process would find it
    s = make_sampler(d, 2, seed=0)
    assert isinstance(s, CachedSampler) and s.threads >= 1
    try:
        for _ in range(4):
            s.next()
    finally:
        s.close()
    assert threads == [threading.main_thread().name]
