"""Reliability bins added up case after case (a cohort), with exact integer counts per bin.

:class:`ReliabilityAccumulator` keeps, per bin, the voxel count and (hard labels) the correct count as
int64 and the sums of confidence and soft accuracy as float64, so the ECE of a cohort equals the ECE
of all its voxels concatenated (up to float64 rounding of the sums), whatever the order of the cases.
It follows MONAI's cumulative metrics (``update`` / ``aggregate`` / ``reset``); the pure function is
:func:`~napari_seg_uncertainty.core.calibration.reliability_bins`.

References
----------
.. [1] MONAI Consortium, ``monai.metrics.CalibrationErrorMetric`` and ``CumulativeIterationMetric``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._targets import BinClosure, check_closed, check_num_bins, prepare
from .binning import ReliabilityBins, bin_sums

__all__ = ["ReliabilityAccumulator"]


class ReliabilityAccumulator:
    """Add cases one by one to a reliability diagram of the whole cohort.

    Parameters
    ----------
    num_bins : int
        Number of equal-width confidence bins on [0, 1].
    closed : {"right", "left"}
        Bin closure, see :func:`~napari_seg_uncertainty.core.calibration.reliability_bins`.

    Examples
    --------
    >>> import numpy as np
    >>> acc = ReliabilityAccumulator(num_bins=10)
    >>> _ = acc.update(np.array([[[0.9]], [[0.1]]], np.float32), np.array([[0]]))
    >>> _ = acc.update(np.array([[[0.3]], [[0.7]]], np.float32), np.array([[0]]))
    >>> acc.num_cases, round(acc.aggregate().expected_calibration_error, 3)
    (2, 0.4)
    """

    def __init__(self, *, num_bins: int = 10, closed: BinClosure = "right") -> None:
        self.num_bins = check_num_bins(num_bins)
        self.closed = check_closed(closed)
        self.reset()

    def reset(self) -> None:
        """Forget every case added so far."""
        self.num_cases = 0
        self._count = np.zeros(self.num_bins, dtype=np.int64)
        self._correct = np.zeros(self.num_bins, dtype=np.int64)
        self._confidence_sum = np.zeros(self.num_bins, dtype=np.float64)
        self._soft_sum = np.zeros(self.num_bins, dtype=np.float64)

    @property
    def count(self) -> np.ndarray:
        """Voxels per bin over all cases so far (a copy, int64)."""
        return self._count.copy()

    def update(self, probs: Any, target: Any, *, mask: Any = None, target_kind: str | None = None) -> ReliabilityBins:
        """Add one case; the arguments are those of ``reliability_bins``.

        Returns
        -------
        ReliabilityBins
            The bins of this case alone.
        """
        prep = prepare(probs, target, mask, target_kind=target_kind)
        count, correct, conf_sum, soft_sum = bin_sums(prep, num_bins=self.num_bins, closed=self.closed)
        self._count += count
        self._correct += correct
        self._confidence_sum += conf_sum
        self._soft_sum += soft_sum
        self.num_cases += 1
        return ReliabilityBins.from_sums(count, conf_sum, correct + soft_sum, closed=self.closed)

    def aggregate(self) -> ReliabilityBins:
        """The bins of all cases added since the last :meth:`reset`.

        Raises
        ------
        ValueError
            If no case has been added.
        """
        if self.num_cases == 0:
            raise ValueError("ReliabilityAccumulator has no case yet; call update() before aggregate().")
        return ReliabilityBins.from_sums(
            self._count, self._confidence_sum, self._correct + self._soft_sum, closed=self.closed
        )
