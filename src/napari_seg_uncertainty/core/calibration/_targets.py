"""Targets of the calibration metrics: hard labels, a rater stack, a one-hot map or soft labels.

Every metric of the package validates its ``probs``/``target``/``mask`` triple here once and works on
the flattened result (:class:`Prepared`). An integer or boolean ``(C, *spatial)`` array that is a valid
one-hot encoding can equally be a stack of ``C`` raters; such a target needs an explicit
``target_kind``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from .._validation import (
    as_label_array,
    as_mask,
    as_probability_array,
    as_rater_stack,
    check_choice,
    check_int,
    describe,
    to_numpy_array,
)

TargetKind = Literal["labels", "raters", "one_hot", "soft"]
TARGET_KINDS = ("labels", "raters", "one_hot", "soft")

RaterAverage = Literal["score", "target"]
RATER_AVERAGES = ("score", "target")

BinClosure = Literal["right", "left"]

#: Largest number of bins accepted (beyond it the bins hold too few voxels to mean anything).
MAX_BINS = 10_000


def check_num_bins(num_bins: Any, *, name: str = "num_bins") -> int:
    """``num_bins`` as an int in 1 … 10000."""
    value = check_int(num_bins, name=name)
    if not 1 <= value <= MAX_BINS:
        raise ValueError(f"{name} must be between 1 and {MAX_BINS}, got {value}.")
    return value


def check_closed(closed: Any) -> str:
    """``closed`` if it is ``"right"`` or ``"left"``."""
    return check_choice(closed, name="closed", choices=("right", "left"))


@dataclass(frozen=True)
class Prepared:
    """Validated, flattened metric inputs.

    Attributes
    ----------
    probs : numpy.ndarray
        ``(C, N)`` probabilities (float32, or float64 when given so), their values checked by
        :func:`prepare` unless its caller checked them already.
    labels : numpy.ndarray or None
        ``(N,)`` hard labels (for ``"labels"`` and ``"one_hot"`` targets).
    soft : numpy.ndarray or None
        ``(C, N)`` float32 soft target (the rater mean for ``"raters"``).
    mask : numpy.ndarray or None
        ``(N,)`` boolean voxel selection.
    kind : str
        The target kind the target was read as.
    """

    probs: np.ndarray
    labels: np.ndarray | None
    soft: np.ndarray | None
    mask: np.ndarray | None
    kind: str

    @property
    def num_classes(self) -> int:
        return int(self.probs.shape[0])

    @property
    def num_voxels(self) -> int:
        """Number of voxels the metrics average over (the selected ones)."""
        return int(self.probs.shape[1]) if self.mask is None else int(self.mask.sum())


def _is_one_hot(arr: np.ndarray) -> bool:
    """Whether ``arr`` ``(C, *spatial)`` holds 0/1 values with exactly one 1 per voxel."""
    if arr.dtype != bool and (arr.min() < 0 or arr.max() > 1):
        return False
    return bool(np.all(arr.sum(axis=0, dtype=np.int64) == 1))


def _infer_kind(arr: np.ndarray, num_classes: int, spatial: tuple[int, ...], name: str) -> str:
    if arr.shape == spatial:
        return "labels"
    stacked = arr.ndim == len(spatial) + 1 and arr.shape[1:] == spatial
    if stacked and (np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool):
        if arr.shape[0] == num_classes and num_classes >= 2 and _is_one_hot(arr):
            raise ValueError(
                f"{name} is an integer array of shape {arr.shape} that reads both as a one-hot map of "
                f"{num_classes} classes and as a stack of {num_classes} raters; say which with "
                "target_kind='one_hot' or target_kind='raters'."
            )
        return "raters"
    if stacked:
        return "soft"
    raise ValueError(
        f"{name} must be integer labels of shape {spatial}, a rater stack (R, *{spatial}), a one-hot "
        f"map or soft labels of shape {(num_classes, *spatial)}, got {describe(arr)}."
    )


def _class_stack(arr: np.ndarray, num_classes: int, spatial: tuple[int, ...], name: str, kind: str) -> None:
    if kind == "soft" and arr.ndim == len(spatial) + 1 and arr.shape[1:] == spatial:
        if arr.shape[0] != num_classes:
            raise ValueError(
                f"{name} holds soft labels with {arr.shape[0]} classes (shape {arr.shape}) but the "
                f"probabilities have {num_classes}; expected shape {(num_classes, *spatial)}."
            )
    if arr.shape != (num_classes, *spatial):
        raise ValueError(
            f"{name} with target_kind={kind!r} must have shape {(num_classes, *spatial)} (one channel per "
            f"class of the probabilities), got {describe(arr)}."
        )


def resolve_target(
    target: Any,
    *,
    num_classes: int,
    spatial_shape: tuple[int, ...],
    target_kind: str | None = None,
    name: str = "target",
) -> tuple[np.ndarray | None, np.ndarray | None, str]:
    """Read ``target`` as hard labels or a soft map: ``(labels, soft, kind)`` on the spatial grid.

    ``target_kind=None`` infers the kind from shape and dtype: the spatial shape means labels, a float
    ``(C, *spatial)`` soft labels, an integer ``(R, *spatial)`` a rater stack, except that an integer
    ``(C, *spatial)`` one-hot map is ambiguous and raises.
    """
    if target_kind is not None:
        check_choice(target_kind, name="target_kind", choices=TARGET_KINDS)
    arr = to_numpy_array(target, name=name)
    spatial = tuple(spatial_shape)
    kind = target_kind if target_kind is not None else _infer_kind(arr, num_classes, spatial, name)
    if kind == "labels":
        if arr.shape != spatial:
            raise ValueError(
                f"{name} with target_kind='labels' must have the spatial shape {spatial}, got {describe(arr)}."
            )
        return as_label_array(arr, name=name, ndim=(len(spatial),), num_classes=num_classes), None, kind
    if kind == "raters":
        if arr.ndim != len(spatial) + 1 or arr.shape[1:] != spatial:
            raise ValueError(
                f"{name} with target_kind='raters' must be stacked as (R, *{spatial}), got {describe(arr)}."
            )
        from ..labels import rater_mean

        raters = as_rater_stack(arr, name=name, num_classes=num_classes)
        return None, rater_mean(raters, num_classes=num_classes), kind
    _class_stack(arr, num_classes, spatial, name, kind)
    if kind == "one_hot":
        if not _is_one_hot(arr):
            raise ValueError(
                f"{name} with target_kind='one_hot' must hold 0/1 values with exactly one 1 per voxel "
                f"along the class axis, got {describe(arr)}."
            )
        return np.argmax(arr, axis=0), None, kind
    if not np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float32)
    soft = as_probability_array(arr, name=name)
    return None, soft.astype(np.float32, copy=False), kind


def prepare(
    probs: Any,
    target: Any,
    mask: Any,
    *,
    target_kind: str | None = None,
    check_values: bool = True,
) -> Prepared:
    """Validate ``probs`` ``(C, *spatial)``, ``target`` and ``mask`` and flatten them over the voxels.

    The probability values (finite, in [0, 1], summing to 1) are checked here, once per public call,
    and the metric kernels trust them; ``check_values=False`` only for probabilities checked already.
    """
    p = as_probability_array(probs, name="probs", check_values=check_values)
    num_classes = p.shape[0]
    spatial = p.shape[1:]
    labels, soft, kind = resolve_target(target, num_classes=num_classes, spatial_shape=spatial, target_kind=target_kind)
    m = as_mask(mask, spatial_shape=spatial, name="mask")
    return Prepared(
        probs=p.reshape(num_classes, -1),
        labels=None if labels is None else labels.reshape(-1),
        soft=None if soft is None else soft.reshape(num_classes, -1),
        mask=None if m is None else m.reshape(-1),
        kind=kind,
    )
