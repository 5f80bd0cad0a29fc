"""The Uncertainty maps dock's memory estimate against the peak tracemalloc measures (review of issue 15, #7).

The maps are computed slab by slab (``workflow.uncertainty._by_slabs``), so the estimate must be the output
maps plus a few slabs of temporaries: never below the measured peak (a refusal must not let an OOM through),
and not far above it (no false refusals; the whole-volume estimate it replaces was 2-8x the peak).
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from napari_seg_uncertainty.widgets.uncertainty import uncertainty_maps_bytes
from napari_seg_uncertainty.workflow import uncertainty as workflow
from napari_seg_uncertainty.workflow.uncertainty import compute_uncertainty_maps


def probabilities(rng: np.random.Generator, shape: tuple[int, ...], axis: int) -> np.ndarray:
    p = rng.random(shape, dtype=np.float32) + np.float32(0.01)
    p /= p.sum(axis=axis, keepdims=True)
    return p


@pytest.mark.parametrize(("layout", "as_ensemble", "shape", "layers"), [
    ("classes", False, (3, 40, 96, 96), 1),
    ("classes", False, (6, 40, 96, 96), 2),
    ("members", False, (4, 3, 40, 96, 96), 1),
    ("classes", True, (3, 40, 96, 96), 3),
    ("classes", True, (2, 40, 96, 96), 6),
])
def test_estimate_bounds_the_measured_peak_with_a_small_margin(monkeypatch, layout, as_ensemble, shape, layers):
    monkeypatch.setattr(workflow, "SLAB_BYTES", 2**19)  # many slabs of a small layer, as at CT size
    rng = np.random.default_rng(len(shape) + layers)
    sources = {f"layer {i}": probabilities(rng, shape, 1 if layout == "members" else 0) for i in range(layers)}
    tracemalloc.start()
    try:
        maps = compute_uncertainty_maps(sources, layout=layout, as_ensemble=as_ensemble)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sum(m.data.nbytes for m in maps) < peak
    estimate = uncertainty_maps_bytes([s.shape for s in sources.values()], layout=layout, as_ensemble=as_ensemble)
    assert peak <= estimate <= 2 * peak, (peak, estimate)
