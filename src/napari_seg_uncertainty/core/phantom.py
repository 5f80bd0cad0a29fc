"""Synthetic and real-image multi-rater data for demos, tests and the napari sample menu.

Raters are simulated from a reference segmentation by perturbing each structure's signed
distance with a smooth random field (raters disagree at boundaries), a per-rater bias
(generous or conservative raters), and by sometimes missing small structures, as in LIDC
where about 40 % of the masks of a nodule are empty.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from numbers import Integral
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from ._memory import array_bytes, check_allocation
from ._validation import check_int, check_positive, check_probability, check_seed, check_spacing, describe
from .raters import RaterSet

__all__ = ["make_phantom_raters", "make_real_raters", "simulate_raters"]


def _check_ndim(ndim: Any) -> int:
    if isinstance(ndim, bool) or not isinstance(ndim, Integral) or ndim not in (2, 3):
        raise ValueError(f"ndim must be 2 or 3, got {ndim!r}.")
    return int(ndim)


def _signed_distance(mask: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """Signed distance in spacing units: positive inside ``mask``, negative outside."""
    if not mask.any():
        return np.full(mask.shape, -np.inf, dtype=np.float32)
    inside = ndi.distance_transform_edt(mask, sampling=spacing)
    outside = ndi.distance_transform_edt(~mask, sampling=spacing)
    return (inside - outside).astype(np.float32)


def _smooth_field(shape: tuple[int, ...], rng: np.random.Generator, *, correlation: float) -> np.ndarray:
    """Zero-mean, unit-variance random field smoothed over ``correlation`` voxels."""
    field = ndi.gaussian_filter(rng.standard_normal(shape).astype(np.float32), correlation, mode="wrap")
    std = field.std()
    return field / std if std > 0 else field


def simulate_raters(
    structures: Sequence[np.ndarray],
    *,
    num_raters: int = 4,
    spacing: Sequence[float] | None = None,
    boundary_noise: float = 1.5,
    rater_bias: float = 1.0,
    miss_probability: Sequence[float] | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Simulate raters who outline the same structures with different boundaries.

    Parameters
    ----------
    structures : sequence of numpy.ndarray
        Binary reference masks, one per foreground class ``1..K`` in painting order (a later
        structure is painted over an earlier one).
    num_raters : int
        Number of raters ``R``.
    spacing : sequence of float, optional
        Voxel size; distances and noise amplitudes are in these units (default 1 per axis).
    boundary_noise : float
        Standard deviation of the smooth boundary displacement, in spacing units.
    rater_bias : float
        Standard deviation of each rater's global offset (dilation > 0 / erosion < 0) per structure.
    miss_probability : sequence of float, optional
        Per structure, the chance that a rater leaves it out entirely (default 0). At least one rater
        always draws each non-empty structure.
    seed : int
        Random seed; the same seed gives the same raters.

    Returns
    -------
    numpy.ndarray
        uint8 ``(R, *spatial)`` label maps.

    Examples
    --------
    >>> import numpy as np
    >>> disk = np.hypot(*np.mgrid[-20:20, -20:20]) < 12
    >>> simulate_raters([disk], num_raters=3, seed=1).shape
    (3, 40, 40)
    """
    if isinstance(structures, (str, bytes, np.ndarray)) or not isinstance(structures, Sequence):
        raise TypeError(f"structures must be a list of binary masks, got {describe(structures)}.")
    if not structures:
        raise ValueError("structures is empty; give at least one binary mask.")
    masks = []
    for i, mask in enumerate(structures):
        arr = np.asarray(mask)
        if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
            raise TypeError(f"structures[{i}] must be a binary mask array, got {describe(mask)}.")
        if arr.ndim not in (2, 3) or arr.size == 0:
            raise ValueError(f"structures[{i}] must be a non-empty 2-D or 3-D mask, got shape {arr.shape}.")
        if not np.isfinite(arr).all():
            raise ValueError(f"structures[{i}] contains NaN or infinite values; expected a binary mask.")
        masks.append(arr.astype(bool))
    structures = masks
    shape = structures[0].shape
    if any(s.shape != shape for s in structures):
        raise ValueError(f"structures must share one shape, got {[s.shape for s in structures]}.")
    num_raters = check_int(num_raters, name="num_raters", minimum=1)
    spacing = check_spacing(spacing, len(shape)) or (1.0,) * len(shape)
    boundary_noise = check_positive(boundary_noise, name="boundary_noise", allow_zero=True)
    rater_bias = check_positive(rater_bias, name="rater_bias", allow_zero=True)
    if miss_probability is None:
        miss = [0.0] * len(structures)
    else:
        sequence = isinstance(miss_probability, (Sequence, np.ndarray))
        if isinstance(miss_probability, (str, bytes)) or not sequence:
            raise TypeError(
                f"miss_probability must be a sequence of numbers, got {describe(miss_probability)}."
            )
        miss = [check_probability(m, name=f"miss_probability[{i}]") for i, m in enumerate(miss_probability)]
    if len(miss) != len(structures):
        raise ValueError(f"miss_probability needs one value per structure ({len(structures)}), got {len(miss)}.")
    seed = check_seed(seed)
    check_allocation(
        array_bytes((num_raters + 3 * len(structures) + 2, *shape), np.float32),
        what=f"{num_raters} rater maps of shape {shape} with distance and noise fields",
        cause=f"num_raters={num_raters} on structures of shape {shape}",
        advice="simulate fewer raters or on a smaller grid",
    )
    rng = np.random.default_rng(seed)
    distances = [_signed_distance(s, spacing) for s in structures]
    correlation = tuple(max(2.0, 6.0 / sp) for sp in spacing)
    missed = rng.random((len(structures), num_raters)) < np.asarray(miss)[:, None]
    for k in range(len(structures)):
        if missed[k].all():
            missed[k, rng.integers(num_raters)] = False
    out = np.zeros((num_raters,) + shape, dtype=np.uint8)
    for r in range(num_raters):
        for k, dist in enumerate(distances):
            if missed[k, r] or not structures[k].any():
                continue
            noise = boundary_noise * _smooth_field(shape, rng, correlation=float(np.mean(correlation)))
            offset = rater_bias * rng.standard_normal()
            out[r][dist + noise + offset > 0] = k + 1
    return out


