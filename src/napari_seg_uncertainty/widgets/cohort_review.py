"""Dock widget "Cohort review": work through the evaluated cases of a study, most uncertain first.

Open a study folder (``napari-seg-uncertainty study``) or an evaluation folder
(``napari-seg-uncertainty evaluate --out``); the folder is read by
:class:`~napari_seg_uncertainty.workflow.review.ReviewSession` in a worker. The table lists the
evaluated cases of the chosen candidate with their rank in the review order, Dice, ECE, NLL, segment
entropy and whether they were reviewed, each row coloured by the case's uncertainty; it sorts by any
column and filters by case id and "only not reviewed". Selecting a case reads it and predicts it in a
worker, then shows its image, the raters, the prediction, its entropy and — for an SSN — label maps
sampled from the model, all on the case's grid (scale and translate); the previous case's layers
that this dock added are removed (layers of the user's stay) and the view moves to the case (its
centre slice, the camera on its extent), wherever the user's own layers lie. *Previous* and *Next*
follow the table's order as shown. Closing the dock removes the layers it added, except an edited
prediction that was not kept: that layer stays, renamed "… (unsaved edit)".

The reviewer marks a case reviewed (``review.json``), keeps the edited prediction or the SSN sample
on show as a new annotation saved beside the case (never overwriting: the cohort then has one rater
more), and reads the pooled reliability diagram, the study table and the quality control in the
*Cohort plots* dock.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, LineEdit, PushButton
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QMainWindow, QSizePolicy

from ._base import DockWidget
from ._case import CASE_KEY
from ._common import fit_to_screen, guarded, notify_errors, show_info, show_warning, when_docked
from ._layer_queue import keep_selection
from ._review_plots import PLOTS_DOCK, PlotInputs, ReviewPlots, plot_inputs
from ._review_table import ReviewTable
from ._train_curves import dock_of
from .train import _UndockWatcher

if TYPE_CHECKING:
    import napari

__all__ = ["LAYER_NAMES", "CohortReviewWidget"]

#: Names of the layers a case brings (raters are numbered: "review rater 1", …).
LAYER_NAMES = {
    "image": "review image",
    "rater": "review rater",
    "prediction": "review prediction",
    "entropy": "review entropy",
    "samples": "review SSN samples",
}
#: Outline width (pixels) of the rater layers: the raters' outlines read over the filled prediction.
RATER_CONTOUR = 1
#: Share of the canvas the case fills when opened (napari's ``fit_to_view`` margin of 5 %).
FIT_MARGIN = 0.95


class CohortReviewWidget(DockWidget):
    """Review the evaluated cases of a study or evaluation folder, one case at a time.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        Injected by napari.

    Notes
    -----
    :meth:`open_folder` reads a folder in a worker (returns it; :attr:`computed` is emitted with the
    session once the table and plots are shown); :meth:`open_case` reads and predicts a case in a
    worker (:attr:`computed` with the ``ReviewCase`` once its layers are added). :meth:`next_case`
    and :meth:`previous_case` move through the table; :meth:`set_reviewed`, :meth:`keep_prediction`
    and :meth:`keep_sample` are the reviewer's actions (the two keeps write in a worker: :attr:`computed`
    with the file's path). Bad input and failures become notifications.

    Attributes
    ----------
    session : ReviewSession or None
        The folder opened.
    case : ReviewCase or None
        The case on show.
    layers : list
        The layers this dock added for the case on show.
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(viewer, status="Open a study or evaluation folder (Browse…).")
        self.session: Any = None
        self.case: Any = None
        self.layers: list[Any] = []
        self._prediction: Any = None  # the prediction as read, or as last kept: to tell an unsaved edit
        self._building_table = False
        self._requested: str | None = None  # the case opened last (on show, or being read)
        self._build_controls()
        self.table = ReviewTable()
        self.table.native.itemSelectionChanged.connect(self._on_selection)
        layout = self.content.native.layout()  # below the labelled rows, over the dock's whole width
        for widget in (self.table.native, self._navigation.native, self._keep_row.native, self._status.native):
            widget.setSizePolicy(QSizePolicy.Policy.Expanding, widget.sizePolicy().verticalPolicy())
            layout.addWidget(widget)
        self.disable_while_busy(self._open, self._browse)
        self.finish_layout(min_height=160)
        layout.setStretchFactor(self.table.native, 1)  # spare height goes to the table, not below the buttons
        self.plots: ReviewPlots | None = None
        # beside this dock once it is docked, after this dock has joined the plugin's tabs (tabify_when_docked)
        when_docked(self.native, lambda: QTimer.singleShot(0, guarded(self._ensure_plots)))
        self._undock_watcher = _UndockWatcher(self._closed, self.native)
        self.native.installEventFilter(self._undock_watcher)
        self._set_actions()

    def _build_controls(self) -> None:
        self._path = LineEdit(value="", tooltip="A study folder (study.yaml, evaluation/) or an evaluation "
                                                "folder (cases.csv, evaluation.json); Enter opens it.")
        self._path.native.setPlaceholderText("study or evaluation folder")
        self._path.native.setMinimumWidth(60)
        self._browse = PushButton(text="Browse…", tooltip="Choose a study or evaluation folder.")
        self._open = PushButton(text="Open", tooltip="Read the folder's evaluation and list its cases.")
        folder_row = Container(layout="horizontal", labels=False, label="Folder",
                               widgets=[self._path, self._browse, self._open])
        folder_row.margins = (0, 0, 0, 0)
        self._candidate = ComboBox(label="Candidate", choices=[], tooltip="The model whose cases are listed.")
        self._filter = LineEdit(value="", tooltip="Show only the cases whose id contains this text.")
        self._filter.native.setPlaceholderText("filter by case id")
        self._filter.native.setMinimumWidth(60)
        self._only_open = CheckBox(text="only not reviewed", value=False)
        self._filter_row = Container(layout="horizontal", labels=False, label="Filter",
                                     widgets=[self._filter, self._only_open])
        self._filter_row.margins = (0, 0, 0, 0)
        self._previous = PushButton(text="◀ Previous", tooltip="The case above in the table.")
        self._next = PushButton(text="Next ▶", tooltip="The case below in the table.")
        self._reviewed = CheckBox(text="Reviewed", value=False, tooltip="Mark the case on show reviewed "
                                                                         "(saved in review.json).")
        self._navigation = Container(layout="horizontal", labels=False,
                                     widgets=[self._previous, self._next, self._reviewed])
        self._navigation.margins = (0, 0, 0, 0)
        self._keep_prediction = PushButton(
            text="Keep edited prediction",
            tooltip="Save the prediction layer (with your edits) as a new annotation beside the case.")
        self._keep_sample = PushButton(
            text="Keep SSN sample",
            tooltip="Save the SSN sample on show (the samples slider) as a new annotation beside the case.")
        self._keep_row = Container(layout="horizontal", labels=False,
                                   widgets=[self._keep_prediction, self._keep_sample])
        self._keep_row.margins = (0, 0, 0, 0)
        self.content.extend([folder_row, self._candidate, self._filter_row])
        self._path.native.returnPressed.connect(lambda: self.open_folder())
        self._browse.changed.connect(self._on_browse)
        self._open.changed.connect(lambda _value=None: self.open_folder())
        self._candidate.changed.connect(self._on_candidate_changed)
        self._filter.changed.connect(self._apply_filter)
        self._only_open.changed.connect(self._apply_filter)
        self._previous.changed.connect(lambda _value=None: self.previous_case())
        self._next.changed.connect(lambda _value=None: self.next_case())
        self._reviewed.changed.connect(self._on_reviewed_changed)
        self._keep_prediction.changed.connect(lambda _value=None: self.keep_prediction())
        self._keep_sample.changed.connect(lambda _value=None: self.keep_sample())

    # state ------------------------------------------------------------------------------------------
    @property
    def candidate(self) -> str | None:
        """The candidate whose cases are listed."""
        value = self._candidate.value
        return None if value is None else str(value)

    @property
    def case_id(self) -> str | None:
        """The id of the case on show."""
        return None if self.case is None else str(self.case.case_id)

    @property
    def samples_layer(self) -> Any:
        """The SSN samples layer of the case on show (``None`` without one)."""
        return next((layer for layer in self.layers if layer.name == LAYER_NAMES["samples"]
                     and layer in self._viewer.layers), None)

    @property
    def prediction_layer(self) -> Any:
        """The prediction layer of the case on show (``None`` once removed)."""
        return next((layer for layer in self.layers if layer.name == LAYER_NAMES["prediction"]
                     and layer in self._viewer.layers), None)

    @property
    def _unsaved_edit(self) -> bool:
        """Whether the prediction layer on show differs from the prediction as read (or as last kept)."""
        prediction = self.prediction_layer
        return (prediction is not None and self._prediction is not None
                and not np.array_equal(np.asarray(prediction.data), self._prediction))

    def set_busy(self, busy: bool, message: str | None = None) -> None:
        """Enter or leave the busy state; the reviewer's actions follow what is on show."""
        super().set_busy(busy, message)
        self._set_actions()

    def _set_actions(self) -> None:
        idle = not self._running
        self._keep_prediction.enabled = idle and self.case is not None
        self._keep_sample.enabled = idle and self.case is not None and _samples_of(self.case) is not None
        self._reviewed.enabled = self.case is not None
        self._previous.enabled = self._next.enabled = idle and self.session is not None

    # folder -----------------------------------------------------------------------------------------
    def _on_browse(self, _value: Any = None) -> None:
        from qtpy.QtWidgets import QFileDialog

        folder = QFileDialog.getExistingDirectory(self._browse.native, "Study or evaluation folder")
        if folder:
            self.open_folder(folder)

    def open_folder(self, folder: Any = None) -> Any:
        """Read the study or evaluation ``folder`` (default: the path field) in a worker; returns it.

        ``None`` when nothing started (an empty path: a notification says what to choose).
        :attr:`computed` is emitted with the ``ReviewSession`` once its cases and plots are shown.
        """
        if folder is not None:
            self._path.value = str(folder)
        path = str(self._path.value).strip()
        if not path:
            show_info("Cohort review: choose a study folder or an evaluation folder first (Browse…).")
            return None
        return self.run(_read_folder, path, action="Open review folder",
                        message=f"Reading {Path(path).name} …", returned=self._show_session)

    def _show_session(self, opened: tuple[Any, PlotInputs]) -> None:
        session, inputs = opened
        self._drop_case()
        self._requested = None
        self.session = session
        candidates = [str(name) for name in session.candidates]
        with self._candidate.changed.blocked():
            self._candidate.choices = candidates
            if candidates:
                self._candidate.value = candidates[0]
        self._fill_table()
        self._ensure_plots().show_inputs(inputs)
        count = self.table.native.rowCount()
        self.done(session, f"{count} evaluated case(s) of {len(candidates)} candidate(s); select a case to open it.")

    def _on_candidate_changed(self, _value: Any = None) -> None:
        if self.session is None:
            return
        self._fill_table()
        if self.case is not None:
            self.open_case(self.case_id)  # the same case, predicted by the other candidate

    def _fill_table(self) -> None:
        self._building_table = True
        try:
            self.table.set_rows(self.session.case_rows(self.candidate) if self.candidate else [])
            self._apply_filter()
            if self.case is not None:
                self.table.select(self.case_id)
        finally:
            self._building_table = False

    def _apply_filter(self, _value: Any = None) -> None:
        self.table.filter(self._filter.value, only_not_reviewed=bool(self._only_open.value))

    # cases ------------------------------------------------------------------------------------------
    def _on_selection(self) -> None:
        if self._building_table:
            return
        case_id = self.table.selected_case()
        if case_id is not None and case_id != self._requested:
            self.open_case(case_id)

    def open_case(self, case_id: str, *, candidate: str | None = None) -> Any:
        """Read case ``case_id`` and predict it with ``candidate`` (default: the one chosen) in a worker.

        Returns the worker, or ``None`` when nothing started (no folder open, an unknown case or
        candidate: a notification says so). :attr:`computed` is emitted with the ``ReviewCase`` once
        its layers are shown.
        """
        if self.session is None:
            show_info("Cohort review: open a study or evaluation folder first.")
            return None
        if candidate is not None and candidate != self.candidate:
            with self._candidate.changed.blocked():
                self._candidate.value = candidate
            self._fill_table()
        case_id = str(case_id)
        if case_id not in [row.case_id for row in self.table.rows]:
            show_warning(f"Cohort review: {case_id!r} is not an evaluated case of {self.candidate!r}; "
                         "choose one from the table.")
            return None
        self._requested = case_id
        if self.table.selected_case() != case_id:
            self._building_table = True
            try:
                self.table.select(case_id)
            finally:
                self._building_table = False
        return self.run(self.session.load_case, case_id, self.candidate, action=f"Open case {case_id}",
                        message=f"Reading and predicting {case_id} …", returned=self._show_case,
                        errored=lambda _exc: setattr(self, "_requested", self.case_id))

    def _show_case(self, case: Any) -> None:
        self._drop_case()
        self.case = case
        self._prediction = np.asarray(case.prediction.labels)
        jobs = [lambda spec=spec: self._add_layer(*spec) for spec in _layer_specs(case)]
        with self._reviewed.changed.blocked():
            self._reviewed.value = bool(self.session.is_reviewed(case.case_id))
        self._queue.run(jobs, done=lambda: self._case_shown(case))

    def _add_layer(self, kind: str, data: Any, kwargs: dict[str, Any]) -> None:
        kwargs = dict(kwargs)
        contour = kwargs.pop("contour", None)  # a Labels property, not a keyword of add_labels
        with keep_selection(self._viewer):
            add = getattr(self._viewer, f"add_{kind}")
            layer = add(data, **kwargs)
        if contour is not None:
            layer.contour = contour
        self.layers.append(layer)

    def _case_shown(self, case: Any) -> None:
        self.focus_case()
        prediction = self.prediction_layer
        if prediction is not None:
            self._viewer.layers.selection.active = prediction
        self.done(case, f"Case {case.case_id} ({self.candidate}): {len(self.layers)} layers. Edit the prediction "
                        "and keep it, or keep an SSN sample; mark the case reviewed when done.")

    def focus_case(self) -> None:
        """Move the view to the case on show, whatever else the viewer holds.

        The sliders of the axes not displayed go to the case's centre (world coordinates: translate +
        scale × index), the SSN samples slider to sample 0, and the camera fits the case's layers (not
        every layer: the user's own may lie far away).
        """
        grid = [layer for layer in self.layers if layer in self._viewer.layers and layer.name != LAYER_NAMES["samples"]]
        if not grid:
            return
        viewer, dims, layer = self._viewer, self._viewer.dims, grid[0]
        shape = np.asarray(layer.data.shape[-layer.ndim:])
        centre = np.asarray(layer.data_to_world((shape - 1) / 2.0), dtype=float)
        offset = dims.ndim - layer.ndim  # napari lines the layers up on their trailing axes
        for axis in dims.not_displayed:
            if axis >= offset:
                dims.set_point(axis, float(centre[axis - offset]))
            elif axis == offset - 1 and self.samples_layer is not None:
                dims.set_point(axis, 0.0)  # the samples slider: the first sample
        # the camera as ViewerModel.fit_to_view(layers=…) sets it, written out: napari's own fails when the
        # case has fewer axes than the viewer (a 2-D case beside a 3-D layer of the user's)
        corners = itertools.product(*[(-0.5, n - 0.5) for n in shape])  # the voxels' outer edges
        world = np.array([layer.data_to_world(np.asarray(c, dtype=float)) for c in corners])
        low = np.array([dims.range[a].start for a in range(offset)] + list(world.min(axis=0)))
        high = np.array([dims.range[a].stop for a in range(offset)] + list(world.max(axis=0)))
        shown = list(dims.displayed)
        size = np.maximum(high[shown] - low[shown], 1e-9)
        camera = viewer.scene.camera
        camera.center = tuple(((low + high) / 2)[shown])
        viewbox = np.asarray(viewer.canvas.viewbox_size(viewer.layers), dtype=float)
        if dims.ndisplay == 2:
            camera.zoom = FIT_MARGIN * float(np.min(viewbox / size[-2:]))
        else:  # any rotation: the box's diagonal fits
            camera.zoom = FIT_MARGIN * float(np.min(viewbox)) / float(np.linalg.norm(size))

    def _drop_case(self) -> None:
        """Remove the layers of the case on show; warn when its prediction had edits that were not kept."""
        if self._unsaved_edit:
            show_warning(f"Cohort review: the edits of the prediction of {self.case_id} were dropped (not kept); "
                         "press 'Keep edited prediction' before moving on to keep them.")
        for layer in self.layers:
            if layer in self._viewer.layers:
                self._viewer.layers.remove(layer)
        self.layers = []
        self.case = None
        self._prediction = None
        self._set_actions()

    def next_case(self) -> Any:
        """Open the case below the one on show in the table (the first one when none is); returns the worker."""
        return self._step(+1)

    def previous_case(self) -> Any:
        """Open the case above the one on show in the table; returns the worker (``None`` at the top)."""
        return self._step(-1)

    def _step(self, step: int) -> Any:
        shown = self.table.case_order()
        if self.session is None or not shown:
            show_info("Cohort review: no case to move to (open a folder, or clear the filter).")
            return None
        every = [self.table.case_at(i) for i in range(self.table.native.rowCount())]
        current = self._requested
        if current not in every:
            return self.open_case(shown[0] if step > 0 else shown[-1])
        position = every.index(current)
        ahead = every[position + 1:] if step > 0 else list(reversed(every[:position]))
        target = next((case for case in ahead if case in shown), None)
        if target is None:
            show_info(f"Cohort review: {current} is the {'last' if step > 0 else 'first'} case shown.")
            return None
        return self.open_case(target)

    # reviewer actions -------------------------------------------------------------------------------
    def _on_reviewed_changed(self, value: bool) -> None:
        self.set_reviewed(bool(value))

    def set_reviewed(self, reviewed: bool = True, *, note: str | None = None) -> None:
        """Mark the case on show reviewed (or not) in ``review.json``; ``note=None`` keeps its note."""
        if self.case is None:
            show_info("Cohort review: open a case first.")
            return
        with notify_errors("Mark reviewed"):
            self.session.mark_reviewed(self.case_id, bool(reviewed), note=note)
            self.table.set_reviewed(self.case_id, bool(reviewed))
            self._apply_filter()  # with "only not reviewed", the queue shrinks as the reviewer works
            with self._reviewed.changed.blocked():
                self._reviewed.value = bool(reviewed)
            self.set_status(f"{self.case_id} marked {'reviewed' if reviewed else 'not reviewed'}.")

    def keep_prediction(self) -> Any:
        """Save the prediction layer (with the reviewer's edits) as a new annotation in a worker.

        Returns the worker (:attr:`computed` is emitted with the file's path once saved), or ``None``
        when nothing started (no edit, or labels equal to a rater or a kept annotation: a notification
        says so).
        """
        layer = self.prediction_layer
        if self.case is None or layer is None:
            show_info("Cohort review: open a case first; its prediction layer is what is kept.")
            return None
        labels = np.array(layer.data, copy=True)
        if np.array_equal(labels, np.asarray(self.case.prediction.labels)):
            show_info(f"Cohort review: the prediction of {self.case_id} has not been edited: paint corrections "
                      "first, or keep an SSN sample.")
            return None

        def kept() -> None:
            self._prediction = labels  # kept: moving on drops nothing

        return self._save(labels, kind="edited", kept=kept)

    def keep_sample(self) -> Any:
        """Save the SSN sample on show (the samples slider) as a new annotation in a worker; returns the worker
        (or ``None``, as :meth:`keep_prediction`)."""
        layer = self.samples_layer
        if self.case is None or layer is None:
            show_info("Cohort review: the case on show has no SSN samples (the candidate is not an SSN).")
            return None
        index = self.sample_index()
        return self._save(np.asarray(layer.data[index]), kind="ssn_sample", what=f"SSN sample {index}")

    def sample_index(self) -> int:
        """The SSN sample on show: the samples layer's position on its leading (sample) axis."""
        layer = self.samples_layer
        if layer is None:
            raise ValueError("the case on show has no SSN samples layer.")
        point = layer.world_to_data(self._viewer.dims.point)
        return int(min(max(round(float(point[0])), 0), layer.data.shape[0] - 1))

    def _save(self, labels: np.ndarray, *, kind: str, what: str = "the prediction",
              kept: Callable[[], None] | None = None) -> Any:
        """Check ``labels`` here (against the raters in memory and the kept annotations), write them in a worker."""
        case_id, raters = self.case_id, self.case.raters
        with notify_errors(f"Keep {what}"):
            self.session.check_annotation(case_id, labels, raters=raters)
            return self.run(_keep, self.session, case_id, labels, kind=kind, raters=raters, action=f"Keep {what}",
                            message=f"Saving {what} of {case_id} …",
                            returned=partial(self._saved, labels=labels, what=what, kept=kept))
        return None

    def _saved(self, annotation: Any, *, labels: np.ndarray, what: str, kept: Callable[[], None] | None) -> None:
        """The annotation is written: show it as the case's next rater when it joined the cohort."""
        path, case_id = Path(annotation.path), annotation.case_id
        if kept is not None:
            kept()
        if annotation.in_cohort:  # the case has one more rater: shown as its next rater layer
            raters = [layer for layer in self.layers if layer.name.startswith(LAYER_NAMES["rater"] + " ")]
            self._add_layer("labels", np.array(labels, copy=True), {
                "name": f"{LAYER_NAMES['rater']} {len(raters) + 1}", "visible": False,
                "metadata": {CASE_KEY: case_id}, **self.case.layer_kwargs()})
            show_info(f"Cohort review: {what} of {case_id} saved beside the case as one more rater: {path}")
            self.done(path, f"Saved {path.name}: {case_id} has one rater more.")
        else:
            show_info(f"Cohort review: {what} of {case_id} saved as {path} (this cohort cannot grow in place: "
                      "add the file to its manifest to use it as a rater).")
            self.done(path, f"Saved {path}.")

    # docks ------------------------------------------------------------------------------------------
    def _ensure_plots(self) -> ReviewPlots:
        """The *Cohort plots* dock (made again if it was closed), in a tab beside this dock.

        Tabbed rather than stacked: the reliability diagram and the study table need the column's
        height to be read on a 1280×800 screen; the review tab stays in front.
        """
        if self.plots is not None:
            return self.plots
        self.plots = ReviewPlots(self._viewer)
        window = getattr(self._viewer, "window", None)
        if window is None or not hasattr(window, "add_dock_widget"):
            return self.plots
        window.add_dock_widget(self.plots.native, name=PLOTS_DOCK, area="right")
        review, plots = dock_of(self.native), dock_of(self.plots.native)
        main = review.parentWidget() if review is not None else None
        if plots is not None and isinstance(main, QMainWindow) and not review.isFloating():
            main.tabifyDockWidget(review, plots)
            review.raise_()
            fit_to_screen(main)  # stacked for a moment before the tab was made, the window may have grown
        return self.plots

    def _closed(self) -> None:
        """This dock was closed: its plots dock and the layers it added go with it."""
        self._close_plots()
        self._release_layers()

    def _release_layers(self) -> None:
        """Remove the layers this dock added; an edited prediction that was not kept stays, renamed."""
        prediction, edited = self.prediction_layer, self._unsaved_edit
        try:
            for layer in self.layers:
                if layer is prediction and edited:
                    layer.name = f"{LAYER_NAMES['prediction']} {self.case_id} (unsaved edit)"
                elif layer in self._viewer.layers:
                    self._viewer.layers.remove(layer)
        except (RuntimeError, LookupError, AttributeError):  # the viewer is closing: its layers go with it
            return
        finally:
            self.layers, self.case, self._prediction, self._requested = [], None, None, None
        if edited:
            show_warning(f"Cohort review closed: the edited prediction of the case was not kept; it stays as the "
                         f"layer {prediction.name!r} (save it with File > Save Selected Layers, or reopen the "
                         "review and keep it).")

    def _close_plots(self) -> None:
        """This dock was closed: close the *Cohort plots* dock with it (it would be left orphaned)."""
        plots, self.plots = self.plots, None
        if plots is None:
            return
        try:
            if dock_of(plots.native) is not None:
                self._viewer.window.remove_dock_widget(plots.native)
            plots.native.deleteLater()
        except (RuntimeError, LookupError, AttributeError):  # the viewer is closing: Qt deletes it anyway
            pass


