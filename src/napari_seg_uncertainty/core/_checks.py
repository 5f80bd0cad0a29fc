"""Input validation shared by the core modules.

Every public core function validates its arguments through these helpers so that
errors name the argument, what was received and what is expected (DESIGN.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Integral, Real
from typing import Any

import numpy as np

__all__ = [
    "as_label_array",
    "as_rater_stack",
    "check_num_classes",
    "check_positive",
    "check_probability",
    "check_spacing",
    "describe",
]


def describe(value: Any) -> str:
    """Short description of ``value`` for error messages (type, dtype and shape for arrays)."""
    if isinstance(value, np.ndarray):
        return f"array of dtype {value.dtype} and shape {value.shape}"
    try:
        import torch

        if isinstance(value, torch.Tensor):
            return f"tensor of dtype {value.dtype} and shape {tuple(value.shape)}"
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def _to_numpy(value: Any, name: str) -> np.ndarray:
    try:
        import torch

        if isinstance(value, torch.Tensor):
            return value.detach().cpu().numpy()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(value, (str, bytes)) or value is None:
        raise TypeError(f"{name} must be an array of integer labels, got {describe(value)}.")
    try:
        arr = np.asarray(value)
    except Exception as exc:  # ragged lists and the like
        raise TypeError(f"{name} must be an array of integer labels, got {describe(value)}.") from exc
    if arr.dtype == object:
        raise TypeError(
            f"{name} must be a rectangular numeric array, got an object array of shape {arr.shape} "
            "(ragged nested lists or mixed types?)."
        )
    return arr


def as_label_array(
    labels: Any,
    *,
    name: str = "labels",
    ndim: Sequence[int] = (2, 3),
    num_classes: int | None = None,
) -> np.ndarray:
    """Validate an integer label map and return it as a numpy integer array.

    Parameters
    ----------
    labels : array_like
        Label map of non-negative integers with ``ndim`` spatial dimensions.
    name : str
        Argument name used in error messages.
    ndim : sequence of int
        Allowed numbers of dimensions.
    num_classes : int, optional
        When given, every label must be smaller than this.

    Returns
    -------
    numpy.ndarray
        The labels with an integer dtype (floats holding whole numbers are converted).

    Raises
    ------
    TypeError
        If ``labels`` is not numeric.
    ValueError
        If the shape is wrong, the array is empty, or a label is negative, fractional,
        NaN/inf or out of range.
    """
    arr = _to_numpy(labels, name)
    if arr.ndim not in tuple(ndim):
        allowed = " or ".join(f"{d}-D" for d in ndim)
        raise ValueError(f"{name} must be {allowed}, got {arr.ndim}-D data of shape {arr.shape}.")
    if arr.size == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape}); expected at least one pixel.")
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} contains NaN or infinite values; labels must be finite integers.")
        if not np.all(arr == np.round(arr)):
            raise ValueError(
                f"{name} contains non-integer values (dtype {arr.dtype}); labels must be whole numbers "
                "0, 1, 2, ... Round or threshold probabilities first."
            )
        largest = float(np.abs(arr).max())
        if largest >= 2.0**62:  # beyond int64: the cast would wrap around
            raise ValueError(f"{name} contains the value {largest:.3g}, far too large for a label.")
        arr = arr.astype(np.int64)
    elif not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name} must have an integer dtype, got {arr.dtype}.")
    if arr.min() < 0:
        raise ValueError(
            f"{name} contains negative labels (minimum {int(arr.min())}); labels must be 0 (background), 1, 2, ..."
        )
    if num_classes is not None and int(arr.max()) >= num_classes:
        raise ValueError(
            f"{name} contains label {int(arr.max())}, outside the range 0..{num_classes - 1} "
            f"for num_classes={num_classes}; raise num_classes or fix the labels."
        )
    return arr


def as_rater_stack(
    raters: Any,
    *,
    name: str = "raters",
    num_classes: int | None = None,
) -> np.ndarray:
    """Validate raters stacked as ``(R, *spatial)`` (or a list of equally shaped label maps)."""
    if isinstance(raters, (list, tuple)):
        if len(raters) == 0:
            raise ValueError(f"{name} is an empty list; give at least one rater's label map.")
        maps = [_to_numpy(r, f"{name}[{i}]") for i, r in enumerate(raters)]
        shapes = {m.shape for m in maps}
        if len(shapes) > 1:
            detail = ", ".join(f"{name}[{i}]: {m.shape}" for i, m in enumerate(maps))
            raise ValueError(f"{name} have different shapes ({detail}); every rater must label the same grid.")
        raters = np.stack(maps)
    arr = _to_numpy(raters, name)
    if arr.ndim not in (3, 4):
        raise ValueError(
            f"{name} must be stacked as (R, Y, X) or (R, Z, Y, X), got {arr.ndim}-D data of shape {arr.shape}."
        )
    if arr.shape[0] == 0:
        raise ValueError(f"{name} holds no rater (shape {arr.shape}); give at least one rater's label map.")
    return as_label_array(arr, name=name, ndim=(3, 4), num_classes=num_classes)


def check_num_classes(num_classes: Any, *, name: str = "num_classes", minimum: int = 1) -> int:
    """Return ``num_classes`` as int after checking it is an integer ``>= minimum``."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, Integral):
        raise TypeError(f"{name} must be an integer, got {describe(num_classes)}.")
    if num_classes < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {num_classes}.")
    return int(num_classes)


def check_positive(value: Any, *, name: str, allow_zero: bool = False) -> float:
    """Return ``value`` as float after checking it is a finite positive number."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a number, got {describe(value)}.")
    value = float(value)
    if not np.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number {bound}, got {value}.")
    return value


def check_probability(value: Any, *, name: str) -> float:
    """Return ``value`` as float after checking it lies in [0, 1]."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a number in [0, 1], got {describe(value)}.")
    value = float(value)
    if not (0.0 <= value <= 1.0):
        raise ValueError(f"{name} must lie in [0, 1], got {value}.")
    return value


def check_spacing(spacing: Any, ndim: int, *, name: str = "spacing") -> tuple[float, ...] | None:
    """Validate a voxel spacing with one positive finite entry per spatial axis (or ``None``)."""
    if spacing is None:
        return None
    if isinstance(spacing, Real) and not isinstance(spacing, bool):
        spacing = (spacing,) * ndim
    if isinstance(spacing, (str, bytes, bool)):
        raise TypeError(f"{name} must be a sequence of {ndim} numbers, got {describe(spacing)}.")
    try:
        entries = tuple(spacing)
    except TypeError as exc:
        raise TypeError(f"{name} must be a sequence of {ndim} numbers, got {describe(spacing)}.") from exc
    if not all(isinstance(s, Real) and not isinstance(s, bool) for s in entries):
        raise TypeError(f"{name} must be a sequence of {ndim} numbers, got {describe(spacing)}.")
    values = tuple(float(s) for s in entries)
    if len(values) != ndim:
        raise ValueError(f"{name} must have {ndim} entries (one per spatial axis), got {len(values)}: {values}.")
    if not all(np.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"{name} entries must be finite and > 0, got {values}.")
    return values
