"""The pooled reliability diagram of a saved evaluation, rebuilt as input of the reliability figure."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["reliability_results"]


def reliability_results(saved: Any) -> list[Any]:
    """One :class:`~napari_seg_uncertainty.workflow.figures.ModelResult` per candidate from the pooled bins.

    The bins are rebuilt from ``reliability.csv`` (count, mean confidence and accuracy per bin); the
    legend's TACE, NLL and Brier are the case means against the reference over the whole volume
    (``summary.csv``), as in the evaluation's own ``reliability.png``
    (:func:`~napari_seg_uncertainty.workflow.evaluation.files.pooled_reliability_result`).
    """
    from ...core.calibration import ReliabilityBins
    from ...core.calibration.binning import bin_edges
    from ..evaluation.files import pooled_reliability_result

    means: dict[str, dict[tuple[str, str], float]] = {}
    for r in saved.summary_rows:
        means.setdefault(r["candidate"], {})[(r["class"], r["metric"])] = float(r["mean"])
    results = []
    for name in saved.candidates:
        bins = sorted((r for r in saved.reliability_rows if r["candidate"] == name), key=lambda r: int(r["bin"]))
        if not bins:
            continue
        count = np.array([int(r["count"]) for r in bins], dtype=np.int64)
        confidence = np.array([float(r["confidence"]) for r in bins])
        accuracy = np.array([float(r["accuracy"]) for r in bins])
        rebuilt = ReliabilityBins(edges=bin_edges(count.size), count=count, confidence=confidence, accuracy=accuracy)
        results.append(pooled_reliability_result(name, rebuilt, means.get(name, {})))
    return results
