"""Per-case, per-class metrics of one evaluated case, composed from the project's metric functions.

Calibration comes from :mod:`..calibration`, the segment-level entropy from
:mod:`..uncertainty.segments`, entropies from :mod:`..uncertainty.voxelwise` and
:mod:`..raters.statistics`, GED² and diversity from :mod:`..ssn.metrics`, label fusion from
:mod:`..labels`. Surface Dice and HD95 come from one MONAI surface-distance pass per class and
reference (``get_edge_surface_distance``, what ``compute_surface_dice`` and
``compute_hausdorff_distance`` run inside), on the box around the class, and Dice is counted on the
same box: the numbers of :func:`..uncertainty.agreement.dice_per_class` /
:func:`..uncertainty.agreement.surface_dice_per_class` and MONAI (the tests check it), without their
whole-volume background class, which dominated the cost on large volumes.

Undefined values are NaN, never an error:

* Dice and surface Dice of a class absent from both maps (SSN paper convention);
* HD95 of a class absent from either map (no surface to measure from);
* recall of a class absent from the reference, precision of a class absent from the prediction;
* segment-level entropy of a class that is not predicted anywhere;
* every metric of the foreground box when no rater labels any foreground (no box), and TACE when no
  probability exceeds its threshold;
* the uncertainty–error overlap when neither the thresholded entropy nor the error map has a voxel.

References
----------
Mehrtash et al., "Confidence calibration and predictive uncertainty estimation for deep medical image
segmentation", IEEE TMI 2020 (ECE, MCE, NLL, Brier in the dilated foreground box and the volume; eq. 7).
Lemay et al., "Label fusion and training methods for reliable representation of inter-rater
uncertainty", MELBA 2023 (Brier per class against the rater average; entropy against rater entropy).
Islam and Glocker, "Spatially varying label smoothing", IPMI 2021 (Dice, surface Dice, ECE, TACE).
Monteiro et al., "Stochastic Segmentation Networks", MICCAI 2020 (GED², sample diversity).
Jungo and Reyes, "Assessing reliability and challenges of uncertainty estimations for medical image
segmentation", MICCAI 2019 (uncertainty–error overlap).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from .._validation import (
    as_probability_array,
    as_rater_stack,
    check_choice,
    check_int,
    check_num_classes,
    check_positive,
    check_real_in,
    check_spacing,
    describe,
)
from ..calibration import calibration_summary, foreground_box_mask
from ..labels import majority_vote, rater_mean, staple
from ..raters.statistics import rater_entropy
from ..ssn.metrics import generalized_energy_distance, sample_diversity
from ..uncertainty.segments import StructureUncertainty, segment_entropy, structure_entropy
from ..uncertainty.voxelwise import entropy, mutual_information
from .overlap import RATER_METRICS, _overlap_tables

__all__ = ["CASE_METRICS", "CLASS_METRICS", "RATER_METRICS", "CaseEvaluation", "evaluate_case", "is_rater_metric"]

REFERENCES = ("staple", "majority", "mean")
CALIBRATION_TARGETS = ("raters", "reference")
REGIONS = ("volume", "box")
#: Calibration metrics, each computed per target and region as ``"{metric}_{target}_{region}"``.
CALIBRATION_METRICS = ("ece", "mce", "tace", "nll", "brier")
#: Overlap metrics also computed against each rater, in the rows as ``"{metric}/rater_{r}"`` (r from 1).
#: Metric names of the per-class rows (class: a foreground class name); see also :data:`RATER_METRICS`.
CLASS_METRICS = (
    *RATER_METRICS, "recall", "precision", *(f"{m}_rater_mean" for m in RATER_METRICS), "segment_entropy",
    *(f"brier_{t}_{r}" for t in CALIBRATION_TARGETS for r in REGIONS),
)  # fmt: skip
#: Metric names of the case-level rows (class ``"all"``); the last three only with samples or members.
CASE_METRICS = (
    *(f"{m}_{t}_{r}" for t in CALIBRATION_TARGETS for r in REGIONS for m in CALIBRATION_METRICS),
    "entropy_mae_volume", "entropy_mae_box", "uncertainty_error_dice", "ged2", "sample_diversity",
    "mutual_information",
)  # fmt: skip


def is_rater_metric(metric: str) -> bool:
    """Whether ``metric`` is a per-rater row's name, ``"{metric}/rater_{r}"`` with ``r >= 1``.

    Examples
    --------
    >>> is_rater_metric("dice/rater_2"), is_rater_metric("dice/rater_0"), is_rater_metric("recall/rater_1")
    (True, False, False)
    """
    name, sep, rater = metric.partition("/rater_")
    return bool(sep) and name in RATER_METRICS and rater.isdigit() and int(rater) >= 1 and rater[0] != "0"


@dataclass(frozen=True)
class CaseEvaluation:
    """All metrics of one case: per class, per rater and per case.

    Attributes
    ----------
    case_id : str
        Name of the case.
    class_names : tuple of str
        One name per class, class 0 (background) first.
    reference : str
        The fused reference: ``"staple"``, ``"majority"`` or ``"mean"``.
    per_class : dict of str to numpy.ndarray
        Metric name to a ``(C,)`` float64 array (background entry NaN for overlap metrics):
        ``dice``, ``surface_dice``, ``hd95``, ``recall``, ``precision`` (against the reference; recall
        and precision as in SoftSeg's Table 3); ``dice_rater_mean``,
        ``surface_dice_rater_mean``, ``hd95_rater_mean`` (mean over raters of the per-rater value, NaN
        raters skipped); ``segment_entropy`` (nats, Mehrtash eq. 7); ``brier_{target}_{region}``.
    per_rater : dict of str to numpy.ndarray
        ``dice``, ``surface_dice``, ``hd95`` against each rater, ``(R, C)``.
    scalars : dict of str to float
        Case-level values: ``{ece,mce,tace,nll,brier}_{target}_{region}`` with target ``raters`` (the
        rater mean as a soft target) or ``reference`` and region ``volume`` or ``box``;
        ``entropy_mae_volume``, ``entropy_mae_box``; ``uncertainty_error_dice``; and with samples or
        members ``ged2``, ``sample_diversity``, ``mutual_information``.
    structures : tuple of StructureUncertainty
        Segment-level entropy of every connected predicted structure, most uncertain first.
    reference_labels : numpy.ndarray or None
        The fused reference labels ``(*spatial)`` the metrics were computed against (e.g. for a
        reliability diagram pooled over cases); not part of :meth:`rows` or :meth:`to_dict`.
    """

    case_id: str
    class_names: tuple[str, ...]
    reference: str
    per_class: dict[str, np.ndarray] = field(default_factory=dict)
    per_rater: dict[str, np.ndarray] = field(default_factory=dict)
    scalars: dict[str, float] = field(default_factory=dict)
    structures: tuple[StructureUncertainty, ...] = ()
    reference_labels: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def num_classes(self) -> int:
        """Number of classes ``C`` including the background."""
        return len(self.class_names)

    def rows(self) -> list[dict[str, Any]]:
        """Flat records ``{case_id, class, metric, value}`` for a per-case CSV.

        Per-class metrics give one row per foreground class, per-rater metrics are named
        ``"{metric}/rater_{r}"`` (raters counted from 1) and case-level values have class ``"all"``.

        Returns
        -------
        list of dict
            Values are Python floats (NaN where undefined).
        """
        rows: list[dict[str, Any]] = []
        names = self.class_names
        for metric, values in self.per_class.items():
            for c in range(1, len(names)):
                rows.append({"case_id": self.case_id, "class": names[c], "metric": metric, "value": float(values[c])})
        for metric, table in self.per_rater.items():
            for r in range(table.shape[0]):
                for c in range(1, len(names)):
                    rows.append(
                        {
                            "case_id": self.case_id,
                            "class": names[c],
                            "metric": f"{metric}/rater_{r + 1}",
                            "value": float(table[r, c]),
                        }
                    )
        for metric, value in self.scalars.items():
            rows.append({"case_id": self.case_id, "class": "all", "metric": metric, "value": float(value)})
        return rows

    def to_dict(self) -> dict[str, Any]:
        """Plain Python containers (lists, floats, str): JSON-ready apart from NaN.

        Returns
        -------
        dict
            ``case_id``, ``class_names``, ``reference``, ``per_class`` (metric to class name to value),
            ``per_rater`` (metric to a list of per-rater dicts), ``scalars`` and ``structures``.
        """
        names = self.class_names
        return {
            "case_id": self.case_id,
            "class_names": list(names),
            "reference": self.reference,
            "per_class": {m: {names[c]: float(v[c]) for c in range(len(names))} for m, v in self.per_class.items()},
            "per_rater": {
                m: [{names[c]: float(row[c]) for c in range(len(names))} for row in table]
                for m, table in self.per_rater.items()
            },
            "scalars": {m: float(v) for m, v in self.scalars.items()},
            "structures": [
                {
                    "class": names[s.class_index],
                    "component": s.component,
                    "voxels": s.voxels,
                    "mean_entropy": s.mean_entropy,
                    "centroid": list(s.centroid),
                }
                for s in self.structures
            ],
        }


def _fused(stack: np.ndarray, reference: str, num_classes: int) -> np.ndarray:
    if reference == "staple":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.asarray(staple(stack, num_classes=num_classes).labels)
    if reference == "majority":
        return majority_vote(stack, num_classes=num_classes)
    return np.argmax(rater_mean(stack, num_classes=num_classes), axis=0)


def _bounding_rectangle(mask: np.ndarray) -> tuple[slice, ...]:
    """The smallest box of slices holding every True voxel of a non-empty mask."""
    out = []
    for axis in range(mask.ndim):
        present = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        out.append(slice(int(present[0]), int(present[-1]) + 1))
    return tuple(out)


def _dice_of_masks(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return float("nan") if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


def evaluate_case(
    probabilities: Any,
    raters: Any,
    *,
    spacing: Sequence[float] | float | None = None,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    reference: Literal["staple", "majority", "mean"] = "majority",
    tolerance_mm: float = 1.0,
    box_margin_mm: float = 8.0,
    box_slice_margin: int = 2,
    samples: Any = None,
    member_probabilities: Any = None,
    num_bins: int = 10,
    uncertainty_threshold: float = 0.5,
    case_id: str = "case",
) -> CaseEvaluation:
    """Every per-case metric of the studies for one predicted case.

    Overlap (against the fused reference and each rater): Dice, surface Dice at ``tolerance_mm`` and
    HD95 in mm, spacing-aware (MONAI); recall and precision per class against the reference (Lemay et
    al., Table 3). Calibration in the whole volume and in the dilated foreground
    bounding box (Mehrtash et al.: ``box_margin_mm`` in-plane, ``box_slice_margin`` slices, around the
    union of the raters' foreground): ECE and MCE (equal-width bins on the max probability), TACE, NLL
    and Brier, against the rater distribution (the rater mean as a soft target, SoftSeg) and against the
    fused reference. Segment-level entropy per class and per connected structure (Mehrtash eq. 7). MAE
    between the predicted entropy and the raters' entropy, voxel-wise, both normalized by ``ln C``
    (SoftSeg). With ``samples`` or ``member_probabilities``: GED² against the raters, sample diversity
    and the mean mutual information. Uncertainty–error overlap: Dice between the voxels whose normalized
    predictive entropy is at least ``uncertainty_threshold`` and the voxels where the arg-max
    prediction differs from the reference (Jungo and Reyes 2019).

    Parameters
    ----------
    probabilities : array_like
        Predicted class probabilities ``(C, *spatial)``, 2-D or 3-D.
    raters : array_like
        Integer rater labels ``(R, *spatial)``.
    spacing : float or sequence of float, optional
        Voxel size in mm per spatial axis; default 1 (distances in voxels).
    num_classes : int, optional
        Number of classes; must match the probabilities when given.
    class_names : sequence of str, optional
        ``C`` names, background first; default ``"class 0"``, ...
    reference : {"staple", "majority", "mean"}
        Fused reference: STAPLE labels, majority vote (ties to the lower class), or the arg-max of the
        rater mean.
    tolerance_mm : float
        Surface-Dice tolerance in the units of ``spacing``.
    box_margin_mm : float
        In-plane margin of the foreground box (Mehrtash et al.: 8 mm).
    box_slice_margin : int
        Margin in slices along the first axis of 3-D data (Mehrtash et al.: 2).
    samples : array_like, optional
        Sampled label maps ``(N, *spatial)`` (e.g. SSN samples). Mutual information is then that of
        the samples as one-hot members: the entropy of their label frequencies.
    member_probabilities : array_like, optional
        Member probabilities ``(M, C, *spatial)`` (ensemble, MC dropout); their arg-max maps serve as
        samples when ``samples`` is not given.
    num_bins : int
        Equal-width bins of ECE / MCE and equal-count bins per class of TACE.
    uncertainty_threshold : float
        Threshold on the entropy normalized by ``ln C``, in (0, 1]; the default 0.5 is half the
        largest possible entropy (a 50/50 tie between two of four classes sits exactly there). A
        project choice: the cited paper binarizes at a fixed threshold without prescribing one.
    case_id : str
        Name of the case in :meth:`CaseEvaluation.rows`.

    Returns
    -------
    CaseEvaluation
        See the class; undefined values are NaN (listed in the module docstring).

    Raises
    ------
    TypeError, ValueError
        Naming the argument, for malformed input.

    References
    ----------
    Mehrtash et al., IEEE TMI 2020, Sec. VI-D and eqs. (3)-(5), (7); Lemay et al., MELBA 2023, eq. (2)
    and Fig. 1; Islam and Glocker, IPMI 2021; Monteiro et al., MICCAI 2020, eq. (8); Jungo and Reyes,
    MICCAI 2019.

    Examples
    --------
    >>> import numpy as np
    >>> raters = np.zeros((2, 6, 6), dtype=np.uint8); raters[:, 2:4, 2:4] = 1
    >>> probs = np.stack([1.0 - raters[0], raters[0]]).astype(np.float32) * 0.8 + 0.1
    >>> result = evaluate_case(probs, raters)
    >>> float(result.per_class["dice"][1]), round(result.scalars["ece_raters_volume"], 3)
    (1.0, 0.1)
    """
    if not isinstance(case_id, str):
        raise TypeError(f"case_id must be a string, got {describe(case_id)}.")
    reference = check_choice(reference, name="reference", choices=REFERENCES)
    tolerance = check_positive(tolerance_mm, name="tolerance_mm", allow_zero=True)
    box_margin = check_positive(box_margin_mm, name="box_margin_mm", allow_zero=True)
    box_slice_margin = check_int(box_slice_margin, name="box_slice_margin", minimum=0)
    num_bins = check_int(num_bins, name="num_bins", minimum=1)
    threshold = check_real_in(uncertainty_threshold, name="uncertainty_threshold", low=0.0, high=1.0, low_open=True)
    p, stack, spc, names = _case_inputs(probabilities, raters, spacing, num_classes, class_names)
    c_count = p.shape[0]
    sample_stack, members = _sample_inputs(samples, member_probabilities, p)

    prediction = np.argmax(p, axis=0)
    fused = _fused(stack, reference, c_count)
    union = stack.max(axis=0)
    box = None
    if (union > 0).any():
        box = foreground_box_mask(
            union, spacing=spc, in_plane_margin=box_margin, slice_margin=box_slice_margin, per_class=True
        )

    # calibration (rater distribution and fused reference, volume and foreground box) in a second thread
    # while this one computes overlap and entropies: numpy, torch and scipy release the GIL in both.
    with ThreadPoolExecutor(max_workers=1) as pool:
        calibration = pool.submit(
            _calibration_metrics, p, {"raters": lambda: rater_mean(stack, num_classes=c_count), "reference": fused},
            box, num_bins=num_bins,
        )
        per_class, per_rater = _overlap_tables(prediction, fused, stack, c_count, tolerance, spc)
        per_class["segment_entropy"] = segment_entropy(p, labels=prediction)
        structures = tuple(structure_entropy(p, labels=prediction))
        # entropy against the raters' entropy (SoftSeg), and where it flags the errors
        h_pred = entropy(p)
        h_raters = rater_entropy(stack, num_classes=c_count)
        abs_diff = np.abs(h_pred.astype(np.float64) - h_raters)
        uncertainty = {
            "entropy_mae_volume": float(abs_diff.mean()),
            "entropy_mae_box": math.nan if box is None else float(abs_diff[box].mean()),
            "uncertainty_error_dice": _dice_of_masks(h_pred >= threshold, prediction != fused),
        }
        del abs_diff
        samples_part = _sample_metrics(sample_stack, members, stack, c_count)
        scalars, brier_per_class = calibration.result()
    per_class.update(brier_per_class)
    scalars.update(uncertainty)
    scalars.update(samples_part)
    return CaseEvaluation(
        case_id=case_id,
        class_names=names,
        reference=reference,
        per_class=per_class,
        per_rater=per_rater,
        scalars=scalars,
        structures=structures,
        reference_labels=fused,
    )


def _case_inputs(
    probabilities: Any, raters: Any, spacing: Any, num_classes: Any, class_names: Any
) -> tuple[np.ndarray, np.ndarray, tuple[float, ...], tuple[str, ...]]:
    """The checked probabilities ``(C, *S)``, rater stack, spacing and class names of :func:`evaluate_case`."""
    p = as_probability_array(probabilities, name="probabilities")
    c_count = p.shape[0]
    if num_classes is not None:
        num_classes = check_num_classes(num_classes, minimum=2)
        if num_classes != c_count:
            raise ValueError(
                f"num_classes is {num_classes} but probabilities has {c_count} classes (shape {p.shape})."
            )
    if c_count < 2:
        raise ValueError(f"probabilities must have at least 2 classes, got shape {p.shape}.")
    spatial = p.shape[1:]
    stack = as_rater_stack(raters, name="raters", num_classes=c_count)
    if stack.shape[1:] != spatial:
        raise ValueError(f"raters must be stacked as (R, *{spatial}) like the probabilities, got {stack.shape}.")
    spc = check_spacing(spacing, len(spatial))
    if class_names is None:
        names = tuple(f"class {c}" for c in range(c_count))
    else:
        if isinstance(class_names, (str, bytes)) or not isinstance(class_names, (Sequence, np.ndarray)):
            raise TypeError(f"class_names must be a list of {c_count} names, got {describe(class_names)}.")
        names = tuple(str(n) for n in class_names)
        if len(names) != c_count:
            raise ValueError(f"class_names must name all {c_count} classes, got {len(names)} names.")
    return p, stack, spc, names


def _sample_inputs(samples: Any, member_probabilities: Any, p: np.ndarray) -> tuple[Any, Any]:
    """The checked label samples ``(N, *S)`` and member probabilities ``(M, C, *S)`` (None when not given)."""
    spatial = p.shape[1:]
    sample_stack = None
    if samples is not None:
        sample_stack = as_rater_stack(samples, name="samples", num_classes=p.shape[0])
        if sample_stack.shape[1:] != spatial:
            raise ValueError(f"samples must be stacked as (N, *{spatial}), got shape {sample_stack.shape}.")
    members = None
    if member_probabilities is not None:
        members = as_probability_array(member_probabilities, name="member_probabilities", leading_axes=2)
        if members.shape[1:] != p.shape:
            raise ValueError(
                f"member_probabilities must be shaped (M, *{p.shape}) like the probabilities, got {members.shape}."
            )
    return sample_stack, members


def _calibration_metrics(
    p: np.ndarray, targets: dict[str, Any], box: np.ndarray | None, *, num_bins: int
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """ECE, MCE, TACE, NLL and Brier per target and region (whole volume, foreground box), and the Brier
    per class of each (for ``per_class``). A target given as a callable is made here (in the worker). A
    missing box (no rater foreground) gives NaN."""
    scalars: dict[str, float] = {}
    per_class: dict[str, np.ndarray] = {}
    for target_name, target in targets.items():
        if callable(target):
            target = target()
        for region in REGIONS:
            key = f"{target_name}_{region}"
            if region == "box" and box is None:
                for metric in CALIBRATION_METRICS:
                    scalars[f"{metric}_{key}"] = math.nan
                per_class[f"brier_{key}"] = np.full(p.shape[0], np.nan)
                continue
            probs_r, target_r, mask = p, target, None
            if region == "box":  # the same voxels, read from the rectangle around the box only
                rect = _bounding_rectangle(box)
                probs_r, target_r, mask = p[(slice(None), *rect)], target[(..., *rect)], box[rect]
            # one flattening for all five (reliability_bins, thresholded_adaptive_ce, negative_log_likelihood
            # and brier_score_per_class with their defaults give the same numbers); p was checked by _case_inputs
            summary = calibration_summary(probs_r, target_r, num_bins=num_bins, tace_num_bins=num_bins, mask=mask,
                                          check_values=False)
            scalars[f"ece_{key}"] = summary.ece
            scalars[f"mce_{key}"] = summary.bins.maximum_calibration_error
            scalars[f"tace_{key}"] = summary.tace
            scalars[f"nll_{key}"] = summary.nll
            scalars[f"brier_{key}"] = summary.brier  # brier_score(reduction="mean"), Mehrtash eq. 4
            per_class[f"brier_{key}"] = summary.brier_per_class
    return scalars, per_class


def _sample_metrics(sample_stack: Any, members: Any, stack: np.ndarray, c_count: int) -> dict[str, float]:
    """GED² and sample diversity of label samples (or the members' arg-max maps), and mutual information."""
    scalars: dict[str, float] = {}
    if members is not None:
        scalars["mutual_information"] = float(mutual_information(members).mean(dtype=np.float64))
        if sample_stack is None:
            sample_stack = np.argmax(members, axis=1).astype(np.uint8 if c_count <= 256 else np.int64)
    elif sample_stack is not None:
        scalars["mutual_information"] = float(rater_entropy(sample_stack, num_classes=c_count).mean(dtype=np.float64))
    if sample_stack is not None:
        scalars["ged2"] = generalized_energy_distance(sample_stack, stack, num_classes=c_count)
        scalars["sample_diversity"] = sample_diversity(sample_stack, num_classes=c_count)
    return scalars

