"""Segment-level entropy, per predicted class and per connected structure, and the review ranking.

Mehrtash et al. eq. (7): for the predicted segment ``S_k = {i : yhat_i = k}``,
``H(S_k) = -1/|S_k| sum_{i in S_k} [p_ik ln p_ik + (1 - p_ik) ln(1 - p_ik)]``, the mean *binary*
entropy of the class probability over the segment, in nats (``normalize=True`` divides by ``ln 2``
to give bits in [0, 1]). Undefined (NaN) for a class that is not predicted anywhere.

References
----------
Mehrtash et al., "Confidence calibration and predictive uncertainty estimation for deep medical
image segmentation", IEEE TMI 2020, eq. (7).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from numbers import Integral
from typing import Any, Literal

import numpy as np

from .._numeric import binary_entropy_nats
from .._validation import as_label_array, as_probability_array, check_choice, check_flag, check_int, describe

__all__ = [
    "CaseUncertainty",
    "StructureUncertainty",
    "rank_cases_for_review",
    "segment_entropy",
    "structure_entropy",
]

_LN2 = float(np.log(2.0))


def _predicted_labels(p: np.ndarray, labels: Any, *, name: str = "labels") -> np.ndarray:
    if labels is None:
        return np.argmax(p, axis=0)
    lab = as_label_array(labels, name=name, ndim=(p.ndim - 1,), num_classes=p.shape[0])
    if lab.shape != p.shape[1:]:
        raise ValueError(
            f"{name} must have the spatial shape {p.shape[1:]} of the probabilities, got {lab.shape}."
        )
    return lab


def segment_entropy(
    probs: Any,
    *,
    labels: Any = None,
    include_background: bool = False,
    normalize: bool = False,
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
    normalize : bool
        Divide by ``ln 2`` (bits, in [0, 1]); default nats as in the paper.

    Returns
    -------
    numpy.ndarray
        ``(C,)`` float64; NaN for the background (unless included) and for classes not predicted.

    Examples
    --------
    >>> import numpy as np
    >>> probs = np.array([[[0.5, 0.0]], [[0.5, 1.0]]], dtype=np.float32)
    >>> np.round(segment_entropy(probs, normalize=True), 3).tolist()  # voxel 0 goes to class 0 (tie)
    [nan, 0.0]
    """
    include_background = check_flag(include_background, name="include_background")
    normalize = check_flag(normalize, name="normalize")
    p = as_probability_array(probs, name="probs")
    lab = _predicted_labels(p, labels)
    out = np.full(p.shape[0], np.nan)
    for k in range(0 if include_background else 1, p.shape[0]):
        segment = lab == k
        if segment.any():
            out[k] = float(np.mean(binary_entropy_nats(p[k][segment])))
    return out / _LN2 if normalize else out


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
    normalize: bool = False,
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
    normalize : bool
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

    include_background = check_flag(include_background, name="include_background")
    normalize = check_flag(normalize, name="normalize")
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
    min_voxels = check_int(min_voxels, name="min_voxels", minimum=1)
    structure = ndimage.generate_binary_structure(ndim, int(connectivity))
    scale = _LN2 if normalize else 1.0
    records: list[StructureUncertainty] = []
    for k in range(0 if include_background else 1, p.shape[0]):
        components, n = ndimage.label(lab == k, structure=structure)
        if n == 0:
            continue
        flat = components.reshape(-1)
        where = np.flatnonzero(flat)
        ids = flat[where]
        counts = np.bincount(ids, minlength=n + 1)
        h = binary_entropy_nats(p[k].reshape(-1)[where])
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
    normalize: bool = False,
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
    normalize : bool
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
    score = check_choice(score, name="score", choices=("mean", "max"))
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
            per_class = segment_entropy(probs, normalize=normalize)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"cases[{name!r}]: {exc}") from exc
        defined = per_class[~np.isnan(per_class)]
        value = (
            float("nan") if defined.size == 0 else float(defined.mean() if score == "mean" else defined.max())
        )
        rows.append((name, value, per_class))
    rows.sort(key=lambda r: (np.isnan(r[1]), -(0.0 if np.isnan(r[1]) else r[1])))
    return [CaseUncertainty(name=n, score=v, per_class=pc, rank=i + 1) for i, (n, v, pc) in enumerate(rows)]


