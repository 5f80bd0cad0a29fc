"""A cohort: many cases on disk, scanned from their headers, split by case and read one case at a time.

:func:`load_cohort` turns a folder of case folders (generic, QUBIQ or MSSEG-2016 layout), a LIDC-style
``.npz`` holding many cases, or a CSV/YAML manifest into a :class:`Cohort`. The scan reads file headers
only (SimpleITK ``ReadImageInformation``), checks every case's files share one grid and every case the
same dimension and image channel count, and names the case and the file of every problem.
:meth:`Cohort.load_case` reads a case's voxels when they are needed.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .._file_checks import update_with_file
from .._numeric import label_dtype
from .._validation import check_choice, check_int, check_seed, check_spacing, describe
from ..io import file_suffix, is_supported_file, read_image
from ..raters.loading import load_raters, qubiq_tasks
from .manifest import MANIFEST_SUFFIXES, read_manifest
from .npz import npz_image, npz_masks, scan_npz
from .resample import resample_case
from .scan import (
    LAYOUTS,
    CaseInfo,
    CohortProblem,
    ScanError,
    case_files_from_folder,
    case_folders,
    check_across,
    is_case_folder,
    natural_key,
    scan_case,
)
from .splits import SPLIT_KEYS, check_split, fraction_split, is_fraction, kfold_split

__all__ = ["CaseData", "CaseInfo", "Cohort", "CohortProblem", "LAYOUTS", "load_cohort"]


@dataclass(frozen=True, kw_only=True)
class CaseData:
    """One case read from disk.

    Attributes
    ----------
    case_id : str
        The case's id.
    image : numpy.ndarray or None
        float32 ``(channels, *spatial)``; None when the case has no image.
    raters : numpy.ndarray
        Integer ``(R, *spatial)`` label maps in the smallest unsigned dtype that holds the labels. Label
        values are the files' values (the same for every case of the cohort).
    spacing, origin : tuple of float
        Voxel size and first-voxel position, numpy order (after resampling when the cohort resamples).
    direction : numpy.ndarray
        ``(ndim, ndim)`` direction cosines, numpy order.
    """

    case_id: str
    image: np.ndarray | None = field(repr=False)
    raters: np.ndarray = field(repr=False)
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: np.ndarray = field(repr=False)

    @property
    def shape(self) -> tuple[int, ...]:
        """Spatial shape."""
        return tuple(self.raters.shape[1:])


class Cohort:
    """Many cases on disk: their headers, case-level splits, and reading one case at a time.

    Build it with :func:`load_cohort`.

    Attributes
    ----------
    source : str
        The folder, ``.npz`` or manifest it was loaded from (absolute).
    cases : tuple of CaseInfo
        The good cases, natural-sorted by id.
    problems : tuple of CohortProblem
        The cases skipped with ``on_error="skip"`` (empty otherwise).
    class_names : list of str or None
        One name per class including background, when given.
    target_spacing : tuple of float or None
        Spacing every case is resampled to on load (None: every case stays on its own grid).

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> from napari_seg_uncertainty.core.io import write_image
    >>> root = tempfile.mkdtemp()
    >>> for i in range(4):
    ...     os.mkdir(os.path.join(root, f"case{i}"))
    ...     for r in range(2):
    ...         _ = write_image(os.path.join(root, f"case{i}", f"rater{r}.nii.gz"), np.eye(8, dtype=np.uint8))
    ...     _ = write_image(os.path.join(root, f"case{i}", "image.nii.gz"), np.ones((8, 8), np.float32))
    >>> cohort = load_cohort(root)
    >>> len(cohort), cohort.ndim, cohort.channels, cohort.num_raters
    (4, 2, 1, 2)
    >>> cohort.split(val=0.25, test=0.25, seed=0)
    {'train': ['case1', 'case3'], 'val': ['case0'], 'test': ['case2']}
    >>> case = cohort.load_case("case2")
    >>> case.image.shape, case.raters.shape, case.raters.dtype
    ((1, 8, 8), (2, 8, 8), dtype('uint8'))
    """

    def __init__(
        self,
        source: str,
        cases: Sequence[CaseInfo],
        *,
        problems: Sequence[CohortProblem] = (),
        class_names: Sequence[str] | None = None,
        target_spacing: Sequence[float] | None = None,
        has_split_column: bool = False,
    ) -> None:
        cases = tuple(cases)
        if not cases:
            raise ValueError("a cohort needs at least one case; cases is empty.")
        if not all(isinstance(c, CaseInfo) for c in cases):
            raise TypeError(f"cases must hold CaseInfo records, got {describe(cases[0])}.")
        ids = [c.case_id for c in cases]
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise ValueError(f"case id {dup!r} appears more than once; case ids must be unique.")
        self.source = str(source)
        self.cases = cases
        self.problems = tuple(problems)
        self.class_names = None if class_names is None else list(class_names)
        self.target_spacing = check_spacing(target_spacing, cases[0].ndim, name="target_spacing")
        self._has_split_column = bool(has_split_column)
        self._index = {c.case_id: i for i, c in enumerate(cases)}
        self._digests: dict[str, str] = {}
        self._label_values: list[int] | None = None

    # container ----------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.cases)

    def __iter__(self) -> Iterator[CaseInfo]:
        return iter(self.cases)

    def __getitem__(self, key: int | str) -> CaseInfo:
        if isinstance(key, str):
            if key not in self._index:
                raise KeyError(f"case {key!r} is not in the cohort; its cases are {self._preview()}.")
            return self.cases[self._index[key]]
        if isinstance(key, (bool, np.bool_)) or not isinstance(key, (int, np.integer)):
            raise TypeError(f"key must be a case index (int) or a case id (str), got {describe(key)}.")
        if not -len(self) <= int(key) < len(self):
            raise IndexError(f"case index {int(key)} is out of range for a cohort of {len(self)} cases.")
        return self.cases[int(key)]

    def __repr__(self) -> str:
        return (f"Cohort(source={self.source!r}, cases={len(self)}, ndim={self.ndim}, channels={self.channels}, "
                f"num_raters={self.num_raters}, problems={len(self.problems)})")

    def _preview(self) -> str:
        ids = self.case_ids
        return ", ".join(repr(i) for i in ids[:5]) + (f", … ({len(ids)} in all)" if len(ids) > 5 else "")

    @property
    def case_ids(self) -> list[str]:
        """The case ids in cohort order."""
        return [c.case_id for c in self.cases]

    @property
    def ndim(self) -> int:
        """Spatial dimension of every case (2 or 3)."""
        return self.cases[0].ndim

    @property
    def channels(self) -> int:
        """Image channels of every case (0 when the cases have no image)."""
        return self.cases[0].channels

    @property
    def num_raters(self) -> int:
        """The largest number of raters of a case."""
        return max(c.num_raters for c in self.cases)

    # reading ------------------------------------------------------------------------------------
    def load_case(self, key: int | str) -> CaseData:
        """Read one case's image channels and raters from disk (resampled when ``target_spacing`` is set).

        Parameters
        ----------
        key : int or str
            Case index or case id.

        Returns
        -------
        CaseData
            float32 ``(C, *S)`` image (None without one) and ``(R, *S)`` raters read through
            :func:`~napari_seg_uncertainty.core.raters.load_raters` (the same checks and dtype), with the
            files' label values.

        Raises
        ------
        ValueError
            If a file cannot be read or no longer matches the scanned grid (names the case and the file).
        """
        info = self[key]
        raters = self._read_raters(info)
        image = self._read_image(info)
        spacing, origin = tuple(info.spacing), tuple(info.origin)
        direction = np.asarray(info.direction, dtype=float).reshape(info.ndim, info.ndim)
        if self.target_spacing is not None and not np.allclose(spacing, self.target_spacing, rtol=1e-6, atol=0.0):
            image, raters, spacing = resample_case(image, raters, spacing=spacing, origin=origin,
                                                   direction=direction, target_spacing=self.target_spacing)
        return CaseData(case_id=info.case_id, image=image, raters=raters, spacing=spacing, origin=origin,
                        direction=direction)

    def _read_raters(self, info: CaseInfo) -> np.ndarray:
        where = info.rater_files[0]
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="only one rater was loaded", category=UserWarning)
                if info.layout == "npz":
                    source: Any = npz_masks(info)
                elif all(is_supported_file(f) for f in info.rater_files):
                    source = list(info.rater_files)
                else:
                    source = [_read_array(f) for f in info.rater_files]
                raters = load_raters(source)
        except (ValueError, FileNotFoundError, OSError) as exc:
            raise ValueError(f"case {info.case_id!r} ({where}): {exc}") from exc
        labels = raters.labels
        if raters.label_values is not None:  # undo load_raters' per-case remap: keep the files' values
            labels = np.asarray(raters.label_values)[labels]
        labels = labels.astype(label_dtype(int(labels.max()) + 1), copy=False)
        if labels.shape[1:] != info.shape:
            raise ValueError(f"case {info.case_id!r} ({where}): the raters now have shape {labels.shape[1:]} but "
                             f"the scan found {info.shape}; the files changed since load_cohort, load it again.")
        return labels

    def _read_image(self, info: CaseInfo) -> np.ndarray | None:
        if info.layout == "npz":
            image = npz_image(info)
            if image is None:
                return None
            image = image[None] if image.ndim == info.ndim else image
            return np.ascontiguousarray(image, dtype=np.float32)
        if not info.image_files:
            return None
        channels = []
        for f in info.image_files:
            try:
                if file_suffix(f) == ".npy":
                    arr, channel_axis = _read_array(f), None
                else:
                    arr, meta = read_image(f)
                    channel_axis = meta.channel_axis
            except (ValueError, FileNotFoundError, OSError) as exc:
                raise ValueError(f"case {info.case_id!r} ({f}): {exc}") from exc
            arr = arr if channel_axis is not None else arr[None]
            if arr.shape[1:] != info.shape:
                raise ValueError(f"case {info.case_id!r} ({f}): the image now has shape {arr.shape[1:]} but the "
                                 f"scan found {info.shape}; the files changed since load_cohort, load it again.")
            channels.append(arr.astype(np.float32, copy=False))
        return np.ascontiguousarray(np.concatenate(channels) if len(channels) > 1 else channels[0])

    def label_values(self) -> list[int]:
        """Sorted label values used by any rater of any case (reads the rater files once, case by case).

        Examples
        --------
        >>> import numpy as np, tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "lidc.npz")
        >>> masks = np.zeros((2, 3, 4, 4), np.uint8)
        >>> masks[0, :, 1, 1], masks[1, :, 2, 2] = 1, 2
        >>> np.savez(p, images=np.zeros((2, 4, 4)), masks=masks)
        >>> cohort = load_cohort(p)
        >>> cohort.label_values(), cohort.num_classes()
        ([0, 1, 2], 3)
        """
        if self._label_values is None:
            values: set[int] = set()
            for info in self.cases:
                values.update(int(v) for v in np.unique(self._read_raters(info)))
            self._label_values = sorted(values)
        return list(self._label_values)

    def num_classes(self) -> int:
        """``len(class_names)`` when given, else ``max(label_values()) + 1`` (at least 2)."""
        if self.class_names is not None:
            return len(self.class_names)
        return max(max(self.label_values()) + 1, 2)

    def content_digest(self, key: int | str) -> str:
        """SHA-256 (hex) of the case's file bytes (image channels, then raters), cached per instance.

        For an ``.npz`` case: the archive's bytes and the case's key inside it.
        """
        info = self[key]
        if info.case_id not in self._digests:
            digest = hashlib.sha256()
            for f in (*info.image_files, *info.rater_files):
                digest.update(os.path.getsize(f).to_bytes(8, "little"))
                update_with_file(digest, f)
            if info.npz_key is not None:
                digest.update(info.npz_key.encode())
            self._digests[info.case_id] = digest.hexdigest()
        return self._digests[info.case_id]

    # subsets and splits -------------------------------------------------------------------------
    def subset(self, case_ids: Iterable[str]) -> Cohort:
        """A cohort of the given cases (in cohort order), with the same source, class names and resampling."""
        if isinstance(case_ids, str):
            raise TypeError(f"case_ids must be a list of case ids, got {describe(case_ids)}.")
        wanted = list(case_ids)
        for cid in wanted:
            if not isinstance(cid, str):
                raise TypeError(f"case_ids must hold case ids (str), got {describe(cid)}.")
            if cid not in self._index:
                raise KeyError(f"case {cid!r} is not in the cohort; its cases are {self._preview()}.")
        if not wanted:
            raise ValueError("case_ids is empty; a cohort needs at least one case.")
        chosen = set(wanted)
        return Cohort(self.source, [c for c in self.cases if c.case_id in chosen], problems=self.problems,
                      class_names=self.class_names, target_spacing=self.target_spacing,
                      has_split_column=self._has_split_column)

    def split(self, *, val: float = 0.2, test: float = 0.2, seed: int = 0) -> dict[str, list[str]]:
        """Random case-level split: fractions ``val`` and ``test`` of the cases, the rest for training.

        See :func:`~napari_seg_uncertainty.core.cohort.splits.fraction_split`.
        """
        return fraction_split(self.case_ids, val=val, test=test, seed=seed)

    def kfold(self, folds: int = 5, *, fold: int = 0, test: float = 0.0, seed: int = 0) -> dict[str, list[str]]:
        """Fold ``fold`` of a ``folds``-fold cross-validation over cases (test cases fixed per seed).

        See :func:`~napari_seg_uncertainty.core.cohort.splits.kfold_split`.
        """
        return kfold_split(self.case_ids, folds, fold=fold, test=test, seed=seed)

    def manifest_split(self) -> dict[str, list[str]]:
        """The split given by the manifest's ``split`` column.

        Raises
        ------
        ValueError
            If the cohort has no split column, some case has no split value, or no case is for training.
        """
        if not self._has_split_column:
            raise ValueError(f"the cohort from {self.source!r} has no split column; use a manifest with a 'split' "
                             "column (train/val/test), or split='val/test fractions' / k-fold instead.")
        missing = [c.case_id for c in self.cases if c.split is None]
        if missing:
            raise ValueError(f"the manifest gives no split for case(s) {missing[:5]}"
                             f"{' …' if len(missing) > 5 else ''}; fill in train/val/test for every case.")
        out = {k: [c.case_id for c in self.cases if c.split == k] for k in SPLIT_KEYS}
        if not out["train"]:
            raise ValueError("the manifest's split column names no training case; mark at least one case 'train'.")
        return out

    def resolve_split(self, spec: Mapping[str, Any] | str | None, *, seed: int = 0) -> dict[str, list[str]]:
        """Turn a split specification into ``{"train": [...], "val": [...], "test": [...]}``.

        Parameters
        ----------
        spec : None, str or dict
            ``None``: ``split(val=0.2, test=0.2, seed=seed)``; ``"manifest"``: the split column;
            ``{"val": .., "test": ..}``: fractions (a missing one is 0.2, as in :meth:`split`);
            ``{"folds": 5, "fold": 0, "test": ..}``: k-fold;
            ``{"train": [...], "val": [...], "test": [...]}``: explicit case ids (checked).
        seed : int
            Seed of the random splits (a ``"seed"`` key in ``spec`` takes precedence).

        Examples
        --------
        >>> import numpy as np, tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "lidc.npz")
        >>> np.savez(p, images=np.zeros((5, 4, 4)), masks=np.zeros((5, 2, 4, 4), np.uint8))
        >>> cohort = load_cohort(p)
        >>> cohort.resolve_split({"folds": 5, "fold": 1})["val"]
        ['case004']
        >>> cohort.resolve_split({"train": ["case000"], "test": ["case001"]})
        {'train': ['case000'], 'val': [], 'test': ['case001']}
        """
        seed = check_seed(seed)
        if spec is None:
            return self.split(val=0.2, test=0.2, seed=seed)
        if isinstance(spec, str):
            if spec == "manifest":
                return self.manifest_split()
            raise ValueError(f"split must be None, 'manifest' or a dict, got {spec!r}.")
        if not isinstance(spec, Mapping):
            raise TypeError(f"split must be None, 'manifest' or a dict, got {describe(spec)}.")
        if "folds" in spec or "fold" in spec:
            unknown = sorted(set(spec) - {"folds", "fold", "test", "seed"})
            if unknown:
                raise ValueError(f"split has unknown key(s) {unknown} for k-fold; expected folds, fold, test, seed.")
            return self.kfold(spec.get("folds", 5), fold=spec.get("fold", 0), test=spec.get("test", 0.0),
                              seed=spec.get("seed", seed))
        if "train" not in spec and spec and all(is_fraction(v) for v in spec.values()):
            unknown = sorted(set(spec) - {"val", "test", "seed"})
            if unknown:
                raise ValueError(f"split has unknown key(s) {unknown} for fractions; expected val, test, seed.")
            return self.split(val=spec.get("val", 0.2), test=spec.get("test", 0.2), seed=spec.get("seed", seed))
        return check_split(spec, self.case_ids)

    # summaries ----------------------------------------------------------------------------------
    def table(self) -> list[dict[str, Any]]:
        """One row per case for a GUI table: ``case_id``, ``shape``, ``spacing``, ``channels``, ``raters``,
        ``split``."""
        return [{"case_id": c.case_id, "shape": c.shape, "spacing": c.spacing, "channels": c.channels,
                 "raters": c.num_raters, "split": c.split} for c in self.cases]

    def to_dict(self) -> dict[str, Any]:
        """``{"source", "class_names", "target_spacing"}`` (for checkpoints); ``load_cohort(**d)`` rebuilds it."""
        return {
            "source": self.source,
            "class_names": None if self.class_names is None else list(self.class_names),
            "target_spacing": None if self.target_spacing is None else list(self.target_spacing),
        }


# ----------------------------------------------------------------------------------------------
# .npy reader
# ----------------------------------------------------------------------------------------------
def _read_array(path: str) -> np.ndarray:
    if file_suffix(path) == ".npy":
        arr = np.load(path, allow_pickle=False)
        while arr.ndim > 2 and arr.shape[0] == 1:
            arr = arr[0]
        return arr
    return read_image(path)[0]


# ----------------------------------------------------------------------------------------------
# load_cohort
# ----------------------------------------------------------------------------------------------
def load_cohort(
    source: str | os.PathLike | Cohort,
    *,
    on_error: str = "raise",
    class_names: Sequence[str] | None = None,
    task: int | None = None,
    target_spacing: Sequence[float] | float | None = None,
) -> Cohort:
    """Scan a cohort from its file headers: a folder of case folders, a multi-case ``.npz`` or a manifest.

    Parameters
    ----------
    source : str or path-like
        - a folder of case folders, each in a layout :func:`load_raters` reads (generic: label files plus
          ``image*``/``flair*``/``t1*``/``ct*``… image files, one per channel; QUBIQ: ``image.nii.gz`` +
          ``taskXX_segYY.nii.gz``; MSSEG-2016: ``ManualSegmentation_N.nii.gz`` + a FLAIR; or one LIDC-style
          ``.npz`` with ``masks`` and ``image``); a folder that itself holds label files is a one-case cohort;
        - a LIDC-style ``.npz``: stacked ``images (N, *S)`` / ``masks (N, R, *S)`` with optional
          ``case_ids (N,)`` and ``spacing (ndim,)``, or per-case ``<case>/image`` and ``<case>/masks``;
        - a manifest ``.csv`` / ``.yaml`` / ``.yml`` (see :mod:`.manifest`).

        A :class:`Cohort` is returned as it is.
    on_error : {"raise", "skip"}
        ``"raise"``: a bad case raises ValueError naming the case and the file; ``"skip"``: bad cases are
        left out and listed in ``cohort.problems``.
    class_names : sequence of str, optional
        One name per class including background (a YAML manifest's ``class_names`` otherwise).
    task : int, optional
        QUBIQ task to load (default: each case's lowest).
    target_spacing : float or sequence of float, optional
        Resample every case to this spacing on load (images linear, raters nearest neighbour).

    Returns
    -------
    Cohort

    Raises
    ------
    FileNotFoundError
        If ``source`` does not exist.
    ValueError
        For an unsupported source, a bad case with ``on_error="raise"``, or no good case at all.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "lidc.npz")
    >>> np.savez(p, images=np.zeros((3, 8, 8), np.float32), masks=np.zeros((3, 4, 8, 8), np.uint8),
    ...          case_ids=np.array(["n1", "n2", "n10"]), spacing=np.array([0.7, 0.7]))
    >>> cohort = load_cohort(p)
    >>> cohort.case_ids, cohort[0].spacing, cohort.num_raters
    (['n1', 'n2', 'n10'], (0.7, 0.7), 4)
    """
    if isinstance(source, Cohort):
        return source
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"source must be a folder, .npz or manifest path, got {describe(source)}.")
    on_error = check_choice(on_error, name="on_error", choices=("raise", "skip"))
    if class_names is not None:
        if isinstance(class_names, str) or not isinstance(class_names, Sequence) or not class_names \
                or not all(isinstance(c, str) for c in class_names):
            raise TypeError(f"class_names must be a non-empty list of names, got {describe(class_names)}.")
    if task is not None:
        task = check_int(task, name="task", minimum=0)
    path = Path(os.path.expanduser(os.fspath(source))).resolve()
    if not path.exists():
        raise FileNotFoundError(f"source {os.fspath(source)!r} does not exist.")
    problems: list[CohortProblem] = []
    scanned: list[CaseInfo] = []
    manifest_names, has_split = None, False
    if path.is_dir():
        scanned, problems = _scan_folder(path, task=task)
    elif file_suffix(path) == ".npz":
        scanned, problems = scan_npz(path)
    elif file_suffix(path) in MANIFEST_SUFFIXES:
        manifest = read_manifest(path, task=task)
        manifest_names, has_split = manifest.class_names, manifest.has_split
        problems = list(manifest.problems)
        for files in manifest.cases:
            try:
                scanned.append(scan_case(files))
            except ScanError as exc:
                problems.append(CohortProblem(files.case_id, exc.file, exc.message))
    else:
        raise ValueError(f"source {str(path)!r} is neither a folder, an .npz nor a manifest "
                         f"({', '.join(MANIFEST_SUFFIXES)}).")
    good, across = check_across(scanned)
    problems += across
    problems.sort(key=lambda p: natural_key(p.case_id))
    if problems and on_error == "raise":
        more = f" ({len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        raise ValueError(f"{problems[0]}{more}. Fix the case, or pass on_error='skip' to leave bad cases out.")
    if not good:
        listed = "; ".join(str(p) for p in problems[:3])
        raise ValueError(f"no usable case in {str(path)!r}" + (f": {listed}" if listed else "."))
    good.sort(key=lambda c: natural_key(c.case_id))
    spacing = check_spacing(target_spacing, good[0].ndim, name="target_spacing")
    return Cohort(str(path), good, problems=problems, class_names=class_names or manifest_names,
                  target_spacing=spacing, has_split_column=has_split)


def _scan_folder(folder: Path, *, task: int | None) -> tuple[list[CaseInfo], list[CohortProblem]]:
    subs = case_folders(folder)
    if not subs:
        if is_case_folder(folder):
            subs = [folder]
        else:
            raise ValueError(f"folder {str(folder)!r} holds no case folder and no label file; give a folder of "
                             "case folders, a multi-case .npz or a manifest.")
    cases, problems = [], []
    many_tasks = []
    for sub in subs:
        try:
            files = case_files_from_folder(sub, task=task)
            if files.layout == "qubiq" and task is None and len(qubiq_tasks(sub)) > 1:
                many_tasks.append(sub.name)
            cases.append(scan_case(files))
        except ScanError as exc:
            single = _single_npz_case(sub)
            if single is None:
                problems.append(CohortProblem(sub.name, exc.file, exc.message))
            else:
                cases.append(single)
    if many_tasks:
        warnings.warn(f"QUBIQ case(s) {many_tasks[:3]} hold several tasks; each case's lowest task is loaded. "
                      "Pass task=N to choose one.", UserWarning, stacklevel=3)
    return cases, problems


def _single_npz_case(folder: Path) -> CaseInfo | None:
    """A case folder holding one LIDC-style ``.npz`` case (``masks`` + ``image``) and no label file, as
    :func:`load_raters` reads it; None otherwise."""
    archives = [p for p in folder.iterdir() if p.is_file() and file_suffix(p) == ".npz"]
    if len(archives) != 1:
        return None
    try:
        cases, _ = scan_npz(archives[0])
    except ValueError:
        return None
    if len(cases) != 1 or cases[0].npz_key != "":
        return None
    return replace(cases[0], case_id=folder.name)
