"""Multi-rater annotations: loading, validation and inter-rater statistics.

:func:`load_raters` reads the label maps of several raters from files, folders in the common
public layouts (QUBIQ, MSSEG-2016, LIDC-style ``.npz``) or arrays, checks that they describe the
same grid with one label scheme, and returns a :class:`RaterSet`. The statistics
(:func:`pairwise_dice`, :func:`agreement_map`, :func:`rater_entropy_map`) are pure functions on
``(R, *spatial)`` integer stacks; :class:`RaterSet` exposes them as methods.
"""

from __future__ import annotations

import glob
import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._memory import array_bytes, check_allocation
from ._validation import as_label_array, as_rater_stack, check_num_classes, check_spacing, describe
from .io import ImageMeta, check_npz_fits, file_suffix, is_supported_file, read_image

__all__ = [
    "RaterSet",
    "SummaryTable",
    "agreement_map",
    "load_raters",
    "pairwise_dice",
    "qubiq_tasks",
    "rater_entropy_map",
]

_SPACING_RTOL = 1e-3
#: Label values below this are remapped with a lookup table, larger ones by binary search.
_LOOKUP_LIMIT = 1 << 20
_IMAGE_NAME = re.compile(r"^(image|img|flair|t1|t2|pd|ct|mr|dp|volume)([_\-.].*)?$", re.IGNORECASE)
_QUBIQ_SEG = re.compile(r"^task(\d+)_seg(\d+)\.nii(\.gz)?$", re.IGNORECASE)
_MSSEG_SEG = re.compile(r"^ManualSegmentation_(\d+)\.nii(\.gz)?$", re.IGNORECASE)


# ----------------------------------------------------------------------------------------------
# statistics (pure functions)
# ----------------------------------------------------------------------------------------------
def _infer_num_classes(raters: np.ndarray, num_classes: int | None) -> int:
    if num_classes is None:
        return max(int(raters.max()) + 1, 2)
    return check_num_classes(num_classes)


def pairwise_dice(raters: Any, num_classes: int | None = None, *, empty_value: float = 1.0) -> np.ndarray:
    """Dice overlap between every pair of raters, per class.

    Parameters
    ----------
    raters : array_like
        Integer label maps stacked as ``(R, *spatial)``.
    num_classes : int, optional
        Number of classes including background; defaults to ``max label + 1``.
    empty_value : float
        Dice when both raters leave the class empty (default 1: they agree that it is absent;
        pass ``numpy.nan`` to exclude such pairs from means).

    Returns
    -------
    numpy.ndarray
        ``(C, R, R)`` float64 matrix; ``[c, i, j]`` is ``2|A_i ∩ A_j| / (|A_i| + |A_j|)`` for class ``c``.
        The diagonal is 1 where a rater labelled the class and ``empty_value`` otherwise.

    Examples
    --------
    >>> import numpy as np
    >>> r = np.array([[[0, 1, 1, 1]], [[0, 0, 1, 1]]])
    >>> float(pairwise_dice(r, 2)[1, 0, 1])
    0.8
    """
    stack = as_rater_stack(raters)
    c = _infer_num_classes(stack, num_classes)
    stack = as_rater_stack(stack, num_classes=c)
    r = stack.shape[0]
    check_allocation(array_bytes((c, r, r), np.float64) + array_bytes(stack.shape, bool),
                     what=f"the Dice matrices of shape {(c, r, r)}",
                     cause=f"num_classes={c} with {r} raters", advice="check num_classes")
    flat = stack.reshape(r, -1)
    out = np.empty((c, r, r), dtype=np.float64)
    for k in range(c):
        masks = flat == k
        inter = np.empty((r, r), dtype=np.int64)  # exact voxel counts of the intersections
        for i in range(r):
            inter[i, i] = np.count_nonzero(masks[i])
            for j in range(i + 1, r):
                inter[i, j] = inter[j, i] = np.count_nonzero(masks[i] & masks[j])
        sizes = np.diag(inter)
        denom = sizes[:, None] + sizes[None, :]
        with np.errstate(invalid="ignore", divide="ignore"):
            out[k] = np.where(denom > 0, 2.0 * inter / np.where(denom > 0, denom, 1), empty_value)
    return out


