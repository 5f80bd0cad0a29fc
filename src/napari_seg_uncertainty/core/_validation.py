"""Input validation shared by every core module (one place, one message style).

Every public core function validates its arguments through these helpers so that errors name the
argument, what was received and what is expected (DESIGN.md): scalars (integers, reals in an
interval, choices, flags, seeds), label maps and rater stacks, class-probability maps
``(C, *spatial)`` and member stacks, targets (hard labels, a rater stack or a soft map), voxel masks
and float tensors.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator, Sequence
from numbers import Integral, Real
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # torch is imported where a tensor is built, so importing core stays fast
    import torch


def _is_tensor(value: Any) -> bool:
    """Whether ``value`` is a torch tensor, without importing torch: a tensor exists only once torch is loaded
    (an error message or a conversion must not cost the seconds of a first ``import torch``)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def exception_text(exc: BaseException) -> str:
    """The text of an exception for one ``error:`` line or notification (a KeyError's without its quotes).

    Examples
    --------
    >>> exception_text(KeyError("no case 'x'")), exception_text(ValueError()), exception_text(OSError("gone"))
    ("no case 'x'", 'ValueError', 'gone')
    """
    if isinstance(exc, KeyError) and exc.args:
        return str(exc.args[0])
    return str(exc) or type(exc).__name__


def describe(value: Any) -> str:
    """Short description of ``value`` for error messages (type, dtype and shape for arrays)."""
    if isinstance(value, np.ndarray):
        return f"array of dtype {value.dtype} and shape {value.shape}"
    if _is_tensor(value):
        return f"tensor of dtype {value.dtype} and shape {tuple(value.shape)}"
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def _to_numpy(value: Any, name: str) -> np.ndarray:
    if _is_tensor(value):
        return value.detach().cpu().numpy()
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


# ----------------------------------------------------------------------------------------------
# scalars
# ----------------------------------------------------------------------------------------------


def check_int(value: Any, *, name: str, minimum: int | None = None) -> int:
    """``value`` as an ``int`` (bools refused), at least ``minimum`` when given."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an integer, got {describe(value)}.")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}.")
    return int(value)


def check_real_in(
    value: Any, *, name: str, low: float, high: float, low_open: bool = False, high_open: bool = False
) -> float:
    """``value`` as a finite ``float`` inside the interval ``low … high`` (open ends by flag)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a number, got {describe(value)}.")
    value = float(value)
    ok_low = value > low if low_open else value >= low
    ok_high = value < high if high_open else value <= high
    if not (math.isfinite(value) and ok_low and ok_high):
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise ValueError(f"{name} must lie in {interval}, got {value}.")
    return value


def check_choice(value: Any, *, name: str, choices: Sequence[str]) -> str:
    """``value`` if it is one of ``choices``."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}.")
    return str(value)


def check_int_tuple(value: Any, *, name: str, minimum: int | None = None) -> tuple[int, ...]:
    """A non-empty sequence of integers as a tuple, each at least ``minimum``."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) == 0:
        raise TypeError(f"{name} must be a non-empty list of integers, got {describe(value)}.")
    return tuple(check_int(v, name=f"{name}[{i}]", minimum=minimum) for i, v in enumerate(value))


def check_flag(value: Any, *, name: str) -> bool:
    """``value`` if it is ``True`` or ``False`` (numpy bools accepted)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {describe(value)}.")
    return bool(value)


# ----------------------------------------------------------------------------------------------
# seeds, indices, tensors (SSN)
# ----------------------------------------------------------------------------------------------

# Finite-value checks run in blocks of this many elements so that validating a large
# covariance factor does not allocate a boolean array of the same size.
_CHECK_BLOCK = 1 << 22


def check_seed(seed: Any, *, name: str = "seed") -> int:
    """Return ``seed`` as a non-negative Python int (numpy integers accepted)."""
    if isinstance(seed, bool) or not isinstance(seed, Integral):
        raise TypeError(f"{name} must be a non-negative integer, got {describe(seed)}.")
    if seed < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {int(seed)}.")
    return int(seed)


def check_index(value: Any, *, name: str, size: int | None = None, minimum: int = 0) -> int:
    """Return ``value`` as int after checking ``minimum <= value`` (and ``value < size`` when given)."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an integer, got {describe(value)}.")
    value = int(value)
    if size is not None and not minimum <= value < size:
        raise ValueError(f"{name} must lie in {minimum}..{size - 1}, got {value}.")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}.")
    return value


