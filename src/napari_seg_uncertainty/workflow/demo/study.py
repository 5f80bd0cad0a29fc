"""The demo's study: four candidates, one seed each, trained on the demo cohort and compared on its test cases.

The headless demo (and the Guide's last step) runs a small study with
:func:`~napari_seg_uncertainty.workflow.study.run_study` on the demo's cohort (:mod:`.cohort`: 12
generated phantom cases plus the shown case, split by the manifest): a U-Net trained on the one-hot
majority vote, on label smoothing, on mSVLS, and a stochastic segmentation network. Each trains briefly
(a tiny U-Net, a few short epochs) so that the demo stays fast; the point is the study's machinery —
the runs, the evaluation on held-out cases, the table with bootstrap intervals and paired tests, and the
quality-control plot — not the models' quality.

References
----------
.. [1] M. Islam, B. Glocker, "Spatially varying label smoothing: capturing uncertainty from expert
   annotations", IPMI 2021 (one-hot vs LS vs SVLS vs mSVLS).
.. [2] M. Monteiro et al., "Stochastic segmentation networks: modelling spatially correlated
   aleatoric uncertainty", NeurIPS 2020.
.. [3] A. Mehrtash et al., "Confidence calibration and predictive uncertainty estimation for deep
   medical image segmentation", IEEE TMI 39(12), 2020 (the table's calibration metrics, quality control).
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ...core._validation import check_seed, describe
from ...core.raters import RaterSet
from ..tables import plain
from .cohort import DEMO_COHORT_CASES, make_demo_cohort

if TYPE_CHECKING:
    from ..study import StudyProgress, StudyResult
    from .outputs import DemoRun

__all__ = [
    "DEMO_STUDY",
    "STUDY_CANDIDATES",
    "STUDY_FOLDER",
    "STUDY_METRICS",
    "DemoStudyTraining",
    "demo_study",
    "iter_demo_cohort_study",
    "iter_demo_study",
    "study_outputs",
    "study_step",
]

#: Folder of the study inside the workflow's output folder.
STUDY_FOLDER = "study"
#: Files of the study's ``evaluation/`` folder.
EVALUATION_FILES = ("cases.csv", "summary.csv", "reliability.csv", "reliability.png", "evaluation.json")
#: The study table and quality control, in the study folder.
TABLE_FILES = ("study.csv", "study.md", "study.png", "study_cases.csv", "qc.csv", "qc.png")
#: Name of the demo's study (its table's title).
DEMO_STUDY = "demo"
#: The study's candidates: name -> (head, loss, target).
STUDY_CANDIDATES = {
    "one-hot": ("softmax", "ce", "onehot"),
    "ls": ("softmax", "ce", "label_smoothing"),
    "msvls": ("softmax", "ce", "msvls"),
    "ssn": ("ssn", "ssn", "random_rater"),
}
#: The columns of the study table (``"<class>:<metric>"``; the demo's classes are organ, lesion, nodule).
STUDY_METRICS = (
    "organ:dice",
    "lesion:dice",
    "organ:surface_dice",
    "all:ece_reference_volume",
    "all:nll_raters_volume",
)


@dataclass(frozen=True)
class DemoStudyTraining:
    """Settings of every run of the demo's study: short, so that four runs take seconds on a CPU.

    Two epochs of six steps of eight 2-D patches with a high learning rate: enough for the organ
    (Dice about 0.8 on the test cases), not for the small structures; the study shows the machinery,
    not the methods.

    Attributes
    ----------
    epochs, steps_per_epoch, batch_size : int
        Run length; ``steps_per_epoch * batch_size`` 2-D patches per epoch.
    channels : tuple of int
        U-Net channels per level (strides of 2 between levels).
    learning_rate : float
        Adam learning rate (high, so that the short run learns the phantom's structures).
    ssn_rank, ssn_samples, predict_samples : int
        SSN covariance rank, Monte-Carlo samples per step (even) and samples for its probabilities.
    num_resamples : int
        Bootstrap resamples of the study table.

    Examples
    --------
    >>> DemoStudyTraining().epochs
    2
    """

    epochs: int = 2
    steps_per_epoch: int = 6
    batch_size: int = 8
    channels: tuple[int, ...] = (8, 16)
    learning_rate: float = 1e-2
    ssn_rank: int = 4
    ssn_samples: int = 4
    predict_samples: int = 8
    num_resamples: int = 2000

    def base(self) -> dict[str, Any]:
        """The training settings every candidate shares (``TrainConfig`` fields: the study's ``base``)."""
        return {
            "spatial_dims": 2,
            "channels": list(self.channels),
            "strides": [2] * (len(self.channels) - 1),
            "epochs": self.epochs,
            "steps_per_epoch": self.steps_per_epoch,
            "batch_size": self.batch_size,
            "learning_rate": self.learning_rate,
            "ssn_rank": self.ssn_rank,
            "ssn_samples": self.ssn_samples,
            "predict_samples": self.predict_samples,
            "normalization": "zscore",
            "num_workers": 0,
            "amp": False,
        }


def demo_study(
    cohort: str | os.PathLike, *, training: DemoStudyTraining | None = None, seed: int = 0
) -> dict[str, Any]:
    """The demo's study file as a dict (what :func:`~napari_seg_uncertainty.workflow.study.load_study` reads).

    Parameters
    ----------
    cohort : path
        The demo cohort's manifest (``cohort/cohort.yaml``); its ``split`` column gives the test cases.
    training : DemoStudyTraining, optional
        Run settings (default :class:`DemoStudyTraining()`).
    seed : int
        The one seed of every candidate.

    Returns
    -------
    dict
        The study: name, cohort, split, shared training settings, four candidates and one seed.

    Examples
    --------
    >>> [c["name"] for c in demo_study("cohort/cohort.yaml")["candidates"]]
    ['one-hot', 'ls', 'msvls', 'ssn']
    """
    if not isinstance(cohort, (str, os.PathLike)):
        raise TypeError(f"cohort must be the path of the demo cohort's manifest, got {describe(cohort)}.")
    training = DemoStudyTraining() if training is None else training
    if not isinstance(training, DemoStudyTraining):
        raise TypeError(f"training must be a DemoStudyTraining, got {describe(training)}.")
    seed = check_seed(seed)
    return {
        "name": DEMO_STUDY,
        "description": "one-hot vs label smoothing vs mSVLS vs SSN on the demo's phantom cohort",
        "cohort": str(Path(cohort).resolve()),
        "split": "manifest",
        "base": training.base(),
        "candidates": [
            {"name": name, "config": {"head": head, "loss": loss, "target": target}}
            for name, (head, loss, target) in STUDY_CANDIDATES.items()
        ],
        "seeds": [seed],
        "evaluate": {"num_resamples": training.num_resamples, "seed": seed},
        "table": {"metrics": list(STUDY_METRICS)},
    }


def iter_demo_study(
    folder: str | os.PathLike,
    cohort: str | os.PathLike,
    *,
    training: DemoStudyTraining | None = None,
    seed: int = 0,
    device: str = "auto",
) -> Generator[StudyProgress, None, StudyResult]:
    """Run the demo's study into ``folder``, yielding its progress records.

    Parameters
    ----------
    folder : path
        The study's output folder (``runs/``, ``evaluation/``, ``study.md`` …); finished runs found there
        are kept, as by :func:`~napari_seg_uncertainty.workflow.study.run_study`.
    cohort : path
        The demo cohort's manifest (``cohort/cohort.yaml`` of :func:`~.cohort.make_demo_cohort`).
    training : DemoStudyTraining, optional
        Run settings.
    seed : int
        Seed of every run and of the bootstrap.
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda:0"`` ...

    Yields
    ------
    StudyProgress
        What the study is doing (a run's epoch, a case evaluated, the table written); ``str()`` gives
        a log line.

    Returns
    -------
    StudyResult
        What ``run_study`` returned: the runs, the evaluation, the table, quality control and files.

    Examples
    --------
    >>> import tempfile
    >>> from napari_seg_uncertainty.workflow.demo import load_demo_data, make_demo_cohort
    >>> image, raters = load_demo_data("phantom2d")
    >>> folder = tempfile.mkdtemp()
    >>> cohort = make_demo_cohort(folder, image, raters)  # doctest: +SKIP
    >>> generator = iter_demo_study(f"{folder}/study", cohort.manifest, device="cpu")  # doctest: +SKIP
    >>> for progress in generator:  # doctest: +SKIP
    ...     print(progress)
    [cohort] cohort .../cohort/cohort.yaml: 13 cases
    ...
    """
    from ..study import load_study, run_study

    spec = load_study(demo_study(cohort, training=training, seed=seed))
    return (yield from run_study(spec, out_dir=Path(folder), device=device))


def iter_demo_cohort_study(
    folder: str | os.PathLike,
    image: np.ndarray,
    raters: RaterSet,
    *,
    training: DemoStudyTraining | None = None,
    seed: int = 0,
    device: str = "auto",
) -> Generator[StudyProgress, None, StudyResult]:
    """The demo cohort around ``image`` and ``raters`` (``folder/cohort``), then :func:`iter_demo_study`
    into ``folder/study``: what the Guide's last step runs in a worker thread.

    Parameters
    ----------
    folder : path
        A new folder (the Guide's run folder): receives ``cohort/`` and ``study/``.
    image : numpy.ndarray
        The shown case's image; it joins the cohort as a test case.
    raters : RaterSet
        Its raters.
    training, seed, device
        As for :func:`iter_demo_study`.

    Yields
    ------
    StudyProgress
        The progress records (the first: the cohort being written).

    Returns
    -------
    StudyResult
        The study, in ``folder/study``.
    """
    from ..study import StudyProgress

    yield StudyProgress("cohort", None, f"writing a cohort of {DEMO_COHORT_CASES} generated cases and the shown case")
    cohort = make_demo_cohort(folder, image, raters, seed=seed)
    return (yield from iter_demo_study(
        Path(folder) / STUDY_FOLDER, cohort.manifest, training=training, seed=seed, device=device
    ))


def study_outputs() -> list[str]:
    """Paths (relative to the workflow folder) of the demo study's files that the demo lists: the
    resolved study, each run's checkpoints, the evaluation, the study table and quality control."""
    folder = STUDY_FOLDER
    runs = [f"{folder}/runs/{name}/seed0/{file}" for name in STUDY_CANDIDATES for file in ("last.pt", "best.pt")]
    evaluation = [f"{folder}/evaluation/{file}" for file in EVALUATION_FILES]
    return [f"{folder}/study.yaml", *runs, *evaluation, *[f"{folder}/{file}" for file in TABLE_FILES]]


def study_step(run: DemoRun, *, training: DemoStudyTraining | None = None, device: str = "auto") -> dict[str, Any]:
    """Step 6 of the headless workflow: the demo's study on the workflow's cohort, into ``study/``.

    Returns what ``metrics.json`` records of it: the candidates, the test cases, the table's rows
    (mean and 95 % interval per candidate and metric) and the seconds it took.
    """
    if run.cohort is None:
        raise ValueError("the demo study needs the workflow's cohort (run.cohort is None).")
    started = time.perf_counter()
    generator = iter_demo_study(run.folder / STUDY_FOLDER, run.cohort.manifest, training=training, seed=run.seed,
                                device=device)
    with warnings.catch_warnings(record=True) as caught:  # logged as lines of the study, not Python warnings
        warnings.simplefilter("always", UserWarning)
        while True:
            try:
                run.log(f"study: {next(generator)}")
            except StopIteration as stop:
                result = stop.value
                break
    for message in dict.fromkeys(str(w.message) for w in caught if issubclass(w.category, UserWarning)):
        run.log(f"study: note: {message}")
    seconds = time.perf_counter() - started
    files = [run.folder / relative for relative in study_outputs()]
    missing = [str(path) for path in files if not path.exists()]
    if missing:
        raise RuntimeError(f"the demo study did not write {', '.join(missing)}.")
    run.written += [str(path) for path in files]
    table = result.table
    run.log(
        f"study: {len(table.candidates)} candidates compared on {len(table.case_ids)} test cases in {seconds:.1f} s"
    )
    return {
        "folder": STUDY_FOLDER,
        "candidates": list(table.candidates),
        "test_cases": list(table.case_ids),
        "table": [{k: plain(v) for k, v in row.items()} for row in table.to_rows()],
        "seconds": round(seconds, 2),
    }