def agreement_map(raters: Any, num_classes: int | None = None) -> np.ndarray:
    """Fraction of raters that assign each voxel to each class.

    Parameters
    ----------
    raters : array_like
        Integer label maps stacked as ``(R, *spatial)``.
    num_classes : int, optional
        Number of classes including background; defaults to ``max label + 1``.

    Returns
    -------
    numpy.ndarray
        float32 ``(C, *spatial)`` in [0, 1], summing to 1 over classes (the mean of the raters'
        one-hot maps).

    Examples
    --------
    >>> import numpy as np
    >>> agreement_map(np.array([[[0, 1]], [[1, 1]]]), 2)[1].tolist()
    [[0.5, 1.0]]
    """
    from .labels import rater_mean

    stack = as_rater_stack(raters)
    return rater_mean(stack, num_classes=_infer_num_classes(stack, num_classes))


def rater_entropy_map(raters: Any, num_classes: int | None = None) -> np.ndarray:
    """Entropy of the raters' label distribution per voxel, normalised to [0, 1] by ``log C``.

    Parameters
    ----------
    raters : array_like
        Integer label maps stacked as ``(R, *spatial)``.
    num_classes : int, optional
        Number of classes including background; defaults to ``max label + 1``.

    Returns
    -------
    numpy.ndarray
        float32 ``(*spatial)``: ``-Σ_c p_c log p_c / log C`` with ``p`` the :func:`agreement_map`.
        0 where all raters agree; 1 where they spread evenly over all classes.

    Examples
    --------
    >>> import numpy as np
    >>> rater_entropy_map(np.array([[[0, 1]], [[1, 1]]]), 2).round(3).tolist()
    [[1.0, 0.0]]
    """
    p = agreement_map(raters, num_classes)
    c = p.shape[0]
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    ent = -terms.sum(axis=0) / np.log(c) + 0.0  # + 0.0 turns -0.0 into 0.0
    return np.clip(ent, 0.0, 1.0).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# summary table
# ----------------------------------------------------------------------------------------------
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

    def to_csv(self, path: str | os.PathLike) -> str:
        """Write the table as CSV and return the path."""
        import csv

        with open(path, "w", newline="") as fh:
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
        return pairwise_dice(self.labels, self.num_classes, empty_value=empty_value)

    def agreement_map(self) -> np.ndarray:
        """``(C, *spatial)`` fraction of raters per class; see :func:`agreement_map`."""
        return agreement_map(self.labels, self.num_classes)

    def entropy_map(self) -> np.ndarray:
        """``(*spatial)`` normalised entropy of the rater mean; see :func:`rater_entropy_map`."""
        return rater_entropy_map(self.labels, self.num_classes)

    def summary(self) -> SummaryTable:
        """Per-class table of rater volumes, empty masks and pairwise agreement.

        Columns: ``class``, ``name``, ``mean_volume`` and ``std_volume`` (voxels × voxel volume,
        in spacing units), ``raters_empty`` (how many raters left the class empty),
        ``mean_pairwise_dice`` and ``min_pairwise_dice`` over rater pairs (pairs where both are
        empty are left out; ``nan`` when there is no other pair or a single rater).
        """
        r = self.num_raters
        counts = np.stack([np.count_nonzero(self.labels == k, axis=tuple(range(1, self.labels.ndim)))
                           for k in range(self.num_classes)])  # (C, R)
        dice = self.pairwise_dice(empty_value=np.nan)
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


