"""The pooled reliability diagram of a saved evaluation, rebuilt as input of the reliability figure."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["reliability_results"]


def reliability_results(saved: Any) -> list[Any]:
    """One :class:`~napari_seg_uncertainty.workflow.figures.ModelResult` per candidate from the pooled bins.

    The bins are rebuilt from ``reliability.csv`` (count, mean confidence and accuracy per bin); the
    legend's TACE, NLL and Brier are the case means against the reference over the whole volume
    (``summary.csv``), as in the evaluation's own ``reliability.png``.
    """
    from ...core.calibration import CalibrationSummary, ReliabilityBins
    from ...core.calibration.binning import bin_edges
    from ..figures import ModelResult

    means = {(r["candidate"], r["class"], r["metric"]): float(r["mean"]) for r in saved.summary_rows}
    results = []
    for name in saved.candidates:
        bins = sorted((r for r in saved.reliability_rows if r["candidate"] == name), key=lambda r: int(r["bin"]))
        if not bins:
            continue
        count = np.array([int(r["count"]) for r in bins], dtype=np.int64)
        confidence = np.array([float(r["confidence"]) for r in bins])
        accuracy = np.array([float(r["accuracy"]) for r in bins])
        rebuilt = ReliabilityBins(edges=bin_edges(count.size), count=count, confidence=confidence, accuracy=accuracy)

        def mean(metric: str, name: str = name) -> float:
            return means.get((name, "all", f"{metric}_reference_volume"), math.nan)

        results.append(ModelResult(name, CalibrationSummary(
            bins=rebuilt, ece=rebuilt.expected_calibration_error, tace=mean("tace"), nll=mean("nll"),
            brier=mean("brier"), voxels=rebuilt.total,
        )))  # fmt: skip
    return results
