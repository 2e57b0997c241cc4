"""Decode once: image files decoded and cropped into a memory-mapped uint8 array on disk.

A streamed dataset of image files (CelebA, ImageNet 64x64 from folders, large folders) would
otherwise be decoded again every epoch, one JPEG at a time, and the device would wait on it.
The first time such a dataset is used at a given image size and channel count, every file is
decoded once, in parallel on the machine's cores, into ``CACHE_DIR/STEM-KEY.npy`` (uint8
(N, C, H, W), the exact bytes the on-the-fly path produces), described by ``STEM-KEY.json``: the
manifest, recording the source files with their sizes and modification times, the transform
(crop, size, channels), the array's shape and a checksum of its bytes. Later runs memory-map
the array; a batch is a gather of its rows (:class:`~ali.data.CachedSampler`).

What makes it safe:

- **Atomic.** The array is written under a temporary name, flushed to disk, renamed to a name
  of its own (``STEM-KEY-TOKEN.npy``), and only then is the manifest that names it renamed into
  place. The manifest is the commit: a crash, Ctrl-C or full disk at any point before it leaves
  nothing a later run trusts, and temporary files of dead builders are removed by the next
  build.
- **Checked.** A run trusts a cache only if the manifest's transform is the one asked for, the
  source files are the same list with the same sizes and modification times, the array file has
  the recorded size and (``data.verify=true``) its bytes have the recorded checksum. Anything
  else is said in one line and the cache is rebuilt.
- **Keyed** by the source folder and the transform, so a cache of another image size is another
  file, never reused.
- **Shared.** Under ``torchrun`` the first process of each machine builds it while the others
  wait, then every process maps it (:func:`cached_source`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..checkpoint import pid_alive
from ..errors import DataError
from .images import FileImages, ImageSource, one_line

VERSION = 1
"""Manifest format; a manifest of another version is rebuilt."""

CHUNK = 256
"""Images per task of the parallel build, and per block of the checksum."""

HEADER_BYTES = 128
"""Bytes before the array in the .npy file (format 1.0, padded to 128 for (N, C, H, W))."""


def cores() -> int:
    """CPU cores this process may run on (its affinity mask, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:                       # macOS, Windows
        return os.cpu_count() or 1


def default_workers() -> int:
    """``data.workers=-1``: DataLoader workers of the on-the-fly path, one per usable core (at
    most 8: more rarely helps one device and each holds a copy of the file list)."""
    return max(1, min(cores(), 8))


def cache_root(cache_dir: str) -> Path:
    """The cache folder: ``data.cache_dir``, else ``$ALI_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/ali``, else ``~/.cache/ali``."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    if os.environ.get("ALI_CACHE_DIR"):
        return Path(os.environ["ALI_CACHE_DIR"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "ali"


# --------------------------------------------------------------------------- the array

class CachedImages:
    """Picklable ``base`` of an :class:`~ali.data.images.ImageSource`: the rows of a cache
    array, memory-mapped read-only on first use in each process."""

    def __init__(self, path: Path, shape: tuple[int, ...]) -> None:
        self.path, self.shape, self._a = Path(path), tuple(shape), None

    @property
    def array(self) -> np.ndarray:
        if self._a is None:
            self._a = np.load(self.path, mmap_mode="r")
        return self._a

    def __len__(self) -> int:
        return self.shape[0]

    def __call__(self, i: int) -> Tensor:
        return torch.from_numpy(np.array(self.array[i]))

    def gather(self, rows: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Rows ``rows`` as one uint8 (len(rows), C, H, W) array (into ``out`` if given)."""
        # mode="clip": with an out array, "raise" would gather into a temporary and copy again
        # (the rows are valid by construction)
        return np.take(self.array, rows, axis=0, out=out, mode="clip" if out is not None
                       else "raise")

    def __getstate__(self) -> dict:
        return {"path": self.path, "shape": self.shape, "_a": None}


# --------------------------------------------------------------------------- manifest

def _transform(base: FileImages, shape: tuple[int, int, int]) -> dict[str, Any]:
    return {"crop": base.crop, "size": base.size, "channels": base.channels,
            "shape": list(shape)}


def _stats(paths: list[Path]) -> list[list[Any]]:
    """[absolute name, size, mtime_ns] of each file; a missing file has size -1. Absolute, so
    that the same folder named relatively (``ali bench``) or absolutely (``ali train``) is the
    same source."""
    out = []
    for p in paths:
        name = os.path.abspath(p)
        try:
            st = os.stat(p)
            out.append([name, st.st_size, st.st_mtime_ns])
        except (OSError, ValueError):               # ValueError: a NUL in the name
            out.append([name, -1, 0])
    return out


def _source(base: FileImages) -> str:
    """The folder ``base``'s images are in (their common folder), as an absolute path."""
    # abspath, not resolve: no file system calls (a name may not even be a valid path)
    return os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in
                               (base.paths[0], base.paths[-1])]) if base.paths else ""