# ----------------------------------------------------------------------------------------------
# loading
# ----------------------------------------------------------------------------------------------
def load_raters(
    source: Any,
    *,
    spacing: Sequence[float] | None = None,
    class_names: Sequence[str] | None = None,
    rater_names: Sequence[str] | None = None,
    task: int | None = None,
    image: np.ndarray | None = None,
) -> RaterSet:
    """Load the label maps of several raters and check they agree on grid and label scheme.

    Parameters
    ----------
    source : str, path, list or array
        Any of:

        - a folder of label files (``.nii``, ``.nii.gz``, ``.nrrd``, ``.mha``/``.mhd``, ``.tif``, ``.png``;
          files named ``image*``, ``img*``, ``flair*``, ``t1*``… are taken as the image, not a rater);
        - a QUBIQ case folder (``image.nii.gz`` + ``task01_seg01.nii.gz``, ``task01_seg02.nii.gz`` …);
        - an MSSEG-2016 case folder (``ManualSegmentation_1..7.nii.gz``, anywhere below it);
        - a glob pattern (``"case1/rater_*.nii.gz"``) or a list of files;
        - a LIDC-style ``.npz`` with ``image`` and ``masks`` ``(R, *spatial)`` arrays;
        - an ``(R, *spatial)`` integer array or a list of ``(*spatial)`` arrays;
        - a :class:`RaterSet` (returned as is).
    spacing : sequence of float, optional
        Voxel size per spatial axis in numpy order; overrides what the files say (TIFF/PNG and
        arrays usually carry none).
    class_names : sequence of str, optional
        One name per class including background.
    rater_names : sequence of str, optional
        One name per rater; defaults to file names.
    task : int, optional
        QUBIQ task number when a case folder holds several tasks (default: the lowest).
    image : numpy.ndarray, optional
        The annotated image, when not part of ``source``.

    Returns
    -------
    RaterSet

    Raises
    ------
    ValueError
        Empty rater list, raters of different shapes or spacings, non-integer, negative or NaN labels,
        4-D data, or raters that use different label schemes (e.g. 0/255 against 0/1).
    FileNotFoundError
        A path or folder that does not exist, or a folder without label files.

    Warns
    -----
    UserWarning
        With a single rater: inter-rater statistics, mSVLS and STAPLE need at least two.

    Examples
    --------
    >>> import numpy as np
    >>> rs = load_raters(np.array([[[0, 1], [1, 1]], [[0, 1], [0, 1]]]), spacing=(0.5, 0.5))
    >>> rs.num_raters, rs.num_classes, rs.shape
    (2, 2, (2, 2))
    """
    if isinstance(source, RaterSet):
        return source
    if image is not None:
        image = _as_image_array(image)
    maps, metas, names, found_image = _collect(source, task=task)
    if image is None:
        image = found_image
    if rater_names is not None:
        names = _as_names(rater_names, "rater_names")
        if len(names) != len(maps):
            raise ValueError(f"rater_names has {len(names)} names but {len(maps)} raters were found.")
    return _build(maps, metas, names, spacing=spacing, class_names=class_names, image=image)


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


def _is_glob(text: str) -> bool:
    return any(ch in text for ch in "*?[")


def _natural_key(path: str | Path) -> list[Any]:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", Path(path).name)]


def _collect(source: Any, *, task: int | None) -> tuple[list[np.ndarray], list[ImageMeta | None], list[str], Any]:
    """Turn any supported source into lists of label arrays, their metadata and names, plus an image."""
    if isinstance(source, np.ndarray) or _is_tensor(source):
        stack = np.asarray(source.detach().cpu().numpy() if _is_tensor(source) else source)
        if stack.ndim == 2:
            raise ValueError(
                f"source is a single 2-D array of shape {stack.shape}; stack raters as (R, Y, X) "
                "(use source[None] for one rater)."
            )
        if stack.ndim == 5:
            raise ValueError(f"source has shape {stack.shape}: 4-D label maps (time or channels) are not "
                             "supported; give each rater a 2-D or 3-D label map stacked as (R, Z, Y, X).")
        if stack.ndim not in (3, 4):
            raise ValueError(f"source must be an (R, Y, X) or (R, Z, Y, X) array, got shape {stack.shape}.")
        return [stack[i] for i in range(stack.shape[0])], [None] * stack.shape[0], [], None
    if isinstance(source, (str, os.PathLike)):
        text = os.fspath(source)
        if _is_glob(text):
            files = sorted(glob.glob(text), key=_natural_key)
            files = [f for f in files if os.path.isfile(f)]
            if not files:
                raise FileNotFoundError(f"source pattern {text!r} matches no file.")
            return _read_files(files)
        path = Path(text)
        if not path.exists():
            raise FileNotFoundError(f"source {text!r} does not exist.")
        if path.is_dir():
            return _read_folder(path, task=task)
        if file_suffix(path) == ".npz":
            return _read_npz(path)
        return _read_files([path])
    if isinstance(source, (list, tuple)):
        if len(source) == 0:
            raise ValueError("source is an empty list; give at least one rater (a file or an array).")
        if all(isinstance(s, (str, os.PathLike)) for s in source):
            return _read_files([Path(s) for s in source])
        if all(isinstance(s, np.ndarray) or _is_tensor(s) for s in source):
            arrays = [np.asarray(s.detach().cpu().numpy() if _is_tensor(s) else s) for s in source]
            return arrays, [None] * len(arrays), [], None
        kinds = sorted({type(s).__name__ for s in source})
        raise TypeError(f"source list must hold only file paths or only arrays, got {', '.join(kinds)}.")
    raise TypeError(
        f"source must be a folder, file, glob pattern, list of files or arrays, or an (R, *spatial) array; "
        f"got {describe(source)}."
    )


