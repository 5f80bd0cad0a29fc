"""Soft labels by method name (what the "Soft labels" widget runs) and the comparison of two soft-label maps."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._validation import as_rater_stack, check_choice, check_num_classes, describe
from .fusion import majority_vote, rater_mean, staple
from .smoothing import label_smoothing, msvls, one_hot, svls

__all__ = ["SINGLE_MAP_METHODS", "SOFT_LABEL_METHODS", "SoftLabelComparison", "compare_soft_labels",
           "compute_soft_labels"]

#: Method key -> display name, in the order the widget lists them.
SOFT_LABEL_METHODS: dict[str, str] = {
    "one_hot": "One-hot",
    "label_smoothing": "Label smoothing (LS)",
    "svls": "SVLS",
    "msvls": "mSVLS",
    "rater_mean": "Rater mean (mOH)",
    "staple": "STAPLE",
    "majority_vote": "Majority vote",
}

#: Methods that smooth a single label map; with several raters they use the majority vote.
SINGLE_MAP_METHODS = ("one_hot", "label_smoothing", "svls")


def compute_soft_labels(
    raters: Any,
    *,
    num_classes: int,
    method: str = "msvls",
    alpha: float = 0.1,
    sigma: float = 1.0,
    spacing: Sequence[float] | None = None,
) -> np.ndarray:
    """Soft labels of a rater stack by method name (what the "Soft labels" widget runs).

    Parameters
    ----------
    raters : array_like of int, shape (R, Y, X) or (R, Z, Y, X), or a list of R label maps
        Label maps of ``R >= 1`` raters on the same grid.
    num_classes : int
        Number of classes ``C``.
    method : str, default "msvls"
        A key of :data:`SOFT_LABEL_METHODS`: ``"one_hot"``, ``"label_smoothing"``, ``"svls"``, ``"msvls"``,
        ``"rater_mean"``, ``"staple"`` (its ``probabilities``) or ``"majority_vote"`` (one-hot of the vote).
        The single-map methods ``one_hot``, ``label_smoothing`` and ``svls`` use the one rater given, or the
        :func:`majority_vote` of several raters.
    alpha : float, default 0.1
        LS factor (``label_smoothing`` only).
    sigma : float, default 1.0
        SVLS σ (``svls`` and ``msvls``).
    spacing : sequence of float, optional
        Voxel spacing; when given, σ is in its unit (``svls`` and ``msvls``).

    Returns
    -------
    numpy.ndarray of float32, shape (C, *spatial)
        Soft labels summing to 1 over classes.

    Raises
    ------
    TypeError, ValueError
        If ``method`` is unknown or an argument is invalid for the method.

    Examples
    --------
    >>> import numpy as np
    >>> raters = np.zeros((3, 4, 4), dtype=int)
    >>> raters[:2, 1:3, 1:3] = 1
    >>> compute_soft_labels(raters, num_classes=2, method="rater_mean")[1, 1, 1]
    np.float32(0.6666667)
    >>> compute_soft_labels(raters, num_classes=2, method="majority_vote")[1, 1, 1]
    np.float32(1.0)
    """
    method = check_choice(method, name="method", choices=tuple(SOFT_LABEL_METHODS))
    num_classes = check_num_classes(num_classes)
    raters = as_rater_stack(raters, num_classes=num_classes)
    if method in SINGLE_MAP_METHODS:
        labels = raters[0] if raters.shape[0] == 1 else majority_vote(raters, num_classes=num_classes)
        if method == "one_hot":
            return one_hot(labels, num_classes=num_classes)
        if method == "label_smoothing":
            return label_smoothing(labels, num_classes=num_classes, alpha=alpha)
        return svls(labels, num_classes=num_classes, sigma=sigma, spacing=spacing)
    if method == "msvls":
        return msvls(raters, num_classes=num_classes, sigma=sigma, spacing=spacing)
    if method == "rater_mean":
        return rater_mean(raters, num_classes=num_classes)
    if method == "staple":
        return staple(raters, num_classes=num_classes).probabilities
    return one_hot(majority_vote(raters, num_classes=num_classes), num_classes=num_classes)


@dataclass(frozen=True)
class SoftLabelComparison:
    """Difference between two soft-label maps of the same shape (what :func:`compare_soft_labels` returns).

    Attributes
    ----------
    difference : numpy.ndarray of float32, shape (C, *spatial)
        ``first - second``.
    mean_abs : numpy.ndarray of float64, shape (C,)
        Mean absolute difference per class, over all voxels.
    max_abs : numpy.ndarray of float64, shape (C,)
        Largest absolute difference per class.
    mean_total_variation : float
        Mean over voxels of the total-variation distance ``0.5 * sum_c |first_c - second_c|`` (0 = same
        distributions, 1 = disjoint).
    """

    difference: np.ndarray
    mean_abs: np.ndarray
    max_abs: np.ndarray
    mean_total_variation: float


def _as_soft_labels(value: Any, name: str) -> np.ndarray:
    if isinstance(value, (str, bytes)) or value is None:
        raise TypeError(f"{name} must be a float array of shape (C, *spatial), got {describe(value)}.")
    array = np.asarray(value)
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise TypeError(f"{name} must be a float array of shape (C, *spatial), got {describe(array)}.")
    if array.ndim not in (3, 4):
        raise ValueError(
            f"{name} must have shape (C, Y, X) or (C, Z, Y, X), got {array.ndim}-D data of shape {array.shape}."
        )
    if array.size == 0:
        raise ValueError(f"{name} is empty (shape {array.shape}); expected at least one class and one voxel.")
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or infinite values; soft labels are probabilities in [0, 1].")
    return array


def compare_soft_labels(first: Any, second: Any) -> SoftLabelComparison:
    """Compare two soft-label maps: signed difference, per-class mean/max absolute difference, mean TV.

    Parameters
    ----------
    first, second : array_like of float, shape (C, Y, X) or (C, Z, Y, X)
        Soft labels on the same grid with the same classes.

    Returns
    -------
    SoftLabelComparison

    Raises
    ------
    TypeError, ValueError
        If an input is not a numeric ``(C, *spatial)`` array, is empty or holds NaN/inf, or the shapes differ.

    Examples
    --------
    >>> import numpy as np
    >>> a = np.array([[[1.0, 0.5]], [[0.0, 0.5]]], dtype=np.float32)
    >>> b = np.array([[[1.0, 1.0]], [[0.0, 0.0]]], dtype=np.float32)
    >>> result = compare_soft_labels(a, b)
    >>> result.max_abs.tolist(), result.mean_total_variation
    ([0.5, 0.5], 0.25)
    """
    first = _as_soft_labels(first, "first")
    second = _as_soft_labels(second, "second")
    if first.shape != second.shape:
        raise ValueError(
            f"first and second must have the same shape, got {first.shape} and {second.shape}; compare soft "
            "labels of the same raters and classes."
        )
    difference = np.subtract(first, second, dtype=np.float32)
    num_classes = difference.shape[0]
    mean_abs, max_abs = np.empty(num_classes), np.empty(num_classes)
    per_voxel = np.zeros(difference.shape[1:], dtype=np.float64)
    for class_index in range(num_classes):  # class by class: no full-size float64 temporary
        absolute = np.abs(difference[class_index])
        mean_abs[class_index] = absolute.mean(dtype=np.float64)
        max_abs[class_index] = float(absolute.max())
        per_voxel += absolute
    return SoftLabelComparison(
        difference=difference,
        mean_abs=mean_abs,
        max_abs=max_abs,
        mean_total_variation=float(0.5 * per_voxel.mean()),
    )
