"""Refuse work whose arrays cannot fit in memory, before allocating them.

Functions whose output size is set by a parameter (``num_classes``, ``n``, ``shape``, ``rank``) or by a
file header call :func:`check_allocation` with the number of bytes they are about to allocate. When that
exceeds the memory the machine (or its container) has available, a :class:`OutputTooLargeError` says
which argument asked for how much, instead of a half-allocated array, a swapping machine or the kernel's
out-of-memory killer.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from math import prod
from typing import Any

import numpy as np

__all__ = [
    "MEMORY_FRACTION",
    "OutputTooLargeError",
    "array_bytes",
    "available_memory_bytes",
    "check_allocation",
    "check_disk_space",
    "format_bytes",
]

#: Largest fraction of the available memory that one operation may ask for.
MEMORY_FRACTION = 0.9

_CGROUP_FILES = (
    ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),  # cgroup v2
    ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),  # v1
)
#: Where the cgroup hierarchies are mounted, and the file naming this process's cgroups.
_CGROUP_ROOT = "/sys/fs/cgroup"
_PROC_CGROUP = "/proc/self/cgroup"


class OutputTooLargeError(MemoryError, ValueError):
    """An operation would need more memory than is available; raised before anything is allocated.

    It is both a :class:`MemoryError` (what it is) and a :class:`ValueError` (the argument that asked for
    the size is what the caller has to change), so ``except ValueError`` in callers and widgets catches it.
    """


def _read_int(path: str) -> int | None:
    try:
        with open(path) as handle:
            text = handle.read().strip()
    except OSError:
        return None
    try:
        return int(text)
    except ValueError:  # "max": no limit
        return None


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _sysconf_bytes(pages_name: str) -> int | None:
    try:
        pages = os.sysconf(pages_name)
        page_size = os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None
    if pages <= 0 or page_size <= 0:
        return None
    return int(pages) * int(page_size)


def _address_space_headroom() -> int | None:
    """Bytes of address space left under ``RLIMIT_AS`` (``ulimit -v``), or None without a limit.

    A process capped this way gets a failed ``malloc`` (a ``MemoryError``, or a crash inside a C
    library) long before the machine runs out of RAM; the headroom is the soft limit minus the
    virtual size the process already has (``VmSize`` of ``/proc/self/status``).
    """
    try:
        import resource
    except ImportError:  # Windows
        return None
    try:
        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    except (ValueError, OSError):
        return None
    if soft == resource.RLIM_INFINITY or soft <= 0:
        return None
    used = _vm_size()
    return max(int(soft) - (used or 0), 0)


def _vm_size() -> int | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _own_cgroup_files() -> list[tuple[str, str]]:
    """``(limit, usage)`` files of this process's memory cgroup and of its ancestors (``/proc/self/cgroup``).

    A limit may be set on the process's own cgroup or any ancestor, not only at the mount's root; where a
    cgroup namespace makes the mount's root the process's cgroup, the paths do not exist and only the
    root files (:data:`_CGROUP_FILES`) count.
    """
    try:
        with open(_PROC_CGROUP) as handle:
            lines = handle.read().splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3 or not parts[2].startswith("/"):
            continue
        if parts[0] == "0" and parts[1] == "":  # v2 unified hierarchy
            root, names = _CGROUP_ROOT, ("memory.max", "memory.current")
        elif "memory" in parts[1].split(","):  # v1 memory controller
            root, names = os.path.join(_CGROUP_ROOT, "memory"), ("memory.limit_in_bytes", "memory.usage_in_bytes")
        else:
            continue
        relative = parts[2].strip("/")
        while relative:
            directory = os.path.join(root, relative)
            if os.path.isdir(directory):
                found.append((os.path.join(directory, names[0]), os.path.join(directory, names[1])))
            relative = os.path.dirname(relative)
    return found


def _inactive_file(usage_file: str) -> int:
    """Reclaimable page cache charged to the cgroup of ``usage_file`` (``memory.stat`` beside it), else 0.

    The usage (v2 ``memory.current``, v1 ``usage_in_bytes``) counts file pages, which the kernel drops
    before any out-of-memory kill: after writing a prediction to disk it would read as used memory. Like
    docker's and the kubelet's working set, the inactive file pages are subtracted (v1: the hierarchical
    ``total_inactive_file``).
    """
    keys = ("inactive_file",) if usage_file.endswith("memory.current") else ("total_inactive_file", "inactive_file")
    values: dict[str, int] = {}
    try:
        with open(os.path.join(os.path.dirname(usage_file), "memory.stat")) as handle:
            for line in handle:
                name, _, value = line.partition(" ")
                if name in keys:
                    values[name] = int(value)
    except (OSError, ValueError):
        return 0
    return next((values[k] for k in keys if k in values), 0)


def _cgroup_headroom() -> int | None:
    """Bytes left under the tightest cgroup memory limit (v2 or v1) of this process, or None without one.

    Each limit (the mount's root and this process's cgroup and its ancestors) minus that cgroup's usage
    without its inactive page cache (:func:`_inactive_file`).
    """
    headrooms = []
    for limit_file, usage_file in dict.fromkeys([*_CGROUP_FILES, *_own_cgroup_files()]):
        limit = _read_int(limit_file)
        if limit is None or limit >= 1 << 60:
            continue
        usage = _read_int(usage_file) or 0
        headrooms.append(max(limit - max(usage - _inactive_file(usage_file), 0), 0))
    return min(headrooms) if headrooms else None


def available_memory_bytes() -> int | None:
    """Bytes of memory a new allocation can use now: free RAM, capped by the container and address-space limits.

    Returns
    -------
    int or None
        The smallest of ``MemAvailable`` of ``/proc/meminfo`` (elsewhere the free or, failing that, the
        total physical memory), the headroom under a cgroup memory limit (v2 ``memory.max`` or v1
        ``memory.limit_in_bytes``, minus the current usage) and the headroom under ``RLIMIT_AS``
        (``resource.getrlimit``, minus the process's current virtual size); ``None`` when the platform
        reports nothing.

    Examples
    --------
    >>> available = available_memory_bytes()
    >>> available is None or available > 0
    True
    """
    candidates = [
        value
        for value in (
            _meminfo_available() or _sysconf_bytes("SC_AVPHYS_PAGES") or _sysconf_bytes("SC_PHYS_PAGES"),
            _cgroup_headroom(),
            _address_space_headroom(),
        )
        if value is not None
    ]
    return min(candidates) if candidates else None


def array_bytes(shape: Sequence[int], dtype: Any) -> int:
    """Exact size in bytes of an array of ``shape`` and ``dtype`` (Python integers: no overflow).

    Examples
    --------
    >>> array_bytes((10**6, 10**6), "float32")
    4000000000000
    """
    return prod(int(s) for s in shape) * np.dtype(dtype).itemsize


def format_bytes(nbytes: float) -> str:
    """Human-readable size, e.g. ``'1.5 GiB'``.

    Examples
    --------
    >>> format_bytes(3 * 2**30 // 2)
    '1.5 GiB'
    """
    value = float(nbytes)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if value < 1024 or unit == "PiB":
            return f"{int(value)} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def check_allocation(nbytes: int, *, what: str, cause: str, advice: str = "") -> None:
    """Raise :class:`OutputTooLargeError` when ``nbytes`` do not fit in the available memory.

    Parameters
    ----------
    nbytes : int
        Bytes the caller is about to allocate (its output plus its large temporaries).
    what : str
        What would be allocated, e.g. ``"the one-hot map (C, *spatial) float32"``.
    cause : str
        The arguments that ask for this size, with their values, e.g. ``"num_classes=1000000"``.
    advice : str, optional
        What to do instead.

    Raises
    ------
    OutputTooLargeError
        If ``nbytes`` exceeds :data:`MEMORY_FRACTION` of :func:`available_memory_bytes`.

    Examples
    --------
    >>> check_allocation(1024, what="a small array", cause="n=1")
    >>> try:
    ...     check_allocation(2**80, what="the samples", cause="n=10**20")
    ... except MemoryError as exc:
    ...     print(str(exc)[:32])
    n=10**20: the samples would need
    """
    available = available_memory_bytes()
    if available is None:
        return
    budget = int(available * MEMORY_FRACTION)
    if int(nbytes) <= budget:
        return
    message = (
        f"{cause}: {what} would need {format_bytes(nbytes)}, more than the {format_bytes(available)} of "
        "memory available"
    )
    raise OutputTooLargeError(f"{message}; {advice or 'use smaller inputs or parameters'}.")


def _mount_type(directory: str) -> str | None:
    """File-system type of the mount holding ``directory`` (``/proc/mounts``, longest mount point), or None."""
    try:
        with open("/proc/mounts") as handle:
            mounts = [line.split()[1:3] for line in handle if len(line.split()) >= 3]
    except OSError:
        return None
    real = os.path.realpath(directory)
    best, kind = "", None
    for point, fstype in mounts:
        point = point.replace("\\040", " ")
        inside = real == point or real.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, fstype
    return kind


def check_disk_space(nbytes: int, directory: str | os.PathLike, *, what: str, cause: str, advice: str = "") -> None:
    """Raise :class:`OutputTooLargeError` when ``nbytes`` to be written under ``directory`` do not fit on its disk.

    ``directory`` (or, if it does not exist yet, its nearest existing parent) must have ``nbytes`` free
    beyond a 10 % margin (``shutil.disk_usage``). On a memory-backed file system (``tmpfs``/``ramfs``,
    e.g. ``/tmp`` on Fedora and Arch) the files are RAM: ``nbytes`` must then also pass
    :func:`check_allocation`, and the message says so.

    Parameters
    ----------
    nbytes : int
        Bytes about to be written.
    directory : str or path-like
        Where they go.
    what, cause, advice : str
        As for :func:`check_allocation`.

    Raises
    ------
    OutputTooLargeError
        If the disk (or, on tmpfs, the memory) has too little room; the message names the directory.

    Examples
    --------
    >>> import tempfile
    >>> check_disk_space(1024, tempfile.gettempdir(), what="a small file", cause="n=1")
    """
    import shutil

    path = os.path.abspath(os.fspath(directory))
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    kind = _mount_type(path)
    in_memory = kind in ("tmpfs", "ramfs")
    where = f"{path!r}" + (f" (a {kind}: its files are kept in memory)" if in_memory else "")
    advice = advice or "write to a directory on a disk with more free space"
    try:
        free = shutil.disk_usage(path).free
    except OSError:
        free = None
    if free is not None and int(nbytes) > int(free * MEMORY_FRACTION):
        raise OutputTooLargeError(
            f"{cause}: {what} would need {format_bytes(nbytes)} on disk, more than the {format_bytes(free)} "
            f"free in {where}; {advice}."
        )
    if in_memory:
        check_allocation(nbytes, what=f"{what} in {where}", cause=cause, advice=advice)