def _is_tensor(value: Any) -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover
        return False
    return isinstance(value, torch.Tensor)


def _read_files(files: Sequence[str | Path]) -> tuple[list[np.ndarray], list[ImageMeta | None], list[str], Any]:
    maps, metas, names = [], [], []
    for f in files:
        f = Path(f)
        if not f.exists():
            raise FileNotFoundError(f"rater file {str(f)!r} does not exist.")
        if not is_supported_file(f):
            raise ValueError(
                f"rater file {str(f)!r} has unsupported format {file_suffix(f) or '(no suffix)'!r}; "
                "supported: .nii, .nii.gz, .nrrd, .mha, .mhd, .tif, .tiff, .png (and .npz for LIDC-style stacks)."
            )
        arr, meta = read_image(f)
        if meta.channel_axis is not None:
            raise ValueError(f"rater file {str(f)!r} holds {arr.shape[0]} components per voxel; a label map "
                             "must hold one integer label per voxel.")
        maps.append(arr)
        metas.append(meta)
        names.append(_stem(f))
    return maps, metas, names, None


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".tiff", ".tif", ".png", ".npz"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def qubiq_tasks(folder: str | os.PathLike) -> list[int]:
    """Task numbers of a QUBIQ case folder (``task01_seg01.nii.gz`` …), sorted; ``[]`` for any other folder.

    Examples
    --------
    >>> qubiq_tasks("/no/such/folder")
    []
    """
    path = Path(folder)
    if not path.is_dir():
        return []
    return sorted({int(m.group(1)) for p in path.iterdir() if (m := _QUBIQ_SEG.match(p.name)) and p.is_file()})


def _read_folder(folder: Path, *, task: int | None) -> tuple[list[np.ndarray], list[ImageMeta | None], list[str], Any]:
    files = sorted((p for p in folder.iterdir() if p.is_file()), key=_natural_key)
    # QUBIQ: image.nii.gz + taskXX_segYY.nii.gz
    qubiq = [(p, _QUBIQ_SEG.match(p.name)) for p in files]
    qubiq = [(p, m) for p, m in qubiq if m]
    if qubiq:
        tasks = sorted({int(m.group(1)) for _, m in qubiq})
        chosen = tasks[0] if task is None else task
        if chosen not in tasks:
            raise ValueError(f"task={task} is not in QUBIQ case {str(folder)!r}; it has tasks {tasks}.")
        if task is None and len(tasks) > 1:
            warnings.warn(f"QUBIQ case {folder.name!r} has tasks {tasks}; loading task {chosen}. "
                          "Pass task=N to choose another.", UserWarning, stacklevel=3)
        segs = sorted(((int(m.group(2)), p) for p, m in qubiq if int(m.group(1)) == chosen))
        maps, metas, names, _ = _read_files([p for _, p in segs])
        return maps, metas, names, _find_image(files)
    # MSSEG-2016: ManualSegmentation_1..7.nii.gz anywhere below the case folder
    msseg = sorted(
        ((int(m.group(1)), p) for p in folder.rglob("*") if p.is_file() and (m := _MSSEG_SEG.match(p.name))),
    )
    if msseg:
        maps, metas, names, _ = _read_files([p for _, p in msseg])
        candidates = sorted((p for p in folder.rglob("*") if p.is_file() and "flair" in p.name.lower()
                             and is_supported_file(p)), key=lambda p: ("preprocessed" not in p.name.lower(), str(p)))
        return maps, metas, names, (read_image(candidates[0])[0] if candidates else None)
    npz = [p for p in files if file_suffix(p) == ".npz"]
    labels = [p for p in files if is_supported_file(p) and not _IMAGE_NAME.match(p.name)]
    if not labels and len(npz) == 1:
        return _read_npz(npz[0])
    if not labels:
        raise FileNotFoundError(
            f"folder {str(folder)!r} holds no label file (.nii, .nii.gz, .nrrd, .mha, .mhd, .tif, .tiff, .png); "
            "files named image*/img*/flair*/t1*/t2*/ct* are taken as images, not raters."
        )
    maps, metas, names, _ = _read_files(labels)
    return maps, metas, names, _find_image(files)


