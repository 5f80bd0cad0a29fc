"""A synthetic multi-rater cohort on disk, in every layout :func:`load_cohort` reads.

Each case is a small phantom of its own: a body outline (the image is exactly zero outside it, as
in MR), an organ, and — with more classes — a lesion nested in the organ and a core nested in the
lesion, plus one small nodule that careless raters miss. Sizes, positions, contrast, noise level,
a smooth intensity bias, the voxel spacing (anisotropic: about 2.5 × 0.8 × 0.8 mm in 3-D) and the
origin all change from case to case. The raters have habits, as real annotators do: the first
over-segments, the second under-segments, the third misses small structures; further raters cycle
through the same habits with their own random boundaries.

Nothing here reads voxel data back: the files are written with :func:`~napari_seg_uncertainty.core.io.write_image`
(NIfTI, numpy axis order for spacing and origin) and the manifest and archive through an atomic write.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Callable, Sequence
from numbers import Integral
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from .._atomic import atomic_write
from .._memory import array_bytes, check_allocation
from .._validation import check_choice, check_flag, check_int, check_seed, describe
from ..io import write_image
from ..phantom import _signed_distance, _smooth_field

__all__ = ["PHANTOM_LAYOUTS", "RATER_HABITS", "make_phantom_cohort", "phantom_class_names"]

#: Layouts :func:`make_phantom_cohort` writes (the ones :func:`load_cohort` reads).
PHANTOM_LAYOUTS = ("generic", "qubiq", "msseg", "npz", "manifest")
#: What rater ``r`` does wrong: ``RATER_HABITS[r % 3]``.
RATER_HABITS = ("over-segments", "under-segments", "misses small structures")

_CLASS_NAMES = ("background", "organ", "lesion", "core")
_DEFAULT_SHAPE = {2: (48, 48), 3: (16, 40, 40)}
_BASE_SPACING = {2: (0.9, 0.7), 3: (2.5, 0.8, 0.8)}
#: The archive the "npz" layout writes and the manifest the "manifest" layout writes.
_NPZ_NAME = "cohort.npz"
_CSV_NAME = "cohort.csv"
_SINGLE_FILE = {"npz": _NPZ_NAME, "manifest": _CSV_NAME}
#: Names of the files this module writes into a case folder (stale ones are removed with overwrite=True).
_OWN_FILE = re.compile(
    r"^(image(_\d{4})?|rater_\d+|task\d+_seg\d+|ManualSegmentation_\d+|FLAIR_preprocessed)\.nii\.gz$"
)


def phantom_class_names(num_classes: int) -> list[str]:
    """Class names of a phantom cohort with ``num_classes`` classes (background first).

    Examples
    --------
    >>> phantom_class_names(3)
    ['background', 'organ', 'lesion']
    """
    num_classes = _check_num_classes(num_classes)
    return list(_CLASS_NAMES[:num_classes])


def make_phantom_cohort(
    n_cases: int,
    out_dir: str | os.PathLike,
    *,
    ndim: int = 3,
    layout: str = "generic",
    num_raters: int = 3,
    num_classes: int = 2,
    shape: Sequence[int] | None = None,
    channels: int = 1,
    seed: int = 0,
    overwrite: bool = False,
    split: bool = True,
) -> str:
    """Write a synthetic cohort of ``n_cases`` multi-rater cases and return the source to load it from.

    Parameters
    ----------
    n_cases : int
        Number of cases (at least 1). Case ids are ``case_000``, ``case_001``, … (wider with more cases).
    out_dir : str or os.PathLike
        Folder to write into; created when missing.
    ndim : {2, 3}
        2-D ``(Y, X)`` or 3-D ``(Z, Y, X)`` cases.
    layout : {"generic", "qubiq", "msseg", "npz", "manifest"}
        How the cases are stored:

        * ``"generic"``: ``<out_dir>/<case>/image.nii.gz`` (``image_0000.nii.gz``, ``image_0001.nii.gz`` …
          with ``channels > 1``) and ``rater_1.nii.gz`` … per case folder;
        * ``"qubiq"``: ``<out_dir>/<case>/image.nii.gz`` and ``task01_seg01.nii.gz`` …;
        * ``"msseg"``: ``<out_dir>/<case>/Masks/ManualSegmentation_1.nii.gz`` … and
          ``<out_dir>/<case>/Preprocessed_Data/FLAIR_preprocessed.nii.gz`` (MSSEG-2016);
        * ``"npz"``: one LIDC-style archive ``<out_dir>/cohort.npz`` with stacked ``images (N, *S)``
          float32 (``(N, C, *S)`` with ``channels > 1``), ``masks (N, R, *S)`` uint8, ``case_ids (N,)`` and
          ``spacing (ndim,)``. Stacking needs
          every case on one grid, so in this layout all cases share ``shape`` and one spacing, and
          the archive has no origin;
        * ``"manifest"``: the generic case folders plus ``<out_dir>/cohort.csv`` with the columns
          ``case_id``, ``image``, ``raters`` (paths relative to the manifest, ``;``-separated) and, with
          ``split=True``, ``split``.
    num_raters : int
        Raters per case. Rater ``r`` has the habit ``RATER_HABITS[r % 3]`` (over-segments,
        under-segments, misses small structures).
    num_classes : {2, 3, 4}
        Classes including background: organ; organ and lesion; organ, lesion and core (nested).
        The small nodule that the third rater tends to miss is labelled ``min(num_classes - 1, 2)``.
    shape : sequence of int, optional
        Spatial shape of every case (each entry at least 8). Default ``(48, 48)`` in 2-D and
        ``(16, 40, 40)`` in 3-D: small enough for tests and documentation examples.
    channels : int
        Image channels (e.g. MR sequences with different contrasts). More than one needs the layout
        ``"generic"``, ``"npz"`` or ``"manifest"``; QUBIQ and MSSEG-2016 cases hold one image.
    seed : int
        Random seed; the same arguments give the same files. Case ``i`` depends only on ``seed`` and
        ``i``, so its anatomy is the same in every layout (except the shared spacing of ``"npz"``).
    overwrite : bool
        Replace files that exist. Without it nothing is written when any target file exists
        (:class:`FileExistsError` naming it). With it, in the ``case_NNN`` folders, files named as this
        function names them that belong to no case or rater of this cohort (left over from a larger
        earlier run, which a folder scan would pick up) are removed; nothing else is deleted.
    split : bool
        Only for ``layout="manifest"``: write a ``split`` column (``train``/``val``/``test``, about
        60/20/20 %, deterministic for ``seed``, at least one training case). Ignored by the other layouts.

    Returns
    -------
    str
        Absolute path of what to pass to :func:`load_cohort`: the folder (generic, QUBIQ, MSSEG),
        the ``.npz`` archive or the ``.csv`` manifest.

    Raises
    ------
    TypeError, ValueError
        An argument of the wrong type or value (named in the message).
    FileExistsError
        A target file exists and ``overwrite`` is False.

    Examples
    --------
    >>> import tempfile
    >>> source = make_phantom_cohort(4, tempfile.mkdtemp(), ndim=2, layout="manifest", seed=1)
    >>> source.endswith("cohort.csv")
    True
    """
    n_cases = check_int(n_cases, name="n_cases", minimum=1)
    if not isinstance(out_dir, (str, os.PathLike)):
        raise TypeError(f"out_dir must be a folder path (str or path-like), got {describe(out_dir)}.")
    root = Path(os.path.abspath(os.fspath(out_dir)))
    if root.exists() and not root.is_dir():
        raise ValueError(f"out_dir {str(root)!r} is a file; expected a folder to write the cohort into.")
    if isinstance(ndim, bool) or not isinstance(ndim, Integral) or ndim not in (2, 3):
        raise ValueError(f"ndim must be 2 or 3, got {ndim!r}.")
    ndim = int(ndim)
    layout = check_choice(layout, name="layout", choices=PHANTOM_LAYOUTS)
    num_raters = check_int(num_raters, name="num_raters", minimum=1)
    num_classes = _check_num_classes(num_classes)
    shape = _check_shape(shape, ndim)
    channels = check_int(channels, name="channels", minimum=1)
    if channels > 1 and layout in ("qubiq", "msseg"):
        raise ValueError(
            f"channels={channels} needs layout 'generic', 'npz' or 'manifest' (they hold one image per channel); "
            f"the {layout!r} layout holds one image per case. Use channels=1 or another layout."
        )
    seed = check_seed(seed)
    overwrite = check_flag(overwrite, name="overwrite")
    split = check_flag(split, name="split")
    case_bytes = array_bytes((channels, *shape), np.float32) + array_bytes((num_raters, *shape), np.uint8)
    check_allocation(
        case_bytes * (n_cases if layout == "npz" else 1) + array_bytes((12, *shape), np.float64),
        what=(f"{'the stacked archive of ' + str(n_cases) + ' cases' if layout == 'npz' else 'one case'} "
              f"({channels} image channel(s) and {num_raters} raters of shape {shape})"),
        cause=f"n_cases={n_cases}, shape={shape}, num_raters={num_raters}, channels={channels}",
        advice="use a smaller shape or fewer raters" + (", or another layout" if layout == "npz" else ""),
    )

    width = max(3, len(str(n_cases - 1)))
    case_ids = [f"case_{i:0{width}d}" for i in range(n_cases)]
    shared_spacing = _case_spacing(np.random.default_rng([seed, 0]), ndim) if layout == "npz" else None

    def make(i: int) -> dict[str, Any]:
        return _make_case(np.random.default_rng([seed, i]), shape=shape, num_classes=num_classes,
                          num_raters=num_raters, channels=channels, spacing=shared_spacing)

    return _write_cases(root, layout, case_ids, make, num_raters=num_raters, channels=channels,
                       overwrite=overwrite, splits=_manifest_split(n_cases, seed) if split else None,
                       npz_spacing=shared_spacing, remove_stale=True)


def _write_cases(
    root: Path,
    layout: str,
    case_ids: list[str],
    make: Callable[[int], dict[str, Any]],
    *,
    num_raters: int,
    channels: int,
    overwrite: bool,
    splits: list[str] | None,
    npz_spacing: tuple[float, ...] | None = None,
    remove_stale: bool = False,
) -> str:
    """Write cases in ``layout`` under ``root``; ``make(i)`` gives case ``i`` (image, raters, spacing, origin).

    Shared by :func:`make_phantom_cohort` and :func:`~napari_seg_uncertainty.core.cohort.real_cases.real_image_cases`.
    Checks every target before writing anything (``FileExistsError`` without ``overwrite``); one case
    in memory at a time except for the stacked ``"npz"`` archive. Returns the source to load.
    """
    plan = _plan(root, layout, case_ids, num_raters, channels)
    if not overwrite:
        existing = [p for files in plan.values() for p in files if p.exists()]
        existing += [root / name for name in (_NPZ_NAME, _CSV_NAME)
                     if name == _SINGLE_FILE.get(layout) and (root / name).exists()]
        if existing:
            more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
            raise FileExistsError(
                f"{str(existing[0])!r}{more} already exists; existing files are not replaced. "
                "Choose an empty out_dir or pass overwrite=True."
            )
    root.mkdir(parents=True, exist_ok=True)

    stacked_images, stacked_masks = [], []
    for i, case_id in enumerate(case_ids):
        case = make(i)
        if layout == "npz":
            stacked_images.append(case["image"][0] if channels == 1 else case["image"])
            stacked_masks.append(case["raters"])
            continue
        files = plan[case_id]
        for folder in {p.parent for p in files}:
            folder.mkdir(parents=True, exist_ok=True)
        geometry = {"spacing": case["spacing"], "origin": case["origin"], "direction": case.get("direction"),
                    "overwrite": overwrite}
        for c in range(channels):
            write_image(files[c], case["image"][c], **geometry)
        for r in range(num_raters):
            write_image(files[channels + r], case["raters"][r], **geometry)

    if overwrite and remove_stale:
        _remove_stale(root, layout, plan)
    if layout == "npz":
        target = root / _NPZ_NAME
        with atomic_write(target, overwrite=overwrite, suffix=".npz") as temporary:
            np.savez_compressed(
                temporary,
                images=np.stack(stacked_images).astype(np.float32, copy=False),
                masks=np.stack(stacked_masks).astype(np.uint8, copy=False),
                case_ids=np.array(case_ids),
                spacing=np.asarray(npz_spacing, dtype=np.float64),
            )
        return str(target)
    if layout == "manifest":
        target = root / _CSV_NAME
        with atomic_write(target, overwrite=overwrite) as temporary:
            with open(temporary, "w", newline="", encoding="utf-8") as handle:
                writer = csv.writer(handle)
                writer.writerow(["case_id", "image", "raters"] + (["split"] if splits is not None else []))
                for i, case_id in enumerate(case_ids):
                    rel = [p.relative_to(root).as_posix() for p in plan[case_id]]
                    row = [case_id, ";".join(rel[:channels]), ";".join(rel[channels:])]
                    writer.writerow(row + ([splits[i]] if splits is not None else []))
        return str(target)
    return str(root)


# ----------------------------------------------------------------------------------------------
# arguments
# ----------------------------------------------------------------------------------------------


def _check_num_classes(num_classes: Any) -> int:
    num_classes = check_int(num_classes, name="num_classes")
    if not 2 <= num_classes <= len(_CLASS_NAMES):
        raise ValueError(f"num_classes must be 2, 3 or 4 (background, organ, lesion, core), got {num_classes}.")
    return num_classes


def _check_shape(shape: Any, ndim: int) -> tuple[int, ...]:
    if shape is None:
        return _DEFAULT_SHAPE[ndim]
    if isinstance(shape, (str, bytes)) or not isinstance(shape, (Sequence, np.ndarray)) or not all(
        isinstance(s, Integral) and not isinstance(s, (bool, np.bool_)) for s in shape
    ):
        raise TypeError(f"shape must be a sequence of {ndim} integers, got {describe(shape)}.")
    shape = tuple(int(s) for s in shape)
    if len(shape) != ndim or min(shape) < 8:
        raise ValueError(f"shape must have {ndim} entries (ndim={ndim}) of at least 8 each, got {shape}.")
    return shape


# ----------------------------------------------------------------------------------------------
# files
# ----------------------------------------------------------------------------------------------


def _plan(root: Path, layout: str, case_ids: list[str], num_raters: int, channels: int) -> dict[str, list[Path]]:
    """Per case, the image files (one per channel) followed by the rater files; {} for "npz"."""
    plan: dict[str, list[Path]] = {}
    if layout == "npz":
        return plan
    for case_id in case_ids:
        folder = root / case_id
        if layout == "msseg":
            images = [folder / "Preprocessed_Data" / "FLAIR_preprocessed.nii.gz"]
            raters = [folder / "Masks" / f"ManualSegmentation_{r + 1}.nii.gz" for r in range(num_raters)]
        elif layout == "qubiq":
            images = [folder / "image.nii.gz"]
            raters = [folder / f"task01_seg{r + 1:02d}.nii.gz" for r in range(num_raters)]
        else:
            images = ([folder / "image.nii.gz"] if channels == 1
                      else [folder / f"image_{c:04d}.nii.gz" for c in range(channels)])
            raters = [folder / f"rater_{r + 1}.nii.gz" for r in range(num_raters)]
        plan[case_id] = images + raters
    return plan


def _remove_stale(root: Path, layout: str, plan: dict[str, list[Path]]) -> None:
    """With overwrite: in ``case_NNN`` folders, remove files named as this module names them that this
    run did not write (a larger earlier cohort, more raters), which a folder scan would pick up.

    Nothing outside ``case_NNN`` folders is touched, and nothing for the ``"npz"`` layout (its archive
    is the whole source, so files beside it do no harm).
    """
    if layout == "npz":
        return
    written = {p for files in plan.values() for p in files}
    for folder in root.iterdir():
        if not folder.is_dir() or not re.fullmatch(r"case_\d{3,}", folder.name):
            continue
        for sub in (folder, folder / "Masks", folder / "Preprocessed_Data"):
            if sub.is_dir():
                for p in sub.iterdir():
                    if p.is_file() and _OWN_FILE.match(p.name) and p not in written:
                        p.unlink()
        for sub in (folder / "Masks", folder / "Preprocessed_Data", folder):
            if sub.is_dir() and not any(sub.iterdir()):
                sub.rmdir()


def _manifest_split(n_cases: int, seed: int) -> list[str]:
    """About 60/20/20 % train/val/test, deterministic for ``seed``; at least one training case."""
    n_test = int(round(0.2 * n_cases))
    n_val = int(round(0.2 * n_cases))
    if n_cases - n_test - n_val < 1:
        n_test = n_val = 0
    order = np.random.default_rng([seed, 7919]).permutation(n_cases)
    labels = ["train"] * n_cases
    for i in order[:n_val]:
        labels[int(i)] = "val"
    for i in order[n_val:n_val + n_test]:
        labels[int(i)] = "test"
    return labels


# ----------------------------------------------------------------------------------------------
# one case
# ----------------------------------------------------------------------------------------------


def _case_spacing(rng: np.random.Generator, ndim: int) -> tuple[float, ...]:
    base = np.asarray(_BASE_SPACING[ndim], dtype=float)
    through, in_plane = rng.uniform(0.9, 1.1, size=2)
    factors = np.array([through] * (ndim - 2) + [in_plane, in_plane]) if ndim == 3 else np.array([through, in_plane])
    return tuple(float(np.round(v * 128.0) / 128.0) for v in base * factors)  # exact in a float32 header


def _case_geometry(
    rng: np.random.Generator, ndim: int, shared_spacing: tuple[float, ...] | None
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Spacing and origin of a case: the first draws of its generator (origins are multiples of 0.5 mm)."""
    case_spacing = _case_spacing(rng, ndim)  # drawn even when shared, so the rest of the case does not shift
    origin = tuple(float(v) for v in np.round(rng.uniform(-60.0, 60.0, size=ndim) * 2.0) / 2.0)
    return (case_spacing if shared_spacing is None else tuple(shared_spacing)), origin


