"""TACE's equal-count bins by selection (core/calibration/_equal_count.py) against a full sort."""

from __future__ import annotations

import numpy as np
import pytest

import napari_seg_uncertainty.core.calibration._equal_count as equal_count
import napari_seg_uncertainty.core.calibration.adaptive as adaptive
from napari_seg_uncertainty.core.calibration import thresholded_adaptive_ce_per_class


def sorted_bins(values: np.ndarray, indicator: np.ndarray, num_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """The definition, by a full sort: equal-count bins of the sorted values (larger bins first); every member
    of a tie group counts with the group's mean indicator (the average over all orderings of the ties)."""
    n = values.size
    r = min(num_bins, n)
    sizes = np.full(r, n // r)
    sizes[: n % r] += 1
    order = np.argsort(values, kind="stable")
    v = values[order].astype(np.float64)
    y = indicator[order].astype(np.float64)
    _, group = np.unique(v, return_inverse=True)
    y = (np.bincount(group, weights=y) / np.bincount(group))[group]
    bins = np.repeat(np.arange(r), sizes)
    return np.bincount(bins, weights=v) / sizes, np.bincount(bins, weights=y) / sizes


def _cases(rng: np.random.Generator):
    n = 5000
    yield "distinct float32", (rng.random(n, dtype=np.float32) + 1e-6)
    yield "distinct float64", rng.random(n) + 1e-9
    yield "three values", rng.choice(np.array([0.2, 0.5, 1.0], dtype=np.float32), n)
    yield "two decimals", (np.round(rng.random(n), 2) + 0.001).astype(np.float32)
    yield "saturated", np.where(rng.random(n) < 0.7, 1.0, rng.random(n) * 0.5 + 0.01).astype(np.float32)
    yield "one value", np.full(n, 0.25, dtype=np.float32)
    yield "saturated float64", np.where(rng.random(n) < 0.6, 1.0, np.round(rng.random(n), 3) + 0.001)
    yield "tiny and subnormal", np.concatenate([np.full(100, 1e-40, np.float32), rng.random(n, np.float32) * 1e-30])


@pytest.mark.parametrize("num_bins", [1, 2, 7, 10, 15, 4999, 5000, 6000])
@pytest.mark.parametrize("soft", [False, True])
def test_equal_count_bins_equal_the_full_sort(num_bins, soft):
    rng = np.random.default_rng(num_bins + 100 * soft)
    for name, values in _cases(rng):
        indicator = rng.random(values.size) if soft else rng.random(values.size) < 0.4
        conf, acc = equal_count.equal_count_bins(values, indicator, num_bins)
        ref_conf, ref_acc = sorted_bins(values, indicator, num_bins)
        np.testing.assert_allclose(conf, ref_conf, rtol=1e-12, atol=0, err_msg=name)
        np.testing.assert_allclose(acc, ref_acc, rtol=1e-12, atol=1e-15, err_msg=name)


def test_equal_count_bins_across_chunks(monkeypatch):
    # The bucket pass runs chunk by chunk: with tiny chunks the totals are summed over many of them.
    monkeypatch.setattr(equal_count, "_CHUNK", 97)
    rng = np.random.default_rng(3)
    values = np.concatenate([np.round(rng.random(3000), 3) + 0.001, np.ones(500)]).astype(np.float32)
    rng.shuffle(values)
    for indicator in (rng.random(values.size) < 0.5, rng.random(values.size)):
        got = equal_count.equal_count_bins(values, indicator, 10)
        ref = sorted_bins(values, indicator, 10)
        np.testing.assert_allclose(got[0], ref[0], rtol=1e-12)
        np.testing.assert_allclose(got[1], ref[1], rtol=1e-12, atol=1e-15)


def test_equal_count_bins_refuses_other_dtypes():
    with pytest.raises(TypeError, match="float32 or float64"):
        equal_count.equal_count_bins(np.arange(1, 20, dtype=np.int32), np.ones(19, bool), 3)


def test_tace_threads_give_the_numbers_of_one_thread(monkeypatch):
    rng = np.random.default_rng(8)
    logits = rng.standard_normal((4, 6, 30, 40)).astype(np.float32) * 3
    probs = np.exp(logits) / np.exp(logits).sum(0)
    labels = rng.integers(0, 4, (6, 30, 40))
    monkeypatch.setattr(adaptive, "_workers", lambda classes, voxels: 1)
    one = thresholded_adaptive_ce_per_class(probs, labels)
    monkeypatch.setattr(adaptive, "_workers", lambda classes, voxels: 3)
    three = thresholded_adaptive_ce_per_class(probs, labels)
    np.testing.assert_array_equal(one, three)
    flat = probs.reshape(4, -1)
    for k in range(4):
        keep = flat[k] > 1e-3
        conf, acc = sorted_bins(flat[k][keep], labels.reshape(-1)[keep] == k, 10)
        assert one[k] == pytest.approx(np.mean(np.abs(acc - conf)), rel=1e-12)


@pytest.mark.parametrize("soft", [False, True])
def test_tace_threads_are_bounded_by_the_available_memory(monkeypatch, soft):
    """As many class threads as the free memory holds one class's temporaries for; the numbers stay those of
    the full sort."""
    from napari_seg_uncertainty.core import _memory

    rng = np.random.default_rng(9)
    logits = rng.standard_normal((4, 6, 30, 40)).astype(np.float32) * 3
    probs = np.exp(logits) / np.exp(logits).sum(0)
    labels = rng.integers(0, 4, (6, 30, 40))
    target = np.stack([labels == k for k in range(4)]).astype(np.float32) * 0.5 + 0.125 if soft else labels
    used = []

    class Recording(adaptive.ThreadPoolExecutor):
        def __init__(self, max_workers):
            used.append(max_workers)
            super().__init__(max_workers=max_workers)

    monkeypatch.setattr(adaptive, "ThreadPoolExecutor", Recording)
    monkeypatch.setattr(adaptive, "_workers", lambda classes, voxels: 4)
    prep = adaptive.prepare(probs, target, None)
    per_class = adaptive._class_bytes(prep)
    assert per_class >= probs[0].size * (probs.itemsize + (8 if soft else 2))  # values + indicator at least
    results = []
    for room, threads in ((2.5, 2), (1.5, None), (0.5, None), (10, 4)):
        monkeypatch.setattr(_memory, "available_memory_bytes", lambda r=room: int(r * per_class))
        used.clear()
        results.append(thresholded_adaptive_ce_per_class(probs, target))
        assert used == ([] if threads is None else [threads]), room
    for got in results[1:]:
        np.testing.assert_array_equal(got, results[0])
    flat = probs.reshape(4, -1)
    truth = target.reshape(4, -1) if soft else None
    for k in range(4):
        keep = flat[k] > 1e-3
        indicator = truth[k][keep] if soft else labels.reshape(-1)[keep] == k
        conf, acc = sorted_bins(flat[k][keep], indicator, 10)
        assert results[0][k] == pytest.approx(np.mean(np.abs(acc - conf)), rel=1e-12)