def _find_image(files: Sequence[Path]) -> np.ndarray | None:
    for p in files:
        if is_supported_file(p) and _IMAGE_NAME.match(p.name):
            arr, meta = read_image(p)
            return arr
    return None


def _read_npz(path: Path) -> tuple[list[np.ndarray], list[ImageMeta | None], list[str], Any]:
    check_npz_fits(path)  # readable, no pickled objects, fits in memory: checked from the headers
    try:
        with np.load(path, allow_pickle=False) as data:
            keys = set(data.files)
            key = next((k for k in ("masks", "labels", "raters", "segs") if k in keys), None)
            if key is None:
                raise ValueError(
                    f"{str(path)!r} has arrays {sorted(keys)}; a LIDC-style .npz needs 'masks' (R, *spatial) "
                    "and optionally 'image'."
                )
            masks = np.asarray(data[key])
            image = np.asarray(data["image"]) if "image" in keys else None
            spacing = tuple(float(s) for s in data["spacing"]) if "spacing" in keys else None
    except ValueError as exc:
        if "allow_pickle" in str(exc) or "pickle" in str(exc).lower():
            raise ValueError(f"{str(path)!r} contains pickled objects, which are refused for safety; "
                             "save plain numeric arrays with numpy.savez.") from exc
        if str(path) in str(exc):
            raise
        raise ValueError(f"could not read {str(path)!r}: not a valid .npz file ({exc}).") from exc
    except Exception as exc:  # noqa: BLE001 - zip and decompression errors of a truncated member
        raise ValueError(f"could not read {str(path)!r}: not a valid .npz file ({exc}).") from exc
    if masks.ndim not in (3, 4):
        raise ValueError(f"{str(path)!r}: '{key}' must be stacked as (R, Y, X) or (R, Z, Y, X), "
                         f"got shape {masks.shape}.")
    if image is not None and image.shape != masks.shape[1:]:
        if image.ndim == masks.ndim and image.shape[0] == 1:
            image = image[0]
    meta = ImageMeta(spacing=spacing, path=str(path))
    names = [f"{_stem(path)} rater {i + 1}" for i in range(masks.shape[0])]
    return [masks[i] for i in range(masks.shape[0])], [meta] * masks.shape[0], names, image


