"""Fusing several raters into one estimate: rater mean (mOH), majority vote and STAPLE.

Raters are stacked as ``(R, *spatial)`` integer label maps (a list of equally shaped label maps works too),
where ``spatial`` is ``(Y, X)`` or ``(Z, Y, X)``.

Definitions
-----------
mOH (rater mean)
    Mean of the raters' one-hot maps, i.e. the fraction of raters that chose each class.
Majority vote
    The class chosen by most raters (ties go to the lowest class index).
STAPLE
    SimpleITK's ``STAPLEImageFilter`` (binary EM of Warfield et al. [1]_) run one class versus the rest, and
    ``MultiLabelSTAPLEImageFilter`` (Rohlfing et al. [2]_) for the fused multi-label map and the raters'
    confusion matrices, computed by EM over the raters' vote patterns; see :func:`staple` and
    :class:`StapleResult` (module :mod:`.staple`, re-exported here).

The rater mean and the majority vote depend only on each voxel's count vector (how many raters chose each
class); they are computed from it slab by slab (:func:`~napari_seg_uncertainty.core.raters.votes.map_count_vectors`),
so no temporary grows with the volume.

References
----------
.. [1] S. K. Warfield, K. H. Zou and W. M. Wells, "Simultaneous truth and performance level estimation
   (STAPLE): an algorithm for the validation of image segmentation", IEEE Trans. Med. Imaging 23(7),
   903-921, 2004.
.. [2] T. Rohlfing, D. B. Russakoff and C. R. Maurer, "Performance-based classifier combination in
   atlas-based image segmentation using expectation-maximization parameter estimation", IEEE Trans. Med.
   Imaging 23(8), 983-994, 2004.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._memory import array_bytes, check_allocation
from .._numeric import label_dtype
from .._validation import as_rater_stack, check_num_classes
from ..raters.votes import empty_output, map_count_vectors, vote_fractions
from ._common import check_class_maps_fit, infer_num_classes
from .staple import STAPLE_METHODS, StapleResult, staple

__all__ = ["STAPLE_METHODS", "StapleResult", "majority_vote", "rater_mean", "staple"]


def rater_mean(raters: Any, *, num_classes: int) -> np.ndarray:
    """Mean of the raters' one-hot maps (mOH): the fraction of raters that chose each class.

    Parameters
    ----------
    raters : array_like of int, shape (R, Y, X) or (R, Z, Y, X), or a list of R label maps
        Label maps of ``R`` raters on the same grid.
    num_classes : int
        Number of classes ``C``.

    Returns
    -------
    numpy.ndarray of float32, shape (C, *spatial)
        Vote fractions, multiples of ``1 / R``, summing to 1 over the class axis.

    Raises
    ------
    TypeError, ValueError
        If the raters are not an integer stack of 2-D/3-D maps, differ in shape, or hold an out-of-range label.

    Examples
    --------
    >>> import numpy as np
    >>> raters = np.array([[[0, 1]], [[1, 1]]])  # two raters, a 1x2 image
    >>> rater_mean(raters, num_classes=2)[1]
    array([[0.5, 1. ]], dtype=float32)
    """
    num_classes = check_num_classes(num_classes)
    raters = as_rater_stack(raters, num_classes=num_classes)
    check_class_maps_fit(num_classes, raters.shape[1:], what="the rater mean")
    num_raters = raters.shape[0]
    out = empty_output((num_classes, *raters.shape[1:]), np.float32)
    return map_count_vectors(raters, num_classes, lambda counts: vote_fractions(counts, num_raters), out)


def majority_vote(raters: Any, *, num_classes: int | None = None) -> np.ndarray:
    """Fuse raters by majority vote: each voxel takes the class chosen by most raters.

    Ties go to the lowest class index (e.g. background before foreground). The vote fractions themselves are
    :func:`rater_mean`; ``one_hot(majority_vote(raters), num_classes=C)`` gives the vote as a (hard) soft-label map.

    Parameters
    ----------
    raters : array_like of int, shape (R, Y, X) or (R, Z, Y, X), or a list of R label maps
        Label maps of ``R`` raters on the same grid.
    num_classes : int, optional
        Number of classes; inferred as ``max label + 1`` when omitted.

    Returns
    -------
    numpy.ndarray of unsigned int, shape (*spatial)
        The fused label map (uint8 for up to 256 classes).

    Raises
    ------
    TypeError, ValueError
        If the raters are not an integer stack of 2-D/3-D maps or hold an out-of-range label.

    Examples
    --------
    >>> import numpy as np
    >>> raters = np.array([[[0, 1, 2]], [[1, 1, 0]], [[1, 2, 2]]])
    >>> majority_vote(raters)
    array([[1, 1, 2]], dtype=uint8)
    >>> majority_vote(raters[:2])  # a 1-1 tie goes to the lower class
    array([[0, 1, 0]], dtype=uint8)
    """
    if num_classes is not None:
        num_classes = check_num_classes(num_classes)
    raters = as_rater_stack(raters, num_classes=num_classes)
    num_classes = infer_num_classes(raters, num_classes)
    dtype = label_dtype(num_classes)
    check_allocation(array_bytes(raters.shape[1:], dtype), what=f"the fused label map of shape {raters.shape[1:]}",
                     cause=f"label maps of shape {raters.shape[1:]}", advice="use a smaller region")
    out = empty_output(raters.shape[1:], dtype)
    return map_count_vectors(raters, num_classes, lambda counts: np.argmax(counts, axis=0).astype(dtype), out)
