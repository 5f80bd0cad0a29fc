"""The live part of the *SSN samples* dock: samples read without stalling the viewer, redrawn as sliders move.

* :class:`LiveSamples` — what the ``SSN samples`` layer holds: a lazy
  :class:`~napari_seg_uncertainty.core.ssn.SampleLabelStack` whose whole 3-D samples are computed
  in a worker (the last volume shown stays on screen meanwhile).
* :class:`~._ssn_lazy.LazyPlanes` (in :mod:`._ssn_lazy`) — what those layers hold for a distribution computed
  plane by plane (a CT).
* :class:`LiveSampling` — mixed into :class:`~napari_seg_uncertainty.widgets.ssn_samples.SSNSamplesWidget`:
  the class-noise and temperature sliders, the volume on screen recomputed in a worker (requests made
  meanwhile coalesce; the noise of a whole sample is kept so a slider move only rescales it), and the
  table of each sample's Dice against the mean prediction, recomputed once the sliders rest.

References
----------
.. [1] M. Monteiro et al., "Stochastic Segmentation Networks: Modelling Spatially Correlated
   Aleatoric Uncertainty", NeurIPS 2020 (Fig. 6: manipulating the noise of one class).
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any

import numpy as np
from qtpy.QtWidgets import QApplication

from ..core.ssn import LowRankLogits, SampleLabelStack, dice_against_reference
from ._common import logger, notify_errors
from ._ssn_lazy import LazyPlanes

__all__ = ["PREFETCH_DELAY_MS", "LazyPlanes", "LiveSampling", "LiveSamples", "format_score", "is_lazy", "qt_alive"]

SAMPLES_LAYER = "SSN samples"
MEAN_LAYER = "SSN mean prediction"
PREFETCH_DELAY_MS = 80  # the next "New sample" is prepared this long after a redraw (once it is painted)
_DICE_DELAY_MS = 250  # Dice table waits for the sliders to rest this long
_DICE_DELAY_LARGE_MS = 1500  # … this long when every sample is a large volume (each costs ~0.5 s)
_LARGE_SAMPLE_VOXELS = 2_000_000
#: Above this many voxels (and for a lazy distribution) the Dice table compares the plane on screen only:
#: every whole sample of a CT (300×512×512) takes seconds, and for a 2-D SSN the network on every plane.
PLANE_DICE_VOXELS = 32_000_000




def is_lazy(distribution: Any) -> bool:
    """True for a distribution computed plane by plane on demand (``LazyLowRankLogits``)."""
    return bool(getattr(distribution, "lazy", False))


def qt_alive(obj: Any) -> bool:
    """False once the C++ side of a Qt object is gone (a closed dock, a quitting application)."""
    if obj is None:
        return False
    try:
        from qtpy import API_NAME

        if API_NAME.startswith("PyQt"):
            from qtpy import sip

            return not sip.isdeleted(obj)
        import shiboken6  # pragma: no cover - PySide

        return bool(shiboken6.isValid(obj))  # pragma: no cover
    except Exception:  # noqa: BLE001 - an object we cannot inspect is treated as gone
        return False


def _whole_entry(key: Any, shape: tuple[int, ...]) -> int | None:
    """The entry when ``key`` asks for one whole sample (all spatial axes in full), else None."""
    if not isinstance(key, tuple):
        key = (key,)
    if Ellipsis in key:
        position = key.index(Ellipsis)
        key = key[:position] + (slice(None),) * (len(shape) - len(key) + 1) + key[position + 1:]
    if not key or len(key) > len(shape):
        return None
    first = key[0]
    if isinstance(first, np.ndarray) and first.ndim == 0:
        first = first.item()
    if not isinstance(first, (int, np.integer)) or isinstance(first, (bool, np.bool_)):
        return None
    for k, size in zip(key[1:], shape[1:]):
        if not isinstance(k, slice) or k.indices(size) != (0, size, 1):
            return None
    return int(first) % shape[0]


class LiveSamples:
    """What the "SSN samples" layer holds: a :class:`SampleLabelStack` read without stalling the viewer.

    Every read is the stack's (exact) value, except one case: in 3-D display, when the viewer asks on
    the GUI thread for a whole 3-D sample that is not computed yet (just switched to 3-D, browsed to
    another sample, moved a slider), it gets the last volume shown for that sample (or the mean
    prediction) at once, and ``request(entry)`` starts the computation in a worker; the widget
    refreshes the layer when it is done. Read exact samples from :attr:`stack`.
    """

    def __init__(self, stack: SampleLabelStack, *, placeholder: Any, request: Any, nonblocking: Any) -> None:
        self.stack = stack
        self._placeholder = placeholder
        self._request = request
        self._nonblocking = nonblocking
        self._main_thread = threading.main_thread()
        self._shown: tuple[int, int, np.ndarray] | None = None  # (entry, sample index, volume)

    shape = property(lambda self: self.stack.shape)
    dtype = property(lambda self: self.stack.dtype)
    ndim = property(lambda self: self.stack.ndim)
    size = property(lambda self: self.stack.size)

    def __len__(self) -> int:
        return len(self.stack)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return self.stack.__array__(dtype)

    def __getitem__(self, key: Any) -> np.ndarray:
        stack = self.stack
        if stack.distribution.spatial_ndim == 3 and threading.current_thread() is self._main_thread:
            entry = _whole_entry(key, stack.shape)
            if entry is not None and self._nonblocking():
                sample_index = stack.sample_indices[entry]
                volume = stack.cached_sample(entry)
                if volume is None:
                    self._request(entry)
                    shown = self._shown
                    if shown is not None and shown[:2] == (entry, sample_index):
                        return shown[2]
                    volume = self._placeholder()
                    return volume if volume is not None else np.zeros(stack.shape[1:], stack.dtype)
                self._shown = (entry, sample_index, volume)
                return volume
        return stack[key]

    def __repr__(self) -> str:
        return f"LiveSamples({self.stack!r})"


class LiveSampling:
    """Sliders, the volume on screen, the Dice table and the teardown of the *SSN samples* dock (a mixin)."""

    _viewer: Any
    _dice_timer: Any
    _prefetch_timer: Any
    _dice_table: Any
    _dice_label: Any
    _temperature: Any
    _class_sliders: list[Any]
    _status: Any
    base_distribution: LowRankLogits | None
    distribution: LowRankLogits | None
    stack: SampleLabelStack | None
    live: LiveSamples | None
    planes: LazyPlanes | None  # a lazy distribution's layers (dask)
    _samples_data: Any  # what the samples layer holds (live, or planes' dask array)
    mean_labels: Any  # numpy, or for a lazy distribution a dask array
    dice: np.ndarray | None

    def _init_live(self) -> None:
        self._next_sample_index = 0
        self._dice_generation = 0
        self._dice_running = False
        self._dice_pending = False
        self._volume_running = False
        self._volume_pending = False
        self._prefetch_running = False
        self._plane_running = False
        self._plane_pending: int | None = None
        self._dice_plane: int | None = None  # the plane the Dice table compares (None: whole samples)
        self._prefetched: tuple[Any, ...] | None = None  # (stack, sample index, plane) whose noise is drawn

    # ------------------------------------------------------------------ lifetime
    def _on_destroyed(self, *_args: Any) -> None:
        """The dock widget is gone: stop timers, ignore late worker results, let go of the viewer's events.

        Runs while Qt tears the dock (or the whole application) down, so nothing here may raise:
        an exception in this slot would abort the process.
        """
        try:
            self._shut_down()
            for timer in (self._dice_timer, self._prefetch_timer):
                if qt_alive(timer):
                    timer.stop()
            self._watcher.disconnect()
            app = QApplication.instance()
            if app is not None:
                with contextlib.suppress(Exception):
                    app.aboutToQuit.disconnect(self._on_quit)
            for emitter, callback in (
                (self._viewer.dims.events.current_step, self._on_step),
                (self._viewer.dims.events.ndisplay, self._on_ndisplay),
            ):
                with contextlib.suppress(Exception):
                    emitter.disconnect(callback)
        except Exception:  # noqa: BLE001 - never let teardown abort the application
            logger.debug("SSN samples teardown", exc_info=True)

    def _on_quit(self) -> None:
        try:
            self._shut_down()
            app = QApplication.instance()
            if app is not None:
                app.aboutToQuit.disconnect(self._on_quit)
        except Exception:  # noqa: BLE001 - never let teardown abort the application
            logger.debug("SSN samples teardown", exc_info=True)

    def class_scale_values(self) -> list[float]:
        """The class sliders' values, one per class."""
        return [float(slider.value) for slider in self._class_sliders]

    def _display_3d(self) -> bool:
        return int(self._viewer.dims.ndisplay) == 3

    def _samples_layer(self) -> Any:
        if SAMPLES_LAYER in self._viewer.layers:
            layer = self._viewer.layers[SAMPLES_LAYER]
            if self._samples_data is not None and layer.data is self._samples_data:
                return layer
        return None

    def current_entry(self) -> int:
        """Index of the sample on screen in the ``SSN samples`` layer (0 when there is none)."""
        if self.stack is None or SAMPLES_LAYER not in self._viewer.layers:
            return 0
        layer = self._viewer.layers[SAMPLES_LAYER]
        point = layer.world_to_data(self._viewer.dims.point)
        return int(np.clip(np.round(point[0]), 0, len(self.stack) - 1))

    def _refresh_samples_layer(self, *, thumbnail: bool = True) -> None:
        """Recompute what is on screen (the grid is unchanged, so no extent update)."""
        layer = self._samples_layer()
        if layer is not None:
            layer.refresh(extent=False, thumbnail=thumbnail)

    def _whole_volume_shown(self) -> bool:
        return (
            self.stack is not None
            and self.stack.distribution.spatial_ndim == 3
            and not is_lazy(self.stack.distribution)  # LazyPlanes shows the planes computed so far
            and self._display_3d()
            and self._samples_layer() is not None
        )

    def _on_manipulation_changed(self, _value: Any = None) -> None:
        """Apply the sliders: redraw the sample on screen (in 3-D in a worker), the Dice table later."""
        with notify_errors("Updating the SSN samples"):
            if self.base_distribution is None:
                return
            self.distribution = self.base_distribution.with_class_scales(
                self.class_scale_values()
            ).with_temperature(float(self._temperature.value))
            if self.stack is not None:
                self.stack.set_distribution(self.distribution)
                if self._whole_volume_shown():
                    self._request_volume()  # the old volume stays until the new one is ready
                else:
                    # one plane: fast enough to redraw now; the thumbnail waits for the sliders to rest
                    self._refresh_samples_layer(thumbnail=False)
                self._schedule_dice()

    def _request_volume(self) -> None:
        """Compute the whole sample on screen in a worker, then show it; requests made meanwhile coalesce.

        When the sample is computed already but its noise is not kept (it came from the Dice table),
        the noise is prepared in the background, so that the first slider move is fast too.
        """
        if not self._alive() or self.stack is None:
            return
        if self._volume_running:
            self._volume_pending = True
            return
        stack, entry = self.stack, self.current_entry()
        distribution = stack.distribution
        if stack.cached_sample(entry) is not None:
            if not self._volume_on_screen(stack, entry):
                self._refresh_samples_layer()
            if not stack.has_noise(entry):
                self._volume_running = True
                self._volume_pending = False
                self._run(stack.prepare_noise, entry, action="Preparing the SSN sample for the sliders",
                          finished=self._volume_finished)
            return
        self._volume_running = True
        self._volume_pending = False
        if not stack.has_noise(entry):
            self._status.value = f"Computing sample {entry} in 3-D …"

        def _returned(_labels: np.ndarray) -> None:
            if not self._alive():
                return
            self._status.value = ""
            if self.stack is not stack:
                return
            if stack.distribution is not distribution:
                self._volume_pending = True  # the sliders moved meanwhile: once more with their values
            elif not self._volume_on_screen(stack, entry):
                self._refresh_samples_layer()

        self._run(stack.sample, entry, action="Drawing the SSN sample", returned=_returned,
                  finished=self._volume_finished)

    def _volume_on_screen(self, stack: SampleLabelStack, entry: int) -> bool:
        """Whether the layer shows the current (cached) whole sample of ``entry``."""
        shown = None if self.live is None or self.live.stack is not stack else self.live._shown
        cached = stack.cached_sample(entry)
        return cached is not None and shown is not None and shown[0] == entry and shown[2] is cached

    def _volume_finished(self) -> None:
        self._volume_running = False
        if self._alive() and self._volume_pending:
            self._volume_pending = False
            self._request_volume()

    def _on_ndisplay(self, _event: Any = None) -> None:
        if not self._alive():
            return
        if self.planes is not None:  # a lazy volume: computing every plane would run the network on each
            computed = len(self.planes.stack.distribution.cached_planes)
            self._status.value = (
                f"3-D view: the {computed} planes computed last are shown; browse in 2-D to compute others."
                if self._display_3d() else ""
            )
        if self._whole_volume_shown():
            self._request_volume()

    def _on_step(self, _event: Any = None) -> None:
        if not self._alive():
            return
        self._update_dice_label()
        if self._plane_dice() and self._plane_on_screen()[1] != self._dice_plane:
            self._schedule_dice()  # the Dice table compares the plane on screen
        if self._whole_volume_shown():
            self._request_volume()  # browsing in 3-D: the new sample (or its noise) in the background
        else:
            self._schedule_prefetch()

    def _plane_on_screen(self) -> tuple[bool, int | None]:
        """``(True, z)`` when the samples layer shows plane ``z`` of a 3-D sample (``(True, None)``: a 2-D
        sample), ``(False, None)`` when it shows something else (3-D display, other displayed axes)."""
        layer = self._samples_layer()
        if layer is None or self.stack is None or self._display_3d():
            return False, None
        if self.stack.distribution.spatial_ndim == 2:
            return True, None
        dims = self._viewer.dims
        if tuple(dims.displayed) != (dims.ndim - 2, dims.ndim - 1):
            return False, None
        point = layer.world_to_data(dims.point)
        return True, int(np.clip(np.round(point[1]), 0, self.stack.shape[1] - 1))

    def _schedule_prefetch(self) -> None:
        """Prepare the next "New sample" once the redraw on screen is painted (not competing with it)."""
        if self._alive() and qt_alive(self._prefetch_timer):
            self._prefetch_timer.start()

    def _prefetch_new_sample(self) -> None:
        """Draw the random numbers of the next "New sample" for the plane on screen, in a worker.

        A click on "New sample" then only scales that noise and takes the argmax on the GUI thread: the
        part of its redraw that draws numbers never drawn before (two thirds of it at 512²) is done ahead.
        """
        if not self._alive() or self.stack is None or self._prefetch_running:
            return
        shown, plane = self._plane_on_screen()
        stack, sample_index = self.stack, self._next_sample_index
        if not shown or self._prefetched == (stack, sample_index, plane):
            return
        if plane is not None and self.planes is not None and not self.planes.ready(plane):
            return  # the plane itself is being computed; its worker prepares the next sample when done
        self._prefetch_running = True
        self._prefetched = (stack, sample_index, plane)

        def _finished() -> None:
            self._prefetch_running = False
            if self._alive():
                self._prefetch_new_sample()  # the plane (or sample) on screen changed meanwhile

        if self.planes is not None:  # a lazy plane: its labels, into the distribution's label cache
            self._run(self.planes.prefetch, plane, sample_index, action="Preparing the next SSN sample",
                      finished=_finished)
            return
        # SampleLabelStack keeps the noise of recently shown planes (keyed by sample index and plane, valid
        # across slider moves); _noise is that cache's entry point, and the stack has no public one.
        self._run(stack._noise, stack.distribution, sample_index, plane, action="Preparing the next SSN sample",
                  finished=_finished)

    def _request_plane(self, z: int) -> None:
        """Compute plane ``z`` of a lazy distribution in a worker, then show it; the latest request wins."""
        if not self._alive() or self.stack is None:
            return
        if self._plane_running:
            self._plane_pending = z
            return
        distribution = self.stack.distribution
        self._plane_running, self._plane_pending = True, None
        self._status.value = f"Computing plane {z} …"  # one line: no relayout of the dock

        def _finished() -> None:
            self._plane_running = False
            if not self._alive():
                return
            pending, self._plane_pending = self._plane_pending, None
            if pending is not None and self.planes is not None and not self.planes.ready(pending):
                self._request_plane(pending)
                return
            self._status.value = ""
            self._refresh_samples_layer(thumbnail=False)  # the thumbnail follows with the Dice timer
            self._refresh_mean_layer()
            self._schedule_dice()
            self._schedule_prefetch()

        planes, entry = self.planes, self.current_entry()
        compute = (lambda: distribution.plane(z)) if planes is None else (lambda: planes.compute(z, entry))
        self._run(compute, action=f"Computing plane {z} of the SSN distribution", finished=_finished)

    def _refresh_mean_layer(self) -> None:
        layer = self._viewer.layers[MEAN_LAYER] if MEAN_LAYER in self._viewer.layers else None
        if layer is not None and self.mean_labels is not None and layer.data is self.mean_labels:
            layer.refresh(extent=False)

    def _on_reset(self, _value: Any = None) -> None:
        for slider in (*self._class_sliders, self._temperature):
            with slider.changed.blocked():
                slider.value = 1.0
        self._on_manipulation_changed()

    def _on_new_sample(self, _value: Any = None) -> None:
        with notify_errors("Drawing a new sample"):
            if self.stack is None:
                raise ValueError("draw samples first.")
            entry = self.current_entry()
            self.stack.set_sample_index(entry, self._next_sample_index)
            self._next_sample_index += 1
            if self._whole_volume_shown():
                self._request_volume()
            else:  # the noise of this plane was drawn ahead (_prefetch_new_sample); the thumbnail follows
                self._refresh_samples_layer(thumbnail=False)
            self._schedule_dice()
            self._schedule_prefetch()

    # ------------------------------------------------------------------ Dice against the mean prediction
    def _schedule_dice(self) -> None:
        """Recompute the Dice table off the GUI thread once the sliders rest (bursts coalesce)."""
        if not self._alive() or not qt_alive(self._dice_timer):
            return
        self._dice_generation += 1
        large = (  # whole large samples take long: wait longer (the plane on screen is quick)
            self.distribution is not None
            and not self._plane_dice()
            and np.prod(self.distribution.spatial_shape) > _LARGE_SAMPLE_VOXELS
        )
        self._dice_timer.setInterval(_DICE_DELAY_LARGE_MS if large else _DICE_DELAY_MS)
        self._dice_timer.start()  # restarts while a slider is being dragged

    def _plane_dice(self) -> bool:
        """Whether the Dice table compares the plane on screen (a lazy or very large volume) or whole samples."""
        distribution = None if self.stack is None else self.stack.distribution
        return distribution is not None and distribution.spatial_ndim == 3 and (
            is_lazy(distribution) or np.prod(distribution.spatial_shape) > PLANE_DICE_VOXELS
        )

    def _start_dice(self) -> None:
        if not self._alive():
            return
        if not self._whole_volume_shown():
            self._refresh_samples_layer()  # sliders at rest: bring the layer thumbnail up to date
        if self._dice_running:
            self._dice_pending = True
            return
        if self.stack is None or self.mean_labels is None:
            return
        stack, mean_labels, generation = self.stack, self.mean_labels, self._dice_generation
        num_classes = stack.distribution.num_classes
        current = self.current_entry()
        shown, plane = self._plane_on_screen() if self._plane_dice() else (True, None)
        if not shown:
            return  # a lazy or very large volume in 3-D display: no plane to compare
        if plane is not None and self.planes is not None and not self.planes.ready(plane):
            return  # the plane is being computed; the Dice table follows it (_request_plane)

        def _sample(i: int) -> np.ndarray:
            return stack.sample(i, keep_noise=i == current) if plane is None else stack[i, plane]

        def _compute() -> tuple[int, np.ndarray, int | None] | None:
            shape = stack.shape[1:] if plane is None else stack.shape[2:]
            samples = np.empty((len(stack), *shape), dtype=stack.dtype)
            for i in [current, *(i for i in range(len(stack)) if i != current)]:
                if generation != self._dice_generation:
                    return None  # outdated: the sliders moved again; a new request follows
                samples[i] = _sample(i)
            if plane is None:
                reference = mean_labels
            elif is_lazy(stack.distribution):  # computed here if it left the cache (never requested from here)
                reference = stack.distribution.mean_plane_labels(plane)
            else:
                reference = mean_labels[plane]
            return generation, dice_against_reference(samples, reference, num_classes=num_classes), plane

        def _finished() -> None:
            self._dice_running = False
            if self._dice_pending and self._alive():
                self._dice_pending = False
                self._start_dice()

        self._dice_running = True
        self._dice_pending = False
        self._run(_compute, action="Computing Dice vs the mean", returned=self._show_dice, finished=_finished)

    def _show_dice(self, result: tuple[int, np.ndarray, int | None] | None) -> None:
        if result is None or not self._alive():
            return
        generation, dice, plane = result
        if generation != self._dice_generation or self.distribution is None:
            return  # a newer request is on its way
        self.dice, self._dice_plane = dice, plane
        names = list(self.distribution.class_names[1:])
        with np.errstate(all="ignore"):
            means = np.array([np.nan if np.all(np.isnan(row)) else np.nanmean(row) for row in dice])
        rows = [[format_score(v) for v in (*row, mean)] for row, mean in zip(dice, means)]
        # wide enough for "0.123" in every column (the dock grows a little rather than eliding numbers)
        self._dice_table.native.setMinimumWidth(34 + 54 * (len(names) + 1))
        with contextlib.suppress(Exception):
            parent = self._dice_table.native.parentWidget()
            while parent is not None and parent is not self.native:
                if parent.layout() is not None:
                    parent.layout().activate()
                parent = parent.parentWidget()
            self._fit_width()  # the dock as wide as the table needs (there is no horizontal scrolling)
        self._dice_table.value = {
            "data": rows,
            "index": [str(i) for i in range(len(rows))],  # the sample's number, as on the viewer's slider
            "columns": [*names, "mean"],
        }
        self._update_dice_label()

    def _update_dice_label(self, _event: Any = None) -> None:
        if self.dice is None or self.distribution is None or self.stack is None:
            self._dice_label.value = "Dice vs mean: –"
            return
        entry = self.current_entry()
        if entry >= len(self.dice):
            return
        row = self.dice[entry]
        parts = [f"{name} {format_score(v)}" for name, v in zip(self.distribution.class_names[1:], row)]
        mean = np.nan if np.all(np.isnan(row)) else float(np.nanmean(row))
        # one short line (the per-class values are the table's highlighted row, and the tooltip)
        # which plane the table compares (while browsing, the one shown last: the Dice timer follows)
        where = "" if self._dice_plane is None else f" (plane {self._dice_plane})"
        self._dice_label.value = f"Sample {entry}: mean Dice {format_score(mean)}{where}"
        self._dice_label.tooltip = ", ".join(parts)
        with contextlib.suppress(Exception):
            self._dice_table.native.selectRow(entry)


def format_score(value: float) -> str:
    """A Dice value with three decimals, ``"n/a"`` when undefined."""
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.3f}"
