"""Real-image cases for a cohort, from scans shipped inside installed packages. Nothing is downloaded.

Sources, each used when its package is installed (its data files are found without importing it):

* **nilearn** — the MNI152 2009 template (``mni_icbm152_t1_tal_nlin_sym_09a``) with its grey- and
  white-matter probability maps. Each rater thresholds the maps at another level (the first at a
  low probability, the last at a high one), so the raters disagree exactly where the tissue
  classes blur into each other. 3-D: three cases of the template, block-averaged to 4 mm, a
  central crop at 2 mm and a thick-slice version at 6 × 3 × 3 mm; 2-D: three axial slices at 2 mm.
* **nibabel** — its test-data MR head volumes (``anatomical.nii``, 2 mm; ``reoriented_anat_moved.nii``,
  4 mm and reoriented); 2-D: a middle slice of each. Raters outline the head and the bright tissue
  at intensity percentiles a few points apart.
* **pydicom** (2-D only) — ``CT_small.dcm`` (a 128 × 128 CT slice: body above about −300 HU, dense
  tissue above about 150 HU, each rater with its own threshold between −400 and −200 HU and between 100 and
  200 HU) and ``MR_small.dcm`` (intensity percentiles).

Every case keeps its scan's spacing, origin and direction, so a cohort of real cases also tests
per-case geometry.
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from .._validation import check_choice, check_flag, check_int, describe
from ..io import read_image
from .phantom import _write_cases

__all__ = ["REAL_CASE_SOURCES", "real_image_cases"]

#: Packages real cases come from, with the dimensions each can supply.
REAL_CASE_SOURCES = {"nilearn": (2, 3), "nibabel": (2, 3), "pydicom": (2,)}
_LAYOUTS = ("generic", "qubiq", "msseg", "manifest")
_MNI = "mni_icbm152_{}_tal_nlin_sym_09a_converted.nii.gz"


def real_image_cases(
    out_dir: str | os.PathLike,
    *,
    ndim: int = 3,
    layout: str = "generic",
    num_raters: int = 3,
    overwrite: bool = False,
) -> str:
    """Write cases made from real scans shipped inside installed packages; return the source to load.

    Parameters
    ----------
    out_dir : str or os.PathLike
        Folder to write into; created when missing. Case ids name their scan (``mni152_4mm``,
        ``nibabel_anatomical``, ``pydicom_ct_small`` …).
    ndim : {2, 3}
        3-D volumes (nilearn, nibabel) or 2-D slices (nilearn, nibabel, pydicom). A cohort has one
        dimension.
    layout : {"generic", "qubiq", "msseg", "manifest"}
        As in :func:`~napari_seg_uncertainty.core.cohort.phantom.make_phantom_cohort`. The stacked
        ``"npz"`` layout is refused: real scans differ in shape.
    num_raters : int
        Raters per case: thresholds spread between a lenient and a strict level.
    overwrite : bool
        Replace existing files (without it, :class:`FileExistsError` names the first one and
        nothing is written).

    Returns
    -------
    str
        Absolute path of the folder (or, for ``"manifest"``, of ``cohort.csv``) to pass to
        :func:`~napari_seg_uncertainty.core.cohort.load_cohort`. Sources whose package (or data
        file) is missing are skipped with a :class:`UserWarning` naming them.

    Raises
    ------
    FileNotFoundError
        No source for ``ndim`` is installed.
    TypeError, ValueError
        An argument of the wrong type or value (named in the message).

    Examples
    --------
    >>> import tempfile
    >>> source = real_image_cases(tempfile.mkdtemp(), ndim=2)  # doctest: +SKIP
    """
    if not isinstance(out_dir, (str, os.PathLike)):
        raise TypeError(f"out_dir must be a folder path (str or path-like), got {describe(out_dir)}.")
    root = Path(os.path.abspath(os.fspath(out_dir)))
    if root.exists() and not root.is_dir():
        raise ValueError(f"out_dir {str(root)!r} is a file; expected a folder to write the cases into.")
    if isinstance(ndim, (bool, np.bool_)) or ndim not in (2, 3):
        raise ValueError(f"ndim must be 2 or 3, got {ndim!r}.")
    ndim = int(ndim)
    if layout == "npz":
        raise ValueError("layout='npz' stacks cases of one shape, but real scans differ in shape; use 'generic', "
                         "'qubiq', 'msseg' or 'manifest'.")
    layout = check_choice(layout, name="layout", choices=_LAYOUTS)
    num_raters = check_int(num_raters, name="num_raters", minimum=1)
    overwrite = check_flag(overwrite, name="overwrite")

    makers: list[tuple[str, Callable[[], dict[str, Any]]]] = []
    skipped: list[str] = []
    for package, finder in (("nilearn", _nilearn_cases), ("nibabel", _nibabel_cases), ("pydicom", _pydicom_cases)):
        if ndim not in REAL_CASE_SOURCES[package]:
            continue
        found, why = finder(ndim, num_raters)
        if found:
            makers += found
        else:
            skipped.append(f"{package} ({why})")
    if not makers:
        raise FileNotFoundError(
            f"no real {ndim}-D scan is available: " + "; ".join(skipped) + ". Install one of "
            + ", ".join(p for p, dims in REAL_CASE_SOURCES.items() if ndim in dims)
            + " (they ship their test scans), or use make_phantom_cohort for synthetic cases."
        )
    if skipped:
        warnings.warn("real_image_cases skipped " + "; ".join(skipped) + ".", UserWarning, stacklevel=2)
    case_ids = [case_id for case_id, _ in makers]
    return _write_cases(root, layout, case_ids, lambda i: makers[i][1](), num_raters=num_raters, channels=1,
                        overwrite=overwrite, splits=_splits(len(case_ids)) if layout == "manifest" else None)


def _splits(n: int) -> list[str]:
    """Every fifth case for validation and every fifth (offset) for test; the first always trains."""
    return ["val" if i % 5 == 3 else "test" if i % 5 == 4 else "train" for i in range(n)]


# ----------------------------------------------------------------------------------------------
# package data
# ----------------------------------------------------------------------------------------------


def _package_dir(package: str) -> Path | None:
    """Where ``package`` is installed, found without importing it (nilearn imports scikit-learn)."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _data_files(package: str, folder: tuple[str, ...], names: list[str]) -> tuple[list[Path] | None, str]:
    base = _package_dir(package)
    if base is None:
        return None, "not installed"
    paths = [base.joinpath(*folder, name) for name in names]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        return None, f"installed without {', '.join(missing)}"
    return paths, ""


