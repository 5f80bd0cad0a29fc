"""Where a reviewer's annotation goes, and writing it without ever replacing a file.

A case of a folder cohort (generic, QUBIQ or MSSEG-2016 layout) gains the annotation as one more
rater file beside its raters, named as the next rater of that layout, so that
:func:`~napari_seg_uncertainty.core.cohort.load_cohort` reads it as rater ``R + 1`` and the cohort
grows. An ``.npz`` archive or a manifest cannot be extended in place (nor can a case whose cohort
resamples it on load: the annotation lies on the resampled grid), so the annotation goes to
``<cohort folder>/_annotations/<case_id>/<kind>_<n>.nii.gz`` instead; the leading underscore keeps a
folder scan of the cohort from reading that folder as a case.
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ...core._numeric import label_dtype
from ...core._validation import describe
from ...core.io import file_suffix, write_image

__all__ = ["ANNOTATION_KINDS", "ANNOTATIONS_FOLDER", "AnnotationTarget", "annotation_target", "check_labels",
           "label_digest", "write_exclusive"]

#: What a saved annotation is: a kept SSN sample or an edited prediction.
ANNOTATION_KINDS = ("ssn_sample", "edited")
#: Folder (inside the cohort's folder) for annotations that cannot join their case.
ANNOTATIONS_FOLDER = "_annotations"

_QUBIQ = re.compile(r"^task(\d+)_seg(\d+)$", re.IGNORECASE)
_MSSEG = re.compile(r"^(ManualSegmentation_)(\d+)$", re.IGNORECASE)
_NUMBERED = re.compile(r"^(.*?)(\d+)$")
_LAYOUTS_BESIDE = ("generic", "qubiq", "msseg")
#: Formats whose header names a second data file (``.mhd`` + ``.raw``, ``.nhdr`` + ``.raw``).
_DETACHED_SUFFIXES = (".mhd", ".nhdr")
#: Tries of the next number before giving up (another writer racing for the same names).
_MAX_TRIES = 1000


@dataclass(frozen=True)
class AnnotationTarget:
    """Where an annotation of one case is written.

    Attributes
    ----------
    folder : pathlib.Path
        The folder of the file.
    prefix, suffix : str
        File names are ``<prefix><number><suffix>``.
    start, width : int
        The first number tried and its zero-padded width; the first free name is taken.
    in_cohort : bool
        True when the file joins the case as one more rater.
    """

    folder: Path
    prefix: str
    start: int
    width: int
    suffix: str
    in_cohort: bool

    def name(self, k: int) -> str:
        """The ``k``-th candidate file name."""
        return f"{self.prefix}{self.start + k:0{self.width}d}{self.suffix}"


def _stem(path: str) -> tuple[str, str]:
    suffix = file_suffix(path)
    name = os.path.basename(path)
    return name[: len(name) - len(suffix)] if suffix else name, suffix


def _beside(info: Any) -> AnnotationTarget | None:
    """The next rater file name of a folder case in its own layout, or None when the names do not say."""
    files = list(info.rater_files)
    last = files[-1]
    stem, suffix = _stem(last)
    folder = Path(last).parent
    if info.layout == "qubiq":
        match = _QUBIQ.match(stem)
        if match is None:
            return None
        task, seg = match.group(1), match.group(2)
        top = max(int(_QUBIQ.match(_stem(f)[0]).group(2)) for f in files)  # type: ignore[union-attr]
        return AnnotationTarget(folder, f"task{task}_seg", top + 1, len(seg), suffix, True)
    pattern = _MSSEG if info.layout == "msseg" else _NUMBERED
    match = pattern.match(stem)
    if match is None:
        return AnnotationTarget(folder, "rater_", len(files) + 1, 1, ".nii.gz", True)
    prefix = match.group(1)
    numbers = [int(m.group(2)) for f in files if (m := pattern.match(_stem(f)[0])) and m.group(1) == prefix]
    return AnnotationTarget(folder, prefix, max(numbers) + 1, len(match.group(2)), suffix or ".nii.gz", True)


def annotation_target(info: Any, *, source: str, kind: str, resampled: bool) -> AnnotationTarget:
    """Where an annotation of the case ``info`` (a ``CaseInfo``) goes.

    Parameters
    ----------
    info : CaseInfo
        The case, from the cohort's header scan.
    source : str
        The cohort's source (folder, ``.npz`` or manifest).
    kind : {"ssn_sample", "edited"}
        Names the file when it does not join the case.
    resampled : bool
        Whether the cohort resamples this case on load (the annotation is then on another grid than the
        case's files).

    Returns
    -------
    AnnotationTarget
    """
    if info.layout in _LAYOUTS_BESIDE and not resampled:
        beside = _beside(info)
        if beside is not None:
            return beside
    root = Path(source) if Path(source).is_dir() else Path(source).parent
    return AnnotationTarget(root / ANNOTATIONS_FOLDER / info.case_id, f"{kind}_", 1, 1, ".nii.gz", False)


def check_labels(labels: Any, *, shape: tuple[int, ...], num_classes: int, case_id: str) -> np.ndarray:
    """``labels`` as an unsigned integer label map of ``shape`` with classes below ``num_classes``.

    Raises
    ------
    TypeError
        Not an integer (or boolean) array.
    ValueError
        The wrong shape, a negative label or a class ``>= num_classes``.
    """
    if hasattr(labels, "detach"):  # a torch tensor
        labels = labels.detach().cpu().numpy()
    arr = np.asarray(labels) if not isinstance(labels, (str, bytes)) and labels is not None else None
    if arr is None or not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool):
        raise TypeError(f"labels must be an integer label map (a napari Labels layer's data), got {describe(labels)}.")
    if tuple(arr.shape) != tuple(shape):
        raise ValueError(f"labels have shape {tuple(arr.shape)} but case {case_id!r} has shape {tuple(shape)}; save "
                         "a label map on the case's grid (an SSN sample or the edited prediction of this case).")
    if arr.size and int(arr.min()) < 0:
        raise ValueError(f"labels hold the negative label {int(arr.min())}; labels are classes 0 … {num_classes - 1}.")
    if arr.size and int(arr.max()) >= num_classes:
        raise ValueError(f"labels hold class {int(arr.max())} but the cohort has {num_classes} classes "
                         f"(0 … {num_classes - 1}); relabel the voxels of the unknown class before saving.")
    return arr.astype(label_dtype(num_classes), copy=False)


def write_exclusive(
    target: AnnotationTarget, labels: np.ndarray, *, spacing: Any, origin: Any, direction: Any
) -> Path:
    """Write ``labels`` under the first free name of ``target``; never replaces a file.

    The label map is written to a hidden temporary file in the target folder and hard-linked to its
    name, which fails when the name exists (exclusive create, also against another writer); the next
    name is then tried. The temporary file has the target's suffix, so the file is in the format its
    name says. Where the file system has no hard links, or the format keeps its data in a second file
    (``.mhd``, ``.nhdr``), the file is written with :func:`~napari_seg_uncertainty.core.io.write_image`
    (which refuses an existing file).

    Returns
    -------
    pathlib.Path
        The file written.
    """
    target.folder.mkdir(parents=True, exist_ok=True)
    if target.suffix.lower() in _DETACHED_SUFFIXES:  # a header and a data file: one hard link would not do
        return _write_each(target, labels, spacing=spacing, origin=origin, direction=direction)
    # hidden (a cohort scan skips it) and in the target's format, so that the linked name reads back
    temporary = target.folder / f".review-{uuid.uuid4().hex}{target.suffix}"
    write_image(temporary, labels, spacing=spacing, origin=origin, direction=direction)
    try:
        for k in range(_MAX_TRIES):
            path = target.folder / target.name(k)
            if path.exists():
                continue
            try:
                os.link(temporary, path)
            except FileExistsError:
                continue
            except OSError:  # no hard links here: write_image refuses an existing file itself
                return _write_each(target, labels, spacing=spacing, origin=origin, direction=direction, first=k)
            return path
    finally:
        temporary.unlink(missing_ok=True)
    raise _no_free_name(target)


def _write_each(
    target: AnnotationTarget, labels: np.ndarray, *, spacing: Any, origin: Any, direction: Any, first: int = 0
) -> Path:
    """Write ``labels`` under the first free name from the ``first``-th on with
    :func:`~napari_seg_uncertainty.core.io.write_image`, which refuses an existing file."""
    for k in range(first, _MAX_TRIES):
        path = target.folder / target.name(k)
        if path.exists():
            continue
        try:
            return Path(write_image(path, labels, spacing=spacing, origin=origin, direction=direction))
        except FileExistsError:
            continue
    raise _no_free_name(target)


def _no_free_name(target: AnnotationTarget) -> FileExistsError:
    return FileExistsError(f"no free annotation name in {str(target.folder)!r} after {_MAX_TRIES} tries "
                           f"({target.name(0)} …).")


def label_digest(labels: np.ndarray) -> str:
    """SHA-256 of a label map's shape and values (dtype-independent), to recognise a second copy of it."""
    values = np.ascontiguousarray(labels, dtype=np.int64)
    digest = hashlib.sha256(repr(values.shape).encode())
    digest.update(values.tobytes())
    return digest.hexdigest()
