"""The cohort side of the *Train* dock, without Qt: scan a cohort, split it, predict one of its cases.

:func:`scan_cohort` (run in a worker thread) loads a cohort through
:func:`~napari_seg_uncertainty.workflow.training.preview_cohort` (header scan only, bad cases skipped
and listed) and raises with a readable message when nothing can be loaded, so the dock can notify;
:func:`split_cases` turns the dock's split settings into case lists (case ids only: cheap enough for
every change of a setting); :func:`table_rows` gives the case table's rows; :func:`predict_case` (in a
worker) reads one case from disk and runs the trained model on it, returning the prediction with the
case's geometry. Training itself runs :func:`~napari_seg_uncertainty.workflow.training.training_job`.

This module imports only ``core`` and ``workflow`` (no Qt, no napari).
"""

from __future__ import annotations

import os
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core._validation import check_choice, check_int, check_real_in, check_seed
from ..core.cohort.splits import SPLIT_KEYS
from ..core.geometry import Geometry
from ..workflow.training import predict_within_memory_steps, prediction_geometry, preview_cohort

if TYPE_CHECKING:
    from ..core.cohort import Cohort

__all__ = [
    "COHORT_SUFFIXES",
    "SPLIT_MODES",
    "CasePrediction",
    "CohortScan",
    "predict_case",
    "predict_case_steps",
    "prediction_case",
    "scan_cohort",
    "split_cases",
    "split_of",
    "split_summary",
    "table_rows",
]

#: Files a cohort can be loaded from (besides a folder of case folders).
COHORT_SUFFIXES = (".csv", ".yaml", ".yml", ".npz")
#: How the dock splits a cohort: validation/test fractions, the manifest's split column, or k-fold.
SPLIT_MODES = ("fractions", "manifest", "kfold")


@dataclass(frozen=True)
class CohortScan:
    """A cohort loaded for the dock, with what its table and problem list show.

    Attributes
    ----------
    cohort : Cohort
        The good cases (bad ones skipped).
    problems : tuple of str
        One readable line per skipped case (case, file, what is wrong and how to fix it); paths
        inside the cohort's folder are shown relative to it.
    has_manifest_split : bool
        Whether every case has a split from the manifest's split column.
    """

    cohort: Cohort
    problems: tuple[str, ...]
    has_manifest_split: bool

    @property
    def source(self) -> str:
        """Where the cohort was loaded from (absolute)."""
        return str(self.cohort.source)


def _check_source(source: Any) -> Path:
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"source must be a path (str or path-like), got {type(source).__name__} {source!r}.")
    text = str(source).strip()
    if not text or text == ".":
        raise ValueError(
            "source is empty; choose a folder of case folders, an .npz or a .csv/.yaml manifest (Browse)."
        )
    path = Path(text).expanduser()
    if not path.exists():
        raise ValueError(
            f"cohort source {str(path)!r} does not exist; choose a folder of case folders, an .npz or a "
            ".csv/.yaml manifest."
        )
    if path.is_file() and path.suffix.lower() not in COHORT_SUFFIXES:
        raise ValueError(
            f"cohort source {path.name!r} is a {path.suffix or 'suffix-less'} file; expected a folder of case "
            f"folders or a file ending in one of {list(COHORT_SUFFIXES)}."
        )
    return path


def scan_cohort(source: str | os.PathLike, **kwargs: Any) -> CohortScan:
    """Load the cohort at ``source`` (headers only), skipping bad cases; for a worker thread.

    Parameters
    ----------
    source : str or path-like
        A folder of case folders, a LIDC-style ``.npz`` or a ``.csv``/``.yaml`` manifest.
    **kwargs
        Passed on to :func:`~napari_seg_uncertainty.workflow.training.preview_cohort`
        (``class_names``, ``task``, ``target_spacing``).

    Returns
    -------
    CohortScan

    Raises
    ------
    ValueError
        The source does not exist, is a file of another kind, or holds no good case (the message
        names the problems).
    """
    path = _check_source(source)
    preview = preview_cohort(str(path), **kwargs)
    if preview.cohort is None:
        raise ValueError(preview.error or f"no case could be loaded from {str(path)!r}.")
    cohort = preview.cohort
    root = str(path if path.is_dir() else path.parent) + os.sep  # paths shown relative to the cohort
    problems = tuple(str(problem).replace(root, "") for problem in preview.problems)
    has_split = len(cohort) > 0 and all(getattr(case, "split", None) for case in cohort.cases)
    return CohortScan(cohort=cohort, problems=problems, has_manifest_split=has_split)


def split_cases(
    cohort: Cohort,
    mode: str = "fractions",
    *,
    val: float = 0.2,
    test: float = 0.2,
    seed: int = 0,
    folds: int = 5,
    fold: int = 0,
) -> dict[str, list[str]]:
    """The case split the dock's settings describe: ``{"train": [...], "val": [...], "test": [...]}``.

    Parameters
    ----------
    cohort : Cohort
    mode : {"fractions", "manifest", "kfold"}
        Random fractions (``val``, ``test``), the manifest's split column, or fold ``fold`` of
        ``folds`` (``test`` held out first).
    val, test : float
        Shares of the cases for validation and test (``val`` is unused for k-fold).
    seed : int
    folds, fold : int
        k-fold: the number of folds and the one validated on (0-based).

    Raises
    ------
    ValueError
        A setting out of range, "manifest" for a cohort without a split column, or too few cases.
    """
    mode = check_choice(mode, name="mode", choices=SPLIT_MODES)
    seed = check_seed(seed)
    if mode == "manifest":
        return cohort.manifest_split()
    test = check_real_in(test, name="test", low=0.0, high=0.9)
    if mode == "kfold":
        folds = check_int(folds, name="folds", minimum=2)
        fold = check_int(fold, name="fold", minimum=0)
        if fold >= folds:
            raise ValueError(f"fold must be below folds ({folds}), got {fold}; folds count from 0.")
        return cohort.kfold(folds, fold=fold, test=test, seed=seed)
    val = check_real_in(val, name="val", low=0.0, high=0.9)
    return cohort.split(val=val, test=test, seed=seed)