def _ellipsoid_mm(grids: list[np.ndarray], centre: np.ndarray, radii: np.ndarray) -> np.ndarray:
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radii)) <= 1.0


def _make_case(
    rng: np.random.Generator,
    *,
    shape: tuple[int, ...],
    num_classes: int,
    num_raters: int,
    channels: int,
    spacing: tuple[float, ...] | None,
) -> dict[str, Any]:
    """Image ``(C, *S)`` float32, raters ``(R, *S)`` uint8, spacing and origin of one case."""
    ndim = len(shape)
    spacing, origin = _case_geometry(rng, ndim, spacing)
    sp = np.asarray(spacing, dtype=float)
    extent = np.asarray(shape, dtype=float) * sp
    grids = [np.arange(n, dtype=np.float32).reshape([-1 if a == k else 1 for a in range(ndim)]) * float(s)
             for k, (n, s) in enumerate(zip(shape, sp))]
    centre = extent / 2.0

    body = _ellipsoid_mm(grids, centre, extent * 0.48)
    organ_c = centre + extent * rng.uniform(-0.06, 0.06, size=ndim)
    organ_r = extent * rng.uniform(0.22, 0.32 if num_classes > 2 else 0.28, size=ndim)
    step_mm = float(sp.min())
    organ = _ellipsoid_mm(grids, organ_c, organ_r) & body
    in_plane = rng.uniform(0, 2 * np.pi)
    direction = np.zeros(ndim)
    direction[-2:] = np.cos(in_plane), np.sin(in_plane)
    small = float(rng.uniform(1.8, 2.6)) * float(sp[-1])
    nodule_r = np.maximum(np.full(ndim, small), 1.1 * sp)
    structures: list[tuple[np.ndarray, int, bool]] = [(organ, 1, False)]  # (mask, label, nested in what is painted)
    if num_classes == 2:  # a satellite outside the organ
        reach = 1.0 / np.sqrt(np.sum((direction / organ_r) ** 2))  # the organ's radius along `direction`
        nodule_c = organ_c + direction * (reach + 2.2 * small + step_mm)
        nodule_c = np.clip(nodule_c, nodule_r + sp, extent - nodule_r - sp)
        nodule = _ellipsoid_mm(grids, nodule_c, nodule_r) & body & ~organ
        structures.append((nodule, 1, False))
    else:  # a second small lesion inside the organ, away from the main one
        lesion_c = organ_c - direction * organ_r * rng.uniform(0.15, 0.3)
        lesion_r = organ_r * rng.uniform(0.35, 0.5, size=ndim)
        lesion = _ellipsoid_mm(grids, lesion_c, lesion_r) & organ
        nodule_c = organ_c + direction * organ_r * 0.6
        nodule = _ellipsoid_mm(grids, nodule_c, nodule_r) & organ & ~lesion
        structures += [(nodule, 2, True), (lesion, 2, True)]
        if num_classes == 4:
            core_c = lesion_c + lesion_r * rng.uniform(-0.2, 0.2, size=ndim)
            core = _ellipsoid_mm(grids, core_c, lesion_r * rng.uniform(0.4, 0.6, size=ndim)) & lesion
            structures.append((core, 3, True))

    reference = np.zeros(shape, dtype=np.uint8)
    for mask, label, _ in structures:
        reference[mask] = label
    raters = _simulate_habits(structures, shape=shape, spacing=sp, num_raters=num_raters, rng=rng,
                              small_voxels=max(int(nodule.sum()), 1))
    image = _image(reference, body, spacing=sp, channels=channels, num_classes=num_classes, rng=rng)
    return {"image": image, "raters": raters, "spacing": tuple(float(s) for s in spacing), "origin": origin}


