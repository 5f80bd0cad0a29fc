"""Cohort manifests: a CSV or YAML file listing each case's id, image channel files, rater files and split.

CSV columns: ``case_id``, ``image`` (one path, or several separated by ``;`` — the channels in order;
empty when there is no image), ``raters`` (paths separated by ``;``, a folder or a glob) and an optional
``split`` (``train``/``val``/``test``). YAML: ``{"cases": [{"case_id": ..., "image": ... or [...],
"raters": [...], "split": ...}, ...], "class_names": [...]}`` (a bare list of cases is accepted too).
Relative paths are relative to the manifest's folder.
"""

from __future__ import annotations

import csv
import glob
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..io import is_supported_file
from ..raters.loading import _IMAGE_NAME, _natural_key
from .scan import CaseFiles, CohortProblem, ScanError, case_files_from_folder

__all__ = ["MANIFEST_SUFFIXES", "Manifest", "read_manifest"]

MANIFEST_SUFFIXES = (".csv", ".yaml", ".yml")
SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
               "test": "test", "testing": "test"}


@dataclass
class Manifest:
    """The rows of a manifest resolved to files, plus what could not be resolved."""

    path: str
    cases: list[CaseFiles] = field(default_factory=list)
    problems: list[CohortProblem] = field(default_factory=list)
    class_names: list[str] | None = None
    has_split: bool = False


def read_manifest(path: str | os.PathLike, *, task: int | None = None) -> Manifest:
    """Read a CSV or YAML manifest into case file lists (no image header is read here).

    Parameters
    ----------
    path : str or path-like
        The ``.csv``, ``.yaml`` or ``.yml`` manifest.
    task : int, optional
        QUBIQ task when a ``raters`` entry is a QUBIQ case folder.

    Returns
    -------
    Manifest
        One :class:`CaseFiles` per usable row; rows with a duplicate ``case_id``, no rater or a bad
        ``split`` value become problems naming the case and the manifest.

    Raises
    ------
    ValueError
        If the file cannot be parsed or lacks the ``case_id`` / ``raters`` columns.

    Examples
    --------
    >>> import tempfile, os
    >>> d = tempfile.mkdtemp()
    >>> p = os.path.join(d, "cohort.csv")
    >>> _ = open(p, "w").write("case_id,image,raters,split\\na,a/t1.nii.gz;a/t2.nii.gz,a/r1.nii.gz;a/r2.nii.gz,val\\n")
    >>> m = read_manifest(p)
    >>> [os.path.basename(f) for f in m.cases[0].image_files], m.cases[0].split, m.has_split
    (['t1.nii.gz', 't2.nii.gz'], 'val', True)
    """
    path = Path(path).resolve()
    suffix = path.suffix.lower()
    if suffix == ".csv":
        rows, class_names = _csv_rows(path), None
    elif suffix in (".yaml", ".yml"):
        rows, class_names = _yaml_rows(path)
    else:
        raise ValueError(f"manifest {str(path)!r} must be a .csv, .yaml or .yml file, got {suffix or 'no suffix'!r}.")
    manifest = Manifest(str(path), class_names=class_names)
    seen: set[str] = set()
    for number, row in enumerate(rows, start=1):
        cid = _text(row.get("case_id"))
        if not cid:
            manifest.problems.append(CohortProblem(f"row {number}", str(path), "the row has no case_id; give every "
                                                                               "case a unique id."))
            continue
        if cid in seen:
            manifest.problems.append(CohortProblem(cid, str(path), f"case_id {cid!r} appears more than once in the "
                                                                   "manifest (row {number}); case ids must be "
                                                                   "unique.".replace("{number}", str(number))))
            continue
        seen.add(cid)
        split_text = _text(row.get("split")).lower()
        if split_text:
            manifest.has_split = True
        if split_text and split_text not in SPLIT_NAMES:
            manifest.problems.append(CohortProblem(cid, str(path), f"split {split_text!r} is not one of train, "
                                                                   "val, test."))
            continue
        try:
            images = [_resolve(path.parent, p) for p in _entries(row.get("image"), "image", cid)]
            raters = _rater_files(path.parent, _entries(row.get("raters"), "raters", cid), cid, task)
        except ScanError as exc:
            manifest.problems.append(CohortProblem(cid, exc.file or str(path), exc.message))
            continue
        manifest.cases.append(CaseFiles(cid, "manifest", images, raters, SPLIT_NAMES.get(split_text)))
    return manifest


def _csv_rows(path: Path) -> list[dict[str, Any]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            columns = [c.strip() for c in (reader.fieldnames or [])]
            reader.fieldnames = columns
            rows = [row for row in reader if any(_text(v) for v in row.values())]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ValueError(f"could not read manifest {str(path)!r}: {exc}.") from exc
    for needed in ("case_id", "raters"):
        if needed not in columns:
            raise ValueError(f"manifest {str(path)!r} has columns {columns}; it needs 'case_id' and 'raters' "
                             "(and optionally 'image', 'split').")
    return rows


def _yaml_rows(path: Path) -> tuple[list[dict[str, Any]], list[str] | None]:
    import yaml

    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ValueError(f"could not read manifest {str(path)!r}: {exc}.") from exc
    class_names = None
    if isinstance(data, dict):
        class_names = data.get("class_names")
        if class_names is not None and (not isinstance(class_names, list)
                                        or not all(isinstance(c, str) for c in class_names)):
            raise ValueError(f"manifest {str(path)!r}: class_names must be a list of names, got {class_names!r}.")
        data = data.get("cases")
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise ValueError(f"manifest {str(path)!r} must hold {{'cases': [{{case_id, image, raters, split}}, ...]}} "
                         "(a list of mappings, one per case).")
    return data, class_names


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def _entries(value: Any, column: str, cid: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        items = [_text(v) for v in value]
    elif isinstance(value, str):
        items = [v.strip() for v in value.split(";")]
    else:
        raise ScanError(f"{column} must be a path or a list of paths, got {type(value).__name__} {value!r}.")
    return [v for v in items if v]


def _resolve(base: Path, entry: str) -> str:
    p = Path(os.path.expanduser(entry))
    return str(p if p.is_absolute() else base / p)


def _rater_files(base: Path, entries: list[str], cid: str, task: int | None) -> list[str]:
    """Rater files from paths, a folder (any :func:`load_raters` layout) or glob patterns."""
    if not entries:
        raise ScanError("the case lists no rater file; give at least one rater's label map.")
    files: list[str] = []
    for entry in entries:
        full = _resolve(base, entry)
        if any(ch in entry for ch in "*?["):
            matches = sorted((f for f in glob.glob(full) if os.path.isfile(f)), key=_natural_key)
            if not matches:
                raise ScanError(f"the rater pattern {entry!r} matches no file.", full)
            files += [f for f in matches if is_supported_file(f) and not _IMAGE_NAME.match(Path(f).name)]
        elif os.path.isdir(full):
            files += case_files_from_folder(full, task=task, case_id=cid).rater_files
        else:
            files.append(full)
    return files
