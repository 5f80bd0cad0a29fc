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
    confusion matrices; see :func:`staple` and :class:`StapleResult`.

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

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._numeric import label_dtype
from .._validation import as_rater_stack, check_int, check_num_classes, check_positive
from ._common import check_class_maps_fit, infer_num_classes

__all__ = ["StapleResult", "majority_vote", "rater_mean", "staple"]


def _class_counts(raters: np.ndarray, num_classes: int) -> np.ndarray:
    """Number of raters choosing each class, shape ``(C, *spatial)``, smallest sufficient unsigned dtype."""
    dtype = np.uint8 if raters.shape[0] < 256 else np.uint32
    counts = np.zeros((num_classes, *raters.shape[1:]), dtype=dtype)
    for rater_labels in raters:
        for class_index in range(num_classes):
            counts[class_index] += rater_labels == class_index
    return counts


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
    check_class_maps_fit(num_classes, raters.shape[1:], what="the rater mean (with its vote counts)",
                          bytes_per_value=8)
    counts = _class_counts(raters, num_classes)
    out = counts.astype(np.float32)
    out /= np.float32(raters.shape[0])
    return out


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
    check_class_maps_fit(num_classes, raters.shape[1:], what="the vote counts")
    counts = _class_counts(raters, num_classes)
    return np.argmax(counts, axis=0).astype(label_dtype(num_classes))


@dataclass(frozen=True)
class StapleResult:
    """What :func:`staple` returns.

    Attributes
    ----------
    probabilities : numpy.ndarray of float32, shape (C, *spatial)
        Soft labels summing to 1 over classes. For two classes, ``[1 - p, p]`` where ``p`` is the
        foreground probability from SimpleITK's binary ``STAPLEImageFilter``. For more classes, the
        one-versus-rest posteriors in ``class_probabilities`` normalized over classes.
    class_probabilities : numpy.ndarray of float32, shape (C, *spatial)
        Raw output of ``STAPLEImageFilter`` run with class ``c`` as foreground and all other classes as
        background: the posterior probability that the true label is ``c``. Not normalized over classes.
    sensitivities, specificities : numpy.ndarray of float64, shape (R, C)
        Rater ``r``'s sensitivity and specificity for class ``c`` (one versus rest), as estimated by
        ``STAPLEImageFilter``. NaN where undefined: a class that no rater ever uses has no sensitivity, a
        class that every rater uses everywhere has no specificity.
    labels : numpy.ndarray of unsigned int, shape (*spatial)
        Multi-label fusion from SimpleITK's ``MultiLabelSTAPLEImageFilter``. Voxels it leaves undecided
        (a tie) take the class with the highest ``probabilities``.
    undecided : numpy.ndarray of bool, shape (*spatial)
        Where ``MultiLabelSTAPLEImageFilter`` could not decide.
    confusion_matrices : numpy.ndarray of float64, shape (R, C + 1, C)
        ``MultiLabelSTAPLEImageFilter``'s estimate per rater: entry ``[r, j, i]`` is the probability that
        rater ``r`` assigns label ``j`` when the true label is ``i``. Each column sums to 1 or is NaN. The
        extra last row is ITK's row for labels outside the classes; it is zero for validated input.
        Column ``i`` is NaN where the filter has no estimate for true class ``i`` (see ``confusion_defined``).
    confusion_defined : numpy.ndarray of bool, shape (C,)
        Whether column ``i`` of the confusion matrices is estimated. ITK starts its EM from the majority
        vote, so a class that wins the vote at no voxel (nobody draws it, or every voxel where it is drawn
        is a tie or outvoted) keeps an empty column; SimpleITK returns zeros there, which are reported as
        NaN here because they are not probabilities.
    degenerate : bool
        True when ``MultiLabelSTAPLEImageFilter`` decided no voxel at all (every voxel is a tie, e.g. two
        raters who disagree everywhere): no confusion column is defined, ``undecided`` is True everywhere
        and ``labels`` is entirely the argmax of ``probabilities``. :func:`staple` warns when this happens.
    """

    probabilities: np.ndarray
    class_probabilities: np.ndarray
    sensitivities: np.ndarray
    specificities: np.ndarray
    labels: np.ndarray
    undecided: np.ndarray
    confusion_matrices: np.ndarray
    confusion_defined: np.ndarray
    degenerate: bool

    @property
    def num_classes(self) -> int:
        """Number of classes ``C``."""
        return int(self.probabilities.shape[0])

    @property
    def num_raters(self) -> int:
        """Number of raters ``R``."""
        return int(self.sensitivities.shape[0])


