"""One atomic write for every file the package produces.

A writer never leaves a half-written file where the user expects a result, and never replaces an
existing file unless asked to: the content goes to a temporary file in the target's folder, which
is renamed onto the target (``os.replace`` is atomic on one file system) only once it is complete.
The file gets the permissions an ordinary ``open(path, "w")`` would give it (``0o666`` less the
process umask), not the owner-only mode of a temporary file, so results and annotations on shared lab
storage stay readable by the group as usual.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_write", "current_umask"]


@contextmanager
def atomic_write(path: str | os.PathLike, *, overwrite: bool, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it onto ``path`` when the block succeeds.

    Parameters
    ----------
    path : str or os.PathLike
        The file to write. Its folder is created if missing.
    overwrite : bool
        Replace an existing ``path``. When False and ``path`` exists, :class:`FileExistsError` is
        raised before anything is written.
    suffix : str, optional
        Suffix of the temporary file (default: ``path``'s own suffix), for writers that pick the
        format from the file name (SimpleITK, matplotlib).

    Raises
    ------
    FileExistsError
        ``path`` exists and ``overwrite`` is False.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "table.csv"
    >>> with atomic_write(target, overwrite=False) as temporary:
    ...     _ = temporary.write_text("a,b\\n")
    >>> target.read_text()
    'a,b\\n'
    """
    target = Path(path)
    if not overwrite and target.exists():
        raise FileExistsError(f"{str(target)!r} already exists; choose another file name or allow overwriting it.")
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=target.suffix if suffix is None else suffix, dir=target.parent
    )
    os.close(handle)
    temporary_path = Path(temporary)
    try:
        yield temporary_path
        if not overwrite and target.exists():  # appeared while we wrote: keep what is there
            raise FileExistsError(f"{str(target)!r} appeared while it was being written; choose another file name.")
        os.chmod(temporary_path, 0o666 & ~current_umask())  # mkstemp creates 0o600
        os.replace(temporary_path, target)
    finally:
        temporary_path.unlink(missing_ok=True)


def current_umask() -> int:
    """The process umask, read without changing it where the system allows (Linux ``/proc``).

    ``os.umask`` can only be read by setting it, which briefly changes it for every thread; the
    ``Umask:`` line of ``/proc/self/status`` avoids that. Elsewhere the set-and-restore is used.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