def _build(
    maps: list[np.ndarray],
    metas: list[ImageMeta | None],
    names: list[str],
    *,
    spacing: Sequence[float] | None,
    class_names: Sequence[str] | None,
    image: np.ndarray | None,
) -> RaterSet:
    if not maps:
        raise ValueError("no rater found; give at least one rater's label map.")
    names = names or [f"rater {i + 1}" for i in range(len(maps))]
    # --- dimensionality and shapes
    fixed = []
    for arr, name, meta in zip(maps, names, metas):
        # error messages name the rater and, for files, where it came from
        label = f"rater {name!r}" + (f" (from {meta.path!r})" if meta is not None and meta.path else "")
        arr = np.asarray(arr)
        while arr.ndim > 3 and arr.shape[-1] == 1:
            arr = arr[..., 0]
        if arr.ndim == 4:
            raise ValueError(
                f"{label} is 4-D with shape {arr.shape} (a time series or several channels); "
                "each rater must be one 2-D or 3-D label map."
            )
        if arr.ndim not in (2, 3):
            raise ValueError(f"{label} must be a 2-D or 3-D label map, got shape {arr.shape}.")
        fixed.append(as_label_array(arr, name=label))
    shapes = {a.shape for a in fixed}
    if len(shapes) > 1:
        detail = "; ".join(f"{n}: {a.shape}" for n, a in zip(names, fixed))
        raise ValueError(f"raters have different shapes ({detail}); every rater must label the same grid. "
                         "Resample them onto the image grid first.")
    ndim = fixed[0].ndim
    # --- spacing
    file_spacings = [m.spacing for m in metas if m is not None and m.spacing is not None]
    if spacing is not None:
        final_spacing = check_spacing(spacing, ndim)
    elif file_spacings:
        ref = file_spacings[0]
        for m, n in zip(metas, names):
            if m is not None and m.spacing is not None and not np.allclose(m.spacing, ref, rtol=_SPACING_RTOL):
                raise ValueError(
                    f"raters have different voxel spacings: {names[0]!r} has {ref} but {n!r} has {m.spacing}; "
                    "every rater must be on the same grid. Resample them, or pass spacing=... to override."
                )
        final_spacing = tuple(ref) if len(ref) == ndim else None
    else:
        final_spacing = None
    meta0 = next((m for m in metas if m is not None), None)
    origin = meta0.origin if meta0 is not None and meta0.origin and len(meta0.origin) == ndim else None
    direction = meta0.direction if meta0 is not None and meta0.direction is not None \
        and meta0.direction.shape == (ndim, ndim) else None
    stack = np.stack(fixed)
    # --- label scheme
    label_sets = [set(np.unique(a).tolist()) - {0} for a in fixed]
    if len(fixed) > 1:
        for i, s in enumerate(label_sets):
            others = set().union(*(t for j, t in enumerate(label_sets) if j != i))
            if s and others and not (s & others):
                raise ValueError(
                    f"rater {names[i]!r} uses labels {sorted(s)} but the other raters use {sorted(others)}; "
                    "all raters must share one label scheme (e.g. convert 0/255 masks to 0/1)."
                )
    values = sorted(set().union(*label_sets) | {0})
    label_values = None
    if values != list(range(len(values))) and len(values) > 1:
        label_values = values
        if values[-1] < _LOOKUP_LIMIT:
            lut = np.zeros(values[-1] + 1, dtype=np.int32)
            lut[values] = np.arange(len(values), dtype=np.int32)
            stack = lut[stack]
        else:  # huge label values (e.g. 2**40): no lookup table of that length
            stack = np.searchsorted(np.asarray(values, dtype=stack.dtype), stack).astype(np.int32)
    num_classes = max(len(values), 2)
    if class_names is not None:
        class_names = _as_names(class_names, "class_names")
        if len(class_names) < num_classes:
            raise ValueError(f"class_names has {len(class_names)} names but the raters use {num_classes} classes "
                             "(including background); give one name per class.")
    elif label_values is not None:
        class_names = ["background"] + [f"label {v}" for v in label_values[1:]]
    else:
        class_names = ["background"] + [f"class {k}" for k in range(1, num_classes)]
    stack = stack.astype(np.uint8 if num_classes <= 255 else np.int32, copy=False)
    if image is not None:
        image = np.asarray(image)
        if image.shape != stack.shape[1:]:
            warnings.warn(f"image of shape {image.shape} does not match the raters' grid {stack.shape[1:]}; "
                          "it is left out.", UserWarning, stacklevel=3)
            image = None
    if len(fixed) == 1:
        warnings.warn("only one rater was loaded: inter-rater statistics, mSVLS and STAPLE need at least two "
                      "raters (they reduce to the single rater's labels).", UserWarning, stacklevel=3)
    sources = [m.path if m is not None and m.path else "array" for m in metas]
    return RaterSet(
        labels=stack,
        spacing=final_spacing,
        origin=origin,
        direction=direction,
        class_names=list(class_names),
        rater_names=list(names),
        image=image,
        label_values=label_values,
        sources=sources,
    )
