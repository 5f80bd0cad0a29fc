"""Tables as CSV files: rows of dicts written atomically, never over a user's file unless asked.

Used by the headless demo, the *Calibration* dock's export and the saved evaluations and study tables.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..core._atomic import atomic_write
from ..core._validation import describe

__all__ = ["plain", "read_rows", "refuse_existing", "write_csv", "write_rows"]


def plain(value: Any) -> Any:
    """JSON/CSV-friendly value: numpy scalars and arrays become Python scalars and lists, tuples lists.

    Examples
    --------
    >>> plain(np.float32(0.5)), plain(np.arange(2)), plain((1, 2)), plain("a")
    (0.5, [0, 1], [1, 2], 'a')
    """
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, tuple):
        return list(value)
    return value


def refuse_existing(*paths: str | os.PathLike, overwrite: bool) -> None:
    """Raise :class:`FileExistsError` naming those of ``paths`` that exist, unless ``overwrite``.

    Checked before a multi-file export writes anything, so that it writes all its files or none.
    """
    existing = [str(p) for p in paths if Path(p).exists()]
    if existing and not overwrite:
        raise FileExistsError(
            f"{', '.join(repr(p) for p in existing)} already exist(s); choose another name or pass "
            "overwrite=True."
        )


def write_rows(path: str | os.PathLike, rows: Sequence[dict[str, Any]], *, overwrite: bool) -> Path:
    """Write dict rows as a CSV table and return its path.

    The columns are the keys of all rows in order of first appearance (a row without a key leaves
    that cell empty); values pass through :func:`plain`. The table goes to a temporary file renamed
    into place (:func:`~napari_seg_uncertainty.core._atomic.atomic_write`), so an interrupted
    export leaves no half-written file.

    Parameters
    ----------
    path : str or os.PathLike
        The CSV file; its folder is created if missing.
    rows : sequence of dict
        The table, one dict per row (none: a file with an empty header line).
    overwrite : bool
        Replace an existing file; otherwise :class:`FileExistsError`.

    Returns
    -------
    pathlib.Path
        ``path``.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "t.csv"
    >>> print(write_rows(target, [{"a": 1}, {"a": 2, "b": np.float64(0.5)}], overwrite=False).read_text())
    a,b
    1,
    2,0.5
    <BLANKLINE>
    """
    path = Path(path)
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    with atomic_write(path, overwrite=overwrite) as temporary, open(temporary, "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: plain(v) for k, v in row.items()})
    return path


def read_rows(
    path: str | os.PathLike, *, columns: Mapping[str, Callable[[str], Any]] | Sequence[str] | None = None
) -> tuple[dict[str, Any], ...]:
    """Read a CSV table written by :func:`write_rows` back as dict rows.

    Parameters
    ----------
    path : str or os.PathLike
        The CSV file.
    columns : mapping of str to callable, or sequence of str, optional
        Columns the table must have; a mapping also gives each one's conversion from the cell's text
        (e.g. ``{"value": float}``). Other columns stay text.

    Returns
    -------
    tuple of dict
        One dict per row, keyed by the header line.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        A column of ``columns`` is missing, or a cell does not convert (the file and line are named).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> target = write_rows(pathlib.Path(tempfile.mkdtemp()) / "t.csv", [{"a": "x", "b": 0.5}], overwrite=False)
    >>> read_rows(target, columns={"b": float})
    ({'a': 'x', 'b': 0.5},)
    """
    path = Path(path)
    if isinstance(columns, str) or not isinstance(columns, (Mapping, Sequence, type(None))):
        raise TypeError(
            f"columns must be a mapping of column to conversion or a list of columns, got {describe(columns)}."
        )
    convert = dict(columns) if isinstance(columns, Mapping) else dict.fromkeys(columns or (), str)
    if not path.is_file():
        raise FileNotFoundError(f"the table {str(path)!r} does not exist.")
    # the same encoding as write_rows, so that a table reads back as written
    with open(path, newline="") as stream:
        reader = csv.DictReader(stream)
        missing = [c for c in convert if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{str(path)!r} lacks the column(s) {missing}.")
        rows = []
        for line, row in enumerate(reader, start=2):
            try:
                rows.append({k: convert.get(k, str)(v) for k, v in row.items()})
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{str(path)!r}, line {line}: {exc}.") from exc
    return tuple(rows)


def write_csv(path: str | os.PathLike, rows: Sequence[dict[str, Any]], *, overwrite: bool = False) -> Path:
    """Export ``rows`` (at least one) as CSV with :func:`write_rows`; an empty table is refused.

    Raises
    ------
    ValueError
        ``rows`` is empty: there is nothing to export yet.
    FileExistsError
        ``path`` exists and ``overwrite`` is False.
    """
    if not rows:
        raise ValueError("nothing to export: compute the calibration first.")
    return write_rows(path, rows, overwrite=overwrite)
