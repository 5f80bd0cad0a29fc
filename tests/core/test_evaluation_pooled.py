"""The benchmark's pooled reliability (cases generated, counted and dropped one at a time) is exact."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from napari_seg_uncertainty.core.calibration import reliability_bins

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_evaluate.py"


def _benchmark():
    spec = importlib.util.spec_from_file_location("bench_evaluate", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pooled_reliability_equals_reliability_bins_on_the_concatenated_voxels():
    bench = _benchmark()
    shape, cases = (5, 12, 10), 7
    pooled, _ = bench.pooled_reliability(cases, shape, classes=4, num_bins=15, seed=3)
    rng = np.random.default_rng(3)  # the same cases again, kept this time
    probs, labels = zip(*[bench.synthetic_case(rng, shape, 4) for _ in range(cases)], strict=True)
    direct = reliability_bins(np.concatenate(probs, axis=1), np.concatenate(labels, axis=0), num_bins=15)
    np.testing.assert_array_equal(pooled.count, direct.count)
    assert pooled.total == cases * int(np.prod(shape))
    np.testing.assert_allclose(pooled.accuracy, direct.accuracy, rtol=1e-12, equal_nan=True)
    np.testing.assert_allclose(pooled.confidence, direct.confidence, rtol=1e-9, equal_nan=True)
    assert abs(pooled.expected_calibration_error - direct.expected_calibration_error) < 1e-12
