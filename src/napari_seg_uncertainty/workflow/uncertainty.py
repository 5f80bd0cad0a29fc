"""The uncertainty step without a window: entropy and mutual-information maps, review ranking, Dice.

:func:`compute_uncertainty_maps` gives the normalized entropy of each probability map and, for
ensembles, MC-dropout passes or SSN samples, the mutual information; :func:`rank_for_review` ranks
connected predicted structures (or whole images) by segment-level entropy for review;
:func:`compute_agreement` scores the arg-max prediction against each rater and their majority vote.
The *Uncertainty maps* dock runs these in a worker thread.

References
----------
.. [1] A. Mehrtash, W. M. Wells, C. M. Tempany, P. Abolmaesumi, T. Kapur, "Confidence calibration and
   predictive uncertainty estimation for deep medical image segmentation", IEEE TMI 39(12), 2020
   (segment-level entropy, eq. 7).
.. [2] Y. Gal, Z. Ghahramani, "Dropout as a Bayesian approximation", ICML 2016 (mutual information of
   stochastic passes).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core.uncertainty import (
    CaseUncertainty,
    StructureUncertainty,
    agreement_with_raters,
    entropy,
    predictive_uncertainty,
    rank_cases_for_review,
    structure_entropy,
)

__all__ = [
    "CLASSES",
    "MEMBERS",
    "MapResult",
    "ReviewRow",
    "class_name",
    "compute_agreement",
    "compute_uncertainty_maps",
    "rank_for_review",
]

#: What a probability layer holds: class probabilities ``(C, *S)`` or members ``(M, C, *S)``.
CLASSES = "classes"
MEMBERS = "members"


@dataclass(frozen=True)
class MapResult:
    """One uncertainty map to show: layer name, data ``(*spatial)``, kind and the source layer."""

    name: str
    data: np.ndarray
    kind: str  # "entropy" or "mutual information"
    source: str


@dataclass(frozen=True)
class ReviewRow:
    """One row of the review table: a structure or an image, and the layer it comes from."""

    source: str
    structure: StructureUncertainty | None = None
    case: CaseUncertainty | None = None
    #: What the table calls the row: "lesion 3" (class name and the structure's number within its class,
    #: largest first) or the image's layer name.
    label: str = ""


def _class_probabilities(data: Any, layout: str) -> np.ndarray:
    """``(C, *spatial)`` probabilities of a layer: the data itself, or the mean over its members."""
    if layout == MEMBERS:
        return predictive_uncertainty(data).mean_probs
    return np.asarray(data)


def compute_uncertainty_maps(
    sources: Mapping[str, Any], *, layout: str = CLASSES, as_ensemble: bool = False
) -> list[MapResult]:
    """Entropy and mutual-information maps of probability layers; runs off the GUI thread.

    Parameters
    ----------
    sources : mapping of str to array_like
        Layer name -> ``(C, *spatial)`` probabilities (``layout="classes"``) or ``(M, C, *spatial)``
        member probabilities (``layout="members"``).
    layout : {"classes", "members"}
        What each layer holds.
    as_ensemble : bool
        With ``layout="classes"``: treat the layers as the members of one ensemble and return the
        entropy of their mean and their mutual information (names ``"ensemble ..."``).

    Returns
    -------
    list of MapResult
    """
    if layout not in (CLASSES, MEMBERS):
        raise ValueError(f"layout must be {CLASSES!r} or {MEMBERS!r}, got {layout!r}.")
    if not sources:
        raise ValueError("no probability layer selected.")
    results: list[MapResult] = []
    if layout == CLASSES and as_ensemble:
        if len(sources) < 2:
            raise ValueError(
                "an ensemble needs at least two probability layers (members); select more layers."
            )
        arrays = [_as_array(v) for v in sources.values()]
        shapes = {a.shape for a in arrays}
        if len(shapes) > 1:
            detail = ", ".join(f"{n}: {a.shape}" for n, a in zip(sources, arrays))
            raise ValueError(f"ensemble members must have the same shape, got {detail}.")
        maps = _by_slabs(lambda part: _member_maps(np.stack([a[part] for a in arrays])), arrays[0].shape, 1, 2)
        first = next(iter(sources))
        results.append(MapResult("ensemble entropy", maps[0], "entropy", first))
        results.append(MapResult("ensemble mutual information", maps[1], "mutual information", first))
        return results
    for name, data in sources.items():
        try:
            data = _as_array(data)
            if layout == MEMBERS:
                maps = _by_slabs(lambda part, d=data: _member_maps(d[part]), data.shape, 2, 2)
                results.append(MapResult(f"{name} entropy", maps[0], "entropy", name))
                results.append(MapResult(f"{name} mutual information", maps[1], "mutual information", name))
            else:
                (h,) = _by_slabs(lambda part, d=data: (entropy(d[part]),), data.shape, 1, 1)
                results.append(MapResult(f"{name} entropy", h, "entropy", name))
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"layer {name!r}: {exc}") from exc
    return results


#: Bytes of input one slab of :func:`compute_uncertainty_maps` reads at a time (its temporaries are a few
#: times this): the maps of a CT-size layer need their own size and little more.
SLAB_BYTES = 32 * 2**20


def _as_array(data: Any) -> Any:
    """A layer's data as something sliceable with a shape (numpy, memmap, zarr and dask arrays as they are)."""
    return data if hasattr(data, "shape") and hasattr(data, "__getitem__") else np.asarray(data)


