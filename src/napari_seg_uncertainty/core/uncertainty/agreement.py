"""Agreement of a prediction with the raters: entropy against rater entropy, Dice and surface Dice.

Dice and surface Dice come from MONAI (``compute_dice``, ``compute_surface_dice`` with edge voxels
and a tolerance in physical units). Following the SSN paper, the Dice of a class absent from both
maps is undefined (NaN) rather than 1, so that empty slices do not inflate averages; a class present
in only one map scores 0. Surface Dice is NaN in the same case (MONAI's convention).

References
----------
Lemay et al., "Label fusion and training methods for reliable representation of inter-rater
uncertainty", MELBA 2023 (entropy of the prediction against entropy of the raters, Fig. 1).
Nikolov et al., "Clinically applicable segmentation of head and neck anatomy for radiotherapy",
JMIR 2021 (surface Dice).
Monteiro et al., "Stochastic Segmentation Networks", MICCAI 2020 (Dice of empty classes).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Real
from typing import Any, Literal

import numpy as np

from .._validation import (
    as_label_array,
    as_mask,
    as_probability_array,
    as_rater_stack,
    check_choice,
    check_flag,
    check_int,
    check_num_classes,
    check_positive,
    check_seed,
    check_spacing,
    describe,
)
from ..labels import majority_vote
from ..raters.statistics import rater_entropy
from .voxelwise import entropy

__all__ = [
    "EntropyAgreement",
    "RaterAgreement",
    "agreement_with_raters",
    "dice_per_class",
    "entropy_agreement",
    "surface_dice_per_class",
]


@dataclass(frozen=True)
class EntropyAgreement:
    """Paired entropies of prediction and raters (one point per unit) and their mean absolute error."""

    predicted: np.ndarray
    raters: np.ndarray
    mae: float
    unit: str


def entropy_agreement(
    probs: Any,
    raters: Any,
    *,
    unit: Literal["voxel", "slice", "image"] = "voxel",
    mask: Any = None,
    max_points: int = 20_000,
    seed: int = 0,
) -> EntropyAgreement:
    """Entropy of the prediction against entropy of the raters' mean (SoftSeg label-fusion paper, Fig. 1).

    Both entropies are normalized by ``ln C``. A well-calibrated model that preserves the inter-rater
    variability lies on the identity line; the mean absolute error summarises the distance (the paper
    uses the entropy summed over each image; here the mean, so that units of any size are comparable).

    Parameters
    ----------
    probs : array_like
        Class probabilities ``(C, *spatial)``.
    raters : array_like
        Integer rater labels ``(R, *spatial)``.
    unit : {"voxel", "slice", "image"}
        One point per voxel (a random subsample of at most ``max_points``), per slice along the first
        axis (mean over the slice), or one point for the whole image.
    mask : array_like of bool, optional
        Only these voxels (a slice without any is skipped).
    max_points : int
        Largest number of voxels kept for ``unit="voxel"``.
    seed : int
        Seed of the voxel subsample.

    Returns
    -------
    EntropyAgreement
        ``predicted`` and ``raters`` arrays of equal length, ``mae`` over those points, ``unit``.

    Examples
    --------
    >>> import numpy as np
    >>> raters = np.array([[[0, 1]], [[0, 0]]])
    >>> probs = np.array([[[1.0, 0.5]], [[0.0, 0.5]]], dtype=np.float32)
    >>> entropy_agreement(probs, raters, unit="image").mae
    0.0
    """
    unit = check_choice(unit, name="unit", choices=("voxel", "slice", "image"))
    max_points = check_int(max_points, name="max_points", minimum=1)
    seed = check_seed(seed)
    p = as_probability_array(probs, name="probs")
    num_classes = p.shape[0]
    stack = as_rater_stack(raters, name="raters", num_classes=num_classes)
    if stack.shape[1:] != p.shape[1:]:
        raise ValueError(
            f"raters must share the spatial shape {p.shape[1:]} of the probabilities, got {stack.shape[1:]}."
        )
    m = as_mask(mask, spatial_shape=p.shape[1:], name="mask")
    h_pred = entropy(p).astype(np.float64)
    h_raters = rater_entropy(stack, num_classes=num_classes).astype(np.float64)
    if unit == "voxel":
        index = np.flatnonzero(m) if m is not None else np.arange(h_pred.size)
        if index.size > max_points:
            index = np.sort(
                np.random.default_rng(seed).choice(index, size=max_points, replace=False)
            )
        x, y = h_pred.reshape(-1)[index], h_raters.reshape(-1)[index]
    elif unit == "slice":
        if p.ndim != 4:
            raise ValueError(
                f"unit='slice' needs 3-D data (C, Z, Y, X), got probabilities of shape {p.shape}."
            )
        keep = np.ones(h_pred.shape, dtype=bool) if m is None else m
        n = keep.reshape(keep.shape[0], -1).sum(axis=1)
        filled = n > 0
        x = (np.where(keep, h_pred, 0).reshape(keep.shape[0], -1).sum(axis=1)[filled]) / n[filled]
        y = (np.where(keep, h_raters, 0).reshape(keep.shape[0], -1).sum(axis=1)[filled]) / n[filled]
    else:
        keep = np.ones(h_pred.shape, dtype=bool) if m is None else m
        x, y = np.array([h_pred[keep].mean()]), np.array([h_raters[keep].mean()])
    return EntropyAgreement(predicted=x, raters=y, mae=float(np.mean(np.abs(x - y))), unit=unit)


# ----------------------------------------------------------------------------------------------
# Dice and surface Dice against raters
# ----------------------------------------------------------------------------------------------


def _pair_of_label_maps(prediction: Any, reference: Any, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    pred = as_label_array(prediction, name="prediction", num_classes=num_classes)
    ref = as_label_array(reference, name="reference", num_classes=num_classes)
    if pred.shape != ref.shape:
        raise ValueError(
            f"prediction and reference must have the same shape, got {pred.shape} and {ref.shape}."
        )
    return pred, ref


def dice_per_class(
    prediction: Any,
    reference: Any,
    *,
    num_classes: int,
    include_background: bool = False,
) -> np.ndarray:
    """Dice coefficient of every class between two label maps (MONAI ``compute_dice``).

    Parameters
    ----------
    prediction, reference : array_like
        Integer label maps ``(*spatial)`` of the same shape.
    num_classes : int
        Number of classes ``C``.
    include_background : bool
        Also score class 0.

    Returns
    -------
    numpy.ndarray
        ``(C,)`` float64: ``2|P∩R| / (|P|+|R|)``; NaN where the class is absent from both maps (SSN
        paper convention) and for the background unless included.

    Examples
    --------
    >>> import numpy as np
    >>> dice = dice_per_class(np.array([[1, 1, 0, 2]]), np.array([[1, 0, 0, 0]]), num_classes=3)
    >>> np.round(dice, 4).tolist()
    [nan, 0.6667, 0.0]
    """
    import torch
    from monai.metrics import compute_dice

    num_classes = check_num_classes(num_classes, minimum=2)
    include_background = check_flag(include_background, name="include_background")
    pred, ref = _pair_of_label_maps(prediction, reference, num_classes)
    y_pred = torch.from_numpy(pred.astype(np.int64))[None, None]
    y = torch.from_numpy(ref.astype(np.int64))[None, None]
    scores = compute_dice(y_pred, y, include_background=True, ignore_empty=False, num_classes=num_classes)
    out = scores[0].double().numpy().copy()
    present = np.array([(pred == c).any() or (ref == c).any() for c in range(num_classes)])
    out[~present] = np.nan
    if not include_background:
        out[0] = np.nan
    return out


def surface_dice_per_class(
    prediction: Any,
    reference: Any,
    *,
    num_classes: int,
    tolerance: float | Sequence[float] = 2.0,
    spacing: Sequence[float] | float | None = None,
    include_background: bool = False,
) -> np.ndarray:
    """Normalized surface Dice of every class (MONAI ``compute_surface_dice``, edge voxels).

    The fraction of both boundaries lying within ``tolerance`` of the other boundary (Nikolov et al.;
    the SVLS paper reports it with a 2 mm tolerance).

    Parameters
    ----------
    prediction, reference : array_like
        Integer label maps ``(*spatial)`` of the same shape.
    num_classes : int
        Number of classes ``C``.
    tolerance : float or sequence of float
        Accepted boundary deviation in physical units (mm with ``spacing`` in mm), one value or one per
        class.
    spacing : float or sequence of float, optional
        Voxel size per axis; default 1 (tolerance in voxels).
    include_background : bool
        Also score class 0.

    Returns
    -------
    numpy.ndarray
        ``(C,)`` float64 in [0, 1]; NaN for classes absent from both maps and for the background unless
        included.

    Examples
    --------
    >>> import numpy as np
    >>> a = np.zeros((8, 8), dtype=np.uint8); a[2:6, 2:6] = 1
    >>> b = np.zeros((8, 8), dtype=np.uint8); b[2:6, 3:7] = 1
    >>> surface_dice_per_class(a, b, num_classes=2, tolerance=1.0).tolist()
    [nan, 1.0]
    """
    import torch
    from monai.metrics import compute_surface_dice

    num_classes = check_num_classes(num_classes, minimum=2)
    include_background = check_flag(include_background, name="include_background")
    pred, ref = _pair_of_label_maps(prediction, reference, num_classes)
    spc = check_spacing(spacing, pred.ndim)
    if isinstance(tolerance, Real) and not isinstance(tolerance, bool):
        tolerances = [check_positive(tolerance, name="tolerance", allow_zero=True)] * num_classes
    else:
        try:
            if isinstance(tolerance, (str, bytes)):
                raise TypeError(f"tolerance must be a number, got {describe(tolerance)}.")
            tolerances = [check_positive(t, name="tolerance", allow_zero=True) for t in tolerance]
        except TypeError as exc:
            raise TypeError(
                f"tolerance must be a number or one number per class, got {describe(tolerance)}."
            ) from exc
        if len(tolerances) != num_classes:
            raise ValueError(
                f"tolerance must have {num_classes} entries (one per class), got {len(tolerances)}."
            )
    classes = np.arange(num_classes)
    y_pred = torch.from_numpy(np.stack([pred == c for c in classes]).astype(np.float32))[None]
    y = torch.from_numpy(np.stack([ref == c for c in classes]).astype(np.float32))[None]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MONAI warns for every empty class; NaN/0 says the same
        scores = compute_surface_dice(
            y_pred,
            y,
            class_thresholds=tolerances,
            include_background=True,
            spacing=None if spc is None else list(spc),
        )
    out = scores[0].double().numpy().copy()
    if not include_background:
        out[0] = np.nan
    return out


@dataclass(frozen=True)
class RaterAgreement:
    """Dice and surface Dice of a prediction against one reference (a rater or the fused label), one class."""

    reference: str
    class_index: int
    dice: float
    surface_dice: float


def agreement_with_raters(
    prediction: Any,
    raters: Any,
    *,
    num_classes: int,
    fused: Any = None,
    fused_name: str = "fused",
    spacing: Sequence[float] | float | None = None,
    tolerance: float = 2.0,
    include_background: bool = False,
    rater_names: Sequence[str] | None = None,
) -> list[RaterAgreement]:
    """Dice and surface Dice of a prediction against every rater and against the fused label.

    Parameters
    ----------
    prediction : array_like
        Predicted label map ``(*spatial)`` (e.g. the arg-max of the probabilities).
    raters : array_like
        Integer rater labels ``(R, *spatial)``.
    num_classes : int
        Number of classes.
    fused : array_like, optional
        A fused reference (e.g. STAPLE or majority vote). Default: the raters' majority vote
        (:func:`.labels.majority_vote`, ties to the lower class), named ``"majority vote"``.
    fused_name : str
        Name of the ``fused`` reference in the table.
    spacing : float or sequence of float, optional
        Voxel size, for the surface-Dice tolerance in physical units.
    tolerance : float
        Surface-Dice tolerance.
    include_background : bool
        Also score class 0.
    rater_names : sequence of str, optional
        Names of the raters (default ``"rater 1"``, ...).

    Returns
    -------
    list of RaterAgreement
        One row per (reference, class); raters first, the fused reference last.

    Examples
    --------
    >>> import numpy as np
    >>> raters = np.array([[[0, 1, 1]], [[0, 1, 0]]])
    >>> rows = agreement_with_raters(np.array([[0, 1, 1]]), raters, num_classes=2)
    >>> [(r.reference, round(r.dice, 3)) for r in rows]
    [('rater 1', 1.0), ('rater 2', 0.667), ('majority vote', 0.667)]
    """
    num_classes = check_num_classes(num_classes, minimum=2)
    stack = as_rater_stack(raters, name="raters", num_classes=num_classes)
    pred = as_label_array(prediction, name="prediction", num_classes=num_classes)
    if pred.shape != stack.shape[1:]:
        raise ValueError(
            f"prediction must have the raters' spatial shape {stack.shape[1:]}, got {pred.shape}."
        )
    if rater_names is None:
        rater_names = [f"rater {i + 1}" for i in range(stack.shape[0])]
    elif isinstance(rater_names, (str, bytes)) or not isinstance(rater_names, (Sequence, np.ndarray)):
        raise TypeError(f"rater_names must be a list of names, got {describe(rater_names)}.")
    elif len(rater_names) != stack.shape[0]:
        raise ValueError(f"rater_names must name all {stack.shape[0]} raters, got {len(rater_names)} names.")
    references: list[tuple[str, np.ndarray]] = [(str(n), r) for n, r in zip(rater_names, stack)]
    if fused is None:
        references.append(("majority vote", majority_vote(stack, num_classes=num_classes)))
    else:
        fused_labels = as_label_array(fused, name="fused", num_classes=num_classes)
        if fused_labels.shape != pred.shape:
            raise ValueError(f"fused must have the spatial shape {pred.shape}, got {fused_labels.shape}.")
        references.append((str(fused_name), fused_labels))
    rows: list[RaterAgreement] = []
    for name, ref in references:
        dice = dice_per_class(pred, ref, num_classes=num_classes, include_background=include_background)
        nsd = surface_dice_per_class(
            pred,
            ref,
            num_classes=num_classes,
            tolerance=tolerance,
            spacing=spacing,
            include_background=include_background,
        )
        for c in range(0 if include_background else 1, num_classes):
            rows.append(RaterAgreement(reference=name, class_index=c, dice=float(dice[c]), surface_dice=float(nsd[c])))
    return rows
