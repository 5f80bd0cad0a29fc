"""npe2 sample data: synthetic multi-rater phantoms and a real scan with simulated raters."""

from __future__ import annotations

from typing import Any

from .core.phantom import make_phantom_raters, make_real_raters
from .core.raters import RaterSet

__all__ = [
    "make_phantom_raters",
    "phantom_2d",
    "phantom_3d",
    "rater_layer_data",
    "real_ct_2d",
    "real_mr_3d",
]

LayerData = tuple[Any, dict[str, Any], str]


def rater_layer_data(image: Any, raters: RaterSet, *, prefix: str = "", image_name: str = "image") -> list[LayerData]:
    """napari layer data for an image and each rater of a :class:`RaterSet` (spacing → scale)."""
    scale = list(raters.scale)
    translate = list(raters.origin) if raters.origin is not None else [0.0] * raters.ndim
    common = {"scale": scale, "translate": translate}
    out: list[LayerData] = []
    if image is not None:
        out.append((image, {"name": f"{prefix}{image_name}", "colormap": "gray", **common}, "image"))
    for name, labels in zip(raters.rater_names, raters.labels):
        meta = {"class_names": list(raters.class_names), "spacing": list(raters.scale), "rater": name}
        # only the first rater is shown at first, so the image stays visible under the filled labels
        kwargs = {"name": f"{prefix}{name}", "opacity": 0.6, "metadata": meta,
                  "visible": name == raters.rater_names[0], **common}
        out.append((labels, kwargs, "labels"))
    return out


def phantom_2d() -> list[LayerData]:
    """2-D phantom: organ, lesion and a nodule that some raters miss; four raters."""
    image, raters = make_phantom_raters(2)
    return rater_layer_data(image, raters, prefix="phantom ")


def phantom_3d() -> list[LayerData]:
    """3-D phantom with anisotropic voxels (2.5 × 1 × 1); four raters."""
    image, raters = make_phantom_raters(3)
    return rater_layer_data(image, raters, prefix="phantom3d ")


def real_ct_2d() -> list[LayerData]:
    """A real CT slice (pydicom's test data) with four simulated raters."""
    image, raters, _ = make_real_raters(2)
    return rater_layer_data(image, raters, prefix="CT ")


def real_mr_3d() -> list[LayerData]:
    """A real MR head volume (nibabel's test data) with four simulated raters."""
    image, raters, _ = make_real_raters(3)
    return rater_layer_data(image, raters, prefix="MR ")
