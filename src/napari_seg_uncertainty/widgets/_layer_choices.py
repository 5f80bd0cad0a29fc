"""Layer choices that survive: combo boxes holding layer objects, filtered to layers that fit.

A choice is a ``(name, layer)`` pair, so a widget's value is the layer itself: renaming a layer
renames its entry and keeps it selected, and a removed layer disappears. :class:`LayerWatcher`
calls a widget's ``reset_choices`` on every addition, removal, move and rename, and disconnects
itself when the widget is destroyed (no callback reaches a deleted Qt object). The predicates say
which layers fit a role (``probabilities``: float ``(C, *S)`` summing to 1 over C; ``members``: float
``(M, C, *S)``; ``labels``: integer layers) and, for the error message, why a layer does not.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import napari
    from napari.layers import Layer

__all__ = [
    "LayerWatcher",
    "choices_for",
    "is_image_layer",
    "is_labels_layer",
    "is_probability_layer",
    "labels_problem",
    "member_problem",
    "probability_problem",
]

#: Voxels checked when deciding whether an image sums to 1 over its first axis (a strided sample).
_PROBE_VOXELS = 4096


def _layer_kind(layer: Any) -> str:
    return type(layer).__name__.lower()


def is_image_layer(layer: Any, *, skip_uncertainty_maps: bool = False) -> bool:
    """An Image layer (not RGB); with ``skip_uncertainty_maps`` entropy/MI maps the plugin added are left out."""
    if _layer_kind(layer) != "image" or getattr(layer, "rgb", False):
        return False
    return not (skip_uncertainty_maps and (layer.metadata or {}).get("uncertainty_map", False))


#: Largest value range of an integer Image layer that is still offered as a label map.
_MAX_LABEL_RANGE = 255


def is_labels_layer(layer: Any) -> bool:
    """A Labels layer, or an Image layer of small non-negative integers (a label map opened as an image).

    An integer scan (a CT in Hounsfield units, an MR in int16) is not offered: its contrast limits,
    which napari has already computed, span far more than a label map's few classes.
    """
    kind = _layer_kind(layer)
    if kind == "labels":
        return True
    if kind != "image" or not np.issubdtype(np.dtype(getattr(layer.data, "dtype", float)), np.integer):
        return False
    low, high = getattr(layer, "contrast_limits_range", None) or getattr(layer, "contrast_limits", (0, 0))
    return low >= 0 and high - low <= _MAX_LABEL_RANGE


def probability_problem(layer: Any) -> str | None:
    """Why ``layer`` is not a probability map ``(C, *spatial)`` summing to 1 over C, or ``None`` if it is."""
    name = getattr(layer, "name", "?")
    expected = "a float Image layer of shape (C, *spatial) with C ≥ 2 whose values sum to 1 over the first axis"
    if _layer_kind(layer) != "image" or getattr(layer, "rgb", False):
        return f"layer {name!r} is a {type(layer).__name__} layer; expected {expected}."
    data = layer.data
    dtype = np.dtype(getattr(data, "dtype", float))
    shape = tuple(getattr(data, "shape", ()))
    if not np.issubdtype(dtype, np.floating):
        return f"layer {name!r} holds {dtype} values; expected {expected}."
    if len(shape) < 3 or shape[0] < 2:
        return f"layer {name!r} has shape {shape}; expected {expected}."
    if shape[0] > 64:
        return f"layer {name!r} has {shape[0]} entries on its first axis, too many for classes; expected {expected}."
    sample = _strided_sample(data)
    if sample is None:
        return None  # lazy data too large to probe: trust the shape and dtype
    if not np.all(np.isfinite(sample)):
        return f"layer {name!r} contains NaN or infinite values; expected {expected}."
    sums = sample.sum(axis=0)
    if not (sample.min() >= -1e-4 and np.allclose(sums, 1.0, atol=1e-3)):
        return (f"layer {name!r} does not sum to 1 over its first axis (sums range "
                f"{float(np.nanmin(sums)):.3g}–{float(np.nanmax(sums)):.3g}); expected {expected}.")
    return None


def labels_problem(layer: Any) -> str | None:
    """Why ``layer`` is not a label map (integer Labels layer ``(*spatial)``), or ``None`` if it is."""
    if is_labels_layer(layer):
        return None
    dtype = getattr(getattr(layer, "data", None), "dtype", "?")
    shape = tuple(getattr(getattr(layer, "data", None), "shape", ()))
    return (f"layer {getattr(layer, 'name', '?')!r} is a {type(layer).__name__} layer of {dtype} values with "
            f"shape {shape}; expected a Labels layer (or an integer image) of shape (*spatial) holding "
            "0 (background), 1, 2, …")


def member_problem(layer: Any) -> str | None:
    """Why ``layer`` is not a stack of member probabilities ``(M, C, *spatial)``, or ``None`` if it is."""
    name = getattr(layer, "name", "?")
    expected = ("a float Image layer of shape (M, C, *spatial) — samples or ensemble members, C ≥ 2 — whose "
                "values sum to 1 over C (the second axis)")
    if _layer_kind(layer) != "image" or getattr(layer, "rgb", False):
        return f"layer {name!r} is a {type(layer).__name__} layer; expected {expected}."
    data = layer.data
    shape = tuple(getattr(data, "shape", ()))
    if not np.issubdtype(np.dtype(getattr(data, "dtype", float)), np.floating):
        return f"layer {name!r} holds {data.dtype} values; expected {expected}."
    if len(shape) < 4 or shape[1] < 2 or shape[1] > 64:
        return f"layer {name!r} has shape {shape}; expected {expected}."
    sample = _strided_sample(data[0])
    if sample is not None and not (np.all(np.isfinite(sample)) and np.allclose(sample.sum(0), 1.0, atol=1e-3)):
        return f"layer {name!r} does not sum to 1 over its second axis; expected {expected}."
    return None


def is_probability_layer(layer: Any) -> bool:
    """Whether ``layer`` is a float ``(C, *spatial)`` Image layer summing to 1 over C."""
    return probability_problem(layer) is None


def _strided_sample(data: Any) -> np.ndarray | None:
    """Up to ~``_PROBE_VOXELS`` voxels of every class, read with strides (cheap on lazy arrays)."""
    shape = tuple(data.shape)
    spatial = shape[1:]
    n = int(np.prod(spatial))
    step = max(1, int(round((n / _PROBE_VOXELS) ** (1.0 / len(spatial)))))
    try:
        sample = np.asarray(data[(slice(None),) + tuple(slice(None, None, step) for _ in spatial)])
    except Exception:  # noqa: BLE001 - an unreadable lazy array is judged by shape and dtype only
        return None
    return sample.reshape(shape[0], -1).astype(np.float64)


def choices_for(viewer: napari.viewer.Viewer, accept: Callable[[Any], bool]) -> Callable[[Any], list[tuple[str, Any]]]:
    """A magicgui ``choices`` callable: ``(name, layer)`` for each layer ``accept`` takes, top of the list first."""

    def _choices(_widget: Any = None) -> list[tuple[str, Any]]:
        return [(layer.name, layer) for layer in reversed(list(viewer.layers)) if accept(layer)]

    return _choices


class LayerWatcher:
    """Call ``callback()`` when a layer is added, removed, moved or renamed, until ``owner`` is destroyed.

    ``owner`` is the widget's Qt object: when it is deleted the watcher disconnects everything, so
    closing a dock never leaves a callback into a deleted widget.
    """

    def __init__(self, viewer: napari.viewer.Viewer, callback: Callable[[], None], *, owner: Any = None) -> None:
        self._viewer_ref = weakref.ref(viewer)
        self._callback = callback
        self._layers: list[weakref.ref[Layer]] = []
        self._connected = True
        events = viewer.layers.events
        for emitter in (events.inserted, events.removed, events.moved, events.reordered):
            emitter.connect(self._on_list_changed)
        for layer in viewer.layers:
            self._watch(layer)
        if owner is not None:
            with contextlib.suppress(AttributeError, RuntimeError):
                owner.destroyed.connect(self.disconnect)

    def _watch(self, layer: Layer) -> None:
        if any(ref() is layer for ref in self._layers):
            return
        layer.events.name.connect(self._on_renamed)
        self._layers.append(weakref.ref(layer))

    def _on_list_changed(self, event: Any = None) -> None:
        if not self._connected:
            return
        if getattr(event, "type", None) == "inserted":
            layer = getattr(event, "value", None)
            if layer is not None:
                self._watch(layer)
        self._fire()

    def _on_renamed(self, _event: Any = None) -> None:
        if self._connected:
            self._fire()

    def _fire(self) -> None:
        try:
            self._callback()
        except RuntimeError as exc:  # the widget's Qt object was deleted under us
            if "deleted" not in str(exc):
                raise
            self.disconnect()

    def disconnect(self, *_args: Any) -> None:
        """Stop watching (idempotent)."""
        if not self._connected:
            return
        self._connected = False
        viewer = self._viewer_ref()
        if viewer is not None:
            events = viewer.layers.events
            for emitter in (events.inserted, events.removed, events.moved, events.reordered):
                with contextlib.suppress(Exception):
                    emitter.disconnect(self._on_list_changed)
        for ref in self._layers:
            layer = ref()
            if layer is not None:
                with contextlib.suppress(Exception):
                    layer.events.name.disconnect(self._on_renamed)
        self._layers.clear()