def _simulate_habits(
    structures: list[tuple[np.ndarray, int, bool]],
    *,
    shape: tuple[int, ...],
    spacing: np.ndarray,
    num_raters: int,
    rng: np.random.Generator,
    small_voxels: int,
) -> np.ndarray:
    """Raters with habits: the signed distance of each structure, moved by a habit bias and smooth noise."""
    step = float(np.min(spacing))
    distances = [_signed_distance(mask, spacing) for mask, _, _ in structures]
    sizes = [int(mask.sum()) for mask, _, _ in structures]
    correlation = float(np.mean([max(1.5, 3.0 * step / s) for s in spacing]))
    out = np.zeros((num_raters,) + shape, dtype=np.uint8)
    for r in range(num_raters):
        habit = RATER_HABITS[r % len(RATER_HABITS)]
        rater_rng = np.random.default_rng([int(rng.integers(2**31)), r])
        bias = {"over-segments": 1.4, "under-segments": -1.1, "misses small structures": 0.0}[habit] * step
        for (_mask, label, nested), dist, size in zip(structures, distances, sizes):
            if size == 0:
                continue
            is_small = size <= 2 * small_voxels
            miss = 0.85 if habit == "misses small structures" else (0.1 if habit == "under-segments" else 0.0)
            if is_small and rater_rng.random() < miss:
                continue
            noise = 0.6 * step * _smooth_field(shape, rater_rng, correlation=correlation)
            drawn = dist + noise + bias + 0.3 * step * rater_rng.standard_normal() > 0
            if nested:
                drawn &= out[r] > 0
            out[r][drawn] = label
    return out


