"""The open-layers side of the *Train* dock, without Qt: which layers train, whether they share a grid.

:func:`is_train_image` filters the Image choices (grey-level images, not the maps this plugin adds);
:func:`grid_mismatch` says when the rater layers do not label the image's voxels (the dock warns);
:func:`layer_arrays` reads the image and the ``(R, *spatial)`` rater stack from the selected layers,
refusing what cannot train (nothing selected, an RGB image, raters of different shapes). Used by
:class:`~napari_seg_uncertainty.widgets._train_form.TrainForm` (*Train on: open layers*).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..core.geometry import Geometry
from ._layer_choices import is_image_layer

__all__ = ["grid_mismatch", "is_train_image", "layer_arrays"]


def _fmt(values: Any) -> str:
    return "(" + ", ".join(f"{float(v):g}" for v in values) + ")"


def grid_mismatch(image_layer: Any, rater_layers: list[Any]) -> str | None:
    """Why the raters do not label the image's voxels (shape, spacing, origin, direction), or ``None``.

    A single rater layer with one more axis than the image is an ``(R, *spatial)`` stack.
    """
    if image_layer is None or not rater_layers:
        return None
    image_shape = tuple(np.shape(image_layer.data))
    for layer in rater_layers:
        shape = tuple(np.shape(layer.data))
        n = len(image_shape)
        if len(rater_layers) == 1 and len(shape) == n + 1:
            shape = shape[1:]
        if len(shape) != n:
            return (f"rater {layer.name!r} has {len(shape)} axes {shape} but image {image_layer.name!r} has "
                    f"{n} {image_shape}; every rater must label the image's grid.")
        if shape != image_shape:
            return (f"rater {layer.name!r} has shape {shape} but image {image_layer.name!r} has {image_shape}; "
                    "every rater must label the image's grid.")
        try:
            mine, theirs = Geometry.of(image_layer, ndim=n), Geometry.of(layer, ndim=n)
        except (TypeError, ValueError):
            continue
        if not mine.same_grid(theirs):
            differences = []
            if not np.allclose(mine.spacing, theirs.spacing, rtol=1e-5, atol=1e-4):
                differences.append(f"spacing {_fmt(theirs.spacing)} vs {_fmt(mine.spacing)}")
            if not np.allclose(mine.origin, theirs.origin, rtol=1e-5, atol=1e-4):
                differences.append(f"origin {_fmt(theirs.origin)} vs {_fmt(mine.origin)}")
            if not differences:
                differences.append("direction")
            return (f"rater {layer.name!r} lies on another grid than image {image_layer.name!r}: "
                    f"{', '.join(differences)}. Training pairs voxels by index, so the model would learn "
                    "misplaced labels; load the raters with the image's geometry.")
    return None


def is_train_image(layer: Any) -> bool:
    """A grey-level image to train on: not RGB, not a map or probability stack this plugin added."""
    meta = layer.metadata or {}
    return is_image_layer(layer, skip_uncertainty_maps=True) and "class_names" not in meta and "rater" not in meta


def layer_arrays(image_layer: Any, rater_layers: list[Any]) -> tuple[np.ndarray, np.ndarray]:
    """The image's array and the ``(R, *S)`` rater stack of the selected layers, checked.

    A single rater layer with one more axis than the image is taken as the stack itself.

    Raises
    ------
    ValueError
        No image or no rater layer selected, an RGB image, or rater layers of different shapes.
    """
    if image_layer is None:
        raise ValueError("no Image layer selected; open an image (e.g. File > Open Sample > phantom).")
    if not rater_layers:
        raise ValueError("no rater Labels layer selected; select one Labels layer per rater.")
    if image_layer.rgb:
        raise ValueError(f"image layer {image_layer.name!r} is RGB; convert it to a grey-level image first.")
    image = np.asarray(image_layer.data)
    arrays = [np.asarray(layer.data) for layer in rater_layers]
    if len(arrays) == 1 and arrays[0].ndim == image.ndim + 1:
        return image, arrays[0]  # one (R, *S) stack
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise ValueError(
            f"the rater layers have different shapes {sorted(shapes)}; every rater must label the image's grid."
        )
    return image, np.stack(arrays)