def _ellipsoid(shape: tuple[int, ...], centre: Sequence[float], radii: Sequence[float]) -> np.ndarray:
    grids = np.ogrid[tuple(slice(0, n) for n in shape)]
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radii)) <= 1.0


def make_phantom_raters(
    ndim: int = 2,
    *,
    shape: Sequence[int] | None = None,
    num_raters: int = 4,
    seed: int = 0,
) -> tuple[np.ndarray, RaterSet]:
    """A synthetic multi-rater phantom: an organ, a lesion inside it and a small nodule.

    The raters disagree at every boundary and about 40 % of them miss the nodule.

    Parameters
    ----------
    ndim : {2, 3}
        2-D ``(Y, X)`` or 3-D ``(Z, Y, X)``.
    shape : sequence of int, optional
        Spatial shape; default ``(128, 128)`` in 2-D and ``(40, 96, 96)`` with spacing
        ``(2.5, 1, 1)`` in 3-D (anisotropic voxels, as in clinical CT/MR).
    num_raters : int
        Number of raters.
    seed : int
        Random seed.

    Returns
    -------
    image : numpy.ndarray
        float32 image with partial-volume blur and noise.
    raters : RaterSet
        The raters' label maps with class names ``background, organ, lesion, nodule``.

    Examples
    --------
    >>> image, raters = make_phantom_raters(2, seed=0)
    >>> image.shape, raters.num_raters, raters.class_names
    ((128, 128), 4, ['background', 'organ', 'lesion', 'nodule'])
    """
    ndim = _check_ndim(ndim)
    if shape is None:
        shape = (128, 128) if ndim == 2 else (40, 96, 96)
    if isinstance(shape, (str, bytes)) or not isinstance(shape, (Sequence, np.ndarray)) or not all(
        isinstance(s, Integral) and not isinstance(s, bool) for s in shape
    ):
        raise TypeError(f"shape must be a sequence of {ndim} integers, got {describe(shape)}.")
    shape = tuple(int(s) for s in shape)
    if len(shape) != ndim or min(shape) < 8:
        raise ValueError(f"shape must have {ndim} entries of at least 8, got {shape}.")
    num_raters = check_int(num_raters, name="num_raters", minimum=1)
    seed = check_seed(seed)
    check_allocation(
        array_bytes(shape, np.float64) * 12 + array_bytes((num_raters, *shape), np.uint8),
        what=f"the phantom of shape {shape} (image, structures, distance and noise fields)",
        cause=f"shape={shape}",
        advice="use a smaller shape",
    )
    spacing = (1.0, 1.0) if ndim == 2 else (2.5, 1.0, 1.0)
    centre = np.array(shape, dtype=float) / 2.0
    sizes = np.array(shape, dtype=float)
    organ = _ellipsoid(shape, centre, sizes * 0.36)
    lesion = _ellipsoid(shape, centre + sizes * np.r_[[0.0] * (ndim - 2), -0.06, 0.08], sizes * 0.13)
    nodule = _ellipsoid(shape, centre + sizes * np.r_[[0.0] * (ndim - 2), 0.18, -0.14],
                        np.maximum(sizes * 0.045, 1.6))
    reference = np.zeros(shape, dtype=np.uint8)
    for k, mask in enumerate((organ, lesion, nodule), start=1):
        reference[mask] = k
    labels = simulate_raters([organ, lesion, nodule], num_raters=num_raters, spacing=spacing,
                             boundary_noise=1.5, rater_bias=0.8, miss_probability=(0.0, 0.0, 0.4), seed=seed)
    rng = np.random.default_rng(seed + 1000)
    intensities = np.array([0.1, 0.45, 0.8, 0.65], dtype=np.float32)
    image = intensities[reference]
    image = ndi.gaussian_filter(image, sigma=[1.2 / s for s in spacing])
    image = (image + 0.04 * rng.standard_normal(shape)).astype(np.float32)
    raters = RaterSet(labels=labels, spacing=spacing, class_names=["background", "organ", "lesion", "nodule"],
                      rater_names=[f"rater {i + 1}" for i in range(num_raters)], image=image)
    return image, raters


