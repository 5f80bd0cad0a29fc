"""The raters of one case: their label maps on one grid, with geometry and names, and a summary table."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._atomic import atomic_write
from .._validation import _is_tensor, as_rater_stack, check_spacing, describe
from .statistics import agreement_map, dice_from_overlaps, pairwise_dice, rater_entropy
from .votes import overlap_counts

__all__ = ["RaterSet", "SummaryTable"]


@dataclass
class SummaryTable:
    """A small table (list of row dicts) that prints aligned and saves as CSV."""

    rows: list[dict[str, Any]]

    @property
    def columns(self) -> list[str]:
        return list(self.rows[0]) if self.rows else []

    def column(self, name: str) -> list[Any]:
        """Values of column ``name`` in row order."""
        return [row[name] for row in self.rows]

    def to_csv(self, path: str | os.PathLike, *, overwrite: bool = True) -> str:
        """Write the table as CSV (atomically; an existing file is replaced unless ``overwrite=False``)."""
        import csv

        with atomic_write(path, overwrite=overwrite) as temporary, open(temporary, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=self.columns)
            writer.writeheader()
            writer.writerows(self.rows)
        return str(path)

    @staticmethod
    def _fmt(value: Any) -> str:
        if isinstance(value, float):
            return "nan" if np.isnan(value) else f"{value:.3f}"
        return str(value)

    def __str__(self) -> str:
        cols = self.columns
        cells = [[self._fmt(row[c]) for c in cols] for row in self.rows]
        widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(cols)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths))]
        lines.append("  ".join("-" * w for w in widths))
        lines += ["  ".join(v.rjust(w) for v, w in zip(r, widths)) for r in cells]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return str(self)

    def __len__(self) -> int:
        return len(self.rows)


# ----------------------------------------------------------------------------------------------
# RaterSet
# ----------------------------------------------------------------------------------------------
@dataclass
class RaterSet:
    """The label maps of several raters on one grid, with geometry and names.

    Attributes
    ----------
    labels : numpy.ndarray
        Integer ``(R, *spatial)`` stack, labels ``0..num_classes-1`` (0 is background).
    spacing : tuple of float or None
        Voxel size per spatial axis in numpy order (napari's layer ``scale``).
    origin : tuple of float or None
        World position of the first voxel per axis (napari's ``translate``).
    direction : numpy.ndarray or None
        Direction cosines in numpy axis order.
    class_names : list of str
        One name per class, index 0 the background.
    rater_names : list of str
        One name per rater.
    image : numpy.ndarray or None
        The annotated image when the source provides one (QUBIQ, MSSEG, ``.npz``).
    label_values : list of int or None
        The original label values when the files used gaps (e.g. BraTS 0, 1, 2, 4) and were
        mapped to ``0..C-1``; ``label_values[k]`` is the file value of class ``k``.
    sources : list of str
        Where each rater came from (file paths or ``"array"``).
    """

    labels: np.ndarray
    spacing: tuple[float, ...] | None = None
    origin: tuple[float, ...] | None = None
    direction: np.ndarray | None = field(default=None, repr=False)
    class_names: list[str] = field(default_factory=list)
    rater_names: list[str] = field(default_factory=list)
    image: np.ndarray | None = field(default=None, repr=False)
    label_values: list[int] | None = None
    sources: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.labels = as_rater_stack(self.labels, name="labels")
        self.class_names = _as_names(self.class_names, "class_names")
        self.rater_names = _as_names(self.rater_names, "rater_names")
        ncls = max(int(self.labels.max()) + 1, 2)
        if self.class_names:
            if len(self.class_names) < ncls:
                raise ValueError(
                    f"class_names has {len(self.class_names)} names but the labels use {ncls} classes "
                    f"(0..{ncls - 1}); give one name per class including background."
                )
        else:
            self.class_names = ["background"] + [f"class {k}" for k in range(1, ncls)]
        if self.rater_names:
            if len(self.rater_names) != self.num_raters:
                raise ValueError(
                    f"rater_names has {len(self.rater_names)} names for {self.num_raters} raters."
                )
        else:
            self.rater_names = [f"rater {i + 1}" for i in range(self.num_raters)]
        self.spacing = check_spacing(self.spacing, self.ndim)
        if self.image is not None:
            self.image = _as_image_array(self.image)
        if self.image is not None and self.image.shape[-self.ndim:] != self.shape:
            raise ValueError(
                f"image has shape {self.image.shape} but the raters' label maps have shape {self.shape}; "
                "the image must cover the same grid."
            )
        if not self.sources:
            self.sources = ["array"] * self.num_raters

    # geometry ---------------------------------------------------------------------------------
    @property
    def num_raters(self) -> int:
        """Number of raters ``R``."""
        return int(self.labels.shape[0])

    @property
    def num_classes(self) -> int:
        """Number of classes ``C`` including background."""
        return len(self.class_names)

    @property
    def shape(self) -> tuple[int, ...]:
        """Spatial shape ``(Y, X)`` or ``(Z, Y, X)``."""
        return tuple(int(s) for s in self.labels.shape[1:])

    @property
    def ndim(self) -> int:
        """Number of spatial axes (2 or 3)."""
        return self.labels.ndim - 1

    @property
    def scale(self) -> tuple[float, ...]:
        """napari layer scale: the spacing, or ones where unknown."""
        return self.spacing if self.spacing is not None else (1.0,) * self.ndim

    @property
    def voxel_volume(self) -> float:
        """Volume (area in 2-D) of one voxel in spacing units (1 where spacing is unknown)."""
        return float(np.prod(self.scale))

    # statistics -------------------------------------------------------------------------------
    def pairwise_dice(self, *, empty_value: float = 1.0) -> np.ndarray:
        """``(C, R, R)`` Dice between rater pairs per class; see :func:`pairwise_dice`."""
        return pairwise_dice(self.labels, num_classes=self.num_classes, empty_value=empty_value)

    def agreement_map(self) -> np.ndarray:
        """``(C, *spatial)`` fraction of raters per class; see :func:`agreement_map`."""
        return agreement_map(self.labels, num_classes=self.num_classes)

    def entropy_map(self) -> np.ndarray:
        """``(*spatial)`` normalized entropy of the rater mean; see :func:`rater_entropy`."""
        return rater_entropy(self.labels, num_classes=self.num_classes)

    def voxel_counts(self) -> np.ndarray:
        """``(C, R)`` int64: how many voxels each rater assigned to each class (one pass over the raters)."""
        return np.stack([np.diag(inter) for inter in self.overlap_counts()])

    def overlap_counts(self) -> np.ndarray:
        """``(C, R, R)`` int64 voxels each pair of raters both assign to each class (one pass over the raters);
        what :meth:`summary`, :meth:`pairwise_dice` and :meth:`voxel_counts` are computed from."""
        return overlap_counts(self.labels, self.num_classes)

    def summary(self, *, overlaps: np.ndarray | None = None) -> SummaryTable:
        """Per-class table of rater volumes, empty masks and pairwise agreement.

        Columns: ``class``, ``name``, ``mean_volume`` and ``std_volume`` (voxels × voxel volume,
        in spacing units), ``raters_empty`` (how many raters left the class empty),
        ``mean_pairwise_dice`` and ``min_pairwise_dice`` over rater pairs (pairs where both are
        empty are left out; ``nan`` when there is no other pair or a single rater).

        ``overlaps``: the :meth:`overlap_counts` when already computed (saves a pass over the raters).
        """
        r = self.num_raters
        if overlaps is None:
            overlaps = self.overlap_counts()  # one pass: (C, R, R) pairwise overlaps
        elif np.shape(overlaps) != (self.num_classes, r, r):
            raise ValueError(f"overlaps must have shape {(self.num_classes, r, r)} (classes, raters, raters), "
                             f"got {np.shape(overlaps)}; pass RaterSet.overlap_counts().")
        counts = np.stack([np.diag(inter) for inter in overlaps])  # (C, R) voxels per class and rater
        dice = dice_from_overlaps(overlaps, empty_value=np.nan)
        iu = np.triu_indices(r, k=1)
        rows = []
        for k, name in enumerate(self.class_names):
            vols = counts[k] * self.voxel_volume
            pair = dice[k][iu]
            pair = pair[~np.isnan(pair)]
            rows.append({
                "class": k,
                "name": name,
                "mean_volume": float(vols.mean()),
                "std_volume": float(vols.std()),
                "raters_empty": int(np.count_nonzero(counts[k] == 0)),
                "mean_pairwise_dice": float(pair.mean()) if pair.size else float("nan"),
                "min_pairwise_dice": float(pair.min()) if pair.size else float("nan"),
            })
        return SummaryTable(rows)

    def __repr__(self) -> str:
        return (f"RaterSet({self.num_raters} raters, shape={self.shape}, spacing={self.spacing}, "
                f"classes={self.class_names})")



def _as_image_array(image: Any) -> np.ndarray:
    """The annotated image as a numeric numpy array (``image`` argument of :func:`load_raters`)."""
    if isinstance(image, (str, bytes, dict)):
        raise TypeError(f"image must be a numeric array, got {describe(image)}.")
    try:
        arr = np.asarray(image.detach().cpu().numpy() if _is_tensor(image) else image)
    except Exception as exc:  # noqa: BLE001 - ragged lists and the like
        raise TypeError(f"image must be a numeric array, got {describe(image)}.") from exc
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise TypeError(f"image must be a numeric array, got {describe(arr)}.")
    return arr


def _as_names(names: Any, name: str) -> list[str]:
    """A list of display names; a bare string or a non-sequence is refused (``"abc"`` is not 3 names)."""
    if isinstance(names, (str, bytes)) or not isinstance(names, (Sequence, np.ndarray)):
        raise TypeError(f"{name} must be a list of names, got {describe(names)}.")
    return [str(n) for n in names]
