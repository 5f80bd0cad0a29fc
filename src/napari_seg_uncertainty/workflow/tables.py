"""Tables as CSV files: rows of dicts written atomically, never over a user's file unless asked.

Used by the headless demo and by the *Calibration* dock's export.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..core._atomic import atomic_write

__all__ = ["plain", "refuse_existing", "write_csv", "write_rows"]


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
