"""Loading several raters' label maps and measuring how much they agree, without a window.

:func:`compute_statistics` loads a case (files, a folder, a glob pattern, a ``.npz`` or arrays) and
computes the per-class agreement maps, the rater entropy map, the pairwise Dice of every class and
the per-class summary table; :func:`parse_spacing` and :func:`parse_class_names` read what a user
types, :func:`volume_unit` and :func:`describe_raters` word the result. The *Load raters* dock runs
these in a worker thread.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core.raters import RaterSet, SummaryTable, load_raters
from ..core.raters.statistics import dice_from_overlaps

__all__ = [
    "RaterStatistics",
    "compute_statistics",
    "describe_raters",
    "parse_class_names",
    "parse_spacing",
    "statistics_of_arrays",
    "volume_unit",
]


@dataclass
class RaterStatistics:
    """Everything the widget shows for one :class:`RaterSet`, computed off the GUI thread."""

    raters: RaterSet
    agreement: np.ndarray  # (C, *spatial)
    entropy: np.ndarray  # (*spatial)
    dice: np.ndarray  # (C, R, R)
    summary: SummaryTable
    warnings: list[str]
    #: Contrast limits of ``raters.image`` (filled in by the dock, which picks them for display).
    image_limits: tuple[float, float] | None = None


def compute_statistics(source: Any, *, spacing: tuple[float, ...] | None = None, **kwargs: Any) -> RaterStatistics:
    """Load ``source`` with :func:`~napari_seg_uncertainty.core.raters.load_raters` and compute the agreement
    statistics; the loading's ``UserWarning`` messages are collected in :attr:`RaterStatistics.warnings`."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        raters = load_raters(source, spacing=spacing, **kwargs)
    overlaps = raters.overlap_counts()  # one pass for both the Dice matrices and the summary
    return RaterStatistics(
        raters=raters,
        agreement=raters.agreement_map(),
        entropy=raters.entropy_map(),
        dice=dice_from_overlaps(overlaps),
        summary=raters.summary(overlaps=overlaps),
        warnings=[str(w.message) for w in caught if issubclass(w.category, UserWarning)],
    )


def statistics_of_arrays(arrays: list[np.ndarray], *, class_names: Any = None, **kwargs: Any) -> RaterStatistics:
    """:func:`compute_statistics` of layer data; class names from the layers' metadata are dropped if they do
    not fit (a layer drawn with more classes)."""
    try:
        return compute_statistics(arrays, class_names=class_names, **kwargs)
    except ValueError as exc:
        if class_names is None or "class_names" not in str(exc):
            raise
        return compute_statistics(arrays, **kwargs)


def parse_spacing(text: str) -> tuple[float, ...] | None:
    """Parse ``"2.5, 1, 1"`` into a tuple; blank means "from the files"."""
    text = text.strip()
    if not text:
        return None
    try:
        return tuple(float(v) for v in text.replace(";", ",").replace(" ", ",").split(",") if v)
    except ValueError as exc:
        raise ValueError(f"spacing {text!r} is not a list of numbers; write e.g. '2.5, 1, 1' (Z, Y, X) "
                         "or leave it blank to use the files' spacing.") from exc


def parse_class_names(text: str) -> list[str] | None:
    """Parse ``"background, organ, lesion"``; blank means "class 1, class 2 …"."""
    names = [n.strip() for n in text.split(",")]
    if not any(names):
        return None
    if not all(names):
        raise ValueError(f"class names {text!r} has an empty name; write one name per class, background first, "
                         "separated by commas, e.g. 'background, organ, lesion'.")
    return names


def volume_unit(raters: RaterSet) -> tuple[str, float]:
    """Unit of the volume column and the factor from spacing units (mm³ or mm²): ml for 3-D volumes
    of a millilitre and more, mm³ for smaller ones, mm² for 2-D areas, voxels without a spacing."""
    if raters.spacing is None:
        return "voxels", 1.0 / raters.voxel_volume
    if raters.ndim == 2:
        return "mm²", 1.0
    counts = raters.voxel_counts()[1:].mean(axis=1)  # mean voxels per rater of each foreground class
    largest = float(max(counts, default=0.0)) * raters.voxel_volume
    return ("ml", 1e-3) if largest >= 1000.0 else ("mm³", 1.0)


def describe_raters(raters: RaterSet) -> str:
    """One line in words, e.g. ``4 raters · 3 classes (background, organ, lesion) · 40×128×128 voxels of
    3 × 0.8 × 0.8 mm``."""
    shape = "×".join(str(s) for s in raters.shape)
    unit = "voxels" if raters.ndim == 3 else "pixels"
    if raters.spacing is not None:
        grid = f"{shape} {unit} of {' × '.join(f'{s:g}' for s in raters.spacing)} mm"
    else:
        grid = f"{shape} {unit} (no spacing in the files)"
    rater_word = "rater" if raters.num_raters == 1 else "raters"
    return (f"{raters.num_raters} {rater_word} · {raters.num_classes} classes ({', '.join(raters.class_names)}) · "
            f"{grid}")
