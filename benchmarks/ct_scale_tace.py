"""CT-scale part ``tace``: TACE on 35 M voxels x 4 classes by selection, against a full sort in the same run.

Two probability maps of shape (4, 140, 500, 500) (35 M voxels): ``dense`` — softmax of random logits,
every value above the 1e-3 threshold (the worst case: all 140 M values binned) — and ``segmentation`` —
a smooth map that is confident away from the structures' boundaries, as a trained network's output
(most foreground values below the threshold). The baseline sorts each class's values (``np.argsort``)
and bins them; the tie rule is the same (tested in tests/core/test_calibration_selection.py), so the
two values agree to rounding. Prints medians of ``--repeats`` runs. Target: <= 1 s on 2 cores.
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from napari_seg_uncertainty.core.calibration import thresholded_adaptive_ce

SHAPE = (140, 500, 500)


def sorted_tace(probs: np.ndarray, labels: np.ndarray, *, num_bins: int = 10, threshold: float = 1e-3) -> float:
    """TACE by a full sort of every class's values (the baseline)."""
    flat, target = probs.reshape(probs.shape[0], -1), labels.reshape(-1)
    errors = []
    for k in range(flat.shape[0]):
        keep = flat[k] > threshold
        if not keep.any():
            continue
        order = np.argsort(flat[k][keep], kind="stable")
        values = flat[k][keep][order].astype(np.float64)
        hits = (target[keep][order] == k).astype(np.float64)
        _, group = np.unique(values, return_inverse=True)
        hits = (np.bincount(group, weights=hits) / np.bincount(group))[group]
        n, r = values.size, min(num_bins, values.size)
        sizes = np.full(r, n // r)
        sizes[: n % r] += 1
        bins = np.repeat(np.arange(r), sizes)
        conf = np.bincount(bins, weights=values) / sizes
        acc = np.bincount(bins, weights=hits) / sizes
        errors.append(float(np.mean(np.abs(acc - conf))))
    return float(np.mean(errors))


def dense_case(rng: np.random.Generator, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    probs = rng.standard_normal((4, *shape), dtype=np.float32)
    probs *= 3
    probs -= probs.max(0)
    np.exp(probs, out=probs)
    probs /= probs.sum(0)
    return probs, rng.integers(0, 4, shape).astype(np.uint8)


def segmentation_case(rng: np.random.Generator, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    z, y, x = (np.linspace(-1, 1, s, dtype=np.float32) for s in shape)
    radius = np.sqrt(z[:, None, None] ** 2 + y[None, :, None] ** 2 + x[None, None, :] ** 2)
    logits = np.empty((4, *shape), dtype=np.float32)
    for k, (centre, width) in enumerate([(1.2, 0.3), (0.8, 0.15), (0.5, 0.1), (0.25, 0.08)]):
        logits[k] = -((radius - centre) ** 2) / (2 * width**2) * 8
    logits += rng.standard_normal(logits.shape, dtype=np.float32) * 0.5
    labels = np.argmax(logits, axis=0).astype(np.uint8)
    logits -= logits.max(0)
    np.exp(logits, out=logits)
    logits /= logits.sum(0)
    return logits, labels


def run(args, rest) -> None:
    shape = SHAPE if tuple(args.shape) == (300, 512, 512) else tuple(args.shape)
    rng = np.random.default_rng(0)
    print(f"TACE on {np.prod(shape) / 1e6:.1f} M voxels x 4 classes (target <= 1 s); medians of {args.repeats}")
    print(f"{'map':<14}{'selection s':>12}{'sort s':>10}{'ratio':>8}{'values above 1e-3':>20}{'|diff|':>10}")
    for name, make in (("dense", dense_case), ("segmentation", segmentation_case)):
        probs, labels = make(rng, shape)
        fast, slow = [], []
        for _ in range(args.repeats):
            start = time.perf_counter()
            value = thresholded_adaptive_ce(probs, labels)
            fast.append(time.perf_counter() - start)
            start = time.perf_counter()
            reference = sorted_tace(probs, labels)
            slow.append(time.perf_counter() - start)
        above = float(np.mean(probs > 1e-3))
        f, s = statistics.median(fast), statistics.median(slow)
        print(f"{name:<14}{f:>12.3f}{s:>10.3f}{s / f:>7.1f}x{above:>19.1%}{abs(value - reference):>10.1e}")
        del probs, labels