def check_real(value: Any, *, name: str) -> float:
    """Return ``value`` as float after checking it is a finite real number."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a number, got {describe(value)}.")
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value}.")
    return value


def as_float_tensor(value: Any, *, name: str, non_negative: bool = False) -> torch.Tensor:
    """Convert ``value`` (numpy array, tensor or nested list) to a float32 CPU tensor and check it is finite.

    A float32 numpy array or CPU tensor is wrapped without copying.
    """
    import torch

    if isinstance(value, torch.Tensor):
        tensor = value.detach()
        if tensor.is_complex() or tensor.dtype == torch.bool:
            raise TypeError(f"{name} must hold real numbers, got {describe(value)}.")
        tensor = tensor.to(device="cpu", dtype=torch.float32)
    else:
        if value is None or isinstance(value, (str, bytes)):
            raise TypeError(f"{name} must be an array of real numbers, got {describe(value)}.")
        try:
            array = np.asarray(value)
        except Exception as exc:  # ragged lists and the like
            raise TypeError(f"{name} must be an array of real numbers, got {describe(value)}.") from exc
        if array.dtype == object or not (
            np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)
        ):
            raise TypeError(f"{name} must be an array of real numbers, got {describe(array)}.")
        if array.dtype != np.float32:
            array = array.astype(np.float32)
        if not array.flags.writeable:
            # torch.from_numpy warns on read-only memory; the values are never written to.
            array = array.copy()
        tensor = torch.from_numpy(array)
    flat = tensor.reshape(-1).numpy()  # a view for contiguous input
    for start in range(0, flat.size, _CHECK_BLOCK):
        block = flat[start : start + _CHECK_BLOCK]
        if not np.isfinite(block).all():
            raise ValueError(f"{name} contains NaN or infinite values; expected finite numbers.")
        if non_negative and (block < 0).any():
            raise ValueError(
                f"{name} contains negative values (minimum {float(block.min()):.4g}); variances must be >= 0."
            )
    return tensor


# ----------------------------------------------------------------------------------------------
# probabilities, targets, masks (calibration and uncertainty)
# ----------------------------------------------------------------------------------------------

#: Tolerance on probabilities: values may exceed [0, 1] and sums may differ from 1 by this much
#: (float32 softmax outputs and 16-bit storage round a little).
PROBABILITY_ATOL = 1e-3

#: Voxels processed per chunk in the streaming kernels (fits the per-chunk temporaries in cache).
CHUNK_VOXELS = 1 << 17


def to_numpy_array(value: Any, *, name: str) -> np.ndarray:
    """Convert tensors and array-likes (dask, zarr, lists) to numpy, rejecting strings and objects."""
    if _is_tensor(value):
        return value.detach().cpu().numpy()
    if value is None or isinstance(value, (str, bytes, dict)):
        raise TypeError(f"{name} must be a numeric array, got {describe(value)}.")
    try:
        arr = np.asarray(value)
    except Exception as exc:  # noqa: BLE001 - ragged input and friends
        raise TypeError(f"{name} must be a numeric array, got {describe(value)}.") from exc
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise TypeError(f"{name} must be a numeric array, got {describe(arr)}.")
    return arr


def iter_chunks(n: int, chunk: int = CHUNK_VOXELS) -> Iterator[slice]:
    """Consecutive slices covering ``range(n)`` in blocks of ``chunk``."""
    for start in range(0, n, chunk):
        yield slice(start, min(start + chunk, n))


def check_probability_chunk(p: np.ndarray, *, name: str, axis: int = 0) -> None:
    """Raise ValueError if a block of probabilities is non-finite, outside [0, 1] or not normalised."""
    low = float(p.min())
    high = float(p.max())
    if not (np.isfinite(low) and np.isfinite(high)):
        raise ValueError(f"{name} contains NaN or infinite values; expected probabilities in [0, 1].")
    if low < -PROBABILITY_ATOL or high > 1 + PROBABILITY_ATOL:
        raise ValueError(
            f"{name} has values between {low:.4g} and {high:.4g}; expected probabilities in [0, 1] "
            "(apply a softmax to logits first)."
        )
    sums = p.sum(axis=axis, dtype=np.float32)
    worst = float(np.abs(sums - 1).max())
    if worst > PROBABILITY_ATOL:
        raise ValueError(
            f"{name} must sum to 1 over the class axis (axis {axis}); found sums between "
            f"{float(sums.min()):.4g} and {float(sums.max()):.4g}. Apply a softmax to logits, or "
            "give one channel per class including the background."
        )


def as_probability_array(
    probs: Any,
    *,
    name: str = "probs",
    leading_axes: int = 1,
    check_values: bool = True,
) -> np.ndarray:
    """Validate class probabilities shaped ``(C, *spatial)`` (or ``(M, C, *spatial)``).

    Parameters
    ----------
    probs : array_like
        Floating-point probabilities; ``leading_axes`` axes come before the 2 or 3 spatial axes and
        the last of them is the class axis.
    name : str
        Argument name used in error messages.
    leading_axes : int
        1 for ``(C, *spatial)``, 2 for a member stack ``(M, C, *spatial)``.
    check_values : bool
        Also check the values (finite, in [0, 1], summing to 1). Streaming kernels pass ``False`` and
        check each chunk themselves with :func:`check_probability_chunk`.

    Returns
    -------
    numpy.ndarray
        The probabilities as float32 (float64 input is kept as float64).
    """
    arr = to_numpy_array(probs, name=name)
    layout = "(C, Y, X) or (C, Z, Y, X)" if leading_axes == 1 else "(M, C, Y, X) or (M, C, Z, Y, X)"
    if arr.ndim not in (leading_axes + 2, leading_axes + 3):
        raise ValueError(
            f"{name} must be shaped {layout} (class axis first), got {arr.ndim}-D data of shape {arr.shape}."
        )
    if arr.size == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape}); expected at least one voxel and one class.")
    if not np.issubdtype(arr.dtype, np.floating):
        raise TypeError(
            f"{name} must hold floating-point probabilities, got dtype {arr.dtype}. "
            "Integer label maps are targets, not probabilities; convert them with a one-hot encoding."
        )
    if arr.dtype != np.float64:
        arr = arr.astype(np.float32, copy=False)
    if check_values:
        class_axis = leading_axes - 1
        for part in _value_check_blocks(arr, leading_axes):
            check_probability_chunk(part, name=name, axis=class_axis)
    return arr


def _value_check_blocks(arr: np.ndarray, leading_axes: int) -> Iterator[np.ndarray]:
    """Blocks of ``arr`` along the first spatial axis, so value checks stay cache friendly."""
    spatial0 = leading_axes
    n = arr.shape[spatial0]
    per_row = max(1, int(np.prod(arr.shape, dtype=np.int64) // max(n, 1)))
    step = max(1, (4 * CHUNK_VOXELS) // per_row)
    for start in range(0, n, step):
        index = [slice(None)] * arr.ndim
        index[spatial0] = slice(start, start + step)
        yield arr[tuple(index)]


def as_mask(mask: Any, *, spatial_shape: tuple[int, ...], name: str = "mask") -> np.ndarray | None:
    """Validate an optional boolean voxel mask with the spatial shape; ``None`` passes through."""
    if mask is None:
        return None
    arr = to_numpy_array(mask, name=name)
    if arr.shape != tuple(spatial_shape):
        raise ValueError(f"{name} must have the spatial shape {tuple(spatial_shape)}, got {describe(arr)}.")
    if arr.dtype != bool:
        if not np.all((arr == 0) | (arr == 1)):
            raise ValueError(f"{name} must be boolean (or 0/1), got values other than 0 and 1 ({describe(arr)}).")
        arr = arr.astype(bool)
    if not arr.any():
        raise ValueError(f"{name} selects no voxel; expected at least one True entry.")
    return arr
