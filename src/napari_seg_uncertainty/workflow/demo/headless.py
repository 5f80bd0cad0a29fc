"""The headless demo: every demo data set's rater outputs and, on one of them, the whole workflow.

:func:`run_headless_demo` writes into a folder what the GUI demo shows step by step;
``napari-seg-uncertainty demo --headless --out DIR`` calls it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...core._atomic import atomic_write
from ...core._validation import describe
from ...core.raters import RaterSet
from ..tables import plain
from .cohort import make_demo_cohort
from .data import DATASETS, WORKFLOW_DATASET, load_demo_data
from .outputs import DemoRun, planned_outputs, refuse_existing_outputs, workflow_outputs
from .results import DemoResult, WorkflowResult
from .steps import calibration_step, rater_step, soft_label_step, ssn_step, training_step, uncertainty_step
from .study import DemoStudyTraining, study_step
from .training import DemoTraining

__all__ = ["run_headless_demo", "run_workflow"]


def run_headless_demo(
    out: str | os.PathLike,
    *,
    datasets: Sequence[str] | None = None,
    workflow: str | None = WORKFLOW_DATASET,
    overwrite: bool = False,
    seed: int = 0,
    device: str = "auto",
    training: DemoTraining | None = None,
    study_training: DemoStudyTraining | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, DemoResult]:
    """Run the demo without a display and write every output into ``out``.

    For each data set in ``datasets`` (folder ``out/<name>/``): the image and each rater as NIfTI
    (with spacing) in ``input/`` (a folder that *Load raters* and ``load_raters`` read), the
    agreement maps (one vector NIfTI, classes as components), the rater entropy map, the per-class
    summary and pairwise Dice as CSV, a PNG overview, and ``metrics.json``.
    For the ``workflow`` data set also everything :func:`run_workflow` writes (soft labels, two
    trained models with checkpoints and predictions, SSN samples, calibration, uncertainty, and a
    study of four candidates on the training cohort with its table).

    Parameters
    ----------
    out : path
        Output folder (created if missing). Existing files are never replaced unless ``overwrite``;
        the check is made before anything is computed.
    datasets : sequence of str, optional
        Keys of :data:`DATASETS`; default all (and always the ``workflow`` data set).
    workflow : str or None
        Data set of the full workflow (default ``"phantom2d"``); None writes only the rater outputs.
    overwrite : bool
        Allow replacing files from an earlier run.
    seed : int
        Seed of the simulated raters, the training and the samples.
    device : str
        Training device: ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda:0"`` ...
    training : DemoTraining, optional
        Training settings; default :class:`DemoTraining()`.
    study_training : DemoStudyTraining, optional
        Settings of the study's four runs; default :class:`DemoStudyTraining()`.
    log : callable, optional
        Receives one line per step (e.g. ``print``).

    Returns
    -------
    dict of str to DemoResult
        Per data set, what its ``metrics.json`` holds (:meth:`DemoResult.to_dict`).

    Examples
    --------
    >>> import tempfile
    >>> results = run_headless_demo(tempfile.mkdtemp(), datasets=["mr3d"], workflow=None)
    >>> results["mr3d"].num_raters
    4
    """
    if not isinstance(out, (str, os.PathLike)):
        raise TypeError(f"out must be a folder path, got {describe(out)}.")
    if not isinstance(overwrite, bool):
        raise TypeError(f"overwrite must be True or False, got {describe(overwrite)}.")
    names = _dataset_names(datasets, workflow)
    training = DemoTraining() if training is None else training
    if not isinstance(training, DemoTraining):
        raise TypeError(f"training must be a DemoTraining, got {describe(training)}.")
    log = log or (lambda _line: None)
    out = Path(out)
    loaded = {name: load_demo_data(name, seed=seed) for name in names}
    for name, (_, raters) in loaded.items():  # refuse before computing anything
        refuse_existing_outputs(
            out / name, planned_outputs(raters, workflow=name == workflow), overwrite=overwrite
        )
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, DemoResult] = {}
    for name, (image, raters) in loaded.items():
        folder = out / name
        folder.mkdir(exist_ok=True)
        log(
            f"[{name}] raters: {raters.num_raters} raters, classes {', '.join(raters.class_names[1:])}, "
            f"shape {raters.shape}"
        )
        written, rater_metrics = rater_step(folder, image, raters, overwrite=overwrite)
        flow = None
        if name == workflow:
            flow = run_workflow(
                image,
                raters,
                folder,
                overwrite=overwrite,
                seed=seed,
                device=device,
                training=training,
                study_training=study_training,
                log=lambda line, n=name: log(f"[{n}] {line}"),
            )
            written += flow.files
        results[name] = DemoResult(
            dataset=name,
            description=DATASETS[name],
            shape=list(raters.shape),
            spacing=list(raters.scale),
            num_raters=raters.num_raters,
            class_names=raters.class_names,
            summary=rater_metrics["summary"],
            mean_rater_entropy=rater_metrics["mean_rater_entropy"],
            workflow=flow,
            files=[os.path.relpath(w, out) for w in written] + [os.path.join(name, "metrics.json")],
        )
        _write_metrics(folder / "metrics.json", results[name].to_dict(), overwrite=overwrite)
    return results


def _dataset_names(datasets: Sequence[str] | None, workflow: str | None) -> list[str]:
    """The data sets to run (``workflow`` added last if missing), checked against :data:`DATASETS`."""
    names = list(DATASETS) if datasets is None else list(datasets)
    if isinstance(datasets, str):
        raise TypeError(
            f"datasets must be a list of names, got the string {datasets!r}; write [{datasets!r}]."
        )
    unknown = [d for d in names if d not in DATASETS]
    if unknown or (workflow is not None and workflow not in DATASETS):
        bad = unknown or [workflow]
        raise ValueError(f"unknown demo data {bad}; choose from {', '.join(DATASETS)}.")
    if workflow is not None and workflow not in names:
        names.append(workflow)
    return names


def _write_metrics(path: Path, metrics: dict[str, Any], *, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass --overwrite or choose another --out folder.")
    with atomic_write(path, overwrite=overwrite) as temporary, open(temporary, "w") as stream:
        json.dump(metrics, stream, indent=2, default=_json_default)


def _json_default(value: Any) -> Any:
    converted = plain(value)
    if converted is value:
        return float(value)
    return converted


def run_workflow(
    image: np.ndarray,
    raters: RaterSet,
    folder: str | os.PathLike,
    *,
    overwrite: bool = False,
    seed: int = 0,
    device: str = "auto",
    training: DemoTraining | None = None,
    study_training: DemoStudyTraining | None = None,
    log: Callable[[str], None] | None = None,
) -> WorkflowResult:
    """Soft labels, two short trainings on a cohort, SSN samples, calibration, uncertainty and a study, into ``folder``.

    The two models train on a generated cohort (:func:`~.cohort.make_demo_cohort`: 12 phantom cases
    split by case, validation on the held-out ``val`` cases) that holds the shown case (``image`` and
    ``raters``) as a test case; the soft labels, predictions, SSN samples, calibration and
    uncertainty are computed on the shown case. Last, a study (:mod:`.study`: one-hot, label
    smoothing, mSVLS and an SSN, one short run each) trains on the same cohort and is compared on its
    test cases: ``study/study.md`` is its table.

    Parameters
    ----------
    image : numpy.ndarray
        The image ``(*spatial)`` the raters annotated.
    raters : RaterSet
        Their label maps (``(R, *spatial)``), class names and spacing.
    folder : path
        Output folder; subfolders ``cohort``, ``soft_labels``, ``training``, ``predictions``, ``ssn``,
        ``calibration``, ``uncertainty`` and ``study`` are created (see :func:`planned_outputs`).
    overwrite : bool
        Replace files of an earlier run (checked before anything is computed).
    seed : int
        Seed of the generated cases, training and sampling.
    device : str
        Training device (``"auto"``, ``"cpu"``, ``"cuda:0"`` ...).
    training : DemoTraining, optional
        Settings of the two runs.
    study_training : DemoStudyTraining, optional
        Settings of the study's four runs.
    log : callable, optional
        Receives one line per step.

    Returns
    -------
    WorkflowResult
        The numbers of each step (``soft_labels``, ``cohort``, ``training``, ``ssn``,
        ``calibration``, ``uncertainty``, ``study``) and ``files``, the paths written.

    Examples
    --------
    >>> import tempfile
    >>> image, raters = load_demo_data("phantom2d")
    >>> result = run_workflow(image, raters, tempfile.mkdtemp(), device="cpu",
    ...                       training=DemoTraining(epochs=1, steps_per_epoch=2))  # doctest: +SKIP
    >>> sorted(result.calibration)  # doctest: +SKIP
    ['SSN', 'SSN temperature-scaled', 'mSVLS U-Net', 'mSVLS U-Net temperature-scaled']
    """
    if not isinstance(raters, RaterSet):
        raise TypeError(f"raters must be a RaterSet, got {describe(raters)}.")
    image = np.asarray(image)
    if image.shape != raters.shape:
        raise ValueError(f"image has shape {image.shape}; expected the raters' grid {raters.shape}.")
    training = DemoTraining() if training is None else training
    if not isinstance(training, DemoTraining):
        raise TypeError(f"training must be a DemoTraining, got {describe(training)}.")
    folder = Path(folder)
    refuse_existing_outputs(folder, workflow_outputs(raters), overwrite=overwrite)
    for sub in ("soft_labels", "training", "predictions", "ssn", "calibration", "uncertainty"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    run = DemoRun(image, raters, folder, overwrite, seed, log or (lambda _line: None), [])
    run.cohort = make_demo_cohort(folder, image, raters, seed=seed, overwrite=overwrite)
    run.written += run.cohort.files
    soft_labels = soft_label_step(run)
    training_numbers, checkpoints, probabilities = training_step(run, training=training, device=device)
    ssn_numbers, distribution = ssn_step(run, checkpoints["ssn"])
    calibration = calibration_step(run, probabilities)
    uncertainty = uncertainty_step(run, probabilities, distribution)
    study = study_step(run, training=study_training, device=device)
    return WorkflowResult(
        soft_labels=soft_labels,
        training=training_numbers,
        ssn=ssn_numbers,
        calibration=calibration,
        uncertainty=uncertainty,
        files=run.written,
        cohort=run.cohort.to_dict(),
        study=study,
    )
