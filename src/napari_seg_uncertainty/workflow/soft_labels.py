"""The soft-labels step without a window: one or two methods on a rater stack, and their comparison.

:func:`run_request` computes method A's soft labels (and method B's with
:func:`~napari_seg_uncertainty.core.labels.compare_soft_labels` when a comparison is asked for)
from a :class:`SoftLabelsRequest`; the *Soft labels* dock runs it in a worker thread.

References
----------
.. [1] M. Islam, B. Glocker, "Spatially varying label smoothing: capturing uncertainty from expert
   annotations", IPMI 2021 (SVLS).
.. [2] S. K. Warfield, K. H. Zou, W. M. Wells, "Simultaneous truth and performance level estimation
   (STAPLE)", IEEE TMI 23(7), 2004.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..core.geometry import Geometry
from ..core.labels import (
    SINGLE_MAP_METHODS,
    SOFT_LABEL_METHODS,
    SoftLabelComparison,
    compare_soft_labels,
    compute_soft_labels,
)

__all__ = ["SoftLabelsRequest", "SoftLabelsResult", "run_request"]


@dataclass(frozen=True, kw_only=True)
class SoftLabelsRequest:
    """Everything one computation needs, gathered on the GUI thread."""

    raters: np.ndarray
    num_classes: int
    class_names: tuple[str, ...]
    rater_names: tuple[str, ...]
    method: str
    compare_method: str | None
    alpha: float
    sigma: float
    spacing: tuple[float, ...] | None
    scale: tuple[float, ...]
    translate: tuple[float, ...]
    #: Placement of the raters' grid (scale, origin, direction); every output layer gets it.
    geometry: Geometry | None = None
    #: Case the rater layers belong to; the output layers are tagged with it.
    case: str | None = None

    def parameters(self, method: str) -> dict[str, Any]:
        """The parameters that matter for ``method`` (shown in layer metadata and the status line)."""
        params: dict[str, Any] = {}
        if method == "label_smoothing":
            params["alpha"] = self.alpha
        if method in ("svls", "msvls"):
            params["sigma"] = self.sigma
            params["sigma_unit"] = "mm" if self.spacing is not None else "voxel"
        return params


@dataclass
class SoftLabelsResult:
    """Soft labels of method A (and B with their comparison), computed off the GUI thread."""

    request: SoftLabelsRequest
    first: np.ndarray
    second: np.ndarray | None = None
    comparison: SoftLabelComparison | None = None
    notes: list[str] = field(default_factory=list)


def run_request(request: SoftLabelsRequest) -> SoftLabelsResult:
    """Compute the soft labels of a request (runs in the worker thread).

    Parameters
    ----------
    request : SoftLabelsRequest
        Raters, classes, methods and parameters (the *Soft labels* dock gathers them from its layers).

    Returns
    -------
    SoftLabelsResult
        Method A's soft labels, and method B's with the comparison when one was asked for.

    Examples
    --------
    >>> import numpy as np
    >>> raters = np.zeros((2, 1, 4, 4), dtype=np.uint8)
    >>> raters[0, 0, 1:3, 1:3] = 1
    >>> request = SoftLabelsRequest(raters=raters, num_classes=2, class_names=("bg", "fg"),
    ...     rater_names=("a", "b"), method="msvls", compare_method="rater_mean", alpha=0.1, sigma=1.0,
    ...     spacing=None, scale=(1.0, 1.0, 1.0), translate=(0.0, 0.0, 0.0))
    >>> result = run_request(request)
    >>> result.first.shape, result.comparison.max_abs.shape
    ((2, 1, 4, 4), (2,))
    """
    common = {
        "alpha": request.alpha,
        "sigma": request.sigma,
        "spacing": request.spacing,
    }
    first = compute_soft_labels(request.raters, num_classes=request.num_classes, method=request.method, **common)
    result = SoftLabelsResult(request=request, first=first)
    if request.compare_method is not None:
        second = compute_soft_labels(
            request.raters, num_classes=request.num_classes, method=request.compare_method, **common
        )
        result.second = second
        result.comparison = compare_soft_labels(first, second)
    if request.raters.shape[0] > 1:
        for method in {request.method, request.compare_method} & set(SINGLE_MAP_METHODS):
            result.notes.append(f"{SOFT_LABEL_METHODS[method]} uses the majority vote of the raters")
    return result