def _binary_staple(
    masks: np.ndarray, max_iterations: int | None, confidence_weight: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SimpleITK binary STAPLE on ``(R, *spatial)`` 0/1 masks: (probability, sensitivity, specificity)."""
    import SimpleITK as sitk

    num_raters = masks.shape[0]
    if not masks.any():  # nobody drew this class: it is absent, sensitivity undefined
        return np.zeros(masks.shape[1:], np.float32), np.full(num_raters, np.nan), np.ones(num_raters)
    if masks.all():  # everybody drew it everywhere: specificity undefined
        return np.ones(masks.shape[1:], np.float32), np.ones(num_raters), np.full(num_raters, np.nan)
    staple_filter = sitk.STAPLEImageFilter()
    staple_filter.SetForegroundValue(1)
    staple_filter.SetConfidenceWeight(confidence_weight)
    if max_iterations is not None:
        staple_filter.SetMaximumIterations(max_iterations)
    probability = sitk.GetArrayFromImage(staple_filter.Execute([sitk.GetImageFromArray(m) for m in masks]))
    if not np.all(np.isfinite(probability)):
        warnings.warn(
            "SimpleITK STAPLE returned non-finite probabilities; using the rater vote fraction there.",
            RuntimeWarning,
            stacklevel=3,
        )
        fraction = masks.mean(axis=0)
        probability = np.where(np.isfinite(probability), probability, fraction)
    return (
        probability.astype(np.float32),
        np.asarray(staple_filter.GetSensitivity(), dtype=np.float64),
        np.asarray(staple_filter.GetSpecificity(), dtype=np.float64),
    )


def _multilabel_staple(
    raters: np.ndarray, num_classes: int, max_iterations: int | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SimpleITK multi-label STAPLE: labels (``num_classes`` marks undecided), confusion matrices (empty
    columns as NaN) and which columns are defined."""
    import SimpleITK as sitk

    dtype = label_dtype(num_classes + 1)  # room for the undecided label
    fusion = sitk.MultiLabelSTAPLEImageFilter()
    fusion.SetLabelForUndecidedPixels(num_classes)
    if max_iterations is not None:
        fusion.SetMaximumNumberOfIterations(max_iterations)
    fused = sitk.GetArrayFromImage(fusion.Execute([sitk.GetImageFromArray(r.astype(dtype)) for r in raters]))
    present = int(raters.max()) + 1  # ITK sizes its matrices by the largest label seen
    matrices = np.full((raters.shape[0], num_classes + 1, num_classes), np.nan)
    for rater_index in range(raters.shape[0]):
        flat = np.asarray(fusion.GetConfusionMatrix(rater_index), dtype=np.float64)
        matrix = flat.reshape(present + 1, present)
        matrices[rater_index, :present, :present] = matrix[:present]
        matrices[rater_index, present:num_classes, :present] = 0.0
        matrices[rater_index, num_classes, :present] = matrix[present]
    # A class whose column ITK never filled (it wins the initial vote nowhere) comes back as zeros.
    defined = np.zeros(num_classes, dtype=bool)
    defined[:present] = np.all(matrices[:, :, :present].sum(axis=1) > 0, axis=0)
    matrices[:, :, ~defined] = np.nan
    return fused, matrices, defined


def _one_versus_rest_staple(
    raters: np.ndarray, num_classes: int, max_iterations: int | None, confidence_weight: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Binary STAPLE per class: class probabilities ``(C, *spatial)``, sensitivities and specificities ``(R, C)``."""
    num_raters, spatial = raters.shape[0], raters.shape[1:]
    class_probabilities = np.empty((num_classes, *spatial), dtype=np.float32)
    sensitivities = np.empty((num_raters, num_classes))
    specificities = np.empty((num_raters, num_classes))
    for class_index in range(num_classes):
        masks = (raters == class_index).astype(np.uint8)
        prob, sens, spec = _binary_staple(masks, max_iterations, confidence_weight)
        class_probabilities[class_index] = prob
        sensitivities[:, class_index] = sens
        specificities[:, class_index] = spec
    return class_probabilities, sensitivities, specificities


def _normalize_over_classes(class_probabilities: np.ndarray, raters: np.ndarray) -> np.ndarray:
    """Soft labels from the one-versus-rest posteriors: ``[1 - p1, p1]`` for two classes, else normalized
    over classes (the rater mean where every posterior is 0)."""
    num_classes = class_probabilities.shape[0]
    if num_classes == 2:
        return np.stack([1.0 - class_probabilities[1], class_probabilities[1]]).astype(np.float32)
    total = class_probabilities.sum(axis=0, dtype=np.float64)
    fallback = rater_mean(raters, num_classes=num_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        normalized = class_probabilities / total
    return np.where(total > 0, normalized, fallback).astype(np.float32)


def staple(
    raters: Any,
    *,
    num_classes: int | None = None,
    max_iterations: int | None = None,
    confidence_weight: float = 1.0,
) -> StapleResult:
    """STAPLE label fusion (Warfield et al. 2004) with SimpleITK: soft labels, rater performance, labels.

    Two SimpleITK filters are used:

    * ``STAPLEImageFilter`` (binary STAPLE), once per class with that class as foreground and the rest as
      background. It gives the per-voxel posterior probability of the class and each rater's sensitivity and
      specificity. These make ``probabilities``, ``class_probabilities``, ``sensitivities`` and
      ``specificities``.
    * ``MultiLabelSTAPLEImageFilter`` (multi-label STAPLE, Rohlfing et al.), which gives a fused label map
      and one confusion matrix per rater but no probabilities. These make ``labels``, ``undecided``,
      ``confusion_matrices``, ``confusion_defined`` and ``degenerate``.

    When every voxel is a tie (two raters who disagree everywhere, for instance) ``MultiLabelSTAPLEImageFilter``
    estimates nothing and SimpleITK returns all-zero confusion matrices. That case is reported rather than
    passed on: the matrices are NaN, ``degenerate`` is True and a ``RuntimeWarning`` is issued. The soft
    labels (``probabilities``) come from the binary filter and stay valid.

    Parameters
    ----------
    raters : array_like of int, shape (R, Y, X) or (R, Z, Y, X), or a list of R label maps
        Label maps of ``R`` raters on the same grid.
    num_classes : int, optional
        Number of classes ``C``; inferred as ``max label + 1`` (at least 2) when omitted.
    max_iterations : int, optional
        Cap on EM iterations for both filters; SimpleITK's default (run to convergence) when None.
    confidence_weight : float, default 1.0
        ``STAPLEImageFilter``'s confidence weight (scales the prior); must be > 0.

    Returns
    -------
    StapleResult
        See :class:`StapleResult` for each field. ``probabilities`` has shape ``(C, *spatial)``, float32,
        summing to 1 over classes.

    Raises
    ------
    TypeError, ValueError
        If the raters are not an integer stack of 2-D/3-D maps within range, or an option is invalid.

    Warns
    -----
    RuntimeWarning
        If the multi-label fusion is degenerate (every voxel a tie); see :attr:`StapleResult.degenerate`.

    References
    ----------
    .. [1] S. K. Warfield, K. H. Zou and W. M. Wells, IEEE Trans. Med. Imaging 23(7), 903-921, 2004.
    .. [2] T. Rohlfing, D. B. Russakoff and C. R. Maurer, IEEE Trans. Med. Imaging 23(8), 983-994, 2004.

    Examples
    --------
    >>> import numpy as np
    >>> truth = np.zeros((16, 16), dtype=int)
    >>> truth[4:12, 4:12] = 1
    >>> raters = np.stack([truth, truth, np.roll(truth, 1, axis=1)])
    >>> result = staple(raters)
    >>> result.probabilities.shape, result.sensitivities.shape, result.confusion_matrices.shape
    ((2, 16, 16), (3, 2), (3, 3, 2))
    >>> bool(np.allclose(result.probabilities.sum(axis=0), 1))
    True
    >>> result.confusion_defined.tolist(), result.degenerate
    ([True, True], False)
    """
    if num_classes is not None:
        num_classes = check_num_classes(num_classes)
    raters = as_rater_stack(raters, num_classes=num_classes)
    num_classes = infer_num_classes(raters, num_classes)
    if max_iterations is not None:
        max_iterations = check_int(max_iterations, name="max_iterations", minimum=1)
    confidence_weight = check_positive(confidence_weight, name="confidence_weight")

    check_class_maps_fit(num_classes, raters.shape[1:], what="the STAPLE probabilities (with temporaries)",
                         bytes_per_value=16)
    class_probabilities, sensitivities, specificities = _one_versus_rest_staple(
        raters, num_classes, max_iterations, confidence_weight
    )
    probabilities = _normalize_over_classes(class_probabilities, raters)

    fused, confusion_matrices, confusion_defined = _multilabel_staple(raters, num_classes, max_iterations)
    undecided = fused == num_classes
    degenerate = not confusion_defined.any()
    if degenerate:
        warnings.warn(
            "MultiLabelSTAPLE decided no voxel: every voxel is a tie between the raters, so the confusion "
            "matrices are undefined (NaN) and labels is the argmax of the one-versus-rest STAPLE "
            "probabilities; StapleResult.degenerate is True.",
            RuntimeWarning,
            stacklevel=2,
        )
    labels = fused.astype(label_dtype(num_classes))
    if undecided.any():
        labels[undecided] = np.argmax(probabilities, axis=0)[undecided]
    return StapleResult(
        probabilities=probabilities,
        class_probabilities=class_probabilities,
        sensitivities=sensitivities,
        specificities=specificities,
        labels=labels,
        undecided=undecided,
        confusion_matrices=confusion_matrices,
        confusion_defined=confusion_defined,
        degenerate=degenerate,
    )