def _read(path: Path) -> tuple[np.ndarray, Any]:
    image, meta = read_image(path)
    return image.astype(np.float32), meta


def _levels(num_raters: int, low: float, high: float) -> np.ndarray:
    return np.array([(low + high) / 2.0]) if num_raters == 1 else np.linspace(low, high, num_raters)


# ----------------------------------------------------------------------------------------------
# geometry of crops, block averages and slices
# ----------------------------------------------------------------------------------------------


def _direction(meta: Any, ndim: int) -> np.ndarray:
    d = getattr(meta, "direction", None)
    return np.eye(ndim) if d is None or np.shape(d) != (ndim, ndim) else np.asarray(d, dtype=float)


def _block(arrays: list[np.ndarray], meta: Any, *, start: tuple[int, ...], size: tuple[int, ...],
           factors: tuple[int, ...]) -> tuple[list[np.ndarray], dict[str, Any]]:
    """Crop ``size * factors`` voxels from ``start`` and average blocks of ``factors``; the new geometry."""
    ndim = len(start)
    spacing = np.asarray(meta.spacing or (1.0,) * ndim, dtype=float)
    origin = np.asarray(meta.origin or (0.0,) * ndim, dtype=float)
    direction = _direction(meta, ndim)
    region = tuple(slice(s, s + n * f) for s, n, f in zip(start, size, factors))
    out = []
    for arr in arrays:
        crop = arr[region]
        shape = [v for n, f in zip(size, factors) for v in (n, f)]
        out.append(crop.reshape(shape).mean(axis=tuple(range(1, 2 * ndim, 2)), dtype=np.float64).astype(np.float32))
    centre = (np.asarray(start) + (np.asarray(factors) - 1) / 2.0) * spacing  # first new voxel, index space (mm)
    geometry = {"spacing": tuple(float(v) for v in spacing * factors),
                "origin": tuple(float(v) for v in origin + direction @ centre), "direction": direction}
    return out, geometry