def _image(
    reference: np.ndarray,
    body: np.ndarray,
    *,
    spacing: np.ndarray,
    channels: int,
    num_classes: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Per channel: class intensities with this case's contrast, partial-volume blur, bias field, noise."""
    shape = reference.shape
    scale = rng.uniform(300.0, 900.0)
    offset = rng.uniform(20.0, 150.0)
    noise_level = rng.uniform(0.03, 0.08)
    bias = 1.0 + 0.08 * _smooth_field(shape, rng, correlation=float(max(shape)) / 4.0)
    out = np.empty((channels,) + shape, dtype=np.float32)
    # background (inside the body), organ, lesion, core: each channel another contrast (as MR sequences)
    contrasts = np.array([[0.20, 0.50, 0.85, 1.00], [0.30, 0.55, 0.25, 0.10], [0.15, 0.40, 0.70, 0.45],
                          [0.35, 0.25, 0.60, 0.90]])
    for c in range(channels):
        table = contrasts[c % len(contrasts)] * rng.uniform(0.85, 1.15, size=4)
        table[1:] += rng.uniform(-0.05, 0.05)
        channel = ndi.gaussian_filter(table[reference].astype(np.float32), sigma=[0.8 / s for s in spacing])
        channel = channel * bias + noise_level * rng.standard_normal(shape)
        channel = (offset + scale * channel) * body  # exactly zero outside the body
        out[c] = np.maximum(channel, 0.0)
    return out
