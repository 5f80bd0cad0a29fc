"""Dock widget "SSN samples": draw, browse and manipulate plausible segmentations of an SSN live.

The widget holds a :class:`~napari_seg_uncertainty.core.ssn.LowRankLogits` (from a saved ``.npz``,
from an SSN checkpoint applied to an image layer, or a synthetic demo) and shows:

* ``SSN samples``: a Labels stack ``(N, *S)`` backed by a lazy
  :class:`~napari_seg_uncertainty.core.ssn.SampleLabelStack` (browse with the first slider; in 2-D
  display only the plane on screen is computed; in 3-D display the whole sample is computed in a
  worker, its noise kept, so that a slider move only rescales it and takes the argmax again — see
  :class:`LiveSamples`),
* ``SSN mean prediction``: the argmax of the mean logits,
* for a checkpoint on a volume (a CT) whose distribution is computed plane by plane
  (:class:`~napari_seg_uncertainty.core.ssn.lazy.LazyLowRankLogits`: a 2-D SSN, or a 3-D SSN that would
  not fit in memory), both layers are dask arrays of one plane per chunk; a plane is computed in a worker
  when first shown (see :class:`~._ssn_lazy.LazyPlanes`) and the Dice table compares the plane on screen,
* per-class noise-scale sliders (``-3 ... 3``, Fig. 6 of the SSN paper) and a temperature slider
  that redraw the sample on screen as they move, "New sample", "Keep this sample" (an editable
  copy), the Dice of every sample against the mean prediction, GED² and sample diversity against
  rater layers, and export.

Every output layer is placed on the chosen image layer's grid (scale, translate, direction; a
prediction on a crop at the crop) through ``upsert_layer(geometry=…)`` and tagged with its case.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QApplication
from superqt.utils import ensure_main_thread

from ..core.geometry import Geometry
from ..core.ssn import LowRankLogits, SampleLabelStack
from ..workflow.ssn import (
    EXPORT_ALL,
    EXPORT_CURRENT,
    EXPORT_DISTRIBUTION,
    SampleMetrics,
    export_samples,
    place_distribution,
    require_prediction_function,
    sample_metrics,
    spatial_scale,
    spatial_shape,
)
from ._base import DockWidget
from ._case import case_of
from ._common import logger, notify_errors, run_in_thread, show_info, show_warning, upsert_layer
from ._ssn_controls import (
    SOURCE_CHECKPOINT,
    SOURCE_SAVED,
    SOURCE_SYNTHETIC,
    SOURCES,
    SYNTHETIC_SHAPE,
    TEMPERATURE_RANGE,
    SSNControls,
    checkpoint_distribution,
    load_saved_checked,
    synthetic_on_grid,
)
from ._ssn_lazy import HeldSample, LazyPlanes, whole_sample_work
from ._ssn_live import MEAN_LAYER, PREFETCH_DELAY_MS, SAMPLES_LAYER, LiveSamples, LiveSampling, is_lazy, qt_alive

if TYPE_CHECKING:
    import napari

__all__ = ["SSNSamplesWidget", "SamplesDrawn"]

KEPT_LAYER_PREFIX = "SSN kept sample"

_TEARDOWN_WAIT_S = 5.0  # closing waits this long at most for a running computation to return


@dataclass(frozen=True)
class SamplesDrawn:
    """Emitted (``computed``) once a fresh set of samples is on screen: the samples and their distribution."""

    stack: SampleLabelStack
    distribution: LowRankLogits


class SSNSamplesWidget(SSNControls, LiveSampling, DockWidget):
    """Draw, browse and manipulate samples of a Stochastic Segmentation Network live.

    Load a distribution (saved ``.npz``, SSN checkpoint + image layer, or synthetic demo), then
    browse ``N`` samples with the viewer's slider.  The class sliders scale one class's noise
    (``-3 ... 3``), the temperature slider all noise; the sample on screen is redrawn as they move.
    Output layers are placed on the image layer's grid (scale, translate, direction) and tagged
    with its case.  In 3-D display a whole sample's noise is kept, so a slider move only rescales
    and re-takes the argmax, in a worker (the latest value wins); the viewer never waits for it.

    :meth:`load`, :meth:`draw`, :meth:`compute_metrics`, :meth:`export` and :meth:`keep_sample`
    start work and return the worker (``None`` when nothing ran); :attr:`computed` is emitted with a
    :class:`SamplesDrawn`, a :class:`~napari_seg_uncertainty.workflow.ssn.SampleMetrics`, the
    exported path or the kept layer once the result is shown, :attr:`failed` when the work failed.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        The viewer (napari injects it when the widget opens from the Plugins menu).

    Examples
    --------
    >>> import napari  # doctest: +SKIP
    >>> from napari_seg_uncertainty.core.ssn import synthetic_distribution
    >>> viewer = napari.Viewer()  # doctest: +SKIP
    >>> widget = SSNSamplesWidget(viewer)  # doctest: +SKIP
    >>> viewer.window.add_dock_widget(widget)  # doctest: +SKIP
    >>> widget.set_distribution(synthetic_distribution((256, 256), num_classes=4))  # doctest: +SKIP
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(viewer)
        viewer = self._viewer
        self._closed = False
        self.base_distribution: LowRankLogits | None = None
        self.distribution: LowRankLogits | None = None
        self.stack: SampleLabelStack | None = None
        self.live: LiveSamples | None = None
        self.planes: LazyPlanes | None = None
        self._samples_data: Any = None
        self.geometry: Geometry | None = None
        self.case: str | None = None
        self.mean_labels: np.ndarray | None = None
        self.dice: np.ndarray | None = None  # (N, C - 1) Dice of each sample vs the mean prediction
        self.metrics: SampleMetrics | None = None
        self.kept_layers: list[Any] = []
        self._workers: set[Any] = set()
        self._threads: set[threading.Event] = set()  # one per computation in a worker thread
        self._init_live()
        self._dice_timer = QTimer(self.native)  # parented: deleted with the dock, never after it
        self._dice_timer.setSingleShot(True)
        self._dice_timer.timeout.connect(self._start_dice)
        self._prefetch_timer = QTimer(self.native)
        self._prefetch_timer.setSingleShot(True)
        self._prefetch_timer.setInterval(PREFETCH_DELAY_MS)
        self._prefetch_timer.timeout.connect(self._prefetch_new_sample)
        self.content.extend([*self._build_source_controls(viewer), *self._build_sampling_controls(),
                             *self._build_output_controls(viewer)])
        self._connect_controls()
        viewer.dims.events.current_step.connect(self._on_step)
        viewer.dims.events.ndisplay.connect(self._on_ndisplay)
        self.native.destroyed.connect(self._on_destroyed)
        app = QApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self._on_quit)
        self.finish_layout(min_width=300, min_height=160)
        self._fit_narrow_docks()
        self._on_source_changed()
        self._update_enabled()

    # ------------------------------------------------------------------ building
    def _shut_down(self) -> None:
        """Drop late results, stop the Dice loop early and wait (a few seconds at most) for running workers.

        A worker still inside numpy when Python exits would die emitting into deleted Qt objects, which
        aborts the process; waiting here (dock closed, application quitting) prevents that.
        """
        self._closed = True
        self._dice_generation += 1  # the Dice loop stops before its next sample
        deadline = time.monotonic() + _TEARDOWN_WAIT_S
        for done in list(self._threads):
            done.wait(max(0.0, deadline - time.monotonic()))

    def _alive(self) -> bool:
        return not self._closed and qt_alive(self.native)

    @property
    def busy(self) -> bool:
        """True while a worker thread of this widget runs (loading, sampling, metrics, export)."""
        timer_active = any(qt_alive(t) and t.isActive() for t in (self._dice_timer, self._prefetch_timer))
        running = self._dice_running or self._volume_running or self._prefetch_running or self._plane_running
        return bool(self._workers) or running or timer_active

    @contextlib.contextmanager
    def _reporting(self, action: str) -> Iterator[None]:
        """Turn an exception into one notification and :attr:`failed` (a step of started work failed)."""
        try:
            yield
        except Exception as exc:  # noqa: BLE001 - every failure becomes a notification
            logger.debug("%s failed", action, exc_info=True)
            self._action = action
            self.fail(str(exc))

    # ------------------------------------------------------------------ helpers
    def _run(self, func: Any, *args: Any, action: str, returned: Any = None, finished: Any = None,
             yielded: Any = None) -> Any:
        """``run_in_thread`` that closing the dock (or quitting) waits for, so no worker outlives the widget.

        ``func`` may be a generator function (each value it yields goes to ``yielded``). Results and
        ``finished`` after closing are dropped; a failure is notified and emits :attr:`failed`.
        """
        done = threading.Event()

        def _call() -> Any:
            try:
                return func(*args)
            finally:
                done.set()

        def _steps() -> Any:
            try:
                return (yield from func(*args))
            finally:
                done.set()

        def _returned(result: Any) -> None:
            if self._alive() and returned is not None:
                with self._reporting(action):
                    returned(result)

        def _errored(exc: BaseException) -> None:
            if self._alive():
                self._action = action
                self.fail(str(exc), notify=False)  # run_in_thread has notified

        def _finished() -> None:
            self._threads.discard(done)
            if finished is not None:
                finished()

        def _yielded(value: Any) -> None:
            if self._alive():
                yielded(value)

        self._threads.add(done)
        if inspect.isgeneratorfunction(func):
            return run_in_thread(_steps, action=action, returned=_returned, errored=_errored, finished=_finished,
                                 yielded=None if yielded is None else _yielded)
        return run_in_thread(_call, action=action, returned=_returned, errored=_errored, finished=_finished)

    def _start(self, func: Any, *args: Any, action: str, returned: Any = None, yielded: Any = None,
               finished: Any = None) -> Any:
        """Run ``func`` in a worker thread; errors become notifications; results after closing are dropped."""
        holder: list[Any] = []

        def _done() -> None:
            self._workers.discard(holder[0])
            if finished is not None and self._alive():
                finished()

        worker = self._run(func, *args, action=action, returned=returned, finished=_done, yielded=yielded)
        holder.append(worker)
        self._workers.add(worker)
        self.worker = worker
        return worker

    def _layer_kwargs(self) -> dict[str, Any]:
        return {"geometry": self.geometry, "case": self.case}

    # ------------------------------------------------------------------ loading
    def load(self, *, source: str | None = None, path: Any = None, image: Any = None,
             num_samples: int | None = None, seed: int | None = None, raters: Any = None) -> Any:
        """Load a distribution, compute its mean prediction and draw samples; returns the first worker.

        Parameters
        ----------
        source : {"saved", "checkpoint", "synthetic"}, optional
            A saved ``.npz`` distribution, an SSN checkpoint applied to ``image``, or a synthetic one
            (on ``image``'s grid when given).
        path : str or Path, optional
            The ``.npz`` or checkpoint file.
        image : layer or str, optional
            The image layer the samples belong to (and the checkpoint predicts on).
        num_samples, seed : int, optional
            How many samples to draw, and their seed.
        raters : list of layers or str, optional
            Rater layers for :meth:`compute_metrics`.

        Returns
        -------
        worker or None
            ``None`` when nothing ran (bad input, notified). :attr:`computed` is emitted with a
            :class:`SamplesDrawn` once the samples are on screen.
        """
        with notify_errors("Loading the SSN distribution"):
            self.configure(source=source, path=path, image=image, num_samples=num_samples, seed=seed,
                            raters=raters)
            return self._load()
        return None

    def _load(self) -> Any:
        source = self._source.value
        layer = self._selected_image_layer(required=False)

        def show(loaded: tuple[LowRankLogits, dict[str, Any]]) -> None:
            self._place_and_show(loaded[0], layer, **loaded[1])

        if source == SOURCE_SAVED:
            path = self._distribution_file.value
            if path is None or not Path(path).is_file():
                raise ValueError(f"choose an existing .npz distribution file (got {str(path)!r}).")
            return self._start(load_saved_checked, Path(path), action="Loading the SSN distribution",
                               returned=show)
        if source == SOURCE_CHECKPOINT:
            predict = require_prediction_function()
            path = self._checkpoint_file.value
            if path is None or not Path(path).is_file():
                raise ValueError(f"choose an existing SSN checkpoint file (got {str(path)!r}).")
            layer = self._selected_image_layer(required=True)
            image, scale = np.asarray(layer.data), tuple(float(s) for s in layer.scale)
            return self._start(
                lambda: checkpoint_distribution(Path(path), image, scale=scale, predict=predict),
                action="Predicting the SSN distribution", returned=show,
            )
        if source != SOURCE_SYNTHETIC:
            raise ValueError(f"source must be one of {list(SOURCES.values())}, got {source!r}.")
        shape: tuple[int, ...] = SYNTHETIC_SHAPE
        spacing = None
        if layer is not None:
            ndim = 3 if layer.data.ndim >= 3 and not layer.rgb else 2
            shape, spacing = spatial_shape(layer, ndim), spatial_scale(layer, ndim)
        seed = int(self._seed.value)
        name = None if layer is None else layer.name
        return self._start(
            lambda: synthetic_on_grid(shape, spacing=spacing, seed=seed, layer_name=name),
            action="Making the synthetic SSN distribution",
            returned=lambda dist: self._place_and_show(dist, layer),
        )

    def _place_and_show(self, distribution: LowRankLogits, layer: Any, **placement: Any) -> None:
        with self._reporting("Placing the SSN distribution"):
            if layer is not None and layer not in self._viewer.layers:
                layer = None
            geometry, warning = place_distribution(distribution, layer, **placement)
            if warning is not None:
                show_warning(f"SSN samples: {warning}")
            self._show_distribution(distribution, geometry=geometry, case=case_of(layer))

    def set_distribution(
        self,
        distribution: LowRankLogits,
        *,
        geometry: Geometry | None = None,
        case: str | None = None,
    ) -> Any:
        """Show ``distribution``: class sliders, mean prediction and a fresh set of samples.

        ``geometry`` places the layers (default: the distribution's spacing at the origin); ``case``
        tags them. The mean prediction is computed in a worker, which is returned (``None`` when
        ``distribution`` is refused); :attr:`computed` follows with a :class:`SamplesDrawn`.
        """
        with notify_errors("Showing the SSN distribution"):
            return self._show_distribution(distribution, geometry=geometry, case=case)
        return None

    def _show_distribution(self, distribution: LowRankLogits, *, geometry: Geometry | None,
                           case: str | None) -> Any:
        if not isinstance(distribution, LowRankLogits) and not is_lazy(distribution):
            raise TypeError(
                f"distribution must be a LowRankLogits or LazyLowRankLogits, got {type(distribution).__name__}."
            )
        if geometry is None:
            geometry, _ = place_distribution(distribution)
        if geometry.ndim != distribution.spatial_ndim:
            raise ValueError(
                f"geometry has {geometry.ndim} axes; the distribution has {distribution.spatial_ndim}."
            )
        distribution = self._named_classes(distribution)
        self.base_distribution = distribution
        self.distribution = distribution
        self.geometry = geometry
        self.case = case
        self.stack = None  # the old samples stay on screen until the new ones are drawn
        self.dice = None
        self.metrics = None
        self._build_class_sliders(distribution)
        with self._temperature.changed.blocked():
            self._temperature.value = float(np.clip(distribution.temperature, *TEMPERATURE_RANGE))
        names = ", ".join(distribution.class_names)
        self._source_info.value = (
            f"{distribution.num_classes} classes ({names}), grid {distribution.spatial_shape}, "
            f"rank {distribution.rank}" + (", planes computed as they are shown" if is_lazy(distribution) else "")
        )
        self._update_enabled()
        base = distribution

        def _show_mean(mean_labels: np.ndarray | None) -> None:
            if base is not self.base_distribution:
                return
            if mean_labels is not None:  # a lazy distribution's mean layer comes with its samples (LazyPlanes)
                self.mean_labels = mean_labels
                upsert_layer(self._viewer, mean_labels, name=MEAN_LAYER, layer_type="labels", cache=False,
                             **self._layer_kwargs())
            self._draw()

        mean = (lambda: None) if is_lazy(distribution) else distribution.mean_prediction
        return self._start(mean, action="Computing the SSN mean prediction", returned=_show_mean)

    def draw(self, *, num_samples: int | None = None, seed: int | None = None) -> Any:
        """Draw a fresh set of ``num_samples`` samples of the loaded distribution; returns the worker.

        ``None`` when nothing ran (no distribution loaded, notified); :attr:`computed` follows with a
        :class:`SamplesDrawn` once the samples are on screen.
        """
        with notify_errors("Drawing SSN samples"):
            self.configure(num_samples=num_samples, seed=seed)
            return self._draw()
        return None

    def _draw(self) -> Any:
        if self.distribution is None:
            raise ValueError("load a distribution first.")
        count = int(self._num_samples.value)
        stack = SampleLabelStack(self.distribution, range(count), seed=int(self._seed.value))
        base = self.base_distribution
        entry = min(self.current_entry(), count - 1)

        def _show(_first: np.ndarray) -> None:
            if base is not self.base_distribution or self.distribution is None:
                return  # another distribution was loaded meanwhile; its own draw follows
            if stack.distribution is not self.distribution:  # sliders moved meanwhile
                stack.set_distribution(self.distribution)
            self.stack = stack
            self._next_sample_index = count
            self._show_samples(stack)
            self._update_enabled()
            self._schedule_dice()
            self._schedule_prefetch()
            self.done(SamplesDrawn(stack=stack, distribution=stack.distribution))

        # The sample on screen is computed (and, in 3-D, its noise kept for the sliders) off the GUI thread;
        # a lazy distribution's planes are computed as they are shown (LazyPlanes).
        first = (lambda _entry: None) if is_lazy(stack.distribution) else stack.sample
        return self._start(first, entry, action="Drawing SSN samples", returned=_show)

    def _show_samples(self, stack: SampleLabelStack) -> None:
        """Put ``stack`` in the samples layer: a LiveSamples, or for a lazy distribution dask arrays (and the mean)."""
        if is_lazy(stack.distribution):
            self.live = None
            self.planes = LazyPlanes(stack, request=ensure_main_thread(self._request_plane),
                                     display_3d=self._display_3d)
            self.mean_labels = self.planes.mean()
            upsert_layer(self._viewer, self.mean_labels, name=MEAN_LAYER, layer_type="labels", cache=False,
                         **self._layer_kwargs())
            self._samples_data = self.planes.samples()
        else:
            self.planes = None
            self.live = self._samples_data = LiveSamples(
                stack,
                placeholder=lambda: self.mean_labels,
                request=lambda _entry: self._request_volume(),
                nonblocking=self._display_3d,
            )
        upsert_layer(self._viewer, self._samples_data, name=SAMPLES_LAYER, layer_type="labels", leading_axes=1,
                     cache=False, metadata={"seed": stack.seed}, **self._layer_kwargs())

    def keep_sample(self) -> Any:
        """Copy the sample on screen into an editable Labels layer (emitted with :attr:`computed`)."""
        with notify_errors("Keeping the sample"):
            if self.stack is None:
                raise ValueError("draw samples first.")
            stack, entry = self.stack, self.current_entry()
            self._tell_whole_sample(stack, entry, "the kept layer")
            metadata = {
                "seed": stack.seed,
                "sample_index": stack.sample_indices[entry],
                "class_scales": stack.distribution.class_scales,
                "temperature": stack.distribution.temperature,
                "class_names": list(stack.distribution.class_names),
            }

            def _add(labels: np.ndarray | None) -> None:
                if labels is None:
                    return  # stopped: the dock closed or another distribution was loaded
                number = 1
                while f"{KEPT_LAYER_PREFIX} {number}" in self._viewer.layers:
                    number += 1
                layer = upsert_layer(self._viewer, labels, name=f"{KEPT_LAYER_PREFIX} {number}",
                                     layer_type="labels", metadata=metadata, **self._layer_kwargs())
                self.kept_layers.append(layer)
                self._viewer.layers.selection.active = layer
                self.done(layer)

            return self._start(self._whole_sample(stack, entry, lambda labels: labels), action="Keeping the sample",
                               returned=_add, yielded=functools.partial(self._progress, f"Keeping sample {entry}"),
                               finished=lambda: self.set_status(""))
        return None

    def _whole_sample(self, stack: SampleLabelStack, entry: int, then: Any) -> Any:
        """:func:`whole_sample_work`, stopped once the dock closes or another distribution is loaded."""
        base = self.base_distribution

        def _cancelled() -> bool:
            return self._closed or self.base_distribution is not base

        return whole_sample_work(stack, entry, then, cancelled=_cancelled)

    def _progress(self, purpose: str, step: tuple[int, int]) -> None:
        done, total = step
        self.set_status("" if done == total else f"{purpose}: plane {done} of {total} …")

    # ------------------------------------------------------------------ GED² and diversity
    def compute_metrics(self, *, raters: Any = None) -> Any:
        """GED² and diversity of the samples against ``raters`` (Labels layers or names); returns the worker.

        ``None`` when nothing ran (notified); :attr:`computed` follows with a
        :class:`~napari_seg_uncertainty.workflow.ssn.SampleMetrics`, also kept in :attr:`metrics`.
        """
        with notify_errors("Computing GED² and diversity"):
            if raters is not None:
                self._raters.value = raters
            if self.stack is None:
                raise ValueError("draw samples first.")
            self._refuse_whole_samples("GED² and diversity compare")
            rater_maps = self._rater_stack()
            stack = self.stack
            num_classes = stack.distribution.num_classes
            current = self.current_entry()

            def _compute() -> SampleMetrics | None:
                maps = []
                for i in range(len(stack)):
                    if self._closed:
                        return None
                    maps.append(stack.sample(i, keep_noise=i == current))
                return sample_metrics(np.stack(maps), rater_maps, num_classes=num_classes)

            return self._start(_compute, action="Computing GED² and diversity", returned=self._show_metrics)
        return None

    def _show_metrics(self, metrics: SampleMetrics | None) -> None:
        if metrics is None:
            return
        self.metrics = metrics
        self._metrics_label.value = (
            f"GED² {metrics.ged2:.4f} | sample diversity {metrics.sample_diversity:.4f} | "
            f"rater diversity {metrics.rater_diversity:.4f} "
            f"({metrics.num_samples} samples, {metrics.num_raters} raters)"
        )
        self.done(metrics)

    # ------------------------------------------------------------------ export
    def export(self, path: str | Path | None = None, *, what: str | None = None,
               overwrite: bool | None = None) -> Any:
        """Export the current sample, all samples or the distribution (``what``) to ``path``; returns the worker.

        ``None`` when nothing ran (notified); :attr:`computed` follows with the written path.
        """
        with notify_errors("Exporting SSN samples"):
            if path is not None:
                self._export_file.value = str(path)
            if what is not None:
                self._export_what.value = what
            if overwrite is not None:
                self._export_overwrite.value = bool(overwrite)
            if self.stack is None:
                raise ValueError("draw samples first.")
            target = self._export_file.value
            if target is None or str(target).strip() in ("", "."):
                raise ValueError("choose a file to export to.")
            stack, entry, kind = self.stack, self.current_entry(), self._export_what.value
            if kind == EXPORT_ALL:
                self._refuse_whole_samples("Exporting all samples writes")
            elif kind == EXPORT_DISTRIBUTION and is_lazy(stack.distribution):
                raise ValueError(
                    f"the distribution on {stack.distribution.spatial_shape} is computed plane by plane (it would "
                    "not fit in memory whole), so it cannot be written as one .npz; export the current sample, "
                    "or predict on a crop of the image and export that distribution."
                )
            replace = bool(self._export_overwrite.value)
            self._tell_whole_sample(stack, entry, "the export")

            def _written(written: Path | None) -> None:
                if written is not None:
                    show_info(f"Exported {kind.lower()} to {written}")
                    self.done(written)

            def _write(labels: np.ndarray | None = None) -> Path:
                held = stack if labels is None else HeldSample(stack, entry, labels)
                return export_samples(target, held, what=kind, entry=entry, overwrite=replace)

            lazy = kind == EXPORT_CURRENT and is_lazy(stack.distribution)
            return self._start(self._whole_sample(stack, entry, _write) if lazy else _write,
                               action="Exporting SSN samples", returned=_written,
                               yielded=functools.partial(self._progress, f"Exporting sample {entry}"),
                               finished=lambda: self.set_status(""))
        return None
