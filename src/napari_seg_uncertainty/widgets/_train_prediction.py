"""What the *Train* dock trains on and shows at the end: the data of a run and its prediction layers.

:class:`TrainPrediction` is mixed into :class:`~napari_seg_uncertainty.widgets.train.TrainWidget`.
:meth:`~TrainPrediction._run_data` gives what a run trains on: the open layers' ``TrainingData``, or
the loaded cohort with its case-level split (and then remembers the held-out case to show: the first
test case, else the first validation case; a split holding out nothing: its first training case, named
as such at the end). Once the run has ended, the checkpoint is run in a worker
thread on the image (cropped as *Predict on* asks), or on that held-out case read from disk, streamed into
preallocated outputs (float16 when float32 would not fit, with a warning; a notification naming the sizes
when neither fits), and the prediction is added as layers (labels, entropy, probabilities; a cohort case's
image first), one per event-loop turn, placed on the image's or the case's grid and tagged with its case.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..core.geometry import Geometry
from ..workflow.training import FittedPrediction, predict_within_memory_steps, prediction_geometry
from ._common import notify_errors, run_in_thread, show_warning, upsert_layer
from ._train_cohort import CasePrediction, predict_case_steps, prediction_case

__all__ = ["CASE_IMAGE_LAYER", "PREDICTION_LAYERS", "TrainPrediction"]

#: The layers a run adds, in the order they are added.
PREDICTION_LAYERS = ("prediction labels", "prediction entropy", "prediction probabilities")
#: The layer showing the cohort case a cohort run predicts at its end (added before the prediction).
CASE_IMAGE_LAYER = "cohort case image"


class TrainPrediction:
    """The data a run trains on and the prediction shown after it (mixed into ``TrainWidget``)."""

    _viewer: Any
    _status: Any
    _geometry: Geometry | None
    _image_shape: tuple[int, ...]
    _crop_start: tuple[int, ...] | None
    _crop: tuple[slice, ...] | None
    _image_layer: Any
    _case: str | None
    _closed: bool
    state: str
    checkpoint_path: str | None
    data_source: str
    cohort: Any

    def _init_prediction(self) -> None:
        self.predict_worker: Any = None
        self.prediction: dict[str, Any] | None = None
        self.case_prediction: CasePrediction | None = None
        self._cohort_run: tuple[Any, str] | None = None  # (cohort, case shown at the end) of a cohort run
        self._held_out = True  # whether the case a cohort run predicts at its end is held out (val or test)

    def _run_data(self) -> tuple[Any, dict[str, list[str]] | None]:
        """What a run trains on and its split: the cohort and its checked split, or the layers' data and None.

        Records the case a cohort run predicts at its end (:func:`prediction_case`): the first test
        case, else the first validation case; a split that holds out nothing predicts its first
        training case, and the end says so ("training case", not "held-out case").
        """
        if self.data_source == "cohort":
            cohort, split = self.cohort, self.cohort_split()  # type: ignore[attr-defined]  # ValueError: none / bad
            case = prediction_case(split)
            self._cohort_run = (cohort, case)
            self._held_out = case not in split.get("train", ())
            return cohort, split
        self._cohort_run = None
        return self.collect_data(), None  # type: ignore[attr-defined]

    def _run_prediction(self, checkpoint: str) -> None:
        if self._cohort_run is not None:
            self._run_case_prediction(checkpoint, *self._cohort_run)
            return
        self._set_state("predicting")
        self._status.value = "Predicting on the image…"
        layer = self._image_layer
        if layer is None or not any(layer is other for other in self._viewer.layers):
            self._set_state("idle")
            self.done(self._outcome(), "The image layer was removed; no prediction added.")
            return
        image = np.asarray(layer.data)
        if self._crop is not None:
            image = image[(Ellipsis, *self._crop)]

        def errored(exc: BaseException) -> None:
            self._set_state("idle")
            self.fail(f"Prediction failed: {exc}", notify=False)

        def returned(result: FittedPrediction) -> None:
            if result.note is not None:
                show_warning(result.note)
            self._show_prediction(result.prediction)

        def progressed(record: Any) -> None:
            self._status.value = f"Predicting on the image… {record.fraction:.0%}"

        # streamed into preallocated outputs; too large: float16, or a notification naming the sizes
        self.predict_worker = run_in_thread(
            predict_within_memory_steps, checkpoint, image, action="Prediction", returned=returned,
            errored=errored, yielded=progressed,
        )

    def _run_case_prediction(self, checkpoint: str, cohort: Any, case_id: str) -> None:
        """Read a held-out case of the cohort and predict it, both in a worker."""
        self._set_state("predicting")
        self._status.value = f"Predicting {self._case_words(case_id)}…"

        def errored(exc: BaseException) -> None:
            self._set_state("idle")
            self.fail(f"Prediction failed: {exc}", notify=False)

        def progressed(record: Any) -> None:
            self._status.value = f"Predicting {self._case_words(case_id)}… {record.fraction:.0%}"

        # as on the image: float16 with a warning when only that fits; neither: a notification naming the sizes
        self.predict_worker = run_in_thread(
            predict_case_steps, checkpoint, cohort, case_id, action="Prediction",
            returned=self._show_case_prediction, errored=errored, yielded=progressed,
        )

    def _case_words(self, case_id: str) -> str:
        """"held-out case 'x'", or "training case 'x' (nothing held out)" when the split held out nothing."""
        if self._held_out:
            return f"held-out case {case_id!r}"
        return f"training case {case_id!r} (nothing held out)"

    def _show_case_prediction(self, result: CasePrediction) -> None:
        """The case's image, then the prediction layers, on the case's grid and tagged with its id."""
        self.case_prediction = result
        if result.note is not None:
            show_warning(result.note)
        image_layer = None
        if result.image is not None:
            leading = result.image.ndim - result.image_geometry.ndim
            image_layer = dict(
                data=result.image, name=CASE_IMAGE_LAYER, layer_type="image", colormap="gray",
                geometry=result.image_geometry, case=result.case_id, leading_axes=leading,
                metadata={"cohort_case": result.case_id},
            )
        self._show_prediction(result.prediction, geometry=result.geometry, case=result.case_id, before=image_layer)

    def _prediction_geometry(self, result: dict[str, Any]) -> Geometry | None:
        """The prediction's grid: the image's, moved to the crop, rescaled if predicted on another grid."""
        if self._geometry is None:
            return None
        region = (
            tuple(s.stop - s.start for s in self._crop) if self._crop is not None else self._image_shape
        )
        return prediction_geometry(self._geometry, region, result.labels.shape, self._crop_start)

    def _prediction_layers(
        self, result: Any, *, geometry: Geometry | None = None, case: str | None = None
    ) -> list[dict[str, Any]]:
        """Keywords of :func:`upsert_layer` for each prediction layer, in :data:`PREDICTION_LAYERS` order.

        Placed on ``geometry`` and tagged with ``case`` when given (a cohort's case), else on the
        image layer's grid (moved to the crop).
        """
        meta = {"class_names": result.class_names, "checkpoint": self.checkpoint_path}
        if geometry is None:
            geometry, case = self._prediction_geometry(result), self._case
            if self._crop_start is not None:
                meta["crop_start"] = list(self._crop_start)
        else:
            meta["cohort_case"] = case
        placed = {"geometry": geometry, "case": case, "metadata": meta}
        labels, entropy, probabilities = PREDICTION_LAYERS
        return [
            dict(data=result.labels, name=labels, layer_type="labels", opacity=0.6, **placed),
            dict(data=result.entropy, name=entropy, layer_type="image", colormap="magma",
                 contrast_limits=(0.0, 1.0), blending="additive", **placed),
            dict(data=result.probabilities, name=probabilities, layer_type="image", colormap="viridis",
                 contrast_limits=(0.0, 1.0), visible=False, leading_axes=1, **placed),
        ]

    def _show_prediction(
        self,
        result: Any,
        *,
        geometry: Geometry | None = None,
        case: str | None = None,
        before: dict[str, Any] | None = None,
    ) -> None:
        """Add the prediction layers one per event-loop turn (each napari layer costs ~0.1 s to add).

        ``before``: keywords of a layer added first (a cohort case's image).
        """
        from qtpy.QtCore import QTimer

        self.prediction = result
        pending = ([before] if before is not None else []) + self._prediction_layers(
            result, geometry=geometry, case=case
        )
        added: list[str] = []

        def add_next() -> None:
            if self._closed:  # the dock went away meanwhile
                self.state = "idle"
                return
            if not pending:
                self._set_state("idle")
                where = f" of {self._case_words(case)}" if case is not None else ""
                self.done(self._outcome(tuple(added)),
                          f"Done: prediction{where} added (probabilities, labels, entropy); checkpoint below.")
                return
            kwargs = pending.pop(0)
            with notify_errors("Show the prediction"):
                upsert_layer(self._viewer, kwargs.pop("data"), **kwargs)
                added.append(kwargs["name"])
            QTimer.singleShot(0, add_next)

        add_next()