def _slice(arrays: list[np.ndarray], geometry: dict[str, Any], index: int) -> tuple[list[np.ndarray], dict[str, Any]]:
    """Axial slice ``index`` of 3-D arrays on ``geometry``: the 2-D arrays and their in-plane geometry."""
    spacing = np.asarray(geometry["spacing"], dtype=float)
    direction = np.asarray(geometry["direction"], dtype=float)
    point = np.asarray(geometry["origin"], dtype=float) + direction[:, 0] * index * spacing[0]
    in_plane = direction[1:, 1:]
    if not np.allclose(in_plane @ in_plane.T, np.eye(2), atol=1e-4):
        in_plane = np.eye(2)  # an oblique slice has no exact 2-D direction; keep the pixel grid
    return [a[index] for a in arrays], {"spacing": tuple(float(v) for v in spacing[1:]),
                                        "origin": tuple(float(v) for v in point[1:]), "direction": in_plane}


def _case(image: np.ndarray, raters: list[np.ndarray], geometry: dict[str, Any]) -> dict[str, Any]:
    return {"image": image[None].astype(np.float32), "raters": np.stack(raters).astype(np.uint8), **geometry}


# ----------------------------------------------------------------------------------------------
# sources
# ----------------------------------------------------------------------------------------------


def _nilearn_cases(ndim: int, num_raters: int) -> tuple[list[tuple[str, Callable[[], dict[str, Any]]]], str]:
    paths, why = _data_files("nilearn", ("datasets", "data"), [_MNI.format(k) for k in ("t1", "gm", "wm")])
    if paths is None:
        return [], why
    loaded: dict[str, Any] = {}

    def template() -> tuple[list[np.ndarray], Any]:
        if not loaded:  # read once, on the first case that needs it
            arrays = [_read(p) for p in paths]
            loaded["arrays"] = [a for a, _ in arrays]
            loaded["meta"] = arrays[0][1]
        return loaded["arrays"], loaded["meta"]

    levels = _levels(num_raters, 0.3, 0.7)

    def tissue(t1: np.ndarray, gm: np.ndarray, wm: np.ndarray, geometry: dict[str, Any]) -> dict[str, Any]:
        gm, wm = gm / 255.0, wm / 255.0  # the converted maps hold probabilities as 0..255
        raters = []
        for level in levels:
            labels = np.zeros(gm.shape, dtype=np.uint8)
            labels[gm > level] = 1
            labels[(wm > level) & (wm >= gm)] = 2
            raters.append(labels)
        return _case(t1, raters, geometry)

    def variant(start_frac: tuple[float, ...], size: tuple[int, ...], factors: tuple[int, ...],
                z_index: int | None = None) -> Callable[[], dict[str, Any]]:
        def make() -> dict[str, Any]:
            arrays, meta = template()
            shape = arrays[0].shape
            start = tuple(int(round(f * (n - s * k))) for f, n, s, k in zip(start_frac, shape, size, factors))
            blocks, geometry = _block(arrays, meta, start=start, size=size, factors=factors)
            if z_index is not None:
                blocks, geometry = _slice(blocks, geometry, z_index)
            return tissue(*blocks, geometry)

        return make

    # the template is (189, 233, 197) at 1 mm in numpy order
    if ndim == 3:
        cases = [("mni152_4mm", variant((0.5, 0.5, 0.5), (47, 58, 49), (4, 4, 4))),
                 ("mni152_center_2mm", variant((0.55, 0.5, 0.5), (32, 40, 36), (2, 2, 2))),
                 ("mni152_thick_6x3x3mm", variant((0.5, 0.5, 0.5), (30, 72, 60), (6, 3, 3)))]
    else:
        cases = [(f"mni152_axial_{name}", variant((frac, 0.5, 0.5), (1, 110, 92), (1, 2, 2), z_index=0))
                 for name, frac in (("low", 0.4), ("mid", 0.55), ("high", 0.7))]
    return cases, ""


