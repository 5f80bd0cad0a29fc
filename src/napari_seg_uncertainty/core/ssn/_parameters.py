"""Checks of the parameters of a :class:`~.distribution.LowRankLogits`, each large array checked once.

:func:`dataclasses.replace` runs the whole ``__post_init__`` again; a slider move must not re-check
(and re-take the square root of) a volume's factor, so the read-only arrays stored by a
distribution are recognized by identity (held weakly) and passed through unchanged.
"""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np

from .._validation import as_float_tensor, check_real, describe

__all__ = [
    "CHECKED",
    "CheckedArrays",
    "checked_array",
    "class_names",
    "class_scales",
    "crop_slice",
    "read_only",
    "stacked_factor",
    "variances",
]


class CheckedArrays:
    """The read-only arrays already checked, with the square root of those that are variances (held weakly)."""

    def __init__(self) -> None:
        self._entries: dict[int, tuple[weakref.ref[np.ndarray], np.ndarray | None]] = {}

    def get(self, array: Any) -> tuple[bool, np.ndarray | None]:
        """``(known, sqrt)``: whether ``array`` was validated, and its square root if it is a variance map."""
        entry = self._entries.get(id(array))
        if entry is None or entry[0]() is not array:
            return False, None
        return True, entry[1]

    def add(self, array: np.ndarray, sqrt: np.ndarray | None = None) -> np.ndarray:
        key = id(array)
        if sqrt is None:
            sqrt = self.get(array)[1]
        self._entries[key] = (weakref.ref(array, lambda _, key=key: self._entries.pop(key, None)), sqrt)
        return array


CHECKED = CheckedArrays()


def read_only(array: np.ndarray) -> np.ndarray:
    view = array.view()
    view.flags.writeable = False
    return view


def checked_array(value: Any, *, name: str, non_negative: bool = False) -> np.ndarray:
    """``value`` as a finite float32 read-only array (no copy for float32 input), checked once."""
    known, sqrt = CHECKED.get(value)
    if known and (sqrt is not None or not non_negative):
        return value
    array = np.ascontiguousarray(as_float_tensor(value, name=name, non_negative=non_negative).numpy())
    return CHECKED.add(read_only(array))


def stacked_factor(value: Any, mean: np.ndarray) -> np.ndarray | None:
    """``cov_factor`` as a read-only ``(K, C, *S)`` array: a view of the given one in either layout."""
    if value is None:
        return None
    num_classes, *spatial = mean.shape
    size = mean.size
    known, _ = CHECKED.get(value)
    array = value if known else as_float_tensor(value, name="cov_factor").numpy()
    if array.ndim == 2 and array.shape[0] == size:  # torch's layout: rows ordered as mean.reshape(-1)
        stacked = np.moveaxis(np.ascontiguousarray(array).reshape(num_classes, *spatial, -1), -1, 0)
    elif array.ndim == mean.ndim + 1 and tuple(array.shape[1:]) == mean.shape:
        stacked = array if known else np.ascontiguousarray(array)
    else:
        raise ValueError(
            f"cov_factor must be shaped {(size, 'K')} (flattened, as torch's LowRankMultivariateNormal) "
            f"or {('K', num_classes, *spatial)} for a mean of shape {mean.shape}, got {describe(value)}."
        )
    if stacked.shape[0] < 1:
        raise ValueError(f"cov_factor has rank 0 (shape {array.shape}); pass None for rank 0.")
    return stacked if stacked is value else CHECKED.add(read_only(stacked))


def variances(value: Any, mean: np.ndarray) -> np.ndarray:
    """``cov_diag`` as a read-only ``(C, *S)`` array of variances (its square root remembered)."""
    array = checked_array(value, name="cov_diag", non_negative=True)
    if array.shape == (mean.size,):
        array = read_only(array.reshape(mean.shape))
    elif array.shape != mean.shape:
        raise ValueError(
            f"cov_diag must be shaped {mean.shape} or ({mean.size},) for a mean of shape {mean.shape}, "
            f"got {describe(value)}."
        )
    known, sqrt = CHECKED.get(array)
    if not known or sqrt is None:
        CHECKED.add(array, np.sqrt(array))
    return array


def class_scales(value: Any, num_classes: int) -> tuple[float, ...]:
    if value is None:
        return (1.0,) * num_classes
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__"):
        raise TypeError(f"class_scales must be a sequence of numbers, got {describe(value)}.")
    if len(value) != num_classes:
        raise ValueError(f"class_scales must have one entry per class ({num_classes}), got {len(value)}.")
    return tuple(check_real(w, name=f"class_scales[{i}]") for i, w in enumerate(value))


def class_names(value: Any, num_classes: int) -> tuple[str, ...]:
    if value is None:
        return tuple(f"class {c}" for c in range(num_classes))
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__"):
        raise TypeError(f"class_names must be a sequence of strings, got {describe(value)}.")
    names = tuple(value)
    if len(names) != num_classes or not all(isinstance(n, str) for n in names):
        raise ValueError(f"class_names must be {num_classes} strings (one per class), got {describe(value)}.")
    return names


def crop_slice(value: Any, size: int, axis: int) -> slice:
    if not isinstance(value, slice):
        raise TypeError(f"region[{axis}] must be a slice, got {describe(value)}.")
    start, stop, step = value.indices(size)
    if step != 1 or stop <= start:
        raise ValueError(
            f"region[{axis}] must select a non-empty contiguous range of 0..{size - 1} (step 1), got {value}."
        )
    return slice(start, stop)
