"""npe2 sample data: synthetic multi-rater phantoms and a real scan with simulated raters.

Also the one description of how a case is drawn — the image, one Labels layer per rater in its own
colour, the per-class agreement maps and the rater entropy map, with their names, colormaps and
geometry — shared by the reader, the sample data and the *Load raters* widget.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .core.geometry import Geometry
from .core.phantom import make_phantom_raters, make_real_raters
from .core.raters import RaterSet
from .widgets._case import CASE_KEY  # Qt-free module: the case tag every plugin layer carries

__all__ = [
    "AGREEMENT_COLORMAPS",
    "RATER_COLORS",
    "case_layer_specs",
    "image_contrast_limits",
    "make_phantom_raters",
    "map_layer_specs",
    "phantom_2d",
    "phantom_3d",
    "rater_colormap",
    "rater_layer_data",
    "rater_layer_specs",
    "real_ct_2d",
    "real_mr_3d",
    "with_geometry",
]

LayerData = tuple[Any, dict[str, Any], str]

#: One hue per rater, bright enough to read as outlines over a grey scan (colour-blind friendly order first).
RATER_COLORS = ("#ff6b6b", "#4dabf7", "#ffd43b", "#69db7c", "#da77f2", "#ff922b", "#38d9a9", "#f783ac",
                "#a9e34b", "#748ffc")
AGREEMENT_COLORMAPS = ("green", "magenta", "cyan", "yellow", "red", "blue", "bop orange", "bop purple")


def rater_colormap(index: int, num_classes: int) -> dict[int | None, Any]:
    """Label → RGBA for rater ``index``: every class in the rater's hue, lighter for higher classes.

    Background (0) is transparent; class 1 has the full hue, later classes blend towards white so
    classes stay distinguishable while the rater keeps one colour.
    """
    code = RATER_COLORS[index % len(RATER_COLORS)].lstrip("#")  # "#rrggbb" (no matplotlib on the GUI thread)
    base = np.array([int(code[i:i + 2], 16) / 255.0 for i in (0, 2, 4)])
    colors: dict[int | None, Any] = {None: (0.0, 0.0, 0.0, 0.0), 0: (0.0, 0.0, 0.0, 0.0)}
    for k in range(1, max(int(num_classes), 2)):
        mix = 0.55 * (k - 1) / max(num_classes - 2, 1)
        colors[k] = (*(base * (1 - mix) + mix), 1.0)
    return colors


def image_contrast_limits(image: np.ndarray) -> tuple[float, float]:
    """Contrast limits of an image from the 0.5–99.5 % percentiles of a strided sample (cheap on big scans)."""
    arr = np.asarray(image)
    step = max(1, int(round((arr.size / 2_000_000) ** (1.0 / max(arr.ndim, 1)))))
    sample = arr[tuple(slice(None, None, step) for _ in range(arr.ndim))].astype(np.float64)
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return 0.0, 1.0
    lo, hi = (float(v) for v in np.percentile(sample, [0.5, 99.5]))
    if hi <= lo:
        lo, hi = float(sample.min()), float(sample.max())
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


def rater_layer_specs(
    raters: RaterSet,
    image: Any = None,
    *,
    image_name: str = "image",
    outlines: bool = False,
    contrast_limits: tuple[float, float] | None = None,
) -> list[LayerData]:
    """The image and one Labels layer per rater, without geometry (see :func:`with_geometry`).

    Each rater gets its own colour (:func:`rater_colormap`). With ``outlines`` (and more than one
    rater) every rater is shown, for a caller that then sets ``contour`` so that all of them and the
    image stay visible; otherwise only the first rater is shown, filled.
    """
    out: list[LayerData] = []
    if image is not None:
        limits = contrast_limits if contrast_limits is not None else image_contrast_limits(image)
        out.append((image, {"name": image_name, "colormap": "gray", "contrast_limits": list(limits)}, "image"))
    outline = outlines and raters.num_raters > 1
    for i, (name, labels) in enumerate(zip(raters.rater_names, raters.labels)):
        meta = {"class_names": list(raters.class_names), "spacing": list(raters.scale), "rater": name,
                "rater_color": RATER_COLORS[i % len(RATER_COLORS)]}
        kwargs = {"name": name, "opacity": 0.9 if outline else 0.6, "metadata": meta,
                  "colormap": rater_colormap(i, raters.num_classes)}
        if not outline:
            kwargs["visible"] = i == 0  # filled labels: only the first is shown, the image stays visible
        out.append((labels, kwargs, "labels"))
    return out


def map_layer_specs(raters: RaterSet, agreement: np.ndarray, entropy: np.ndarray) -> list[LayerData]:
    """The per-class agreement maps (hidden) and the rater entropy map, without geometry."""
    meta = {"class_names": list(raters.class_names), "spacing": list(raters.scale)}
    out: list[LayerData] = []
    for k in range(1, raters.num_classes):
        out.append((agreement[k], {
            "name": f"agreement: {raters.class_names[k]}",
            "colormap": AGREEMENT_COLORMAPS[(k - 1) % len(AGREEMENT_COLORMAPS)],
            "contrast_limits": [0.0, 1.0], "blending": "additive", "visible": False,
            "metadata": {**meta, "class": k, "rater_map": "agreement"},
        }, "image"))
    out.append((entropy, {
        "name": "rater entropy", "colormap": "magma", "contrast_limits": [0.0, 1.0], "blending": "additive",
        "metadata": {**meta, "rater_map": "entropy"},
    }, "image"))
    return out


def case_layer_specs(
    raters: RaterSet,
    agreement: np.ndarray,
    entropy: np.ndarray,
    *,
    outlines: bool = False,
    contrast_limits: tuple[float, float] | None = None,
) -> list[LayerData]:
    """A whole case, without geometry: the image, the maps, then the raters on top (so that the raters'
    outlines are drawn over the entropy map). The reader and *Load raters* both draw a case this way."""
    drawn = rater_layer_specs(raters, raters.image, outlines=outlines, contrast_limits=contrast_limits)
    split = len(drawn) - raters.num_raters
    return drawn[:split] + map_layer_specs(raters, agreement, entropy) + drawn[split:]


def with_geometry(layers: list[LayerData], geometry: Geometry, *, case: str | None = None,
                  prefix: str = "") -> list[LayerData]:
    """Add ``geometry``'s scale/translate/affine (and the case tag, a name prefix) to layer specs."""
    placed = geometry.layer_kwargs()
    out = []
    for data, kwargs, kind in layers:
        kwargs = {**kwargs, **placed, "name": f"{prefix}{kwargs['name']}"}
        if case is not None:
            kwargs["metadata"] = {**(kwargs.get("metadata") or {}), CASE_KEY: case}
        out.append((data, kwargs, kind))
    return out