def _read_folder(path: str) -> tuple[Any, PlotInputs]:
    """Open a study or evaluation folder and read what its plots show (in a worker)."""
    from ..workflow.review import ReviewSession

    session = ReviewSession.open(path)
    return session, plot_inputs(session)


def _keep(session: Any, case_id: str, labels: np.ndarray, *, kind: str, raters: Any) -> Any:
    """Save an annotation (in a worker); its record in ``review.json`` (``KeptAnnotation``)."""
    path = str(session.save_annotation(case_id, labels, kind=kind, raters=raters))
    return next(a for a in reversed(session.annotations(case_id)) if a.path == path)


def _samples_of(case: Any) -> Any:
    """The SSN label-map samples ``(N, *S)`` of a case, or ``None``."""
    return getattr(case, "ssn_samples", None)


def _layer_specs(case: Any) -> list[tuple[str, Any, dict[str, Any]]]:
    """``(layer kind, data, add_* keywords)`` of each layer a case brings, in the order they are added.

    Every layer lies on the case's grid (its spacing, origin and direction); the SSN samples' leading
    axis is a slider (scale 1).
    """
    meta = {CASE_KEY: str(case.case_id)}
    where = {**case.layer_kwargs(), "metadata": meta}
    specs: list[tuple[str, Any, dict[str, Any]]] = []
    if case.image is not None:
        image = np.asarray(case.image)
        channels = image if image.ndim > len(case.spacing) else image[None]
        for c, channel in enumerate(channels):
            name = LAYER_NAMES["image"] + (f" {c}" if len(channels) > 1 else "")
            specs.append(("image", channel, {"name": name, "colormap": "gray", "visible": c == 0, **where}))
    specs.append(("image", np.asarray(case.prediction.entropy), {
        "name": LAYER_NAMES["entropy"], "colormap": "magma", "opacity": 0.7, "visible": False,
        "contrast_limits": (0.0, 1.0), **where}))
    for r, rater in enumerate(np.asarray(case.raters)):
        specs.append(("labels", rater, {"name": f"{LAYER_NAMES['rater']} {r + 1}", "visible": r == 0,
                                        "contour": RATER_CONTOUR, **where}))
    specs.append(("labels", np.array(case.prediction.labels, copy=True),
                  {"name": LAYER_NAMES["prediction"], "opacity": 0.5, **where}))
    samples = _samples_of(case)
    if samples is not None:
        specs.append(("labels", np.asarray(samples), {
            "name": LAYER_NAMES["samples"], "visible": False, "opacity": 0.6, "metadata": meta,
            **case.layer_kwargs(leading_axes=1)}))
    return specs
