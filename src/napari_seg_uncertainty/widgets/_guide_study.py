"""The Guide's last step: a small study on a generated cohort, opened in the *Cohort review* dock.

:class:`GuideStudy` is mixed into :class:`~napari_seg_uncertainty.widgets.guide.WorkflowGuide`. The study
(:func:`~napari_seg_uncertainty.workflow.demo.study.iter_demo_cohort_study`: the demo cohort around the
open image, four short runs, their evaluation on the test cases, the study table and quality control)
runs in a worker thread whose progress lines reach the Guide's status line; the *Cohort review* dock then
opens the study folder through its public method.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..workflow.demo.study import STUDY_CANDIDATES, STUDY_FOLDER, iter_demo_cohort_study
from ._common import run_in_thread
from ._guide_queue import WAITING, Action

__all__ = ["GuideStudy"]


class GuideStudy:
    """Runs the demo's study and opens it in *Cohort review* (mixed into ``WorkflowGuide``)."""

    viewer: Any
    seed: int
    study: Any
    study_log: list[str]
    study_training: Any
    run_root: Path | None
    _prepared: Any
    _status: Any
    _deadline: Any

    # provided by the Guide's other parts (StepQueue, WorkflowGuide)
    _resume: Callable[[], None]
    _stop: Callable[[BaseException], None]
    _step_words: Callable[[str | None], str]
    _work: Callable[..., Any]
    _new_run_folder: Callable[[str], Path]

    def study_settings(self) -> dict[str, Any]:
        """What the study step runs on: the open demo case, a new folder and the run settings."""
        if self._prepared is None:
            raise ValueError("no demo data; press 'Load demo data' first (the study's cohort is built around it).")
        image, raters, _layers = self._prepared
        return {"folder": str(self._new_run_folder("cohort-study")), "image": image, "raters": raters,
                "training": self.study_training, "seed": self.seed}

    def _study_actions(self, widget: Any, settings: dict[str, Any]) -> list[Action]:
        """Run the study in a worker (its lines on the status line), then open it in *Cohort review*."""
        words = f"{len(STUDY_CANDIDATES)} candidates"

        def run() -> Any:
            def progress(record: Any) -> None:
                self.study_log.append(str(record))
                self._status.value = f"{self._step_words('cohort').capitalize()}: {record}"

            def done(result: Any) -> None:
                self.study = result
                self._resume()

            def failed(exc: BaseException) -> None:
                self._stop(RuntimeError(f"the study did not finish ({exc})"))

            self.study_log = []
            self._deadline.start()
            self._study_worker = run_in_thread(
                iter_demo_cohort_study, settings["folder"], settings["image"], settings["raters"],
                training=settings["training"], seed=settings["seed"], action="The demo study",
                yielded=progress, returned=done, errored=failed,
            )
            return WAITING

        def open_study() -> Any:
            folder = str(Path(settings["folder"]) / STUDY_FOLDER)
            return self._work(widget, lambda: widget.open_folder(folder), "opening the study in Cohort review")

        def first_case() -> Any:
            return self._work(widget, widget.next_case, "opening the first case of the review queue")

        return [
            (f"training and evaluating {words} on a cohort", run),
            ("opening the study in Cohort review", open_study),
            ("opening the first case of the review queue", first_case),
        ]
