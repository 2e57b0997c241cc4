"""The machine's measured peak: GFLOP/s of a large matrix multiply and convolution, per precision.

    PYTHONPATH=src python benchmarks/peak_flops.py [--device auto] [--precision fp32 bf16]

What `ali bench --peak` compares a training step with (the matrix multiply). Median of 5 after
a warm-up; on a shared machine run it a few times.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from ali.bench import peak_gflops
from ali.speed import DTYPES
from ali.train import resolve_device


def conv_gflops(device: str, precision: str, repeats: int = 5) -> float:
    """A 3x3 convolution, 128 -> 128 maps on 100 x 32 x 32 (channels-last), forward only."""
    dev = resolve_device(device)
    dtype = {"fp32": torch.float32, **DTYPES}[precision]
    conv = torch.nn.Conv2d(128, 128, 3, padding=1).to(dev, dtype).to(
        memory_format=torch.channels_last)
    x = torch.randn(100, 128, 32, 32, device=dev, dtype=dtype).contiguous(
        memory_format=torch.channels_last)
    flops = 2 * 100 * 128 * 32 * 32 * 128 * 9
    times = []
    with torch.no_grad():
        conv(x)
        for _ in range(repeats):
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            conv(x)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
    return flops / statistics.median(times) / 1e9


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", nargs="+", default=["fp32", "bf16"])
    p.add_argument("--n", type=int, default=4096, help="matrix size")
    a = p.parse_args()
    print(f"{resolve_device(a.device)}, {torch.get_num_threads()} threads")
    for prec in a.precision:
        print(f"  {prec}: matmul {a.n}x{a.n} {peak_gflops(a.device, prec, a.n):7.1f} GFLOP/s, "
              f"conv 3x3 {conv_gflops(a.device, prec):7.1f} GFLOP/s")


if __name__ == "__main__":
    main()