def split_of(split: dict[str, Sequence[str]]) -> dict[str, str]:
    """Case id → the split (``"train"``, ``"val"``, ``"test"``) it is in.

    Examples
    --------
    >>> split_of({"train": ["a", "b"], "val": ["c"], "test": []})
    {'a': 'train', 'b': 'train', 'c': 'val'}
    """
    return {case: name for name in SPLIT_KEYS for case in split.get(name, ())}


def split_summary(split: dict[str, Sequence[str]]) -> str:
    """The split sizes in words.

    Examples
    --------
    >>> split_summary({"train": ["a", "b", "c"], "val": ["d"], "test": []})
    'train 3 · val 1 · test 0 cases'
    """
    return " · ".join(f"{name} {len(split.get(name, ()))}" for name in SPLIT_KEYS) + " cases"


def _fmt_tuple(values: Any, sep: str) -> str:
    if values is None:
        return ""
    if isinstance(values, str):
        return values
    try:
        items = list(values)
    except TypeError:
        return str(values)
    return sep.join(f"{float(v):.3g}" if isinstance(v, (float, np.floating)) else str(v) for v in items)


def table_rows(cohort: Cohort, split: dict[str, Sequence[str]] | None = None) -> list[list[Any]]:
    """Rows ``[case, split, shape, spacing, channels, raters]`` for the dock's case table (the split
    second, so that a narrow dock still shows it).

    ``split`` (see :func:`split_cases`) gives the split column; without it, a row shows the split
    its manifest gave the case (or nothing).
    """
    where = split_of(split) if split is not None else {}
    rows = []
    for row in cohort.table():
        case = str(row["case_id"])
        rows.append([
            case,
            where.get(case, "") if split is not None else (row.get("split") or ""),
            _fmt_tuple(row.get("shape"), "×"),
            _fmt_tuple(row.get("spacing"), "×"),
            int(row.get("channels", 0)),
            int(row.get("raters", 0)),
        ])
    return rows


def prediction_case(split: dict[str, Sequence[str]]) -> str:
    """The case a finished run is shown on: the first test case, else the first validation case, else
    the first training case.

    Examples
    --------
    >>> prediction_case({"train": ["a"], "val": ["b"], "test": []})
    'b'
    """
    for name in ("test", "val", "train"):
        cases = list(split.get(name, ()))
        if cases:
            return str(cases[0])
    raise ValueError(f"split has no case in train, val or test: {split!r}.")


@dataclass(frozen=True)
class CasePrediction:
    """A trained model's prediction on one case of a cohort, placed on the case's grid.

    Attributes
    ----------
    case_id : str
    image : numpy.ndarray or None
        The case's image as read (``(*S)`` for one channel, ``(C, *S)`` for several).
    prediction : Prediction
        ``probabilities``, ``labels``, ``entropy``, ``class_names``.
    image_geometry : Geometry
        Where the case's image lies (spacing, origin, direction).
    geometry : Geometry
        Where the prediction lies (the image's grid, rescaled if the model predicted on another one).
    note : str or None
        Set when the probabilities and entropy are float16 because float32 would not fit (why).
    """

    case_id: str
    image: np.ndarray | None
    prediction: Any
    image_geometry: Geometry
    geometry: Geometry
    note: str | None = None


def predict_case(checkpoint: str, cohort: Cohort, case_id: str, **kwargs: Any) -> CasePrediction:
    """:func:`predict_case_steps` run to the end."""
    steps = predict_case_steps(checkpoint, cohort, case_id, **kwargs)
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            return stop.value


def predict_case_steps(
    checkpoint: str, cohort: Cohort, case_id: str, **kwargs: Any
) -> Generator[Any, None, CasePrediction]:
    """Read case ``case_id`` of ``cohort`` and run ``checkpoint`` on it; a generator for a worker thread.

    The prediction is :func:`~napari_seg_uncertainty.workflow.training.predict_within_memory_steps`'s:
    float32, or float16 when only that fits (``CasePrediction.note`` says so, for a warning); its progress
    records are yielded. ``kwargs`` go to :func:`~napari_seg_uncertainty.core.training.predict`.

    Raises
    ------
    ValueError
        The case has no image.
    OutputTooLargeError
        The prediction does not fit even in float16 (the message names the sizes and what to do).
    """
    data = cohort.load_case(case_id)
    if data.image is None:
        raise ValueError(f"case {case_id!r} has no image to predict on; choose a cohort whose cases have images.")
    image = np.asarray(data.image)
    if image.ndim > len(data.spacing) and image.shape[0] == 1:
        image = image[0]
    fitted = yield from predict_within_memory_steps(checkpoint, image, **kwargs)
    prediction = fitted.prediction
    direction = None if data.direction is None else np.asarray(data.direction, dtype=float)
    image_geometry = Geometry(spacing=tuple(data.spacing), origin=tuple(data.origin), direction=direction)
    spatial = tuple(image.shape[-len(data.spacing):])
    geometry = prediction_geometry(image_geometry, spatial, tuple(prediction.labels.shape))
    return CasePrediction(case_id=str(case_id), image=image, prediction=prediction,
                          image_geometry=image_geometry, geometry=geometry, note=fitted.note)
