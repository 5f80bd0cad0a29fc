"""Benchmark: reliability bins + ECE on 35 M voxels x 4 classes against a straightforward numpy baseline.

Run ``python benchmarks/bench_calibration.py`` (``--voxels`` / ``--classes`` / ``--repeats`` to change).
Prints the median time of several repeats for :func:`reliability_bins` (+ ECE) and for the baseline
(``max`` / ``argmax`` over the class axis, ``np.digitize`` and one boolean mask per bin), their ratio
measured in the same run, and, for information, TACE, NLL and Brier on the same data.
Target: reliability bins + ECE <= 1 s on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np

from napari_seg_uncertainty.core.calibration import (
    brier_score,
    negative_log_likelihood,
    reliability_bins,
    thresholded_adaptive_ce,
)


def make_data(voxels: int, classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random float32 softmax probabilities ``(C, Z, Y, X)`` and labels drawn from them."""
    rng = np.random.default_rng(seed)
    side = 512
    depth = max(1, -(-voxels // (side * side)))  # ceil: at least `voxels` voxels
    shape = (depth, side, side)
    probs = np.empty((classes, *shape), dtype=np.float32)
    labels = np.empty(shape, dtype=np.uint8)
    for z in range(depth):
        logits = rng.standard_normal((classes, side, side), dtype=np.float32) * 3.0
        logits -= logits.max(axis=0)
        np.exp(logits, out=logits)
        logits /= logits.sum(axis=0)
        probs[:, z] = logits
        u = rng.random((side, side), dtype=np.float32)
        labels[z] = np.minimum((u[None] > np.cumsum(logits, axis=0)).sum(axis=0), classes - 1)
    return probs, labels


def baseline_ece(probs: np.ndarray, labels: np.ndarray, num_bins: int = 10) -> float:
    """The straightforward version: full-size max/argmax, digitize, a boolean mask per bin."""
    conf = probs.max(axis=0).ravel()
    pred = probs.argmax(axis=0).ravel()
    correct = pred == labels.ravel()
    edges = np.arange(num_bins + 1, dtype=np.float32) / np.float32(num_bins)  # exact k/M in float32
    idx = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, num_bins - 1)
    ece = 0.0
    for b in range(num_bins):
        in_bin = idx == b
        n = int(in_bin.sum())
        if n:
            ece += (
                n
                / conf.size
                * abs(float(correct[in_bin].mean()) - float(conf[in_bin].mean(dtype=np.float64)))
            )
    return ece


def median_time(func: Callable[[], object], repeats: int) -> tuple[float, list[float], object]:
    times = []
    result: object = None
    for _ in range(repeats):
        start = time.perf_counter()
        result = func()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--voxels", type=int, default=35_000_000)
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-others", action="store_true", help="only time reliability bins + ECE")
    args = parser.parse_args()

    probs, labels = make_data(args.voxels, args.classes)
    n = labels.size
    print(f"data: {n:,} voxels x {args.classes} classes, probs {probs.nbytes / 2**20:.0f} MiB float32")

    # warm-up (imports, page faults), then medians of the repeats
    reliability_bins(probs[:, :1], labels[:1])
    ours, ours_all, bins = median_time(
        lambda: reliability_bins(probs, labels).expected_calibration_error, args.repeats
    )
    base, base_all, base_ece = median_time(lambda: baseline_ece(probs, labels), max(3, args.repeats // 2))
    assert abs(float(bins) - float(base_ece)) < 1e-6, (bins, base_ece)  # same number both ways
    print(f"reliability_bins + ECE : median {ours:.3f} s  (runs: {', '.join(f'{t:.3f}' for t in ours_all)})")
    print(f"numpy baseline         : median {base:.3f} s  (runs: {', '.join(f'{t:.3f}' for t in base_all)})")
    print(f"speed-up vs baseline   : {base / ours:.2f}x   ECE = {float(bins):.6f}")
    print(f"target <= 1 s          : {'met' if ours <= 1.0 else 'MISSED'}")
    if args.skip_others:
        return
    for name, func in (
        ("TACE", lambda: thresholded_adaptive_ce(probs, labels)),
        ("NLL", lambda: negative_log_likelihood(probs, labels)),
        ("Brier", lambda: brier_score(probs, labels)),
    ):
        t, runs, value = median_time(func, 3)
        print(
            f"{name:<23}: median {t:.3f} s  (runs: {', '.join(f'{r:.3f}' for r in runs)})  value {value:.6f}"
        )


if __name__ == "__main__":
    main()