def _threshold_raters(image: np.ndarray, num_raters: int, *, low: tuple[float, float],
                      high: tuple[float, float], percentiles: bool) -> list[np.ndarray]:
    """Per rater, an outline (filled, largest part) above a threshold in ``low`` and an inner class above one in
    ``high``: the thresholds spread from lenient to strict, as percentiles of ``image`` or as values."""
    smooth = ndi.gaussian_filter(image, 0.7)
    lows, highs = _levels(num_raters, *low), _levels(num_raters, *high)
    if percentiles:
        lows, highs = np.percentile(smooth, lows), np.percentile(smooth, highs)
    raters = []
    for lo, hi in zip(lows, highs):
        outline = ndi.binary_fill_holes(smooth > lo)
        parts, n = ndi.label(outline)
        if n > 1:
            sizes = ndi.sum(outline, parts, index=range(1, n + 1))
            outline = parts == 1 + int(np.argmax(sizes))
        labels = outline.astype(np.uint8)
        labels[outline & (smooth > hi)] = 2
        raters.append(labels)
    return raters


def _nibabel_cases(ndim: int, num_raters: int) -> tuple[list[tuple[str, Callable[[], dict[str, Any]]]], str]:
    names = {"anatomical": "anatomical.nii", "reoriented": "reoriented_anat_moved.nii"}
    base = _package_dir("nibabel")
    if base is None:
        return [], "not installed"
    cases = []
    for case, name in names.items():
        path = base / "tests" / "data" / name
        if not path.is_file():
            continue

        def make(path: Path = path) -> dict[str, Any]:
            image, meta = _read(path)
            geometry = {"spacing": meta.spacing, "origin": meta.origin, "direction": _direction(meta, 3)}
            if ndim == 2:
                [image], geometry = _slice([image], geometry, image.shape[0] // 2)
            raters = _threshold_raters(image, num_raters, low=(30.0, 42.0), high=(78.0, 90.0), percentiles=True)
            return _case(image, raters, geometry)

        cases.append((f"nibabel_{case}", make))
    return cases, ("" if cases else "installed without its test data")


def _pydicom_cases(ndim: int, num_raters: int) -> tuple[list[tuple[str, Callable[[], dict[str, Any]]]], str]:
    base = _package_dir("pydicom")
    if base is None:
        return [], "not installed"
    cases = []
    for case, name in (("ct_small", "CT_small.dcm"), ("mr_small", "MR_small.dcm")):
        path = base / "data" / "test_files" / name
        if not path.is_file():
            continue

        def make(path: Path = path, ct: bool = case.startswith("ct")) -> dict[str, Any]:
            image, meta = _read(path)
            geometry = {"spacing": meta.spacing, "origin": meta.origin, "direction": _direction(meta, 2)}
            if ct:  # Hounsfield units: body above about -300, dense tissue above about 150
                raters = _threshold_raters(image, num_raters, low=(-400.0, -200.0), high=(100.0, 200.0),
                                           percentiles=False)
            else:
                raters = _threshold_raters(image, num_raters, low=(25.0, 35.0), high=(75.0, 85.0), percentiles=True)
            return _case(image, raters, geometry)

        cases.append((f"pydicom_{case}", make))
    return cases, ("" if cases else "installed without its test files")