def _package_file(package: str, *parts: str) -> str | None:
    try:
        module = __import__(package)
    except ImportError:
        return None
    path = os.path.join(os.path.dirname(module.__file__), *parts)
    return path if os.path.exists(path) else None


def make_real_raters(ndim: int = 2, *, num_raters: int = 4, seed: int = 0) -> tuple[np.ndarray, RaterSet, str]:
    """A real scan shipped inside an installed package, with simulated raters.

    2-D: pydicom's ``CT_small.dcm`` (a 128 × 128 CT slice, 0.66 mm pixels); the raters outline the
    body (HU > −300) and dense tissue (HU > 150). 3-D: nibabel's ``anatomical.nii`` (a 33 × 41 × 25
    MR head volume, 2 mm voxels); the raters outline the head and the bright tissue. When neither
    package is installed, scikit-image's ``camera`` photograph stands in. Nothing is downloaded.

    Parameters
    ----------
    ndim : {2, 3}
        Which image.
    num_raters : int
        Number of simulated raters.
    seed : int
        Random seed for the raters.

    Returns
    -------
    image : numpy.ndarray
        float32 image in its original units (HU for CT).
    raters : RaterSet
        Simulated raters with the image's spacing and geometry.
    description : str
        Where the image came from.
    """
    from .io import read_image

    ndim = _check_ndim(ndim)
    num_raters = check_int(num_raters, name="num_raters", minimum=1)
    seed = check_seed(seed)
    path = (_package_file("pydicom", "data", "test_files", "CT_small.dcm") if ndim == 2
            else _package_file("nibabel", "tests", "data", "anatomical.nii"))
    if path is not None:
        image, meta = read_image(path)
        image = image.astype(np.float32)
        spacing = meta.spacing
        if ndim == 2:
            body_thr, dense_thr, names = -300.0, 150.0, ["background", "body", "dense tissue"]
            description = f"CT slice from pydicom's test data ({os.path.basename(path)})"
        else:
            lo, hi = np.percentile(image, [35, 85])
            body_thr, dense_thr, names = float(lo), float(hi), ["background", "head", "bright tissue"]
            description = f"MR volume from nibabel's test data ({os.path.basename(path)})"
    else:
        from skimage import data as skdata

        image = skdata.camera().astype(np.float32)
        if ndim == 3:
            image = np.stack([ndi.shift(image, (0, d), order=1) for d in range(-4, 5, 2)])
        spacing = (1.0,) * ndim
        body_thr, dense_thr, names = 60.0, 160.0, ["background", "dark", "bright"]
        description = "scikit-image camera (no medical test image installed)"
    smooth = ndi.gaussian_filter(image, 1.0)
    body = ndi.binary_fill_holes(smooth > body_thr)
    lab, n = ndi.label(body)
    if n > 1:
        sizes = ndi.sum(body, lab, index=range(1, n + 1))
        body = lab == (1 + int(np.argmax(sizes)))
    dense = ndi.binary_opening(body & (smooth > dense_thr))
    labels = simulate_raters([body, dense], num_raters=num_raters, spacing=spacing,
                             boundary_noise=1.0 * min(spacing), rater_bias=0.7 * min(spacing), seed=seed)
    raters = RaterSet(labels=labels, spacing=spacing, origin=meta.origin if path else None,
                      class_names=names, rater_names=[f"rater {i + 1}" for i in range(num_raters)],
                      image=image)
    return image, raters, description
