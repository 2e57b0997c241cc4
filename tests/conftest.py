import os

# The tests' tensors are tiny: extra intra-op threads only add synchronisation, and on a busy
# machine OpenMP's barrier waits make a step a hundred times slower. Subprocesses (the CLI
# tests) inherit the variable; this process is set below.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Decode-once caches of the tests' synthetic images go to a temporary folder, never ~/.cache.
if "ALI_CACHE_DIR" not in os.environ:
    import tempfile

    os.environ["ALI_CACHE_DIR"] = tempfile.mkdtemp(prefix="ali-test-cache-")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


from ali.config import get_config


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


def tiny_toy(*overrides: str):
    """The toy preset shrunk to run in well under a second, as pure ALI (no cycle term, no R1)
    so that every model kind builds from it; its decoder's batch norm never freezes."""
    return get_config("toy", ["model.recon_weight=0", "model.r1_weight=0", "model.r1_every=1",
                              "model.freeze_decoder_bn_at=1",
                              "model.width=16", "model.disc_width=8", "model.maxout_pieces=2",
                              "data.n_train=512", "data.n_test=256", "train.steps=4",
                              "train.batch_size=32", "train.log_every=2", "train.progress=off",
                              "train.device=cpu", *overrides])


def own_data(folder, preset: str, n: int, size: int = 8):
    """Data for the presets for your own data in ``folder``: ``table``'s CSV of ``n`` rows of 3
    features, or ``folder``'s ``n`` random ``size`` x ``size`` colour PNGs; its data.root."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    if preset == "table":
        root = folder / "t.csv"
        root.write_text("a,b,c\n" + "".join(f"{u},{v},{w}\n" for u, v, w in rng.normal(
            size=(n, 3))))
        return root
    root = folder / "images"
    root.mkdir()
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(
            root / f"{i}.png")
    return root