def _location(root: Path, base: FileImages, shape: tuple[int, int, int]) -> tuple[Path, str]:
    """(folder, stem) of the cache of ``base`` at ``shape``: keyed by the source folder and
    the transform, so another size or crop of the same images is another cache."""
    src = _source(base)
    key = json.dumps([src, _transform(base, shape)], sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    c, h, w = shape
    return root, f"{Path(src).name or 'images'}-{w}x{h}x{c}-{digest}"


def _digest_blocks(a: np.ndarray, threads: int, block: int) -> str:
    """Checksum of an (N, ...) array: blake2b of the blake2b digests of its blocks of
    ``block`` rows (so the parallel build can hash its own blocks; hashlib releases the GIL, so
    threads verify in parallel)."""
    starts = range(0, len(a), block)

    def one(s: int) -> bytes:
        return hashlib.blake2b(memoryview(np.ascontiguousarray(a[s:s + block])).cast("B"),
                               digest_size=16).digest()

    with ThreadPoolExecutor(max(1, threads)) as ex:
        digests = list(ex.map(one, starts))
    return hashlib.blake2b(b"".join(digests), digest_size=16).hexdigest()


def _why_stale(manifest: dict[str, Any], folder: Path, base: FileImages,
               shape: tuple[int, int, int]) -> str:
    """Why the cache ``manifest`` describes cannot serve ``base`` at ``shape``; "" if it can
    (the checksum aside)."""
    if not manifest:
        return "its manifest is unreadable"
    if manifest.get("version") != VERSION:
        return "it was written by another version of ali"
    if manifest.get("transform") != _transform(base, shape):
        return "it holds another transform"
    files = manifest.get("files", [])
    if not isinstance(files, list) or not all(isinstance(f, list) and len(f) == 3
                                              for f in files):
        return "its manifest's file list is damaged"
    now = _stats(base.paths)
    if len(files) != len(now):
        return f"the source has {len(now)} images, the cache {len(files)}"
    for old, new in zip(files, now):
        if old[0] != new[0]:
            return f"the source's file list changed ({new[0]})"
        if new[1] < 0:
            return f"{new[0]} is missing"
        if old[1:] != new[1:]:
            return f"{new[0]} changed since it was cached"
    data = folder / str(manifest.get("data", ""))
    n = len(files)
    want = HEADER_BYTES + n * int(np.prod(shape))
    try:
        size = data.stat().st_size
    except OSError:
        return f"its array {data} is missing"
    if size != want:
        return f"its array {data} has {size} bytes, {want} expected (truncated?)"
    return ""


def _read_manifest(path: Path) -> dict[str, Any] | None:
    try:
        manifest = json.loads(path.read_text())
    except (FileNotFoundError, NotADirectoryError):  # none yet, or no folder to hold one
        return None
    except (OSError, ValueError):
        return {}                                    # unreadable: stale, rebuilt
    return manifest if isinstance(manifest, dict) else {}


_VERIFIED: set[tuple[str, str]] = set()
"""(manifest, checksum) pairs whose array this process has checksummed already (the splits of
one dataset share one cache)."""


def open_cache(base: FileImages, shape: tuple[int, int, int], root: Path,
               verify: bool = True) -> tuple[CachedImages | None, str]:
    """The valid cache of ``base`` at ``shape`` under ``root`` and "", or (None, why not)."""
    folder, stem = _location(root, base, shape)
    manifest_path = folder / f"{stem}.json"
    manifest = _read_manifest(manifest_path)
    if manifest is None:
        return None, ""
    why = _why_stale(manifest, folder, base, shape)
    data = folder / str(manifest.get("data", ""))
    array = None
    if not why:
        # the header is read even unverified: a damaged one is a rebuild, not a traceback later
        try:
            array = np.load(data, mmap_mode="r")
        except (OSError, ValueError) as e:
            why = f"its array {data} is unreadable ({one_line(e)})"
    if not why and verify:
        key = (str(manifest_path), str(manifest.get("checksum")))
        if key not in _VERIFIED:
            try:
                got = _digest_blocks(array, cores(), int(manifest.get("block", CHUNK)))
            except (OSError, ValueError, TypeError) as e:
                got = f"unreadable ({one_line(e)})"
            if got != manifest.get("checksum"):
                why = f"its array {data} does not match its checksum"
            else:
                _VERIFIED.add(key)
    if why:
        return None, why
    return CachedImages(data, (len(base.paths), *shape)), ""


# --------------------------------------------------------------------------- the build

class CacheUnavailable(DataError):
    """The cache cannot be written here (folder, disk space); ``data.cache=auto`` then decodes
    on the fly instead."""


_W: dict[str, Any] = {}
"""The build's state in a worker process (set once by :func:`_init_worker`)."""


def _init_worker(base: FileImages, tmp: str, shape: tuple[int, int, int],
                 worker: bool = True) -> None:
    if worker:
        # Ctrl-C reaches the whole process group: the parent alone handles it (stopping the
        # workers and removing the partial file), so the workers print no tracebacks.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        torch.set_num_threads(1)
    _W.update(base=base, fd=os.open(tmp, os.O_WRONLY), shape=shape)


def _decode_chunk(start: int, stop: int) -> tuple[int, bytes, str]:
    """Decode items start..stop-1 into the array file; (start, digest, "") or (start, b"",
    the one-line error of the first unreadable image)."""
    base, shape = _W["base"], _W["shape"]
    out = np.empty((stop - start, *shape), dtype=np.uint8)
    for i in range(start, stop):
        try:
            x = base(i)
        except DataError as e:
            return start, b"", str(e)
        except Exception as e:                        # noqa: BLE001 (one line, whatever it is)
            return start, b"", f"{base.paths[i]}: {one_line(e)}"
        if tuple(x.shape) != tuple(shape):
            return start, b"", (f"{base.paths[i]} has shape {tuple(x.shape)}, expected "
                                f"{tuple(shape)} (set data.image_size to resize)")
        out[i - start] = x.numpy()
    item = int(np.prod(shape))
    try:
        os.pwrite(_W["fd"], memoryview(out).cast("B"), HEADER_BYTES + start * item)
    except OSError as e:
        return start, b"", f"!cannot write the data cache ({one_line(e)})"
    return start, hashlib.blake2b(memoryview(out).cast("B"), digest_size=16).digest(), ""


def _header(n: int, shape: tuple[int, int, int]) -> bytes:
    """The .npy header of a uint8 (n, *shape) C-order array, padded to HEADER_BYTES."""
    d = {"descr": "|u1", "fortran_order": False, "shape": (n, *shape)}
    text = repr(d).encode("latin1")
    pad = HEADER_BYTES - 10 - len(text) - 1
    if pad < 0:
        raise DataError(f"cannot cache {n} images of shape {shape} (header too long)")
    head = text + b" " * pad + b"\n"
    return b"\x93NUMPY\x01\x00" + len(head).to_bytes(2, "little") + head


def _sweep(folder: Path, stem: str, keep: str) -> None:
    """Remove this cache's arrays that no manifest names (old builds) and the temporary files
    of builders that are no longer running."""
    for p in folder.glob(f"{stem}-*"):
        name = p.name
        if name == keep or name == f"{stem}.json":
            continue
        if ".tmp-" in name:
            try:
                pid = int(name.rsplit(".tmp-", 1)[1].split("-")[0])
            except ValueError:
                continue
            if pid_alive(pid) and pid != os.getpid():
                continue
        elif not name.endswith(".npy"):
            continue
        try:
            p.unlink()
        except OSError:
            pass


def build_cache(base: FileImages, shape: tuple[int, int, int], root: Path,
                workers: int | None = None, progress: bool | None = None) -> CachedImages:
    """Decode every image of ``base`` at ``shape`` into a new cache under ``root`` (replacing
    any older one) and return it.

    ``workers`` processes (default: one per usable core) decode blocks of :data:`CHUNK`
    images and write them straight into the file. A progress bar with an estimate is shown on
    a terminal (``progress=None``) and one line says where the cache is and how big.

    Raises:
        DataError: an unreadable image (named), a cache folder that cannot be written or too
            little disk space; nothing half-built is left trusted.
    """
    folder, stem = _location(root, base, shape)
    n = len(base.paths)
    item = int(np.prod(shape))
    nbytes = HEADER_BYTES + n * item
    try:
        folder.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(folder).free
    except OSError as e:
        raise CacheUnavailable(f"cannot create the data cache folder {folder} ({one_line(e)}; "
                               f"set data.cache_dir, or data.cache=off)") from None
    if free < nbytes:
        raise CacheUnavailable(f"the data cache needs {_size(nbytes)} and {folder} has "
                               f"{_size(free)} free (set data.cache_dir to a larger disk, or "
                               f"data.cache=off)")
    token = uuid.uuid4().hex[:8]
    tmp = folder / f"{stem}-{token}.npy.tmp-{os.getpid()}"
    final = folder / f"{stem}-{token}.npy"
    manifest_tmp = folder / f"{stem}.json.tmp-{os.getpid()}-{token}"
    files = _stats(base.paths)                      # before decoding: a file changed while we
    t0 = time.perf_counter()                        # decode makes the cache stale, not wrong
    try:
        with open(tmp, "wb") as f:
            f.write(_header(n, shape))
            try:                                    # reserve the blocks now: a full disk is
                os.posix_fallocate(f.fileno(), 0, nbytes)   # an error here, not later
            except (AttributeError, OSError) as e:
                if isinstance(e, OSError) and e.errno not in (None, 95):   # 95: unsupported
                    raise
                f.truncate(nbytes)
        digests = _decode_all(base, tmp, shape, workers or cores(), progress)
        checksum = hashlib.blake2b(b"".join(digests), digest_size=16).hexdigest()
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, final)
        seconds = time.perf_counter() - t0
        manifest = {"version": VERSION, "data": final.name, "transform": _transform(base, shape),
                    "shape": [n, *shape], "dtype": "uint8", "checksum": checksum,
                    "block": CHUNK, "files": files, "seconds": round(seconds, 3),
                    "built": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        with open(manifest_tmp, "w") as f:
            json.dump(manifest, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(manifest_tmp, folder / f"{stem}.json")   # the commit
    except OSError as e:
        _remove(tmp, final, manifest_tmp)
        raise CacheUnavailable(f"cannot write the data cache in {folder} ({one_line(e)}; set "
                               f"data.cache_dir, or data.cache=off)") from None
    except BaseException:
        _remove(tmp, final, manifest_tmp)
        raise
    _sweep(folder, stem, final.name)
    _VERIFIED.add((str(folder / f"{stem}.json"), checksum))
    print(f"data cache: {n:,} images of {shape[0]}x{shape[1]}x{shape[2]} in {final} "
          f"({_size(nbytes)}, built in {seconds:.1f} s, {n / max(seconds, 1e-9):,.0f} images/s)",
          file=sys.stderr, flush=True)
    return CachedImages(final, (n, *shape))


def _remove(*paths: Path) -> None:
    for p in paths:
        try:
            p.unlink()
        except OSError:
            pass


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def _decode_all(base: FileImages, tmp: Path, shape: tuple[int, int, int], workers: int,
                progress: bool | None) -> list[bytes]:
    """The digests of every block, decoded by ``workers`` processes (in this process when
    one suffices); the first unreadable image is a one-line DataError."""
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    from tqdm.auto import tqdm

    n = len(base.paths)
    blocks = [(s, min(s + CHUNK, n)) for s in range(0, n, CHUNK)]
    workers = max(1, min(workers, len(blocks)))
    digests: dict[int, bytes] = {}
    bar = tqdm(total=n, unit="img", desc=f"decoding {n:,} images into the data cache",
               disable=None if progress is None else not progress, dynamic_ncols=True,
               file=sys.stderr)
    try:
        if workers == 1:
            _init_worker(base, str(tmp), shape, worker=False)
            try:
                for s, e in blocks:
                    start, digest, err = _decode_chunk(s, e)
                    if err:
                        raise _error(err)
                    digests[start] = digest
                    bar.update(e - s)
            finally:
                os.close(_W.pop("fd"))
                _W.clear()
            return [digests[s] for s, _ in blocks]
        # fork where there is one: the workers inherit the file list instead of unpickling it
        method = "fork" if "fork" in mp.get_all_start_methods() else None
        ex = ProcessPoolExecutor(workers, mp_context=mp.get_context(method),
                                 initializer=_init_worker, initargs=(base, str(tmp), shape))
        try:
            # a few blocks in flight per worker, not all: an error stops the build soon
            todo = iter(blocks)
            pending = set()
            for b in todo:
                pending.add(ex.submit(_decode_chunk, *b))
                if len(pending) >= 4 * workers:
                    break
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    start, digest, err = fut.result()
                    if err:
                        raise _error(err)
                    digests[start] = digest
                    bar.update(min(start + CHUNK, n) - start)
                    nxt = next(todo, None)
                    if nxt is not None:
                        pending.add(ex.submit(_decode_chunk, *nxt))
        except BaseException as e:
            _stop(ex)
            if isinstance(e, (DataError, KeyboardInterrupt)):
                raise
            from concurrent.futures.process import BrokenProcessPool

            if isinstance(e, BrokenProcessPool):
                raise DataError("a data cache worker died while decoding (out of memory?); "
                                "set data.cache=off to decode on the fly") from None
            raise
        ex.shutdown(wait=True)
        return [digests[s] for s, _ in blocks]
    finally:
        bar.close()


def _error(err: str) -> DataError:
    """A worker's message as an error: "!..." is the cache's own (a write failed), the rest
    the data's."""
    return CacheUnavailable(err[1:]) if err.startswith("!") else DataError(err)


def _stop(ex: Any) -> None:
    """Stop a ProcessPoolExecutor now: queued blocks cancelled, running workers killed."""
    procs = list(getattr(ex, "_processes", {}).values())
    ex.shutdown(wait=False, cancel_futures=True)
    for p in procs:
        if p.is_alive():
            p.terminate()
    for p in procs:
        p.join(timeout=5)


# --------------------------------------------------------------------------- entry point

def cached_source(source: ImageSource, cache_dir: str, verify: bool = True,
                  required: bool = False) -> ImageSource:
    """``source`` reading from its decode-once cache (built now if missing or stale).

    Only sources of image files are cached (others are returned as they are). When the cache
    cannot be built (no space, a folder that cannot be written) ``required=False``
    (``data.cache=auto``) says so in one line and returns ``source`` (decoded on the fly);
    ``required=True`` (``data.cache=on``) raises. An unreadable image always raises.

    Under ``torchrun`` the first process of each machine checks or builds the cache while the
    others wait; then each process maps it.

    Raises:
        DataError: one line, as above.
    """
    base = source.base
    if not isinstance(base, FileImages) or not base.paths:
        return source
    root = cache_root(cache_dir)
    shape = tuple(source.shape)
    from .. import distributed

    builder = distributed.from_env().local_rank == 0 or not distributed.active()
    cached: CachedImages | None = None
    error: str | None = None
    fallback = ""
    if builder:
        try:
            cached, why = open_cache(base, shape, root, verify)
            if cached is None:
                if why:
                    print(f"data cache of {_source(base)} is stale ({why}); "
                          f"rebuilding", file=sys.stderr, flush=True)
                cached = build_cache(base, shape, root,
                                     progress=None if distributed.from_env().rank == 0
                                     else False)
        except CacheUnavailable as e:
            if required:
                error = str(e)
            else:
                fallback = str(e)
        except DataError as e:
            error = str(e)
    if distributed.active():
        # Everyone waits for the builders, and fails with the same line if one failed.
        import torch.distributed as dist

        outcomes: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(outcomes, (error, fallback))
        error = next((e for e, _ in outcomes if e), None)
        fallback = fallback or next((f for _, f in outcomes if f), "")
        if error is None and not fallback and not builder:
            cached, why = open_cache(base, shape, root, verify=False)   # checked by the builder
            if cached is None:
                error = (f"the data cache under {root} is not visible to every process "
                         f"({why or 'no manifest'}); set data.cache_dir to a folder they share")
    if error:
        raise DataError(error)
    if fallback or cached is None:
        if builder and fallback:
            print(f"{fallback}; decoding on the fly instead", file=sys.stderr, flush=True)
        return source
    return ImageSource(cached, source.index, source.shape)