def rater_layer_data(
    image: Any, raters: RaterSet, *, prefix: str = "", image_name: str = "image", case: str | None = None
) -> list[LayerData]:
    """napari layer data for an image and each rater of a :class:`RaterSet`, placed by its geometry.

    Spacing → ``scale``, origin → ``translate``, direction → ``affine``; each rater in its own colour.
    """
    specs = rater_layer_specs(raters, image, image_name=image_name)
    return with_geometry(specs, Geometry.of(raters), case=case, prefix=prefix)


def phantom_2d() -> list[LayerData]:
    """2-D phantom: organ, lesion and a nodule that some raters miss; four raters."""
    image, raters = make_phantom_raters(2)
    return rater_layer_data(image, raters, prefix="phantom ", case="phantom 2-D")


def phantom_3d() -> list[LayerData]:
    """3-D phantom with anisotropic voxels (2.5 × 1 × 1); four raters."""
    image, raters = make_phantom_raters(3)
    return rater_layer_data(image, raters, prefix="phantom3d ", case="phantom 3-D")


def real_ct_2d() -> list[LayerData]:
    """A real CT slice (pydicom's test data) with four simulated raters."""
    image, raters, _ = make_real_raters(2)
    return rater_layer_data(image, raters, prefix="CT ", case="CT slice")


def real_mr_3d() -> list[LayerData]:
    """A real MR head volume (nibabel's test data) with four simulated raters."""
    image, raters, _ = make_real_raters(3)
    return rater_layer_data(image, raters, prefix="MR ", case="MR head")
