"""Dock widget "Soft labels": preview LS, SVLS, mSVLS, rater mean, STAPLE and majority vote on rater layers.

The widget is a thin front-end to :mod:`napari_seg_uncertainty.workflow.soft_labels`: it gathers the selected
Labels layers (one per rater), runs :func:`~napari_seg_uncertainty.workflow.soft_labels.run_request` in a
worker thread and shows each class's probability as an Image layer (``soft A: <class>``), updated in place
whenever a parameter changes. A second method (``soft B: <class>``) can be shown side by side with a
difference layer ``soft A − B`` and its summary numbers, and method A can be exported with its spacing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, FileEdit, FloatSlider, FloatSpinBox, PushButton

from ..core._memory import array_bytes, format_bytes
from ..core.geometry import Geometry
from ..core.labels import SOFT_LABEL_METHODS
from ..workflow.soft_labels import SoftLabelsRequest, SoftLabelsResult, run_request
from ._base import DockWidget
from ._case import case_of
from ._common import check_memory, notify_errors, run_in_thread, show_error, show_info, upsert_layer
from ._layer_choices import is_labels_layer, labels_problem
from ._layer_queue import keep_selection, remove_layers
from ._layout import full_width_after

if TYPE_CHECKING:
    import napari

__all__ = ["SoftLabelsWidget"]

#: Colormaps of the foreground classes (background is grey and hidden at first).
CLASS_COLORMAPS = ("red", "green", "blue", "magenta", "yellow", "cyan", "bop orange", "bop purple")
NO_COMPARISON = "(none)"
DIFFERENCE_LAYER = "soft A − B"
#: Most classes the preview shows (one Image layer per class).
MAX_CLASSES = 64
#: Rater stacks of up to this many values (all raters together) are stacked and checked on the GUI thread, a
#: few milliseconds, so that bad input is reported at once; larger ones (a CT: 4 x 78.6 M) in the worker, where
#: the copy and the label scan (about 0.3 s at CT size) cannot freeze the window.
SYNC_VALUES = 1 << 24
#: Peak memory of each method in float32 ``(C, *spatial)`` maps: its output and its largest temporary, measured
#: on a 60x512x512 case (one-hot: the output alone; the others, which rest on counts or a per-class smoothing,
#: at most one more map).
METHOD_MAPS = {"one_hot": 1, "label_smoothing": 2, "svls": 2, "msvls": 2, "rater_mean": 2, "staple": 2,
               "majority_vote": 2}


def _method_choices() -> list[tuple[str, str]]:
    return [(title, key) for key, title in SOFT_LABEL_METHODS.items()]


def difference_colormap() -> Any:
    """Diverging colormap for ``soft A − B`` on contrast limits (−1, 1): transparent at 0.

    Pink where B is larger, green where A is larger (the ends of matplotlib's PiYG), fading to fully
    transparent at 0, so with translucent blending the scan shows through wherever the methods agree.
    """
    from napari.utils.colormaps import Colormap

    return Colormap(
        colors=[
            [0.773, 0.106, 0.490, 1.0],
            [0.914, 0.639, 0.788, 0.8],
            [1.0, 1.0, 1.0, 0.0],
            [0.631, 0.843, 0.416, 0.8],
            [0.302, 0.573, 0.129, 1.0],
        ],
        controls=[0.0, 0.25, 0.5, 0.75, 1.0],
        name="soft A − B (PiYG, clear at 0)",
    )


def _prefer_raters(layers: list[Any]) -> list[Any]:
    """The rater layers of the newest case among ``layers`` (all of them when none is tagged a rater)."""
    raters = [layer for layer in layers if (layer.metadata or {}).get("rater") is not None]
    if not raters:
        return layers
    newest = case_of(raters[0])  # choices list the top of the layer list first
    return [layer for layer in raters if case_of(layer) == newest]


@dataclass(frozen=True)
class _Gathered:
    """What the GUI thread gathers for a computation: the rater layers' data (not copied) and the parameters."""

    arrays: tuple[np.ndarray, ...]
    rater_names: tuple[str, ...]
    given_names: tuple[str, ...]
    method: str
    compare_method: str | None
    alpha: float
    sigma: float
    physical: bool
    geometry: Geometry
    case: str | None
    #: The rater layers themselves: the dock watches them for paint strokes while the worker reads ``arrays``.
    layers: tuple[Any, ...] = field(default=(), repr=False, compare=False)

    @property
    def values(self) -> int:
        """Values in the rater stack (raters × voxels)."""
        return sum(int(a.size) for a in self.arrays)


def prepare_request(gathered: _Gathered, *, num_classes: int | None = None) -> SoftLabelsRequest:
    """Stack the raters and check their labels: the request to compute (on the GUI thread for small stacks,
    in the worker for large ones). Raises ValueError on negative labels or too many classes."""
    arrays = gathered.arrays
    if num_classes is None:
        num_classes, _ = _classes_of(arrays, gathered.given_names)
    raters = np.stack(arrays)
    return SoftLabelsRequest(
        raters=raters,
        num_classes=num_classes,
        class_names=tuple(gathered.given_names[k] if k < len(gathered.given_names) else f"class {k}"
                          for k in range(num_classes)),
        rater_names=gathered.rater_names,
        method=gathered.method,
        compare_method=gathered.compare_method,
        alpha=gathered.alpha,
        sigma=gathered.sigma,
        spacing=gathered.geometry.spacing if gathered.physical else None,
        scale=gathered.geometry.spacing,
        translate=gathered.geometry.origin,
        geometry=gathered.geometry,
        case=gathered.case,
    )


def _classes_of(arrays: Sequence[np.ndarray], given_names: Sequence[str]) -> tuple[int, int]:
    """(number of classes, largest label) of rater maps, one array at a time (no stacked copy)."""
    largest, smallest = 0, 0
    for array in arrays:
        if array.size and np.issubdtype(array.dtype, np.number):
            largest = max(largest, int(array.max()))
            if np.issubdtype(array.dtype, np.signedinteger):
                smallest = min(smallest, int(array.min()))
    if smallest < 0:
        raise ValueError(f"the rater layers contain negative labels (minimum {smallest}); labels must be 0 "
                         "(background), 1, 2, ...")
    num_classes = max(largest + 1, len(given_names), 2)
    if num_classes > MAX_CLASSES:
        raise ValueError(f"the rater layers hold label {largest}, i.e. {num_classes} classes; the preview shows "
                         f"at most {MAX_CLASSES} classes (one layer each). Relabel to 0, 1, 2, ... first.")
    return num_classes, largest


def soft_labels_bytes(num_raters: int, spatial: Sequence[int], num_classes: int, *, method: str,
                      compare_method: str | None = None, rater_itemsize: int = 1) -> int:
    """Estimated peak memory (bytes) of computing soft labels: the stacked raters and the largest of the steps,
    which run one after the other: method A (:data:`METHOD_MAPS` float32 maps of ``(C, *spatial)``), then B beside
    A's output, then the comparison (A, B, their difference and its temporaries)."""
    one_map = array_bytes((num_classes, *spatial), np.float32)
    maps = METHOD_MAPS.get(method, 2)
    if compare_method is not None:
        maps = max(maps, 1 + METHOD_MAPS.get(compare_method, 2), 5)  # measured at CT size: about 4.7 maps
    return array_bytes((num_raters, *spatial), np.uint8) * rater_itemsize + maps * one_map


def check_soft_labels_memory(num_raters: int, spatial: Sequence[int], num_classes: int, *, method: str,
                             compare_method: str | None, rater_itemsize: int = 1) -> None:
    """Raise :class:`~napari_seg_uncertainty.core._memory.OutputTooLargeError` (a ValueError) before computing
    soft labels that would not fit in the free memory: the message names the size, the estimate and what to do."""
    needed = soft_labels_bytes(num_raters, spatial, num_classes, method=method, compare_method=compare_method,
                               rater_itemsize=rater_itemsize)
    methods = SOFT_LABEL_METHODS[method] + (f" compared with {SOFT_LABEL_METHODS[compare_method]}"
                                            if compare_method else "")
    each = format_bytes(array_bytes((num_classes, *spatial), np.float32))
    check_memory(
        needed, what=f"{methods} (each soft-label set is {num_classes} float32 maps, {each})",
        cause=f"{num_raters} raters of {'×'.join(str(s) for s in spatial)} voxels, {num_classes} classes",
        advice=("nothing was computed and your layers are unchanged; "
                + ("switch 'Compare with' off, " if compare_method else "")
                + "close layers you no longer need, or crop the raters to the region of interest"),
    )


def run_checked(request: SoftLabelsRequest | _Gathered) -> SoftLabelsResult:
    """The worker: check the memory the computation needs, stack the raters if not done yet, compute."""
    if isinstance(request, _Gathered):
        first = request.arrays[0]
        num_classes, _ = _classes_of(request.arrays, request.given_names)
        check_soft_labels_memory(len(request.arrays), first.shape, num_classes, method=request.method,
                                 compare_method=request.compare_method, rater_itemsize=first.dtype.itemsize)
        request = prepare_request(request, num_classes=num_classes)
    else:
        check_soft_labels_memory(request.raters.shape[0], request.raters.shape[1:], request.num_classes,
                                 method=request.method, compare_method=request.compare_method, rater_itemsize=0)
    return run_request(request)


class SoftLabelsWidget(DockWidget):
    """Preview soft labels of the selected rater layers live, compare two methods and export.

    Choose the rater Labels layers (one per rater), a method and its parameters (α for LS, σ for SVLS and
    mSVLS, optionally in mm from the layers' scale). Each class's probability appears as an Image layer
    ``soft A: <class>`` (contrast 0–1) that is updated in place when a parameter changes. With "Compare with"
    set, method B appears as ``soft B: <class>`` with a difference layer ``soft A − B`` for one class, and the
    status line gives the mean and max absolute difference and the mean total-variation distance.

    Every layer gets the rater layers' placement (scale, origin, direction) and case; the layers are added
    one per event-loop turn, so the window stays responsive on large volumes. On a CT-size stack the raters
    are stacked and checked in the worker from the layers' own arrays (a result read while a rater was painted
    is not shown: the dock computes again), and a computation whose estimated memory
    (:func:`soft_labels_bytes`) exceeds the free memory is refused with a notification before anything is
    allocated; the layers on show stay as they were.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        The viewer whose Labels layers are the raters (napari passes it in).

    Examples
    --------
    From the napari console, after loading raters (e.g. File > Open Sample > Multi-rater phantom):

    >>> from napari_seg_uncertainty.widgets.soft_labels import SoftLabelsWidget
    >>> widget = SoftLabelsWidget(viewer)  # doctest: +SKIP
    >>> viewer.window.add_dock_widget(widget, name="Soft labels")  # doctest: +SKIP
    >>> widget.compute(method="svls", sigma=1.5)  # doctest: +SKIP
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(viewer, status="Select rater layers and a method.")
        self.result: SoftLabelsResult | None = None
        self._pending: SoftLabelsRequest | _Gathered | None = None
        self._computing = False  # from start until the worker's `finished` reached the GUI thread
        self._watched: tuple[Any, ...] = ()  # rater layers a running worker stacks from their own arrays
        self._painted = False  # whether one of them was painted since the worker started
        self.exporting = False  # likewise for an export
        self._layer_names: dict[str, list[str]] = {"A": [], "B": []}
        self._chosen_difference_class: int | None = None
        self._build_controls()
        self.content.extend([
            self._raters, self._method, self._alpha, self._sigma, self._physical, self._compare,
            self._difference_class, self._live, self._compute, self._export_path, self._export,
        ])
        full_width_after(self.content, self._compute, self._status)
        self._update_enabled()
        self.finish_layout()
        self._select_all_raters()

    def _build_controls(self) -> None:
        self._raters = self.layer_select(is_labels_layer, explain=labels_problem, label="Rater layers", tooltip=(
            "Labels layers, one per rater (Ctrl/Shift-click to select several)."), min_height=72, max_height=130)
        self._method = ComboBox(label="Method", choices=_method_choices(), value="msvls")
        self._alpha = FloatSlider(label="α (LS)", min=0.0, max=1.0, step=0.01, value=0.1)
        self._sigma = FloatSpinBox(label="σ (SVLS)", min=0.05, max=20.0, step=0.1, value=1.0)
        self._physical = CheckBox(text="σ in mm (use the layers' scale)", value=False, tooltip=(
            "Off: σ in voxels, as in the SVLS paper. On: σ in the unit of the layer scale, so neighbours "
            "across thick slices get less weight."))
        self._compare = ComboBox(label="Compare with", choices=[(NO_COMPARISON, NO_COMPARISON), *_method_choices()],
                                 value=NO_COMPARISON)
        self._difference_class = ComboBox(label="Difference of", choices=self._difference_choices, tooltip=(
            "Class shown in the 'soft A − B' layer: green where A gives it more probability, pink where B does."))
        self._live = CheckBox(text="Update live", value=True)
        self._compute = PushButton(text="Compute")
        self._export_path = FileEdit(label="Export to", mode="w", filter="*.nii.gz *.nrrd *.mha *.tif")
        self._export = PushButton(text="Export soft labels A")
        self._compute.changed.connect(lambda _value=None: self.compute())
        self._export.changed.connect(lambda _value=None: self.export())
        for control in (self._raters, self._method, self._alpha, self._sigma, self._physical, self._compare):
            control.changed.connect(self._on_parameter_changed)
        self._difference_class.changed.connect(self._on_difference_class_changed)

    # choices ----------------------------------------------------------------------------------------
    def _difference_choices(self, _widget: Any = None) -> list[tuple[str, int]]:
        if self.result is None:
            return []
        return [(name, k) for k, name in enumerate(self.result.request.class_names)]

    def reset_choices(self, *_args: Any) -> None:
        """Refresh the layer and class lists without triggering a computation.

        napari calls this on every layer change (our own result layers included), so recomputing here would
        loop, and a layer removed while the viewer closes would start a computation.
        """
        with contextlib.ExitStack() as stack:
            for control in self.content:
                stack.enter_context(control.changed.blocked())
            self.content.reset_choices()

    def _select_all_raters(self) -> None:
        layers = _prefer_raters(list(self._raters.choices))
        if layers:
            with self._raters.changed.blocked():  # no computation before the user asks
                self._raters.value = layers

    # parameters -------------------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        """Whether a computation is running or waiting, or its layers are still being shown."""
        return self._pending is not None or self._computing or super().busy

    def _update_enabled(self) -> None:
        methods = {self._method.value, self._compare.value}
        self._alpha.enabled = "label_smoothing" in methods
        self._sigma.enabled = bool(methods & {"svls", "msvls"})
        self._physical.enabled = self._sigma.enabled
        self._difference_class.enabled = self._compare.value != NO_COMPARISON

    def _on_parameter_changed(self, _value: Any = None) -> None:
        self._update_enabled()
        if self._live.value and self._raters.value and not self.applying:
            self.compute()

    def build_request(self) -> SoftLabelsRequest:
        """Gather the selected layers and parameters into a request (raises ValueError on bad input)."""
        return prepare_request(self._gather())

    def _gather(self) -> _Gathered:
        """The selected layers' data (not copied) and the parameters; checks what is cheap to check."""
        self._raters.check()
        layers = list(self._raters.value)
        if not layers:
            raise ValueError("no rater layer selected; select one Labels layer per rater.")
        names = [layer.name for layer in layers]
        for layer in layers:
            problem = labels_problem(layer)
            if problem:
                raise ValueError(problem)
        arrays = [np.asarray(layer.data) for layer in layers]
        shapes = {a.shape for a in arrays}
        if len(shapes) > 1:
            detail = ", ".join(f"{n}: {a.shape}" for n, a in zip(names, arrays))
            raise ValueError(f"the rater layers have different shapes ({detail}); every rater must label the "
                             "same grid.")
        geometry = Geometry.of(layers[0], ndim=arrays[0].ndim)
        for layer, array in zip(layers[1:], arrays[1:]):
            other = Geometry.of(layer, ndim=array.ndim)
            if not other.same_grid(geometry):
                what = ("different scales" if not np.allclose(other.spacing, geometry.spacing, rtol=1e-5)
                        else "different origins or directions")
                raise ValueError(f"the rater layers {names[0]!r} and {layer.name!r} have {what} (scale "
                                 f"{tuple(layers[0].scale)} vs {tuple(layer.scale)}, translate "
                                 f"{tuple(layers[0].translate)} vs {tuple(layer.translate)}); raters must share one "
                                 "grid: voxel spacing, origin and direction.")
        meta = layers[0].metadata or {}
        compare = self._compare.value
        return _Gathered(
            arrays=tuple(arrays), rater_names=tuple(names),
            given_names=tuple(str(n) for n in meta.get("class_names") or []),
            method=self._method.value, compare_method=None if compare == NO_COMPARISON else compare,
            alpha=float(self._alpha.value), sigma=float(self._sigma.value),
            physical=bool(self._physical.value), geometry=geometry, case=case_of(layers[0]), layers=tuple(layers),
        )

    # computing --------------------------------------------------------------------------------------
    def compute(
        self, *, raters: Sequence[Any] | None = None, method: str | None = None, compare_method: str | None = None,
        alpha: float | None = None, sigma: float | None = None, sigma_in_mm: bool | None = None,
    ) -> Any:
        """Compute with the current settings in a worker thread; returns the worker (None on bad input).

        Keywords given set the inputs first: ``raters`` (Labels layers or names, one per rater),
        ``method`` and ``compare_method`` (keys of
        :data:`~napari_seg_uncertainty.core.labels.SOFT_LABEL_METHODS`; ``compare_method="none"``
        switches the comparison off), ``alpha``, ``sigma`` and ``sigma_in_mm``. :attr:`computed` is
        emitted with each :class:`SoftLabelsResult` once its layers are shown. A request made while a
        computation runs waits and replaces any older waiting request, so only the latest settings are
        computed next and results are shown in order.
        """
        if compare_method == "none":
            compare_method = NO_COMPARISON
        self.apply([(self._raters, raters), (self._method, method), (self._compare, compare_method),
                    (self._alpha, alpha), (self._sigma, sigma), (self._physical, sigma_in_mm)])
        self._update_enabled()
        request: SoftLabelsRequest | _Gathered | None = None
        with notify_errors("Soft labels"):
            gathered = self._gather()
            # small stacks are checked here, so bad input is reported at once; a CT-size stack in the worker
            request = prepare_request(gathered) if gathered.values <= SYNC_VALUES else gathered
        if request is None:
            return None
        if self._computing:
            self._pending = request
            return self.worker
        return self._start(request)

    def _start(self, request: SoftLabelsRequest | _Gathered) -> Any:
        """Compute ``request`` in a worker: a request, or layers' data to stack there first (see SYNC_VALUES)."""
        self._pending = None
        self._computing = True
        self._watch_paint(request.layers if isinstance(request, _Gathered) else ())
        return self.run(run_checked, request, action="Soft labels", returned=self._show, finished=self._on_finished,
                        message=f"Computing {SOFT_LABEL_METHODS[request.method]}…")

    def _on_finished(self) -> None:
        self._computing = False
        self._watch_paint(())
        if self._pending is not None:
            self._start(self._pending)

    def _watch_paint(self, layers: Sequence[Any]) -> None:
        """Note paint strokes in ``layers`` (the raters a worker stacks from their own arrays) from now on;
        stop watching the layers watched before."""
        for layer in self._watched:
            with contextlib.suppress(Exception):  # a layer deleted meanwhile
                layer.events.paint.disconnect(self._on_rater_painted)
        self._watched = tuple(layers)
        self._painted = False
        for layer in self._watched:
            layer.events.paint.connect(self._on_rater_painted)

    def _on_rater_painted(self, _event: Any = None) -> None:
        self._painted = True

    def _recompute_after_paint(self) -> bool:
        """After a stroke in a rater layer while the worker read the layers' arrays (its stack may mix the
        data before and after the stroke): queue the selected layers again instead of showing the result.
        True when a computation is queued (the dock stays busy)."""
        if not self._painted:
            return False
        self._painted = False
        if self._pending is None:
            with notify_errors("Soft labels"):
                gathered = self._gather()
                self._pending = prepare_request(gathered) if gathered.values <= SYNC_VALUES else gathered
        if self._pending is None:
            return False
        self.set_status("A rater layer was painted while it was read; computing again…")
        return True

    # display ----------------------------------------------------------------------------------------
    def _show(self, result: SoftLabelsResult) -> None:
        """Show a result: one layer per event-loop turn (each class of A, of B, the difference)."""
        if self._recompute_after_paint():
            return  # the worker's `finished` starts the queued computation
        request = result.request
        self.result = result
        chosen = self._chosen_difference_class
        with self._difference_class.changed.blocked():
            self._difference_class.reset_choices()
            self._difference_class.value = chosen if chosen in range(request.num_classes) else (
                1 if request.num_classes > 1 else 0)
        jobs = self._method_jobs("A", result.first, request, request.method)
        if result.second is not None and request.compare_method is not None:
            jobs += self._method_jobs("B", result.second, request, request.compare_method)
            jobs.append(self._show_difference)
        else:
            jobs.append(self._remove_comparison)
        total = len(jobs)

        def progress(job: Any, index: int) -> Any:
            def run() -> None:
                self.set_status(f"Showing the layers… {index + 1}/{total}")
                job()
            return run

        self._queue.run([progress(job, i) for i, job in enumerate(jobs)], done=self._on_shown)

    def _on_shown(self) -> None:
        result = self.result
        if self._computing or self._pending is not None:  # a newer request is on its way: stay busy
            self.set_status(self.summary())
            self.computed.emit(result)
        else:
            self.done(result, self.summary())

    def _method_jobs(self, slot: str, probabilities: np.ndarray, request: SoftLabelsRequest,
                     method: str) -> list[Any]:
        meta_common = {
            "method": method,
            "parameters": request.parameters(method),
            "raters": list(request.rater_names),
            "class_names": list(request.class_names),
            "spacing": list(request.scale),
        }
        geometry = request.geometry if request.geometry is not None else Geometry(request.scale, request.translate)
        names = [f"soft {slot}: {class_name}" for class_name in request.class_names]

        def add(k: int) -> None:
            with keep_selection(self._viewer):
                upsert_layer(
                    self._viewer, probabilities[k], name=names[k], layer_type="image", geometry=geometry,
                    case=request.case,
                    colormap="gray" if k == 0 else CLASS_COLORMAPS[(k - 1) % len(CLASS_COLORMAPS)],
                    contrast_limits=(0.0, 1.0), blending="additive", metadata={**meta_common, "class": k},
                    visible=k > 0 and slot == "A",
                )

        jobs: list[Any] = [lambda k=k: add(k) for k in range(len(names))]
        jobs.append(lambda: self._remove_layers(slot, keep=names))
        return jobs

    def _remove_layers(self, slot: str, *, keep: list[str]) -> None:
        remove_layers(self._viewer, [name for name in self._layer_names[slot] if name not in keep])
        self._layer_names[slot] = list(keep)

    def _remove_comparison(self) -> None:
        """Remove method B's layers and the difference layer in one batch, without napari's full garbage
        collection (see :func:`~._layer_queue.remove_layers`)."""
        remove_layers(self._viewer, [*self._layer_names["B"], DIFFERENCE_LAYER])
        self._layer_names["B"] = []

    def _remove_difference(self) -> None:
        remove_layers(self._viewer, [DIFFERENCE_LAYER])

    def _on_difference_class_changed(self, value: Any = None) -> None:
        self._chosen_difference_class = None if value is None else int(value)
        self._show_difference()
        if not self.busy:
            self.set_status(self.summary())

    def _show_difference(self, _value: Any = None) -> None:
        result = self.result
        if result is None or result.comparison is None or self._difference_class.value is None:
            return
        k = int(self._difference_class.value)
        request = result.request
        geometry = request.geometry if request.geometry is not None else Geometry(request.scale, request.translate)
        with keep_selection(self._viewer):
            layer = upsert_layer(
                self._viewer, result.comparison.difference[k], name=DIFFERENCE_LAYER, layer_type="image",
                geometry=geometry, case=request.case, colormap=difference_colormap(), contrast_limits=(-1.0, 1.0),
                blending="translucent",
                metadata={"class": k, "class_names": list(request.class_names), "spacing": list(request.scale),
                          "first": request.method, "second": request.compare_method},
            )
        layer.blending = "translucent"  # an existing layer keeps its settings otherwise
        if layer.colormap.name != difference_colormap().name:
            layer.colormap = difference_colormap()

    def summary(self) -> str:
        """The status line: what is shown, and the comparison numbers when comparing."""
        result = self.result
        if result is None:
            return "Nothing computed yet."
        request = result.request

        def describe_method(method: str) -> str:
            params = request.parameters(method)
            text = SOFT_LABEL_METHODS[method]
            if "alpha" in params:
                text += f" α={params['alpha']:.2f}"
            if "sigma" in params:
                text += f" σ={params['sigma']:.2f} {params['sigma_unit']}"
            return text

        lines = [f"A: {describe_method(request.method)} · {len(request.rater_names)} rater(s), "
                 f"{request.num_classes} classes"]
        if result.comparison is not None and request.compare_method is not None:
            k = int(self._difference_class.value) if self._difference_class.value is not None else 1
            comparison = result.comparison
            lines.append(f"B: {describe_method(request.compare_method)}")
            lines.append(f"A − B, {request.class_names[k]}: mean |Δ| = {comparison.mean_abs[k]:.4f}, "
                         f"max |Δ| = {comparison.max_abs[k]:.4f} (green: A higher, pink: B higher)")
            lines.append(f"mean total variation = {comparison.mean_total_variation:.4f}")
        lines.extend(result.notes)
        return "\n".join(lines)

    # export -----------------------------------------------------------------------------------------
    def export(self, path: str | Path | None = None) -> Any:
        """Write method A's probabilities ``(C, *spatial)`` with the rater layers' spacing; returns the worker."""
        if path is not None:
            self._export_path.value = path
        if self.result is None:
            show_error("Export soft labels failed: nothing computed yet; press Compute first.")
            return None
        target = Path(self._export_path.value) if self._export_path.value else None
        if target is None or target.name in ("", "."):
            show_error("Export soft labels failed: no file name given; choose a .nii.gz, .nrrd, .mha or .tif file.")
            return None
        from ..core.io import write_image

        request = self.result.request
        self.exporting = True
        return run_in_thread(
            write_image, target, self.result.first, spacing=request.scale, origin=request.translate,
            direction=None if request.geometry is None else request.geometry.direction, channel_axis=0,
            overwrite=False, action="Export soft labels",
            returned=lambda written: show_info(f"Wrote {SOFT_LABEL_METHODS[request.method]} soft labels to "
                                               f"{written}"),
            finished=lambda: setattr(self, "exporting", False),
        )
