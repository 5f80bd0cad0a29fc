"""The one place that imports ``zarr``: version 3 or an ImportError that says what to do instead.

``zarr`` is an optional dependency (``zarr>=3; python_version >= '3.11'``): a 3-D SSN's distribution
kept on disk (:mod:`.ssn.store`) and ``predict(out='….zarr')`` use zarr 3's API (``create_array``,
``compressors=``). zarr 3 needs Python >= 3.11, and a napari environment on Python 3.10 often has zarr 2,
whose API differs (``AttributeError``/``TypeError`` deep inside a write). :func:`require_zarr` turns both
cases into one :class:`ImportError` naming the requirement and the alternatives, which callers (and the
SSN dock) can catch.
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["ZARR_ALTERNATIVES", "require_zarr"]

#: What works without zarr, appended to the error.
ZARR_ALTERNATIVES = (
    "without it: use a 2-D SSN (its planes are computed when shown, nothing is written to disk), "
    "and for predictions give out= a path ending in .npy (a memory-mapped NumPy file)"
)


def _major(version: str) -> int | None:
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        return None


def require_zarr(purpose: str = "keeping arrays on disk") -> Any:
    """The ``zarr`` module (version 3 or later), or an ImportError saying what is needed and what works instead.

    Parameters
    ----------
    purpose : str
        What needs zarr, for the message (e.g. ``"keeping a 3-D SSN distribution on disk"``).

    Returns
    -------
    module
        ``zarr``.

    Raises
    ------
    ImportError
        If zarr is missing or older than 3; the message names "zarr >= 3 (needs Python >= 3.11)", the
        Python in use, and the alternatives (:data:`ZARR_ALTERNATIVES`).

    Examples
    --------
    >>> try:
    ...     zarr = require_zarr("a test")
    ... except ImportError as exc:
    ...     assert "zarr >= 3 (needs Python >= 3.11)" in str(exc)
    """
    python = ".".join(str(v) for v in sys.version_info[:3])
    needs = f"{purpose} needs zarr >= 3 (needs Python >= 3.11; this is Python {python})"
    how = "pip install 'zarr>=3'" if sys.version_info >= (3, 11) else "a Python >= 3.11 environment"
    try:
        import zarr
    except ImportError as exc:
        raise ImportError(f"{needs}, which is not installed: {how}; {ZARR_ALTERNATIVES}.") from exc
    version = str(getattr(zarr, "__version__", "0"))
    major = _major(version)
    if major is None or major < 3:
        raise ImportError(f"{needs}, but zarr {version} is installed: {how}; {ZARR_ALTERNATIVES}.")
    return zarr
