"""The data pipeline's images/s: decoding JPEGs on the fly against the decode-once cache (a
benchmark, not a test; docs, "The data pipeline").

    python benchmarks/data_throughput.py                   # 20,000 images in /tmp
    python benchmarks/data_throughput.py --n 5000 --repeats 3

Writes a CelebA-format folder of ``--n`` synthetic 178 x 218 JPEGs (smooth random faces-sized
pictures, about the size of CelebA's files; kept between runs), then, in one run so the ratios
are side by side:

- the cache build: decoding every image into a fresh cache with 1 process and with one per
  usable core (the build's speed-up over a single process);
- the batches delivered to the training loop (float 64 x 64 x 3 on the CPU, batches of
  ``--batch``, exactly as training draws them) decoded on the fly by 0, 1 and 2 DataLoader
  workers, and gathered from the cache.

Each rate is the median of ``--repeats`` timed chunks. ``ali bench celeba --set
data.root=FOLDER`` then shows the data rate beside the step's.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

from ali.config import get_config
from ali.data import cache, load_dataset, make_sampler


def _write(args: tuple[Path, int, int]) -> None:
    from PIL import Image

    folder, start, stop = args
    for i in range(start, stop):
        rng = np.random.default_rng(i)
        # low-frequency colour fields plus a little grain: JPEGs of CelebA's size (~10 KB)
        small = rng.integers(0, 256, (14, 12, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((178, 218), Image.BICUBIC)
        a = np.asarray(img, dtype=np.int16) + rng.integers(-6, 7, (218, 178, 3))
        Image.fromarray(a.clip(0, 255).astype(np.uint8)).save(
            folder / f"{i + 1:06d}.jpg", quality=90)


def write_celeba(root: Path, n: int) -> Path:
    """A CelebA-format folder of ``n`` synthetic JPEGs (written once, reused after)."""
    folder = root / "img_align_celeba"
    attr = root / "list_attr_celeba.txt"
    if attr.exists() and int(attr.read_text().split("\n", 1)[0]) == n:
        return root
    if root.exists():
        shutil.rmtree(root)
    folder.mkdir(parents=True)
    t0 = time.perf_counter()
    step = 500
    with ProcessPoolExecutor(cache.cores()) as ex:
        list(ex.map(_write, [(folder, s, min(s + step, n)) for s in range(0, n, step)]))
    names = [f"{i + 1:06d}.jpg" for i in range(n)]
    head = [str(n), " ".join(f"Attr{k}" for k in range(40))]
    attr.write_text("\n".join(head + [f + " -1" * 40 for f in names]) + "\n")
    (root / "list_eval_partition.txt").write_text("".join(f"{f} 0\n" for f in names))
    print(f"wrote {n:,} JPEGs of 178x218 into {folder} in {time.perf_counter() - t0:.0f} s "
          f"({sum(p.stat().st_size for p in folder.iterdir()) / n / 1e3:.1f} KB each)",
          flush=True)
    return root


def rate(sampler, batches: int, repeats: int, batch: int) -> float:
    """Median images/s of ``repeats`` chunks of ``batches`` batches, after a warm-up."""
    for _ in range(3):
        sampler.next()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(batches):
            sampler.next()
        times.append(time.perf_counter() - t0)
    return batches * batch / statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--n", type=int, default=20_000, help="synthetic images (default 20,000)")
    p.add_argument("--root", default=os.path.join(tempfile.gettempdir(), "ali-data-bench"),
                   help="where the folder is written (default: TMP/ali-data-bench)")
    p.add_argument("--batch", type=int, default=100, help="batch size (default 100)")
    p.add_argument("--repeats", type=int, default=5, help="timed chunks per rate (default 5)")
    p.add_argument("--fly-images", type=int, default=1500,
                   help="images per timed chunk decoded on the fly (default 1500)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    root = write_celeba(Path(a.root) / f"celeba-{a.n}", a.n)
    cache_dir = Path(a.root) / "cache"
    cfg = get_config("celeba", [f"data.root={root}", "data.test_split=",
                                f"data.cache_dir={cache_dir}", "data.verify=false"]).data
    fly = load_dataset(get_config("celeba", [f"data.root={root}", "data.test_split=",
                                             "data.cache=off"]).data)
    src = fly.train
    cores = cache.cores()
    print(f"{a.n:,} images, batch {a.batch}, {cores} usable cores, torch threads {a.threads}, "
          f"repeats {a.repeats} (medians)", flush=True)

    # The build: 1 process, then one per core (the cache the batches below come from), each
    # into a fresh folder.
    build = {}
    for workers in sorted({1, cores}):
        folder = cache_dir if workers == cores else Path(a.root) / f"build-{workers}"
        shutil.rmtree(folder, ignore_errors=True)
        t0 = time.perf_counter()
        cache.build_cache(src.base, src.shape, folder, workers=workers, progress=False)
        build[workers] = time.perf_counter() - t0
        if folder != cache_dir:
            shutil.rmtree(folder)
    rows = [(f"build, {w} process{'es' if w > 1 else ''}", a.n / s, f"{s:.1f} s")
            for w, s in build.items()]

    # The batches training draws: on the fly, then from the cache.
    fly_batches = max(1, a.fly_images // a.batch)
    for workers in (0, 1, 2):
        s = make_sampler(fly, a.batch, seed=0, workers=workers)
        rows.append((f"on the fly, {workers} workers", rate(s, fly_batches, a.repeats, a.batch),
                     ""))
        s.close()
    cached = load_dataset(cfg)
    s = make_sampler(cached, a.batch, seed=0)
    cache_rate = rate(s, max(50, 200_000 // a.batch // a.repeats), a.repeats, a.batch)
    rows.append(("cache (memory map)", cache_rate, ""))

    by = {name: r for name, r, _ in rows}
    default = f"on the fly, {min(cores, 2)} workers"
    print("\n| path | images/s | note |\n|---|---:|---|")
    for name, r, note in rows:
        print(f"| {name} | {r:,.0f} | {note} |")
    print(f"\ncache / on the fly with {min(cores, 2)} workers (the default here): "
          f"{cache_rate / by[default]:.1f}x; cache / 0 workers: "
          f"{cache_rate / by['on the fly, 0 workers']:.1f}x")
    if cores > 1:
        print(f"build with {cores} processes / 1 process: {build[1] / build[cores]:.2f}x")
    print(f"cache: {cache_dir} ({sum(f.stat().st_size for f in cache_dir.iterdir()) / 1e6:.0f} "
          f"MB); load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
