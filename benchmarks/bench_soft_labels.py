"""Benchmark: fast SVLS / mSVLS against the reference approach (grouped conv3d with replicate padding).

The reference implementation of SVLS builds the 3×3×3 kernel, one-hot encodes the labels, pads them with
'replicate' and runs a grouped ``conv3d`` (one group per class). This script times that approach and
:func:`napari_seg_uncertainty.core.labels.svls` on the same 4-class 155×240×240 volume (BraTS size),
interleaving the two so that load from other processes hits both alike, and prints the median of several
repeats, the speed ratio, the max abs difference and the peak memory of each (measured in fresh
subprocesses with ``ru_maxrss``, plus ``tracemalloc`` for the numpy-only fast path).

Run::

    python benchmarks/bench_soft_labels.py            # full size, 5 repeats
    python benchmarks/bench_soft_labels.py --quick    # small volume, smoke test
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from napari_seg_uncertainty.core.labels import msvls, svls


def make_labels(shape: tuple[int, int, int], num_classes: int, *, seed: int = 0) -> np.ndarray:
    """Nested blobs (tumour-like) with a little label noise, values ``0 .. num_classes - 1``."""
    rng = np.random.default_rng(seed)
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    centre = np.array(shape) / 2.0
    radius = np.sqrt(
        ((z - centre[0]) / 1.0) ** 2 + ((y - centre[1]) / 1.2) ** 2 + ((x - centre[2]) / 0.9) ** 2
    ).astype(np.float32)
    radius += rng.normal(0.0, 2.0, size=shape).astype(np.float32)  # ragged boundaries
    labels = np.zeros(shape, dtype=np.uint8)
    biggest = min(shape) * 0.45
    for class_index in range(1, num_classes):
        labels[radius < biggest * (num_classes - class_index) / (num_classes - 1)] = class_index
    return labels


def reference_kernel(sigma: float = 1.0) -> torch.Tensor:
    """3×3×3 SVLS kernel built as in the paper (Gaussian, centre := sum of neighbours, / centre)."""
    grid = torch.arange(3, dtype=torch.float64) - 1.0
    zz, yy, xx = torch.meshgrid(grid, grid, grid, indexing="ij")
    gaussian = torch.exp(-(zz**2 + yy**2 + xx**2) / (2.0 * sigma**2)) / (2.0 * math.pi * sigma**2) ** 1.5
    gaussian = gaussian / gaussian.sum()
    neighbours = 1.0 - gaussian[1, 1, 1]
    gaussian[1, 1, 1] = neighbours
    return (gaussian / neighbours).float()


def reference_one_hot(labels: np.ndarray, num_classes: int) -> torch.Tensor:
    onehot = F.one_hot(torch.from_numpy(labels.astype(np.int64)), num_classes)
    return onehot.permute(3, 0, 1, 2).unsqueeze(0).float()


def reference_conv(onehot: torch.Tensor, sigma: float = 1.0) -> np.ndarray:
    """Replicate pad + grouped conv3d of a ``(1, C, Z, Y, X)`` one-hot tensor, divided by the kernel sum."""
    num_classes = onehot.shape[1]
    kernel = reference_kernel(sigma)
    padded = F.pad(onehot, (1, 1, 1, 1, 1, 1), mode="replicate")
    weight = kernel.expand(num_classes, 1, 3, 3, 3).contiguous()
    with torch.no_grad():
        out = F.conv3d(padded, weight, groups=num_classes) / kernel.sum()
    return out[0].numpy()


def reference_svls(labels: np.ndarray, num_classes: int, sigma: float = 1.0) -> np.ndarray:
    """The straightforward approach: one-hot, replicate pad, grouped conv3d, divide by the kernel sum."""
    kernel = reference_kernel(sigma)
    onehot = reference_one_hot(labels, num_classes)
    padded = F.pad(onehot, (1, 1, 1, 1, 1, 1), mode="replicate")
    weight = kernel.expand(num_classes, 1, 3, 3, 3).contiguous()
    with torch.no_grad():
        out = F.conv3d(padded, weight, groups=num_classes) / kernel.sum()
    return out[0].numpy()


def reference_msvls(raters: np.ndarray, num_classes: int) -> np.ndarray:
    """Reference mSVLS: conv3d SVLS per rater, then the mean."""
    total = reference_svls(raters[0], num_classes)
    for rater_labels in raters[1:]:
        total += reference_svls(rater_labels, num_classes)
    return total / raters.shape[0]


def timed(function, *args, **kwargs) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return time.perf_counter() - start, result


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _reset_peak() -> int:
    """Reset the peak-RSS mark (Linux ``clear_refs``) and return the current RSS in KiB.

    ``ru_maxrss`` is inherited across ``execve`` from the parent, so it cannot measure a child's own
    peak; ``VmHWM`` after writing 5 to ``clear_refs`` can.
    """
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return _status_kib("VmRSS")
    except OSError:  # not Linux: fall back to the (inherited) ru_maxrss
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _peak() -> int:
    try:
        return _status_kib("VmHWM")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def memory_child(method: str, path: str, num_classes: int) -> None:
    """Run one method in this (fresh) process and print its peak memory beyond the loaded input."""
    data = np.load(path)
    before = _reset_peak()
    if method == "reference":
        out = reference_svls(data, num_classes)
    elif method == "fast":
        out = svls(data, num_classes=num_classes)
    elif method == "reference_msvls":
        out = reference_msvls(data, num_classes)
    else:
        out = msvls(data, num_classes=num_classes)
    after = _peak()
    print(json.dumps({"peak_extra_bytes": (after - before) * 1024, "output_bytes": int(out.nbytes)}))


def peak_memory(method: str, data: np.ndarray, num_classes: int) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        path = str(Path(folder) / "labels.npy")
        np.save(path, data)
        # imports and loading happen before the peak is reset, so only the method's own allocations count
        completed = subprocess.run(
            [sys.executable, __file__, "--memory-child", method, path, str(num_classes)],
            capture_output=True,
            text=True,
            check=True,
        )
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="small 40x64x64 volume, 3 repeats")
    parser.add_argument("--raters", type=int, default=3, help="raters for the mSVLS benchmark")
    parser.add_argument("--memory-child", nargs=3, metavar=("METHOD", "PATH", "C"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        method, path, num_classes = args.memory_child
        memory_child(method, path, int(num_classes))
        return

    shape = (40, 64, 64) if args.quick else (155, 240, 240)
    repeats = 3 if args.quick else args.repeats
    num_classes = 4
    labels = make_labels(shape, num_classes, seed=0)
    print(f"SVLS benchmark: {num_classes} classes, volume {shape}, torch threads {torch.get_num_threads()}")

    # warm-up (first-touch costs, thread pools)
    reference_svls(labels[:8], num_classes)
    svls(labels[:8], num_classes=num_classes)

    reference_times, conv_times, fast_times = [], [], []
    max_diff = 0.0
    onehot = reference_one_hot(labels, num_classes)
    for _ in range(repeats):
        seconds, expected = timed(reference_svls, labels, num_classes)
        reference_times.append(seconds)
        conv_times.append(timed(reference_conv, onehot)[0])
        seconds, result = timed(svls, labels, num_classes=num_classes)
        fast_times.append(seconds)
        max_diff = max(max_diff, float(np.abs(result - expected).max()))
        del expected, result
    del onehot
    reference_median = statistics.median(reference_times)
    conv_median = statistics.median(conv_times)
    fast_median = statistics.median(fast_times)

    def runs(times: list[float]) -> str:
        return ", ".join(f"{t:.3f}" for t in times)

    print(f"  reference (one-hot + replicate pad + grouped conv3d): median {reference_median:.3f} s  "
          f"(runs: {runs(reference_times)})")
    print(f"  reference, conv only (one-hot precomputed):           median {conv_median:.3f} s  "
          f"(runs: {runs(conv_times)})")
    print(f"  fast svls (separable integer counts):                 median {fast_median:.3f} s  "
          f"(runs: {runs(fast_times)})")
    print(f"  speed-up: {reference_median / fast_median:.2f}x over the reference, "
          f"{conv_median / fast_median:.2f}x over its conv alone;  max |fast - reference| = {max_diff:.3g}")

    output_bytes = num_classes * int(np.prod(shape)) * 4
    tracemalloc.start()
    svls(labels, num_classes=num_classes)
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"  output size {output_bytes / 2**20:.1f} MiB; fast svls tracemalloc peak "
          f"{traced_peak / 2**20:.1f} MiB = {traced_peak / output_bytes:.2f}x output")
    for method in ("reference", "fast"):
        memory = peak_memory(method, labels, num_classes)
        print(f"  peak RSS growth ({method}, fresh process): {memory['peak_extra_bytes'] / 2**20:.1f} MiB "
              f"= {memory['peak_extra_bytes'] / memory['output_bytes']:.2f}x output")

    # mSVLS: one pass over rater counts versus SVLS per rater and a mean
    raters = np.stack([make_labels(shape, num_classes, seed=s) for s in range(1, args.raters + 1)])
    print(f"mSVLS benchmark: {args.raters} raters")
    reference_times, fast_times = [], []
    max_diff = 0.0
    for _ in range(max(1, repeats // 2)):
        seconds, expected = timed(reference_msvls, raters, num_classes)
        reference_times.append(seconds)
        seconds, result = timed(msvls, raters, num_classes=num_classes)
        fast_times.append(seconds)
        max_diff = max(max_diff, float(np.abs(result - expected).max()))
        del expected, result
    reference_median = statistics.median(reference_times)
    fast_median = statistics.median(fast_times)
    print(f"  reference (conv3d per rater, mean): median {reference_median:.3f} s")
    print(f"  fast msvls:                         median {fast_median:.3f} s")
    print(f"  speed-up: {reference_median / fast_median:.2f}x   max |fast - reference| = {max_diff:.3g}")


if __name__ == "__main__":
    main()
