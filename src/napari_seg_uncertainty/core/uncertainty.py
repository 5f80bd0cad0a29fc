"""Voxel, segment and case-level uncertainty, and agreement of a prediction with the raters.

Definitions
-----------
Entropy
    ``H(p) = -sum_c p_c ln p_c`` per voxel, normalised by ``ln C`` by default so that it lies in [0, 1]
    for any number of classes (the SSN paper's eq. 9 uses ``log_C``, the same thing); with a single
    class the entropy is 0. ``0 ln 0 = 0``.
Mutual information
    For a stack of M members (deep ensemble, MC-dropout passes, SSN samples), ``MI = H(mean_m p_m) -
    mean_m H(p_m)``: the part of the predictive entropy due to disagreement between members (epistemic
    uncertainty). Normalised by ``ln C`` like the entropy; small negative rounding is clipped to 0.
Segment-level entropy
    Mehrtash et al. eq. (7): for the predicted segment ``S_k = {i : yhat_i = k}``,
    ``H(S_k) = -1/|S_k| sum_{i in S_k} [p_ik ln p_ik + (1 - p_ik) ln(1 - p_ik)]``, the mean *binary*
    entropy of the class probability over the segment, in nats (``normalise=True`` divides by ``ln 2``
    to give bits in [0, 1]). Undefined (NaN) for a class that is not predicted anywhere.
Dice and surface Dice
    From MONAI (``compute_dice``, ``compute_surface_dice`` with edge voxels and a tolerance in physical
    units). Following the SSN paper, the Dice of a class absent from both maps is undefined (NaN)
    rather than 1, so that empty slices do not inflate averages; a class present in only one map
    scores 0. Surface Dice is NaN in the same case (MONAI's convention).
GED² and sample diversity
    Provided by :mod:`.ssn.metrics` (SSN engineer) and re-exported here:
    ``generalized_energy_distance(samples, raters, *, num_classes)`` and
    ``sample_diversity(samples, *, num_classes)`` with ``d = 1 - mean IoU`` over foreground classes.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any, Literal

import numpy as np

from ._validation import (
    as_label_array,
    as_mask,
    as_probability_array,
    as_rater_stack,
    check_num_classes,
    check_positive,
    check_spacing,
    describe,
    to_numpy_array,
)
from .labels import majority_vote, rater_mean

__all__ = [
    "CaseUncertainty",
    "EntropyAgreement",
    "PredictiveUncertainty",
    "StructureUncertainty",
    "agreement_with_raters",
    "dice_per_class",
    "entropy",
    "entropy_agreement",
    "expected_entropy",
    "generalized_energy_distance",  # noqa: F822 - lazy re-export from .ssn.metrics (module __getattr__)
    "mutual_information",
    "predictive_uncertainty",
    "rank_cases_for_review",
    "rater_entropy",
    "sample_diversity",  # noqa: F822 - lazy re-export from .ssn.metrics (module __getattr__)
    "segment_entropy",
    "structure_entropy",
    "surface_dice_per_class",
]

_SSN_METRICS = ("generalized_energy_distance", "sample_diversity")


def __getattr__(name: str) -> Any:
    """Lazily re-export GED² and sample diversity from :mod:`.ssn_metrics` (owned by the SSN module)."""
    if name in _SSN_METRICS:
        try:
            from .ssn import metrics as ssn_metrics
        except ImportError as exc:  # pragma: no cover - only while ssn_metrics is being written
            raise AttributeError(
                f"{name} lives in napari_seg_uncertainty.core.ssn.metrics, which could not be imported: {exc}"
            ) from exc
        return getattr(ssn_metrics, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------

_LN2 = float(np.log(2.0))


def _check_flag(value: Any, *, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {describe(value)}.")
    return bool(value)


def _xlogx(p: np.ndarray) -> np.ndarray:
    """``p ln p`` with ``0 ln 0 = 0`` (float64), for ``p`` clipped to [0, 1]."""
    q = np.clip(p, 0.0, 1.0).astype(np.float64)
    out = np.zeros_like(q)
    np.log(q, out=out, where=q > 0)
    out *= q
    return out


def _entropy_nats(p: np.ndarray, axis: int) -> np.ndarray:
    """Shannon entropy in nats along ``axis`` (float64), summing class by class to limit memory."""
    moved = np.moveaxis(p, axis, 0)
    h = np.zeros(moved.shape[1:], dtype=np.float64)
    for c in range(moved.shape[0]):
        h -= _xlogx(moved[c])
    return h


def _binary_entropy_nats(p: np.ndarray) -> np.ndarray:
    return -(_xlogx(p) + _xlogx(1.0 - np.clip(p, 0.0, 1.0)))


def _softmax(z: np.ndarray, axis: int) -> np.ndarray:
    shifted = z.astype(np.float64) - z.max(axis=axis, keepdims=True)
    np.exp(shifted, out=shifted)
    shifted /= shifted.sum(axis=axis, keepdims=True)
    return shifted.astype(np.float32)


def _as_members(member_probs: Any, *, from_logits: bool, name: str = "member_probs") -> np.ndarray:
    if from_logits:
        arr = to_numpy_array(member_probs, name=name)
        if arr.ndim not in (4, 5) or not np.issubdtype(arr.dtype, np.floating):
            raise ValueError(
                f"{name} must be floating-point logits shaped (M, C, Y, X) or (M, C, Z, Y, X), "
                f"got {describe(arr)}."
            )
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} contains NaN or infinite logits.")
        return _softmax(arr, axis=1)
    return as_probability_array(member_probs, name=name, leading_axes=2)


def _predicted_labels(p: np.ndarray, labels: Any, *, name: str = "labels") -> np.ndarray:
    if labels is None:
        return np.argmax(p, axis=0)
    lab = as_label_array(labels, name=name, ndim=(p.ndim - 1,), num_classes=p.shape[0])
    if lab.shape != p.shape[1:]:
        raise ValueError(
            f"{name} must have the spatial shape {p.shape[1:]} of the probabilities, got {lab.shape}."
        )
    return lab


# ----------------------------------------------------------------------------------------------
# voxel-wise maps
# ----------------------------------------------------------------------------------------------


def entropy(probs: Any, *, normalise: bool = True) -> np.ndarray:
    """Voxel-wise Shannon entropy of class probabilities.

    Parameters
    ----------
    probs : array_like
        Class probabilities ``(C, *spatial)`` summing to 1 over ``C``.
    normalise : bool
        Divide by ``ln C`` so the map lies in [0, 1] (0 for a single class); otherwise nats.

    Returns
    -------
    numpy.ndarray
        Entropy map ``(*spatial)``, float32.

    Examples
    --------
    >>> import numpy as np
    >>> probs = np.array([[[0.5, 1.0]], [[0.5, 0.0]]], dtype=np.float32)
    >>> entropy(probs).tolist()
    [[1.0, 0.0]]
    """
    normalise = _check_flag(normalise, name="normalise")
    p = as_probability_array(probs, name="probs")
    h = _entropy_nats(p, axis=0)
    if normalise:
        h = h / np.log(p.shape[0]) if p.shape[0] > 1 else np.zeros_like(h)
    return h.astype(np.float32)


def rater_entropy(raters: Any, *, num_classes: int, normalise: bool = True) -> np.ndarray:
    """Entropy of the raters' label distribution (the "GT average" entropy of the SoftSeg paper).

    Parameters
    ----------
    raters : array_like
        Integer labels stacked as ``(R, *spatial)``.
    num_classes : int
        Number of classes ``C`` (labels are ``0 .. C-1``).
    normalise : bool
        Divide by ``ln C``.

    Returns
    -------
    numpy.ndarray
        ``(*spatial)`` float32: 0 where all raters agree, 1 (normalised) where they spread evenly.

    Examples
    --------
    >>> import numpy as np
    >>> raters = np.array([[[0, 1]], [[0, 0]]])  # two raters, one 1x2 image
    >>> rater_entropy(raters, num_classes=2).tolist()
    [[0.0, 1.0]]
    """
    num_classes = check_num_classes(num_classes)
    stack = as_rater_stack(raters, name="raters", num_classes=num_classes)
    return entropy(rater_mean(stack, num_classes=num_classes), normalise=normalise)


@dataclass(frozen=True)
class PredictiveUncertainty:
    """Mean prediction of a member stack and the decomposition of its entropy (all ``(*spatial)``)."""

    mean_probs: np.ndarray
    predictive_entropy: np.ndarray
    expected_entropy: np.ndarray
    mutual_information: np.ndarray


def predictive_uncertainty(
    member_probs: Any, *, normalise: bool = True, from_logits: bool = False
) -> PredictiveUncertainty:
    """Mean probabilities, predictive entropy, expected entropy and mutual information of M members.

    Parameters
    ----------
    member_probs : array_like
        ``(M, C, *spatial)``: probabilities of M ensemble members, MC-dropout passes or SSN samples
        (or their logits with ``from_logits=True``).
    normalise : bool
        Divide the entropies and the mutual information by ``ln C``.
    from_logits : bool
        Apply a softmax over the class axis first (e.g. SSN logit samples).

    Returns
    -------
    PredictiveUncertainty
        ``mean_probs`` ``(C, *spatial)`` and the three ``(*spatial)`` float32 maps, with
        ``mutual_information = predictive_entropy - expected_entropy`` (clipped at 0).

    Examples
    --------
    >>> import numpy as np
    >>> members = np.array([[[[1.0]], [[0.0]]], [[[0.0]], [[1.0]]]], dtype=np.float32)  # sure, opposite
    >>> u = predictive_uncertainty(members)
    >>> float(u.predictive_entropy[0, 0]), float(u.expected_entropy[0, 0]), float(u.mutual_information[0, 0])
    (1.0, 0.0, 1.0)
    """
    normalise = _check_flag(normalise, name="normalise")
    from_logits = _check_flag(from_logits, name="from_logits")
    members = _as_members(member_probs, from_logits=from_logits)
    num_classes = members.shape[1]
    mean = members.mean(axis=0, dtype=np.float64)
    predictive = _entropy_nats(mean, axis=0)
    expected = np.zeros_like(predictive)
    for member in members:
        expected += _entropy_nats(member, axis=0)
    expected /= members.shape[0]
    mi = np.maximum(predictive - expected, 0.0)
    scale = np.log(num_classes) if num_classes > 1 else np.inf
    if normalise:
        predictive, expected, mi = predictive / scale, expected / scale, mi / scale
    return PredictiveUncertainty(
        mean_probs=mean.astype(np.float32),
        predictive_entropy=predictive.astype(np.float32),
        expected_entropy=expected.astype(np.float32),
        mutual_information=mi.astype(np.float32),
    )


def mutual_information(member_probs: Any, *, normalise: bool = True, from_logits: bool = False) -> np.ndarray:
    """Mutual information between the prediction and the member (ensemble / MC dropout / SSN samples).

    ``MI = H(mean_m p_m) - mean_m H(p_m)``, see :func:`predictive_uncertainty`.

    Parameters
    ----------
    member_probs : array_like
        ``(M, C, *spatial)`` member probabilities (or logits with ``from_logits=True``).
    normalise : bool
        Divide by ``ln C`` (the largest possible value), giving [0, 1].
    from_logits : bool
        Apply a softmax over the class axis first.

    Returns
    -------
    numpy.ndarray
        ``(*spatial)`` float32 map.

    Examples
    --------
    >>> import numpy as np
    >>> same = np.full((3, 2, 1, 1), 0.5, dtype=np.float32)  # members agree: no epistemic part
    >>> float(mutual_information(same)[0, 0])
    0.0
    """
    return predictive_uncertainty(
        member_probs, normalise=normalise, from_logits=from_logits
    ).mutual_information


def expected_entropy(member_probs: Any, *, normalise: bool = True, from_logits: bool = False) -> np.ndarray:
    """Mean over members of the members' entropies (the aleatoric part), ``(*spatial)`` float32.

    Parameters
    ----------
    member_probs : array_like
        ``(M, C, *spatial)`` member probabilities (or logits with ``from_logits=True``).
    normalise : bool
        Divide by ``ln C``.
    from_logits : bool
        Apply a softmax over the class axis first.

    Returns
    -------
    numpy.ndarray
        ``(*spatial)`` float32 map.

    Examples
    --------
    >>> import numpy as np
    >>> members = np.full((2, 2, 1, 1), 0.5, dtype=np.float32)
    >>> float(expected_entropy(members)[0, 0])
    1.0
    """
    return predictive_uncertainty(member_probs, normalise=normalise, from_logits=from_logits).expected_entropy


# ----------------------------------------------------------------------------------------------
# segment-level entropy and review tables
# ----------------------------------------------------------------------------------------------


def segment_entropy(
    probs: Any,
    *,
    labels: Any = None,
    include_background: bool = False,
    normalise: bool = False,
) -> np.ndarray:
    """Mean binary entropy of ``p_k`` over each predicted segment ``k`` (Mehrtash et al. eq. 7).

    Parameters
    ----------
    probs : array_like
        Class probabilities ``(C, *spatial)``.
    labels : array_like, optional
        The predicted label map ``(*spatial)``; default: the arg-max of ``probs``.
    include_background : bool
        Also report class 0 (the paper uses foreground segments only).
    normalise : bool
        Divide by ``ln 2`` (bits, in [0, 1]); default nats as in the paper.

    Returns
    -------
    numpy.ndarray
        ``(C,)`` float64; NaN for the background (unless included) and for classes not predicted.

    Examples
    --------
    >>> import numpy as np
    >>> probs = np.array([[[0.5, 0.0]], [[0.5, 1.0]]], dtype=np.float32)
    >>> np.round(segment_entropy(probs, normalise=True), 3).tolist()  # voxel 0 goes to class 0 (tie)
    [nan, 0.0]
    """
    include_background = _check_flag(include_background, name="include_background")
    normalise = _check_flag(normalise, name="normalise")
    p = as_probability_array(probs, name="probs")
    lab = _predicted_labels(p, labels)
    out = np.full(p.shape[0], np.nan)
    for k in range(0 if include_background else 1, p.shape[0]):
        segment = lab == k
        if segment.any():
            out[k] = float(np.mean(_binary_entropy_nats(p[k][segment])))
    return out / _LN2 if normalise else out


@dataclass(frozen=True)
class StructureUncertainty:
    """One connected predicted structure and its mean binary entropy (eq. 7 over the component)."""

    class_index: int
    component: int
    voxels: int
    mean_entropy: float
    centroid: tuple[float, ...]
    bbox_start: tuple[int, ...]
    bbox_stop: tuple[int, ...]


def structure_entropy(
    probs: Any,
    *,
    labels: Any = None,
    connectivity: int | None = None,
    min_voxels: int = 1,
    include_background: bool = False,
    normalise: bool = False,
) -> list[StructureUncertainty]:
    """Segment-level entropy of every connected predicted structure, most uncertain first.

    Parameters
    ----------
    probs : array_like
        Class probabilities ``(C, *spatial)``.
    labels : array_like, optional
        Predicted label map ``(*spatial)``; default the arg-max of ``probs``.
    connectivity : int, optional
        Neighbourhood for connected components: 1 (faces) up to the number of spatial axes (corners,
        the default).
    min_voxels : int
        Skip components smaller than this.
    include_background : bool
        Also split class 0 into components.
    normalise : bool
        Entropy in bits (divide by ``ln 2``) instead of nats.

    Returns
    -------
    list of StructureUncertainty
        Sorted by mean entropy (descending), then size (descending). Components are numbered from 1 per
        class in scan order; centroids are in voxel coordinates.

    Examples
    --------
    >>> import numpy as np
    >>> probs = np.zeros((2, 1, 5), dtype=np.float32)
    >>> probs[1] = [0.9, 0.9, 0.0, 0.6, 0.0]
    >>> probs[0] = 1 - probs[1]
    >>> [(s.component, s.voxels) for s in structure_entropy(probs)]  # the 0.6 blob is less certain
    [(2, 1), (1, 2)]
    """
    from scipy import ndimage

    include_background = _check_flag(include_background, name="include_background")
    normalise = _check_flag(normalise, name="normalise")
    p = as_probability_array(probs, name="probs")
    lab = _predicted_labels(p, labels)
    ndim = lab.ndim
    if connectivity is None:
        connectivity = ndim
    if (
        isinstance(connectivity, bool)
        or not isinstance(connectivity, Integral)
        or not 1 <= connectivity <= ndim
    ):
        raise ValueError(f"connectivity must be an integer from 1 to {ndim}, got {describe(connectivity)}.")
    if isinstance(min_voxels, bool) or not isinstance(min_voxels, Integral) or min_voxels < 1:
        raise ValueError(f"min_voxels must be a positive integer, got {describe(min_voxels)}.")
    structure = ndimage.generate_binary_structure(ndim, int(connectivity))
    scale = _LN2 if normalise else 1.0
    records: list[StructureUncertainty] = []
    for k in range(0 if include_background else 1, p.shape[0]):
        components, n = ndimage.label(lab == k, structure=structure)
        if n == 0:
            continue
        flat = components.reshape(-1)
        where = np.flatnonzero(flat)
        ids = flat[where]
        counts = np.bincount(ids, minlength=n + 1)
        h = _binary_entropy_nats(p[k].reshape(-1)[where])
        h_sum = np.bincount(ids, weights=h, minlength=n + 1)
        coords = np.unravel_index(where, lab.shape)
        centroid = [np.bincount(ids, weights=c, minlength=n + 1) / np.maximum(counts, 1) for c in coords]
        boxes = ndimage.find_objects(components)
        for i in range(1, n + 1):
            if counts[i] < min_voxels:
                continue
            box = boxes[i - 1]
            records.append(
                StructureUncertainty(
                    class_index=k,
                    component=i,
                    voxels=int(counts[i]),
                    mean_entropy=float(h_sum[i] / counts[i] / scale),
                    centroid=tuple(float(c[i]) for c in centroid),
                    bbox_start=tuple(int(s.start) for s in box),
                    bbox_stop=tuple(int(s.stop) for s in box),
                )
            )
    records.sort(key=lambda r: (-r.mean_entropy, -r.voxels, r.class_index, r.component))
    return records


@dataclass(frozen=True)
class CaseUncertainty:
    """Review-table row for one case: its segment-level entropies and the score it is ranked by."""

    name: str
    score: float
    per_class: np.ndarray
    rank: int


def rank_cases_for_review(
    cases: Mapping[str, Any] | Sequence[Any],
    *,
    score: Literal["mean", "max"] = "mean",
    normalise: bool = False,
) -> list[CaseUncertainty]:
    """Rank cases (images) by segment-level entropy so the least certain are reviewed first.

    The score of a case is the mean (or max) over its predicted foreground classes of
    :func:`segment_entropy`; Mehrtash et al. show it correlates inversely with the Dice of the
    segmentation and flags out-of-distribution cases.

    Parameters
    ----------
    cases : mapping of str to array_like, or sequence of array_like
        Class probabilities ``(C, *spatial)`` per case (names default to ``"case 0"``, ``"case 1"``, ...).
    score : {"mean", "max"}
        How to combine the classes of a case.
    normalise : bool
        Entropies in bits instead of nats.

    Returns
    -------
    list of CaseUncertainty
        Sorted by score, highest first; cases with no predicted foreground (score NaN) come last.
        ``rank`` counts from 1.

    Examples
    --------
    >>> import numpy as np
    >>> sure = np.array([[[0.0, 0.99]], [[1.0, 0.01]]], dtype=np.float32)
    >>> unsure = np.array([[[0.4, 0.9]], [[0.6, 0.1]]], dtype=np.float32)
    >>> [row.name for row in rank_cases_for_review({"sure": sure, "unsure": unsure})]
    ['unsure', 'sure']
    """
    if score not in ("mean", "max"):
        raise ValueError(f"score must be 'mean' or 'max', got {score!r}.")
    if isinstance(cases, Mapping):
        items = [(str(k), v) for k, v in cases.items()]
    elif isinstance(cases, Sequence) and not isinstance(cases, (str, bytes)):
        items = [(f"case {i}", v) for i, v in enumerate(cases)]
    else:
        raise TypeError(
            f"cases must be a mapping name -> probabilities or a sequence of them, got {describe(cases)}."
        )
    if not items:
        raise ValueError("cases is empty; give at least one probability map.")
    rows = []
    for name, probs in items:
        try:
            per_class = segment_entropy(probs, normalise=normalise)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"cases[{name!r}]: {exc}") from exc
        defined = per_class[~np.isnan(per_class)]
        value = (
            float("nan") if defined.size == 0 else float(defined.mean() if score == "mean" else defined.max())
        )
        rows.append((name, value, per_class))
    rows.sort(key=lambda r: (np.isnan(r[1]), -(0.0 if np.isnan(r[1]) else r[1])))
    return [CaseUncertainty(name=n, score=v, per_class=pc, rank=i + 1) for i, (n, v, pc) in enumerate(rows)]


# ----------------------------------------------------------------------------------------------
# entropy of the prediction vs entropy of the raters
# ----------------------------------------------------------------------------------------------


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

    Both entropies are normalised by ``ln C``. A well-calibrated model that preserves the inter-rater
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
    if unit not in ("voxel", "slice", "image"):
        raise ValueError(f"unit must be 'voxel', 'slice' or 'image', got {unit!r}.")
    if isinstance(max_points, bool) or not isinstance(max_points, Integral) or max_points < 1:
        raise ValueError(f"max_points must be a positive integer, got {describe(max_points)}.")
    if isinstance(seed, bool) or not isinstance(seed, Integral):
        raise TypeError(f"seed must be an integer, got {describe(seed)}.")
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
                np.random.default_rng(int(seed)).choice(index, size=int(max_points), replace=False)
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
    include_background = _check_flag(include_background, name="include_background")
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
    """Normalised surface Dice of every class (MONAI ``compute_surface_dice``, edge voxels).

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
    include_background = _check_flag(include_background, name="include_background")
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
) -> list[dict[str, Any]]:
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
    list of dict
        One row per (reference, class) with keys ``reference``, ``class_index``, ``dice`` and
        ``surface_dice``; raters first, the fused reference last.

    Examples
    --------
    >>> import numpy as np
    >>> raters = np.array([[[0, 1, 1]], [[0, 1, 0]]])
    >>> rows = agreement_with_raters(np.array([[0, 1, 1]]), raters, num_classes=2)
    >>> [(r["reference"], round(r["dice"], 3)) for r in rows]
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
    rows: list[dict[str, Any]] = []
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
            rows.append(
                {"reference": name, "class_index": c, "dice": float(dice[c]), "surface_dice": float(nsd[c])}
            )
    return rows
