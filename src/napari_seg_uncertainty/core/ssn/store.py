"""A 3-D SSN distribution kept on disk (zarr), written slab by slab and read back one plane at a time.

A 3-D SSN's sliding-window inference on a whole CT would hold the stitched output of ``(2 + K) * C``
maps (11 GB at 300×512×512, rank 10, 3 classes).  :func:`write_slabs` runs it on slabs along ``Z``
instead.  MONAI places windows at ``0, i, 2i, ...`` (``i = int(roi * (1 - overlap))``) and the last
one flush with the end, and averages them with Gaussian weights; a slab that starts on a window
start and spans a whole number of windows gets exactly the windows of the whole-volume run that lie
inside it (:func:`plan_slabs` checks this against :func:`monai.data.utils.dense_patch_slices`).  Each
slab keeps only the planes all of whose covering windows lie inside it, so every plane is stitched
from the same windows, with the same weights, in the same order as in the whole-volume run.

References
----------
.. [1] Monteiro, M., et al. "Stochastic Segmentation Networks: Modelling Spatially Correlated
   Aleatoric Uncertainty." NeurIPS 2020.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._memory import array_bytes, available_memory_bytes, check_allocation, check_disk_space
from .._validation import check_int
from .._zarr import require_zarr as _require_zarr
from .lazy import PlaneParameters, PlaneSource

__all__ = ["Slab", "ZarrPlaneSource", "plan_slabs", "require_zarr", "write_slabs"]

_FORMAT = "napari-seg-uncertainty SSN distribution, one chunk per plane"


def require_zarr() -> Any:
    """The ``zarr`` module (version 3 or later), or an ImportError saying what is needed and what works instead."""
    return _require_zarr("keeping a 3-D SSN distribution on disk")


@dataclass(frozen=True)
class Slab:
    """One slab of the slab-by-slab inference: run on planes ``[start, stop)``, keep ``[keep_start, keep_stop)``."""

    start: int
    stop: int
    keep_start: int
    keep_stop: int


def _window_starts(size: int, roi: int, overlap: float) -> list[int]:
    """Window starts of MONAI's sliding windows along one axis, asked of MONAI itself (``_get_scan_interval``
    and ``dense_patch_slices``, as ``sliding_window_inference`` places them), so the slabs stay in step with it."""
    from monai.data.utils import dense_patch_slices
    from monai.inferers.utils import _get_scan_interval

    size = max(int(size), int(roi))
    interval = _get_scan_interval((size,), (int(roi),), 1, (float(overlap),))
    return [int(s[0].start) for s in dense_patch_slices((size,), (int(roi),), interval)]


def plan_slabs(depth: int, roi: int, overlap: float, *, windows: int) -> list[Slab]:
    """Slabs along ``Z`` whose kept planes are stitched from exactly the whole-volume run's windows.

    Parameters
    ----------
    depth : int
        ``Z`` of the volume.
    roi : int
        Window size along ``Z`` (the model's patch size).
    overlap : float
        MONAI's ``overlap``.
    windows : int
        Windows per slab along ``Z`` (at least what one plane needs; more: fewer, larger slabs).

    Returns
    -------
    list of Slab
        Kept ranges tile ``[0, depth)`` in order.

    Examples
    --------
    >>> [(s.start, s.stop, s.keep_start, s.keep_stop) for s in plan_slabs(100, 32, 0.25, windows=2)]
    [(0, 56, 0, 48), (24, 80, 48, 68), (48, 100, 68, 100)]
    """
    starts = _window_starts(depth, roi, overlap)
    if len(starts) == 1:
        return [Slab(0, depth, 0, depth)]
    z = np.arange(depth)
    covering = [(s <= z) & (z < s + roi) for s in starts]
    first = np.argmax(np.stack(covering), axis=0)
    last = len(starts) - 1 - np.argmax(np.stack(covering[::-1]), axis=0)
    windows = max(check_int(windows, name="windows", minimum=1), int((last - first).max()) + 1)
    slabs, z0 = [], 0
    while z0 < depth:
        j0 = int(first[z0])
        j1 = min(j0 + windows - 1, len(starts) - 1)
        valid = (first >= j0) & (last <= j1) & (z >= z0)
        stop_keep = z0
        while stop_keep < depth and valid[stop_keep]:
            stop_keep += 1
        slabs.append(Slab(starts[j0], starts[j1] + roi, z0, stop_keep))
        z0 = stop_keep
    return slabs


class ZarrPlaneSource(PlaneSource):
    """Planes of a distribution stored by :func:`write_slabs` (arrays ``mean``, ``cov_factor``, ``cov_diag``).

    Parameters
    ----------
    path : str or path-like
        The zarr directory.
    cleanup : bool
        Delete ``path`` itself (the store directory, nothing above it) when this object is
        garbage-collected or the interpreter exits.  :func:`write_slabs` deletes its own temporary
        directory (the parent of a store it made) the same way.

    Examples
    --------
    >>> from napari_seg_uncertainty.core.ssn import synthetic_distribution
    >>> full = synthetic_distribution((5, 8, 8), num_classes=2, rank=2)
    >>> def run(z0, z1):
    ...     return full.mean[:, z0:z1], full.cov_factor[:, :, z0:z1], full.cov_diag[:, z0:z1]
    >>> src = write_slabs(run, spatial_shape=(5, 8, 8), num_classes=2, rank=2, roi_depth=2, overlap=0.5)
    >>> bool(np.array_equal(src.plane_parameters(3).cov_factor, full.cov_factor[:, :, 3]))
    True
    """

    def __init__(self, path: str | os.PathLike, *, cleanup: bool = False) -> None:
        zarr = require_zarr()
        self.path = Path(path)
        group = zarr.open_group(str(self.path), mode="r")
        attrs = dict(group.attrs)
        if attrs.get("format") != _FORMAT or not attrs.get("complete", False):
            raise ValueError(
                f"{str(self.path)!r} is not a complete SSN distribution store (written by write_slabs); "
                "compute it again with predict_ssn_distribution_lazy."
            )
        self._mean, self._diag = group["mean"], group["cov_diag"]
        self._factor = group["cov_factor"] if "cov_factor" in group else None
        depth, num_classes, height, width = self._mean.shape
        self.num_classes, self.rank = int(num_classes), int(attrs["rank"])
        self.spatial_shape = (int(depth), int(height), int(width))
        self.independent_planes = bool(attrs.get("independent_planes", False))
        names, spacing = attrs.get("class_names"), attrs.get("spacing")
        self.class_names = None if names is None else tuple(str(n) for n in names)
        self.spacing = None if spacing is None else tuple(float(s) for s in spacing)
        if cleanup:
            weakref.finalize(self, shutil.rmtree, str(self.path), True)

    def describe(self) -> str:
        return f"ZarrPlaneSource({str(self.path)!r})"

    def plane_parameters(self, z: int) -> PlaneParameters:
        factor = None if self._factor is None else np.asarray(self._factor[z], dtype=np.float32)
        return PlaneParameters(
            np.asarray(self._mean[z], dtype=np.float32), factor, np.asarray(self._diag[z], dtype=np.float32)
        )


SlabRunner = Callable[[int, int], tuple[np.ndarray, np.ndarray | None, np.ndarray]]


def _default_windows(shape: tuple[int, int, int], maps: int, roi: int, overlap: float, slab_planes: int | None) -> int:
    """Windows per slab: from ``slab_planes``, else what fits a quarter of the available memory."""
    interval = max(int(roi * (1 - overlap)), 1)
    if slab_planes is None:
        available = available_memory_bytes() or (4 << 30)
        per_plane = 3 * array_bytes((maps + 1, *shape[1:]), np.float32)  # output, weights, torch copies
        slab_planes = max(roi, int(available // 4 // max(per_plane, 1)))
    slab_planes = check_int(slab_planes, name="slab_planes", minimum=1)
    return max(1, (slab_planes - roi) // interval + 1)


def write_slabs(
    run: SlabRunner,
    *,
    spatial_shape: tuple[int, int, int],
    num_classes: int,
    rank: int,
    roi_depth: int,
    overlap: float,
    slab_planes: int | None = None,
    store: str | os.PathLike | None = None,
    class_names: tuple[str, ...] | None = None,
    spacing: tuple[float, ...] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ZarrPlaneSource:
    """Run a 3-D SSN slab by slab (:func:`plan_slabs`) into a zarr store and open it as a plane source.

    Parameters
    ----------
    run : callable
        ``run(z0, z1) -> (mean (C, n, Y, X), factor (K, C, n, Y, X) or None, diag (C, n, Y, X))`` for
        planes ``z0:z1`` (``n = z1 - z0``): the model's sliding-window inference on that slab.
    spatial_shape : (int, int, int)
        ``(Z, Y, X)``.
    num_classes, rank : int
        ``C`` and ``K``.
    roi_depth : int
        The sliding window's size along ``Z``.
    overlap : float
        The sliding windows' overlap.
    slab_planes : int, optional
        About how many planes a slab spans (default: a quarter of the available memory).
    store : str or path-like, optional
        Directory to write (must not exist yet, or be an empty directory); default ``distribution.zarr``
        in a new temporary directory (under ``$TMPDIR``), which is deleted with the returned source.
    class_names, spacing : optional
        Stored with the arrays.
    progress : callable, optional
        ``progress(done, total)`` in planes after each slab.

    Returns
    -------
    ZarrPlaneSource
        The store, opened for reading.

    Raises
    ------
    OutputTooLargeError
        Before anything is written, if one slab does not fit in memory or the store (``(2 + K) * C * Z * Y *
        X`` float32) does not fit on the disk of its directory (or, on a tmpfs, in memory).
    FileExistsError
        If ``store`` exists and is not an empty directory.

    Notes
    -----
    On any failure (including a refusal, an error of ``run`` and ``KeyboardInterrupt``) what was written is
    deleted: the temporary directory, or the contents of ``store``.
    """
    zarr = require_zarr()
    depth, height, width = (int(s) for s in spatial_shape)
    maps = (2 + rank) * num_classes
    windows = _default_windows((depth, height, width), maps, roi_depth, overlap, slab_planes)
    slabs = plan_slabs(depth, roi_depth, overlap, windows=windows)
    largest = max(slab.stop - slab.start for slab in slabs)
    shape_text = f"image shape {(depth, height, width)}, rank {rank}, {num_classes} classes"
    check_allocation(  # MONAI's stitched output and weight map, the torch parameters and their copies
        3 * array_bytes((maps + 1, largest, height, width), np.float32),
        what=f"one slab of {largest} planes of the 3-D SSN's sliding-window inference",
        cause=f"{shape_text}, window depth {roi_depth}",
        advice="crop the image in Y and X, or use a 2-D SSN (its planes are computed one at a time)",
    )
    path, created = _store_path(store)
    check_disk_space(
        array_bytes((maps, depth, height, width), np.float32), tempfile.gettempdir() if path is None else path,
        what="the 3-D SSN distribution's zarr store (mean, covariance factor and diagonal, float32)",
        cause=shape_text,
        advice="give store= a directory on a disk with more free space (or set TMPDIR), crop the image, "
        "or use a 2-D SSN (its planes are computed when shown, nothing is written)",
    )
    try:
        if path is None:
            path = Path(tempfile.mkdtemp(prefix="ssn-distribution-")) / "distribution.zarr"
        group = zarr.open_group(str(path), mode="w")
        group.attrs.update({"format": _FORMAT, "rank": int(rank), "complete": False, "independent_planes": False})
        arrays = _create_arrays(group, (depth, height, width), num_classes, rank)
        _fill(arrays, slabs, run, progress)
        extra: dict[str, Any] = {"complete": True}
        if class_names is not None:
            extra["class_names"] = list(class_names)
        if spacing is not None:
            extra["spacing"] = [float(s) for s in spacing]
        group.attrs.update(extra)
        source = ZarrPlaneSource(path)
    except BaseException:  # refusal, model error, KeyboardInterrupt, full disk: leave nothing behind
        if path is not None:
            _remove_partial(path, temporary=store is None, created=created)
        raise
    if store is None:  # the temporary directory goes with the source (at garbage collection or exit)
        weakref.finalize(source, shutil.rmtree, str(path.parent), True)
    return source


def _fill(arrays: dict[str, Any], slabs: list[Slab], run: SlabRunner, progress: Any) -> None:
    """Run every slab and write its kept planes (``(Z, ...)`` chunks, one per plane)."""
    depth = slabs[-1].keep_stop
    for slab in slabs:
        mean, factor, diag = run(slab.start, slab.stop)
        keep = slice(slab.keep_start - slab.start, slab.keep_stop - slab.start)
        target = slice(slab.keep_start, slab.keep_stop)
        arrays["mean"][target] = np.moveaxis(mean[:, keep], 1, 0)
        arrays["cov_diag"][target] = np.moveaxis(diag[:, keep], 1, 0)
        if factor is not None and "cov_factor" in arrays:
            arrays["cov_factor"][target] = np.moveaxis(factor[:, :, keep], 2, 0)
        del mean, factor, diag
        if progress is not None:
            progress(slab.keep_stop, depth)


def _store_path(store: str | os.PathLike | None) -> tuple[Path | None, bool]:
    """``store`` (checked to be new or empty; None: a temporary directory, made later) and whether the
    store directory will be created by the writer."""
    if store is None:
        return None, True
    path = Path(store)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise FileExistsError(f"store {str(path)!r} already exists and is not empty; choose a new directory.")
    return path, not path.exists()


def _remove_partial(path: Path, *, temporary: bool, created: bool) -> None:
    """Delete what a failed :func:`write_slabs` wrote: the temporary directory, the store it created, or
    the contents of the empty directory it was given."""
    if temporary or created:
        shutil.rmtree(path.parent if temporary else path, ignore_errors=True)
        return
    for child in path.iterdir() if path.is_dir() else ():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def _create_arrays(group: Any, shape: tuple[int, int, int], num_classes: int, rank: int) -> dict[str, Any]:
    """The store's uncompressed arrays, one chunk per plane: ``mean``, ``cov_diag`` and (rank > 0) ``cov_factor``."""
    depth, height, width = shape
    per_plane = {"mean": (num_classes,), "cov_diag": (num_classes,)}
    if rank > 0:
        per_plane["cov_factor"] = (rank, num_classes)
    return {
        name: group.create_array(name, shape=(depth, *lead, height, width), chunks=(1, *lead, height, width),
                                 dtype="float32", compressors=None)
        for name, lead in per_plane.items()
    }
