"""The evaluation region of the calibration paper: the dilated bounding box of the foreground.

References
----------
.. [1] A. Mehrtash, W. M. Wells, C. M. Tempany, P. Abolmaesumi, T. Kapur, "Confidence Calibration and
   Predictive Uncertainty Estimation for Deep Medical Image Segmentation", IEEE TMI 39(12), 2020,
   Sec. VI-D.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .._validation import as_label_array, check_flag, check_int, check_positive, check_spacing

__all__ = ["foreground_box_mask"]


def foreground_box_mask(
    labels: Any,
    *,
    spacing: Sequence[float] | float | None = None,
    in_plane_margin: float = 8.0,
    slice_margin: int = 2,
    per_class: bool = True,
) -> np.ndarray:
    """Dilated bounding box(es) of the foreground, the evaluation region of the calibration paper.

    Mehrtash et al. compute calibration metrics inside bounding boxes of the foreground structures,
    dilated by 8 mm in-plane and by 2 slices out of plane, so that the many trivially certain
    background voxels far from the structures do not dominate the statistics.

    Parameters
    ----------
    labels : array_like
        Integer labels ``(Y, X)`` or ``(Z, Y, X)``; 0 is background. To use several raters, pass the
        union of their foreground (e.g. ``raters.max(axis=0)``).
    spacing : float or sequence of float, optional
        Voxel size per axis. With it ``in_plane_margin`` is in physical units (mm); without it, voxels.
    in_plane_margin : float
        Margin added on both sides along the in-plane axes (the last two), rounded up to whole voxels.
    slice_margin : int
        Margin in slices along the first axis of 3-D data (ignored for 2-D data).
    per_class : bool
        True: the union of one box per foreground class (boxes around each structure); False: one box
        around all foreground.

    Returns
    -------
    numpy.ndarray
        Boolean mask with the shape of ``labels``.

    References
    ----------
    Mehrtash et al., IEEE TMI 2020, Sec. VI-D.

    Raises
    ------
    ValueError
        If there is no foreground voxel.

    Examples
    --------
    >>> import numpy as np
    >>> labels = np.zeros((7, 7), dtype=np.uint8)
    >>> labels[3, 3] = 1
    >>> int(foreground_box_mask(labels, in_plane_margin=1).sum())
    9
    """
    lab = as_label_array(labels, name="labels")
    spc = check_spacing(spacing, lab.ndim)
    in_plane_margin = check_positive(in_plane_margin, name="in_plane_margin", allow_zero=True)
    slice_margin = check_int(slice_margin, name="slice_margin", minimum=0)
    per_class = check_flag(per_class, name="per_class")
    if not (lab > 0).any():
        raise ValueError(
            "labels has no foreground voxel (all 0); a bounding box of the foreground needs at least one "
            "labelled voxel. Evaluate on the whole image instead (mask=None)."
        )
    margins = []
    for axis in range(lab.ndim):
        if lab.ndim == 3 and axis == 0:
            margins.append(int(slice_margin))
        else:
            step = 1.0 if spc is None else spc[axis]
            margins.append(int(np.ceil(in_plane_margin / step - 1e-9)))
    groups = [lab == c for c in np.unique(lab[lab > 0])] if per_class else [lab > 0]
    out = np.zeros(lab.shape, dtype=bool)
    for fg in groups:
        index = []
        for axis in range(lab.ndim):
            other = tuple(a for a in range(lab.ndim) if a != axis)
            present = np.flatnonzero(fg.any(axis=other))
            lo = max(int(present[0]) - margins[axis], 0)
            hi = min(int(present[-1]) + margins[axis] + 1, lab.shape[axis])
            index.append(slice(lo, hi))
        out[tuple(index)] = True
    return out
