"""A reviewer's session on a study or an evaluation folder, without any window.

:meth:`ReviewSession.open` reads a study output folder (``evaluation/evaluation.json`` inside) or an
evaluation folder (``evaluation.json``); the session lists each candidate's evaluated cases with their
metrics, ranked for review by segment-level entropy (Mehrtash et al.), reloads a case with its
prediction (and SSN samples), placed for napari, and keeps the reviewer's marks and annotations in
``review.json``. The *Cohort review* dock is a thin view of it.

References
----------
.. [1] A. Mehrtash, W. M. Wells, C. M. Tempany, P. Abolmaesumi, T. Kapur, "Confidence Calibration and
   Predictive Uncertainty Estimation for Deep Medical Image Segmentation", IEEE TMI 39(12), 2020.
.. [2] M. Monteiro et al., "Stochastic Segmentation Networks: Modelling Spatially Correlated Aleatoric
   Uncertainty", NeurIPS 2020 (SSN samples).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ...core._validation import check_choice, check_flag, check_int, check_seed, describe
from ...core.geometry import Geometry
from .annotations import ANNOTATION_KINDS, annotation_target, check_labels, label_digest, write_exclusive
from .state import REVIEW_FILE, KeptAnnotation, ReviewMark, annotations, marks, now, read_state, update_state
from .table import CaseReviewRow, review_rows

if TYPE_CHECKING:
    from ...core.cohort import Cohort

__all__ = ["ReviewCase", "ReviewSession"]

_EVALUATION_FILE = "evaluation.json"
_STUDY_FILE = "study.yaml"


@dataclass(frozen=True)
class ReviewCase:
    """One case loaded for review: image, raters, the candidate's prediction and SSN samples, placed in the world.

    Attributes
    ----------
    case_id, candidate : str
        The case and the candidate whose checkpoint predicted it.
    image : numpy.ndarray or None
        float32 ``(*S)`` for one channel, ``(C, *S)`` for several; None when the case has no image.
    raters : numpy.ndarray
        Integer ``(R, *S)`` label maps.
    prediction : Prediction
        The candidate's :class:`~napari_seg_uncertainty.core.training.Prediction`: ``probabilities``
        ``(K, *S)``, ``labels`` and normalised ``entropy`` ``(*S)``.
    ssn_samples : numpy.ndarray or None
        ``(N, *S)`` label maps sampled from an SSN checkpoint's logit distribution; None otherwise.
    class_names : tuple of str
        One name per class, background first.
    geometry : Geometry
        The case's grid in the world (:class:`~napari_seg_uncertainty.core.geometry.Geometry`): its
        ``spacing``, ``origin`` and ``direction``, numpy (and napari) axis order.
    """

    case_id: str
    candidate: str
    image: np.ndarray | None = field(repr=False)
    raters: np.ndarray = field(repr=False)
    prediction: Any = field(repr=False)
    ssn_samples: np.ndarray | None = field(repr=False)
    class_names: tuple[str, ...]
    geometry: Geometry

    @property
    def spacing(self) -> tuple[float, ...]:
        """Voxel size, numpy axis order."""
        return self.geometry.spacing

    @property
    def origin(self) -> tuple[float, ...]:
        """First-voxel position, numpy axis order."""
        return self.geometry.origin

    @property
    def direction(self) -> np.ndarray:
        """``(ndim, ndim)`` direction cosines, numpy axis order (the identity when the case has none)."""
        direction = self.geometry.direction
        return np.eye(len(self.spacing)) if direction is None else direction

    @property
    def scale(self) -> tuple[float, ...]:
        """napari layer ``scale`` of the spatial axes: the spacing."""
        return self.geometry.spacing

    @property
    def translate(self) -> tuple[float, ...]:
        """napari layer ``translate`` of the spatial axes: the origin."""
        return self.geometry.origin

    def layer_kwargs(self, *, leading_axes: int = 0) -> dict[str, Any]:
        """``scale``, ``translate`` (and ``affine`` for a non-identity direction) for ``viewer.add_*``.

        ``leading_axes`` non-spatial axes in front (raters, samples, classes or image channels) get scale 1
        and translate 0 (:meth:`Geometry.layer_kwargs`).
        """
        return self.geometry.layer_kwargs(leading_axes=leading_axes)


def _geometry(source: Any) -> Geometry:
    """The geometry of a ``CaseData`` or a ``CaseInfo`` (its direction flattened or square)."""
    ndim = len(source.spacing)
    direction = np.asarray(source.direction, dtype=float).reshape(ndim, ndim)
    return Geometry(spacing=tuple(source.spacing), origin=tuple(source.origin), direction=direction)


def _resolve(folder: Any) -> tuple[Path, Path | None]:
    """``(evaluation folder, study folder or None)`` of a folder the user opened."""
    if not isinstance(folder, (str, os.PathLike)):
        raise TypeError(f"folder must be a study or evaluation folder path, got {describe(folder)}.")
    path = Path(os.path.expanduser(os.fspath(folder))).resolve()
    if not path.is_dir():
        raise FileNotFoundError(f"folder {os.fspath(folder)!r} does not exist or is not a folder.")
    if (path / "evaluation" / _EVALUATION_FILE).is_file():
        return path / "evaluation", path
    if (path / _EVALUATION_FILE).is_file():
        study = path.parent if path.name == "evaluation" and (path.parent / _STUDY_FILE).is_file() else None
        return path, study
    raise ValueError(
        f"{str(path)!r} is neither a study folder nor an evaluation folder: a study folder (written by "
        "'napari-seg-uncertainty study') holds evaluation/evaluation.json, an evaluation folder (written by "
        "'napari-seg-uncertainty evaluate --out DIR' or evaluate_checkpoints(out_dir=...)) holds evaluation.json "
        "beside cases.csv. Choose one of those folders."
    )


class ReviewSession:
    """Review the evaluated cases of a study or an evaluation, case by case, as a radiologist works a queue.

    Open it with :meth:`open`. Nothing here needs Qt or napari: the *Cohort review* dock shows a session,
    and a script can work through one the same way.

    Attributes
    ----------
    folder : pathlib.Path
        The study folder, or the evaluation folder when it belongs to no study; ``review.json`` lives here.
    evaluation_folder : pathlib.Path
        The folder holding ``evaluation.json`` and ``cases.csv``.
    study_folder : pathlib.Path or None
        The study output folder, None for a plain evaluation.
    saved : SavedEvaluation
        The evaluation as read from disk.
    device : str
        Device of the predictions.

    Examples
    --------
    >>> session = ReviewSession.open("study_out")  # doctest: +SKIP
    >>> candidate = session.candidates[0]  # doctest: +SKIP
    >>> first = session.review_order(candidate)[0]  # doctest: +SKIP
    >>> case = session.load_case(first, candidate)  # doctest: +SKIP
    >>> session.mark_reviewed(first, note="boundary too wide")  # doctest: +SKIP
    """

    def __init__(self, evaluation_folder: Path, study_folder: Path | None, saved: Any, *, device: str) -> None:
        self.evaluation_folder = evaluation_folder
        self.study_folder = study_folder
        self.folder = study_folder if study_folder is not None else evaluation_folder
        self.saved = saved
        self.device = device
        self._cohort: Cohort | None = None
        self._model: tuple[str, Any] | None = None
        self._class_names: tuple[str, ...] | None = None
        self._grids: dict[str, tuple[tuple[int, ...], Geometry]] = {}  # shape and placement of each case
        self._lock = threading.RLock()  # the dock calls from worker threads: one cohort scan, one model
        read_state(self.state_path)  # a broken review.json is reported on opening, not at the first mark

    @classmethod
    def open(cls, folder: str | os.PathLike, *, device: str = "auto") -> ReviewSession:
        """Open a study output folder or an evaluation folder.

        Parameters
        ----------
        folder : str or os.PathLike
            A study output folder (``evaluation/evaluation.json`` inside) or an evaluation folder
            (``evaluation.json``, as ``evaluate_checkpoints(out_dir=...)`` writes it).
        device : str
            ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"`` for the predictions of
            :meth:`load_case`.

        Returns
        -------
        ReviewSession

        Raises
        ------
        FileNotFoundError
            ``folder`` does not exist.
        ValueError
            ``folder`` holds neither ``evaluation.json`` nor ``evaluation/evaluation.json`` (the message
            says what a study and an evaluation folder contain), or its ``review.json`` is broken.
        """
        if not isinstance(device, str):
            raise TypeError(f"device must be a str such as 'auto' or 'cpu', got {describe(device)}.")
        evaluation_folder, study_folder = _resolve(folder)
        from ..evaluation import read_evaluation

        return cls(evaluation_folder, study_folder, read_evaluation(evaluation_folder), device=device)

    def __repr__(self) -> str:
        return f"ReviewSession(folder={str(self.folder)!r}, candidates={list(self.candidates)})"

    # what was evaluated ---------------------------------------------------------------------------------
    @property
    def state_path(self) -> Path:
        """``review.json`` of this session (in the study folder, else the evaluation folder)."""
        return self.folder / REVIEW_FILE

    @property
    def candidates(self) -> tuple[str, ...]:
        """The evaluated candidates (a study's run ids, ``"svls/seed0"``), in evaluation order."""
        return tuple(self.saved.candidates)

    def _candidate(self, candidate: Any) -> str:
        if not isinstance(candidate, str):
            raise TypeError(f"candidate must be a candidate name (str), got {describe(candidate)}.")
        if candidate not in self.saved.candidates:
            raise ValueError(f"candidate {candidate!r} was not evaluated here; the candidates are "
                             f"{list(self.candidates)}.")
        return candidate

    def case_ids(self, candidate: str) -> tuple[str, ...]:
        """The cases evaluated for ``candidate``, in cohort order."""
        return tuple(self.saved.case_ids[self._candidate(candidate)])

    def _all_cases(self) -> tuple[str, ...]:
        """Every evaluated case once, the first candidate's cases first."""
        return tuple(dict.fromkeys(c for ids in self.saved.case_ids.values() for c in ids))

    def _case(self, case_id: Any) -> str:
        if not isinstance(case_id, str):
            raise TypeError(f"case_id must be a case id (str), got {describe(case_id)}.")
        known = self._all_cases()
        if case_id not in known:
            shown = ", ".join(repr(c) for c in known[:5])
            raise ValueError(f"case {case_id!r} was not evaluated here; the evaluated cases are {shown}"
                             f"{' …' if len(known) > 5 else ''}.")
        return case_id

    @property
    def class_names(self) -> tuple[str, ...]:
        """One name per class, background first (the cohort's, else the first candidate's checkpoint's)."""
        if self._class_names is None:
            names = (self.saved.cohort_options or {}).get("class_names")
            if not names:
                from ...core.checkpoint import load_checkpoint

                names = load_checkpoint(next(iter(self.saved.candidates.values())))["class_names"]
            self._class_names = tuple(str(n) for n in names)
        return self._class_names

    # the table ---------------------------------------------------------------------------------------------
    def case_rows(self, candidate: str) -> list[CaseReviewRow]:
        """One :class:`CaseReviewRow` per case evaluated for ``candidate``, in cohort order.

        Dice is the mean over the foreground classes against the fused reference, ECE and NLL are
        ``all:ece_reference_volume`` and ``all:nll_reference_volume``, segment entropy the mean over the
        foreground structures; ``rank`` follows :meth:`review_order` and ``uncertainty`` is the entropy's
        rank scaled to ``[0, 1]``.
        """
        candidate = self._candidate(candidate)
        rows = [r for r in self.saved.rows if r["candidate"] == candidate]
        return review_rows(rows, self.case_ids(candidate), reviewed=self.reviewed_cases())

    def review_order(self, candidate: str) -> tuple[str, ...]:
        """The cases of ``candidate`` most uncertain first, as a review queue.

        The order of :func:`~napari_seg_uncertainty.core.evaluation.entropy_dice_correlation` on the
        mean segment entropy and Dice over the foreground structures; cases without both come last, in
        cohort order.
        """
        rows = self.case_rows(candidate)
        ranked = sorted((r for r in rows if r.rank is not None), key=lambda r: r.rank)
        return tuple(r.case_id for r in ranked) + tuple(r.case_id for r in rows if r.rank is None)

    def reliability_rows(self) -> list[dict[str, Any]]:
        """The pooled reliability bins of every candidate (``reliability.csv``), one dict per bin."""
        return [dict(r) for r in self.saved.reliability_rows]

    def reliability_results(self) -> list[Any]:
        """The pooled reliability diagram of every candidate as
        :class:`~napari_seg_uncertainty.workflow.figures.ModelResult` for
        :func:`~napari_seg_uncertainty.workflow.figures.draw_reliability` (the evaluation's own figure)."""
        from .reliability import reliability_results

        return reliability_results(self.saved)

    def study_table(self) -> Any:
        """The study table (:func:`~napari_seg_uncertainty.workflow.study.table.read_study_table`), or None
        for a plain evaluation folder or a study whose table is not written yet."""
        if self.study_folder is None or not (self.study_folder / "study.csv").is_file():
            return None
        from ..study.table import read_study_table

        return read_study_table(self.study_folder)

    def table_percent(self) -> tuple[str, ...]:
        """The study's ``table.percent`` (the metrics its ``study.md`` shows × 100); empty for a plain
        evaluation folder or a ``study.yaml`` that cannot be read (the table then shows fractions, as
        ``study.csv`` holds them)."""
        if self.study_folder is None:
            return ()
        from ..study.spec import load_study

        try:
            return tuple(load_study(self.study_folder / _STUDY_FILE).table.percent)
        except (OSError, ValueError, TypeError, KeyError):
            return ()

    def quality(self) -> Any:
        """Quality control of every candidate and foreground structure
        (:func:`~napari_seg_uncertainty.workflow.study.quality.quality_control` on the per-case rows), or
        None when the rows hold no foreground Dice."""
        if not any(r["metric"] == "dice" and r["class"] != "all" for r in self.saved.rows):
            return None
        from ..study.quality import quality_control

        return quality_control(list(self.saved.rows))

    # cases -------------------------------------------------------------------------------------------------
    def cohort(self) -> Cohort:
        """The evaluated cohort, loaded again from its source with the evaluation's options (cached)."""
        with self._lock:
            if self._cohort is None:
                self._cohort = self.saved.load_cohort()
            return self._cohort

    def _trained(self, candidate: str) -> Any:
        """The candidate's model; one model in memory at a time."""
        from ...core.training import load_trained_model

        with self._lock:
            if self._model is None or self._model[0] != candidate:
                self._model = None  # free the previous model before loading the next
                self._model = (candidate, load_trained_model(self.saved.candidates[candidate], device=self.device))
            return self._model[1]

    def load_case(self, case_id: str, candidate: str, *, num_samples: int | None = None, seed: int = 0) -> ReviewCase:
        """Read a case, predict it with the candidate's checkpoint and, for an SSN, sample label maps.

        Parameters
        ----------
        case_id : str
            An evaluated case.
        candidate : str
            One of :attr:`candidates`.
        num_samples : int, optional
            SSN samples / MC-dropout passes of the prediction and the number of SSN label maps drawn
            (default: the checkpoint's ``predict_samples``, as the evaluation used them).
        seed : int
            Seed of the sampling (the evaluation's seed gives its prediction).

        Returns
        -------
        ReviewCase

        Raises
        ------
        ValueError
            An unknown case or candidate, or a case without an image.
        """
        from ...core.training import predict
        from ..evaluation import ssn_samples

        case_id, candidate = self._case(case_id), self._candidate(candidate)
        if num_samples is not None:
            num_samples = check_int(num_samples, name="num_samples", minimum=0)
        seed = check_seed(seed)
        data = self.cohort().load_case(case_id)
        if data.image is None:
            raise ValueError(f"case {case_id!r} has no image; the checkpoint needs one to predict.")
        image = data.image[0] if data.image.shape[0] == 1 else data.image  # one channel as (*S)
        with self._lock:  # one prediction at a time: predict seeds torch's global generator
            trained = self._trained(candidate)
            prediction = predict(trained, image, num_samples=num_samples, seed=seed)
            samples = ssn_samples(trained, image, num_samples=num_samples, seed=seed)
        geometry = _geometry(data)
        self._grids[case_id] = (tuple(data.shape), geometry)
        return ReviewCase(case_id=case_id, candidate=candidate, image=image, raters=data.raters,
                          prediction=prediction, ssn_samples=samples, class_names=tuple(trained.class_names),
                          geometry=geometry)

    # reviewer actions --------------------------------------------------------------------------------------
    def mark_reviewed(self, case_id: str, reviewed: bool = True, *, note: str | None = None) -> None:
        """Mark a case reviewed (or not), with an optional note; saved at once in ``review.json``.

        ``note=None`` keeps the case's note as it is; a string (``""`` too) replaces it.
        """
        case_id = self._case(case_id)
        reviewed = check_flag(reviewed, name="reviewed")
        if note is not None and not isinstance(note, str):
            raise TypeError(f"note must be a str or None, got {describe(note)}.")

        def change(state: dict[str, Any]) -> None:
            previous = state["cases"].get(case_id)
            kept = str(previous.get("note", "")) if isinstance(previous, dict) else ""
            state["cases"][case_id] = {"reviewed": reviewed, "note": kept if note is None else note, "time": now()}

        update_state(self.state_path, change)

    def is_reviewed(self, case_id: str) -> bool:
        """Whether ``case_id`` is marked reviewed."""
        mark = marks(read_state(self.state_path)).get(self._case(case_id))
        return bool(mark and mark.reviewed)

    def reviewed_cases(self) -> tuple[str, ...]:
        """The cases marked reviewed, in evaluation order (the first candidate's cases first)."""
        found = marks(read_state(self.state_path))
        return tuple(c for c in self._all_cases() if c in found and found[c].reviewed)

    def note(self, case_id: str) -> str:
        """The reviewer's note of ``case_id`` (empty without one)."""
        mark = marks(read_state(self.state_path)).get(self._case(case_id))
        return mark.note if mark else ""

    def marks(self) -> tuple[ReviewMark, ...]:
        """The marks of the cases a reviewer marked or annotated with a note, in evaluation order."""
        found = marks(read_state(self.state_path))
        return tuple(found[c] for c in self._all_cases() if c in found)

    def annotations(self, case_id: str | None = None) -> tuple[KeptAnnotation, ...]:
        """The annotations saved through the review (of one case, or all), oldest first."""
        found = annotations(read_state(self.state_path))
        return found if case_id is None else tuple(a for a in found if a.case_id == case_id)

    def _grid(self, case_id: str) -> tuple[tuple[int, ...], Geometry]:
        """Shape and geometry of a case as :meth:`load_case` gives it."""
        if case_id not in self._grids:
            cohort = self.cohort()
            source = cohort.load_case(case_id) if self._resampled(case_id) else cohort[case_id]
            self._grids[case_id] = (tuple(source.shape), _geometry(source))
        return self._grids[case_id]

    def _resampled(self, case_id: str) -> bool:
        cohort = self.cohort()
        target = cohort.target_spacing
        return target is not None and not np.allclose(cohort[case_id].spacing, target, rtol=1e-6, atol=0.0)

    def save_annotation(
        self, case_id: str, labels: Any, *, kind: str, reviewer: str | None = None, raters: Any = None
    ) -> Path:
        """Keep a label map of a case (a kept SSN sample or an edited prediction) as a new annotation.

        Where it goes:

        * a case of a folder cohort (generic, QUBIQ or MSSEG-2016 layout): beside the case's raters, as
          the next rater file of its layout (``rater_4.nii.gz``, ``task01_seg04.nii.gz``,
          ``ManualSegmentation_4.nii.gz``); loading the cohort again reads it as one more rater of the case,
          so the cohort grows as a reviewer works;
        * a case of an ``.npz`` or manifest cohort, or of a cohort resampled on load: these cannot be
          extended in place, so the file goes to ``<cohort folder>/_annotations/<case_id>/<kind>_<n>.nii.gz``
          and does **not** join the cohort (add it to the manifest, or the archive, to use it as a rater).

        The file carries the case's spacing, origin and direction. An existing file is never replaced: a
        second save takes the next free name (exclusive create). The file is recorded in ``review.json``.

        Parameters
        ----------
        case_id : str
            An evaluated case.
        labels : array_like
            Integer label map of the case's shape, classes ``0 … num_classes - 1``.
        kind : {"ssn_sample", "edited"}
            What the labels are.
        reviewer : str, optional
            Who saved it (recorded in ``review.json``).
        raters : numpy.ndarray, optional
            The case's raters ``(R, *S)`` as :meth:`load_case` gave them (``ReviewCase.raters``), compared
            with ``labels`` instead of reading the case again.

        Returns
        -------
        pathlib.Path
            The file written; :meth:`annotations` lists it last, with whether it joined the cohort.

        Raises
        ------
        TypeError
            ``labels`` is not an integer array.
        ValueError
            An unknown case, a wrong ``kind``, labels of another shape than the case or with a class
            ``>= num_classes``.
        """
        case_id = self._case(case_id)
        kind = check_choice(kind, name="kind", choices=ANNOTATION_KINDS)
        if reviewer is not None and not isinstance(reviewer, str):
            raise TypeError(f"reviewer must be a str or None, got {describe(reviewer)}.")
        arr = self.check_annotation(case_id, labels, raters=raters)
        digest = label_digest(arr)
        geometry = self._grid(case_id)[1]
        cohort = self.cohort()
        target = annotation_target(cohort[case_id], source=cohort.source, kind=kind,
                                   resampled=self._resampled(case_id))
        path = write_exclusive(target, arr, spacing=geometry.spacing, origin=geometry.origin,
                               direction=geometry.direction)
        record = {"case_id": case_id, "path": str(path), "kind": kind, "reviewer": reviewer, "time": now(),
                  "in_cohort": target.in_cohort, "sha256": digest}
        update_state(self.state_path, lambda state: state["annotations"].append(record))
        if target.in_cohort:
            self._cohort = None  # the case has one more rater: scan the cohort again on the next load
        return path

    def check_annotation(self, case_id: str, labels: Any, *, raters: Any = None) -> np.ndarray:
        """``labels`` as the label map :meth:`save_annotation` would write for ``case_id``, or why not.

        Refuses a label map of another shape than the case, with a class ``>= num_classes``, or equal to
        one of the case's raters (``raters``, as :meth:`load_case` gave them; read from the cohort when
        None) or to an annotation already kept for it: a second copy adds nothing to the cohort but
        weight (as one more rater it would count twice in the majority vote, STAPLE and the rater
        distribution of every later evaluation).

        Returns
        -------
        numpy.ndarray
            The label map, unsigned integers.

        Raises
        ------
        TypeError, ValueError
            As :meth:`save_annotation`.
        """
        case_id = self._case(case_id)
        shape = self._grid(case_id)[0]
        arr = check_labels(labels, shape=shape, num_classes=len(self.class_names), case_id=case_id)
        digest = label_digest(arr)
        for record in read_state(self.state_path)["annotations"]:
            if record.get("case_id") == case_id and record.get("sha256") == digest:
                raise ValueError(
                    f"these labels equal the annotation already kept for case {case_id!r} at {record['path']!r}; "
                    "edit the prediction (or show another SSN sample) before keeping it."
                )
        if raters is None:
            raters = self.cohort().load_case(case_id).raters
        for r, rater in enumerate(np.asarray(raters), start=1):
            if rater.shape == arr.shape and np.array_equal(rater, arr):
                raise ValueError(
                    f"these labels equal rater {r} of case {case_id!r}; keeping them would add a copy of that "
                    "rater. Edit them first."
                )
        return arr
