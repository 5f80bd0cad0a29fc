"""The streaming evaluation: every checkpoint on every evaluated case, one case in memory at a time.

References
----------
.. [1] A. Mehrtash, W. M. Wells, C. M. Tempany, P. Abolmaesumi, T. Kapur, "Confidence Calibration and
   Predictive Uncertainty Estimation for Deep Medical Image Segmentation", IEEE TMI 39(12), 2020.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Generator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ...core._validation import check_choice, check_flag, check_int, check_real_in, check_seed, describe
from ...core.cohort.splits import SPLIT_KEYS
from ...core.evaluation.case_metrics import REFERENCES
from ..tables import refuse_existing
from .arguments import _as_cohort, _candidate_names, _evaluated_cases, cohort_options
from .files import EVALUATION_FILES, write_evaluation
from .results import CandidateEvaluation, EvaluationProgress, EvaluationResult
from .summary import summarize_rows

if TYPE_CHECKING:
    from ...core.cohort import Cohort

__all__ = ["evaluate_checkpoints", "has_members", "ssn_samples"]


def evaluate_checkpoints(
    checkpoints: str | os.PathLike | Sequence[str | os.PathLike] | Mapping[str, str | os.PathLike],
    cohort: Cohort | str | os.PathLike,
    *,
    split: str = "test",
    split_spec: Mapping[str, Any] | str | None = None,
    out_dir: str | os.PathLike | None = None,
    reference: str = "majority",
    tolerance_mm: float = 1.0,
    num_bins: int = 15,
    num_samples: int | None = None,
    num_resamples: int = 10000,
    seed: int = 0,
    device: str = "auto",
    overwrite: bool = False,
) -> Generator[EvaluationProgress, None, EvaluationResult]:
    """Evaluate checkpoints on the held-out cases of a cohort, streaming one case at a time.

    Parameters
    ----------
    checkpoints : path, sequence of paths or dict
        ``last.pt`` / ``best.pt`` files written by training; a dict gives each a name. Without names a
        checkpoint is named by its file stem (its folder for ``last.pt``).
    cohort : Cohort or path
        The cohort (or the folder, ``.npz`` or manifest to load it from).
    split : {"test", "val", "train"}
        Which part of the split to evaluate.
    split_spec : dict or str, optional
        A split for :meth:`Cohort.resolve_split` (e.g. ``"manifest"`` or ``{"train": [...], "test": [...]}``);
        default: each checkpoint's own stored split.
    out_dir : path, optional
        Folder for ``cases.csv``, ``summary.csv``, ``reliability.csv``, ``reliability.png`` and
        ``evaluation.json`` (read back with :func:`read_evaluation`).
    reference : {"majority", "staple", "mean"}
        Fused reference of the overlap and calibration metrics (see ``evaluate_case``) and of the pooled
        reliability diagram.
    tolerance_mm : float
        Surface Dice tolerance in mm (>= 0).
    num_bins : int
        Equal-width bins of the pooled reliability diagram, and the bins of every case's ECE, MCE and
        TACE.
    num_samples : int, optional
        SSN samples / MC-dropout passes of the prediction (default: the checkpoint's config). An SSN
        checkpoint also draws that many label maps from its logit distribution for GED², sample
        diversity and mutual information (:func:`ssn_samples`); an ensemble or an MC-dropout model
        with several passes is scored with its members' probabilities (:func:`has_members`).
    num_resamples : int
        Bootstrap resamples of the confidence intervals.
    seed : int
        Seed of the prediction's sampling and of the bootstrap (the same for every candidate and metric).
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``.
    overwrite : bool
        Replace files of an earlier evaluation in ``out_dir`` (otherwise refused before any work).

    Yields
    ------
    EvaluationProgress
        One record per case and candidate.

    Returns
    -------
    EvaluationResult
        The generator's return value (``StopIteration.value``).

    Raises
    ------
    TypeError, ValueError
        A wrong argument (named), a checkpoint without a stored split and no ``split_spec``, an empty
        split, or a case of the evaluated split that was a training case of the checkpoint.
    FileNotFoundError
        A checkpoint does not exist.
    FileExistsError
        An output file exists and ``overwrite`` is False.

    All of these are raised by the call itself, before the first case is predicted (the checkpoints
    are read once there for their stored splits); the generator then only reads, predicts and scores.

    References
    ----------
    .. [1] A. Mehrtash et al., "Confidence Calibration and Predictive Uncertainty Estimation for Deep
       Medical Image Segmentation", IEEE TMI 39(12), 2020.

    Examples
    --------
    >>> gen = evaluate_checkpoints("runs/unet/last.pt", "cohort/cohort.csv")  # doctest: +SKIP
    >>> for record in gen:  # doctest: +SKIP
    ...     print(record.text())
    """
    names = _candidate_names(checkpoints)
    split = check_choice(split, name="split", choices=SPLIT_KEYS)
    reference = check_choice(reference, name="reference", choices=REFERENCES)
    tolerance_mm = check_real_in(tolerance_mm, name="tolerance_mm", low=0.0, high=math.inf, high_open=True)
    num_bins = check_int(num_bins, name="num_bins", minimum=1)
    if num_samples is not None:
        num_samples = check_int(num_samples, name="num_samples", minimum=0)
    num_resamples = check_int(num_resamples, name="num_resamples", minimum=1)
    seed = check_seed(seed)
    if not isinstance(device, str):
        raise TypeError(f"device must be a str such as 'auto' or 'cpu', got {describe(device)}.")
    overwrite = check_flag(overwrite, name="overwrite")
    if out_dir is not None and not isinstance(out_dir, (str, os.PathLike)):
        raise TypeError(f"out_dir must be a folder path or None, got {describe(out_dir)}.")
    if split_spec is not None and not isinstance(split_spec, (str, Mapping)):
        raise TypeError(
            f"split_spec must be None, 'manifest' or a dict (fractions, folds or case ids), got {describe(split_spec)}."
        )
    if out_dir is not None:  # all files or none, refused before any work
        refuse_existing(*(Path(out_dir) / f for f in EVALUATION_FILES), overwrite=overwrite)
    cohort = _as_cohort(cohort)
    # every checkpoint's cases, and the refusal of a training case, before the first inference
    plans = {name: _evaluated_cases(name, path, cohort, split, split_spec, seed) for name, path in names.items()}
    return _run(names, plans, cohort, out_dir=out_dir, split=split, reference=reference,
                tolerance_mm=tolerance_mm, num_bins=num_bins, num_samples=num_samples,
                num_resamples=num_resamples, seed=seed, device=device, overwrite=overwrite)


def _run(
    names: dict[str, str], plans: dict[str, list[str]], cohort: Cohort, *, split: str, out_dir: Any, reference: str,
    tolerance_mm: float, num_bins: int, num_samples: int | None, num_resamples: int, seed: int, device: str,
    overwrite: bool,
) -> Generator[EvaluationProgress, None, EvaluationResult]:
    """The generator behind :func:`evaluate_checkpoints` (arguments and splits checked, nothing predicted yet)."""
    from ...core.calibration import ReliabilityAccumulator
    from ...core.evaluation.case_metrics import evaluate_case
    from ...core.training import load_trained_model, predict

    folder = None if out_dir is None else Path(out_dir)
    candidates = []
    for index, (name, path) in enumerate(names.items()):
        trained = load_trained_model(path, device=device)
        num_classes = int(trained.info["num_classes"])
        accumulator = ReliabilityAccumulator(num_bins=num_bins)
        rows: list[dict[str, Any]] = []
        cases = plans[name]
        for position, case_id in enumerate(cases, start=1):
            started = time.perf_counter()
            case = cohort.load_case(case_id)
            if case.image is None:
                raise ValueError(f"case {case_id!r} of the cohort has no image; the model needs one to predict.")
            # one channel as (*S): a (1, Y, X) image would read as a one-slice volume
            image = case.image[0] if case.image.shape[0] == 1 else case.image
            prediction = predict(trained, image, num_samples=num_samples, seed=seed,
                                 keep_members=has_members(trained, num_samples=num_samples))
            evaluation = evaluate_case(
                prediction.probabilities, case.raters, spacing=case.spacing, num_classes=num_classes,
                class_names=list(trained.class_names), reference=reference, tolerance_mm=tolerance_mm,
                num_bins=num_bins, case_id=case_id,
                samples=ssn_samples(trained, image, num_samples=num_samples, seed=seed),
                member_probabilities=prediction.member_probabilities,
            )
            rows += [{"candidate": name, **row} for row in evaluation.rows()]
            # the reference labels evaluate_case fused (STAPLE is not run twice)
            accumulator.update(prediction.probabilities, evaluation.reference_labels, target_kind="labels")
            del case, image, prediction, evaluation
            yield EvaluationProgress(name, index, len(names), case_id, position, len(cases),
                                     time.perf_counter() - started)
        del trained  # one model in memory at a time
        candidates.append(CandidateEvaluation(
            name=name, checkpoint=path, case_ids=tuple(cases), rows=tuple(rows),
            reliability=accumulator.aggregate(),
            summary=summarize_rows(rows, num_resamples=num_resamples, seed=seed),
        ))  # fmt: skip
    result = EvaluationResult(
        tuple(candidates), split, reference, cohort=os.path.abspath(cohort.source),
        cohort_options=cohort_options(cohort), tolerance_mm=tolerance_mm, num_bins=num_bins, seed=seed,
    )
    if folder is not None:
        result = replace(result, files=write_evaluation(result, folder, overwrite=overwrite))
    return result


def has_members(trained: Any, *, num_samples: int | None = None) -> bool:
    """Whether ``trained`` predicts from several members: an ensemble, or MC dropout with several passes.

    Parameters
    ----------
    trained : TrainedModel
        A loaded model.
    num_samples : int, optional
        MC-dropout passes (default ``config.predict_samples``).

    Returns
    -------
    bool
        True for a non-SSN model with ``ensemble_size > 1``, or with ``dropout > 0`` and more than one
        pass; :func:`evaluate_checkpoints` then keeps the member probabilities of every case for GED²,
        sample diversity and mutual information. An SSN is scored with its samples instead
        (:func:`ssn_samples`).

    References
    ----------
    .. [1] B. Lakshminarayanan, A. Pritzel, C. Blundell, "Simple and Scalable Predictive Uncertainty
       Estimation using Deep Ensembles", NeurIPS 2017.
    .. [2] Y. Gal, Z. Ghahramani, "Dropout as a Bayesian Approximation", ICML 2016.
    """
    config = trained.config
    if config.head == "ssn":
        return False
    passes = config.predict_samples if num_samples is None else num_samples
    return trained.model.size > 1 or (config.dropout > 0 and passes > 1)


def ssn_samples(trained: Any, image: Any, *, num_samples: int | None = None, seed: int = 0) -> np.ndarray | None:
    """Label maps sampled from an SSN model's logit distribution for one image, else None.

    Parameters
    ----------
    trained : TrainedModel
        A loaded model (``load_trained_model``); None is returned unless ``config.head == "ssn"``.
    image : array_like
        ``(*S)`` or ``(in_channels, *S)``, as for ``predict``.
    num_samples : int, optional
        Samples drawn (default ``config.predict_samples``; 0 gives None).
    seed : int
        Sampling seed.

    Returns
    -------
    numpy.ndarray or None
        ``(num_samples, *S)`` labels (ensemble member 0 of an SSN ensemble), for the GED², sample diversity
        and mutual information of ``evaluate_case``.

    References
    ----------
    .. [1] M. Monteiro et al., "Stochastic Segmentation Networks: Modelling Spatially Correlated Aleatoric
       Uncertainty", NeurIPS 2020.
    """
    from ...core.training import TrainedModel, predict_ssn_distribution

    if not isinstance(trained, TrainedModel):
        raise TypeError(f"trained must be a TrainedModel (load_trained_model), got {describe(trained)}.")
    if trained.config.head != "ssn":
        return None
    count = trained.config.predict_samples if num_samples is None else num_samples
    count = check_int(count, name="num_samples", minimum=0)
    if count == 0:
        return None
    return predict_ssn_distribution(trained, image).sample_labels(count, seed=check_seed(seed))