def _member_maps(members: Any) -> tuple[np.ndarray, np.ndarray]:
    u = predictive_uncertainty(np.asarray(members))
    return u.predictive_entropy, u.mutual_information


def _by_slabs(compute: Any, shape: tuple[int, ...], axis: int, count: int) -> list[np.ndarray]:
    """Voxel-wise maps computed along the first spatial axis (index ``axis`` of ``shape``) a slab at a time.

    ``compute(index)`` takes the index tuple that selects a slab of the input's leading axes
    ``(:, ..., z0:z1)`` and returns ``count`` float32 maps of that slab; every map is voxel-wise, so the
    result equals the whole computation and only the maps themselves are full size. Written by hand:
    the maps come from :mod:`~napari_seg_uncertainty.core.uncertainty` on numpy slabs.
    """
    if len(shape) <= axis:
        raise ValueError(f"expected at least {axis + 1} axes (channels first, then spatial), got shape {shape}.")
    spatial = tuple(int(v) for v in shape[axis:])
    per_plane = max(1, int(np.prod(shape)) // max(spatial[0], 1) * 4)
    step = max(1, SLAB_BYTES // per_plane)
    maps: list[np.ndarray] | None = None
    for z0 in range(0, spatial[0], step):
        z1 = min(z0 + step, spatial[0])
        parts = compute((*[slice(None)] * axis, slice(z0, z1)))
        if maps is None:
            maps = [np.empty(spatial, dtype=np.float32) for _ in range(count)]
        for whole, part in zip(maps, parts):
            whole[z0:z1] = part
    return maps if maps is not None else [np.empty(spatial, dtype=np.float32) for _ in range(count)]


def rank_for_review(
    sources: Mapping[str, Any],
    *,
    by: str = "structures",
    layout: str = CLASSES,
    min_voxels: int = 1,
    class_names: Sequence[str] | None = None,
) -> list[ReviewRow]:
    """Rows of the review table, most uncertain first; runs off the GUI thread.

    Parameters
    ----------
    sources : mapping of str to array_like
        Layer name -> probabilities (see :func:`compute_uncertainty_maps` for ``layout``).
    by : {"structures", "images"}
        Rank connected predicted structures of all layers together, or the layers (images) themselves.
    layout : {"classes", "members"}
        What each layer holds; member stacks are averaged first.
    min_voxels : int
        Leave out structures smaller than this.
    class_names : sequence of str, optional
        Names of the classes, for the row labels ("lesion 3"); default "class k".

    Returns
    -------
    list of ReviewRow
        Structures are labelled "<class name> <n>", n numbering the structures of one class of one
        layer from the largest (1) down.
    """
    if by not in ("structures", "images"):
        raise ValueError(f"by must be 'structures' or 'images', got {by!r}.")
    if not sources:
        raise ValueError("no probability layer selected.")
    probs: dict[str, np.ndarray] = {}
    for name, data in sources.items():
        try:
            probs[name] = _class_probabilities(data, layout)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"layer {name!r}: {exc}") from exc
    if by == "images":
        return [ReviewRow(source=row.name, case=row, label=row.name) for row in rank_cases_for_review(probs)]
    rows: list[ReviewRow] = []
    for name, p in probs.items():
        try:
            structures = structure_entropy(p, min_voxels=min_voxels)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"layer {name!r}: {exc}") from exc
        by_class: dict[int, list[StructureUncertainty]] = {}
        for s in structures:
            by_class.setdefault(s.class_index, []).append(s)
        for k, members in by_class.items():
            members.sort(key=lambda s: (-s.voxels, s.bbox_start))
            title = class_name(class_names, k)
            rows.extend(
                ReviewRow(source=name, structure=s, label=f"{title} {i}") for i, s in enumerate(members, 1)
            )
    rows.sort(key=lambda r: (-r.structure.mean_entropy, -r.structure.voxels))  # type: ignore[union-attr]
    return rows


def class_name(class_names: Sequence[str] | None, k: int) -> str:
    """The name of class ``k``: ``class_names[k]``, or "class k" when there is none."""
    return str(class_names[k]) if class_names is not None and k < len(class_names) else f"class {k}"


def compute_agreement(
    probs: Any,
    raters: Mapping[str, Any],
    *,
    layout: str = CLASSES,
    spacing: tuple[float, ...] | None = None,
    tolerance: float = 2.0,
) -> list[dict[str, Any]]:
    """Dice and surface Dice of the arg-max prediction against each rater and their majority vote."""
    if not raters:
        raise ValueError("no rater selected; select one or more Labels layers (one per rater).")
    p = _class_probabilities(probs, layout)
    if p.ndim < 3:
        raise ValueError(f"the probabilities must be (C, *spatial), got shape {p.shape}.")
    stack = [np.asarray(r) for r in raters.values()]
    shapes = {r.shape for r in stack}
    if len(shapes) > 1 or stack[0].shape != p.shape[1:]:
        raise ValueError(
            f"raters must all have the probabilities' spatial shape {p.shape[1:]}, got {sorted(shapes)}."
        )
    return agreement_with_raters(
        np.argmax(p, axis=0),
        np.stack(stack),
        num_classes=max(int(p.shape[0]), 2),
        spacing=spacing,
        tolerance=tolerance,
        rater_names=list(raters),
    )
