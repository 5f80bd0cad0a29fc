"""Helpers shared by the dock widgets: error reporting and in-place layer updates."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.utils.notifications import show_error, show_info, show_warning

if TYPE_CHECKING:
    import napari
    from napari.layers import Layer

__all__ = [
    "connect_layer_list_changes",
    "layer_names",
    "notify_errors",
    "run_in_thread",
    "show_error",
    "show_info",
    "show_warning",
    "upsert_layer",
]

logger = logging.getLogger("napari_seg_uncertainty")


@contextlib.contextmanager
def notify_errors(action: str) -> Iterator[None]:
    """Turn any exception raised in the block into a napari error notification.

    The widgets call core functions inside this block so that bad input never reaches the
    user as a traceback dialog: the message says what failed and why, and the viewer stays usable.
    """
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - every failure becomes a notification
        logger.debug("%s failed", action, exc_info=True)
        show_error(f"{action} failed: {exc}")


def layer_names(viewer: napari.viewer.Viewer, layer_type: str, *, skip_uncertainty_maps: bool = False) -> list[str]:
    """Names of the viewer's layers of kind ``layer_type`` ("image", "labels", ...), in layer-list order.

    With ``skip_uncertainty_maps``, Image layers marked ``metadata["uncertainty_map"]`` (entropy and
    mutual-information maps this plugin adds) are left out.
    """
    return [
        layer.name
        for layer in viewer.layers
        if _is_layer_type(layer, layer_type)
        and not (skip_uncertainty_maps and (layer.metadata or {}).get("uncertainty_map", False))
    ]


def connect_layer_list_changes(viewer: napari.viewer.Viewer, callback: Callable[..., Any]) -> None:
    """Call ``callback(event)`` whenever a layer is added, removed or moved."""
    for event in (viewer.layers.events.inserted, viewer.layers.events.removed, viewer.layers.events.reordered):
        event.connect(callback)


def _is_layer_type(layer: Any, layer_type: str) -> bool:
    """Whether ``layer`` is a napari layer of kind ``layer_type`` ("image", "labels", ...)."""
    from napari import layers

    cls = getattr(layers, layer_type.capitalize(), None)
    return cls is not None and isinstance(layer, cls)


def upsert_layer(
    viewer: napari.viewer.Viewer,
    data: Any,
    *,
    name: str,
    layer_type: str = "image",
    geometry: Any = None,
    leading_axes: int = 0,
    case: str | None = None,
    **kwargs: Any,
) -> Layer:
    """Add a layer named ``name``, or update the existing one of that name and type in place.

    Updating in place keeps the user's display settings and avoids a pile-up of layers when a
    parameter changes. ``kwargs`` go to ``viewer.add_<layer_type>`` for a new layer; for an
    existing layer only ``scale``, ``translate``, ``affine``, ``metadata`` and ``contrast_limits``
    are refreshed.

    ``geometry`` (a :class:`~napari_seg_uncertainty.core.geometry.Geometry`, or a layer/RaterSet
    to read one from) places the layer: this is the one route by which every widget gives its
    output layers the source image's scale, translate and direction. ``leading_axes`` non-spatial
    axes in front of the spatial ones (classes, samples) get scale 1. ``case`` tags the layer
    with the case it belongs to (see :mod:`._case`), so loading another case replaces it.
    """
    if geometry is not None:
        from ..core.geometry import Geometry

        ndim = getattr(data, "ndim", len(getattr(data, "shape", ()))) - leading_axes
        kwargs.update(Geometry.of(geometry, ndim=ndim if not isinstance(geometry, Geometry) else None)
                      .layer_kwargs(leading_axes=leading_axes))
    if case is not None:
        from ._case import CASE_KEY

        kwargs["metadata"] = {**(kwargs.get("metadata") or {}), CASE_KEY: case}
    if name in viewer.layers:
        layer = viewer.layers[name]
        if _is_layer_type(layer, layer_type) and getattr(layer.data, "ndim", None) == getattr(data, "ndim", None):
            layer.data = data
            if "affine" not in kwargs and "scale" in kwargs:
                kwargs["affine"] = np.eye(layer.ndim + 1)  # a stale direction must not survive a new geometry
            for key in ("scale", "translate", "affine", "metadata", "contrast_limits"):
                if key in kwargs:
                    setattr(layer, key, kwargs[key])
            return layer
        viewer.layers.remove(layer)
    add = getattr(viewer, f"add_{layer_type}")
    return add(data, name=name, **kwargs)


def run_in_thread(
    func: Callable[..., Any],
    *args: Any,
    action: str,
    returned: Callable[[Any], None] | None = None,
    errored: Callable[[BaseException], None] | None = None,
    finished: Callable[[], None] | None = None,
    **kwargs: Any,
) -> Any:
    """Run ``func(*args, **kwargs)`` in a worker thread so the event loop never blocks.

    ``returned`` receives the result on the GUI thread. An exception becomes one napari error
    notification ``"<action> failed: <message>"`` (then ``errored`` is called, if given); unlike
    napari's own workers no traceback is relayed. Returns the started worker.
    """
    from superqt.utils import create_worker

    def _on_error(exc: BaseException) -> None:
        logger.debug("%s failed", action, exc_info=exc)
        show_error(f"{action} failed: {exc}")
        if errored is not None:
            errored(exc)

    connect: dict[str, Any] = {"errored": _on_error}
    if returned is not None:
        connect["returned"] = returned
    if finished is not None:
        connect["finished"] = finished
    return create_worker(func, *args, _connect=connect, _start_thread=True, **kwargs)
