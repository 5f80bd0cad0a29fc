"""STAPLE label fusion: SimpleITK's two filters, computed by EM over the histogram of rater vote patterns.

A voxel's E-step in STAPLE (binary, Warfield et al. [1]_) and in multi-label STAPLE (Rohlfing et al. [2]_)
depends only on the labels the raters gave it, its *vote pattern*; the M-step only sums over voxels. So the
EM runs on the ``P`` distinct patterns weighted by their voxel counts (``P <= C**R``, 81 for 4 raters and 3
classes, however large the volume), and the per-pattern results are mapped back to the voxels once
(:func:`~napari_seg_uncertainty.core.raters.votes.vote_patterns`).

``method="patterns"`` (the default) is that computation. It follows ITK's definitions step by step
(``itkSTAPLEImageFilter.hxx``, ``itkMultiLabelSTAPLEImageFilter.hxx`` and ``itkLabelVotingImageFilter.hxx``,
ITK 5.4 as shipped with SimpleITK 2.5), so it gives SimpleITK's numbers (to rounding of the sums over voxels):

* binary STAPLE: the initial weight of a voxel is the fraction of raters that chose the foreground; the
  prior ``g_t`` is the mean initial weight times the confidence weight; each iteration estimates every
  rater's sensitivity ``p`` and specificity ``q`` from the weights, then recomputes the weights; it stops
  after an iteration (not the first) where every ``p`` and ``q`` moved by at most ``1e-7`` (squared change
  ``<= 1e-14``), or after ``max_iterations``. The output is the last weights.
* multi-label STAPLE: labels ``0 .. L-1`` with ``L`` the largest label seen plus one. The confusion
  matrices ``(L + 1, L)`` start from the majority vote (``LabelVotingImageFilter``: a tie gives label ``L``;
  ITK then counts such a voxel at row ``j + 1``, column 0 of the matrix, an off-by-one write that is
  reproduced here so the EM starts where ITK's does), each row normalized to sum 1; the prior is the share
  of each label in all the raters' maps. Each iteration: the E-step gives each voxel the normalized
  product ``prior[c] * prod_k conf_k[j_k, c]``, the M-step sums them per rater and label and normalizes
  each column; it stops when no matrix entry moved by ``1e-5`` or more. The fused label is the class with
  the largest unnormalized product; a tie with the largest so far marks the voxel undecided, unless a
  later class is larger.

``method="simpleitk"`` runs SimpleITK's filters themselves (slow and memory-hungry on a CT: several
volume-size float64 images per class), kept for comparison.

References
----------
.. [1] S. K. Warfield, K. H. Zou and W. M. Wells, "Simultaneous truth and performance level estimation
   (STAPLE): an algorithm for the validation of image segmentation", IEEE Trans. Med. Imaging 23(7),
   903-921, 2004.
.. [2] T. Rohlfing, D. B. Russakoff and C. R. Maurer, "Performance-based classifier combination in
   atlas-based image segmentation using expectation-maximization parameter estimation", IEEE Trans. Med.
   Imaging 23(8), 983-994, 2004.
"""

from __future__ import annotations

import threading
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._memory import array_bytes, check_allocation
from .._numeric import label_dtype
from .._validation import as_rater_stack, check_choice, check_int, check_num_classes, check_positive
from ..raters.votes import VotePatterns, map_count_vectors, vote_fractions, vote_patterns
from ._common import infer_num_classes

__all__ = ["STAPLE_METHODS", "StapleResult", "staple"]

#: The ways :func:`staple` can compute: EM over vote patterns, or SimpleITK's filters.
STAPLE_METHODS = ("patterns", "simpleitk")
#: ITK's STAPLE convergence bound on the squared change of a sensitivity or specificity.
_BINARY_MIN_SQUARED_CHANGE = 1.0e-14
#: ITK's MultiLabelSTAPLE default termination threshold on the largest confusion-matrix change.
_MULTILABEL_THRESHOLD = 1.0e-5
#: SimpleITK's default iteration cap (the largest unsigned int: run to convergence).
_UNBOUNDED = 2**32 - 1


@dataclass(frozen=True)
class StapleResult:
    """What :func:`staple` returns.

    Attributes
    ----------
    probabilities : numpy.ndarray of float32, shape (C, *spatial)
        Soft labels summing to 1 over classes. For two classes, ``[1 - p, p]`` where ``p`` is the
        foreground probability of binary STAPLE (SimpleITK's ``STAPLEImageFilter``). For more classes, the
        one-versus-rest posteriors in ``class_probabilities`` normalized over classes.
    class_probabilities : numpy.ndarray of float32, shape (C, *spatial)
        Binary STAPLE run with class ``c`` as foreground and all other classes as background: the posterior
        probability that the true label is ``c``. Not normalized over classes. With ``method="patterns"``
        this map is made on first access (from the per-pattern posteriors; then kept, once even when
        several threads ask at the same time), so a caller who needs only ``probabilities`` does not pay for
        a second ``(C, *spatial)`` float32 map. Until then the result keeps the per-voxel pattern index
        (one unsigned map of the spatial shape, uint8 for up to 256 patterns); pickling the result makes the
        map first.
    sensitivities, specificities : numpy.ndarray of float64, shape (R, C)
        Rater ``r``'s sensitivity and specificity for class ``c`` (one versus rest), as estimated by binary
        STAPLE. NaN where undefined: a class that no rater ever uses has no sensitivity, a class that every
        rater uses everywhere has no specificity.
    labels : numpy.ndarray of unsigned int, shape (*spatial)
        Multi-label fusion (SimpleITK's ``MultiLabelSTAPLEImageFilter``). Voxels it leaves undecided (a tie)
        take the class with the highest ``probabilities``.
    undecided : numpy.ndarray of bool, shape (*spatial)
        Where multi-label STAPLE could not decide.
    confusion_matrices : numpy.ndarray of float64, shape (R, C + 1, C)
        Multi-label STAPLE's estimate per rater: entry ``[r, j, i]`` is the probability that rater ``r``
        assigns label ``j`` when the true label is ``i``. Each column sums to 1 or is NaN. The extra last row
        is ITK's row for labels outside the classes; it is zero for validated input (except where ITK's
        initialisation put weight there, see the module notes). Column ``i`` is NaN where the filter has no
        estimate for true class ``i`` (see ``confusion_defined``).
    confusion_defined : numpy.ndarray of bool, shape (C,)
        Whether column ``i`` of the confusion matrices is estimated. ITK starts its EM from the majority
        vote, so a class that wins the vote at no voxel (nobody draws it, or every voxel where it is drawn
        is a tie or outvoted) keeps an empty column; SimpleITK returns zeros there, which are reported as
        NaN here because they are not probabilities.
    degenerate : bool
        True when multi-label STAPLE decided no voxel at all (every voxel is a tie, e.g. two raters who
        disagree everywhere): no confusion column is defined, ``undecided`` is True everywhere and ``labels``
        is entirely the argmax of ``probabilities``. :func:`staple` warns when this happens.
    """

    probabilities: np.ndarray
    sensitivities: np.ndarray
    specificities: np.ndarray
    labels: np.ndarray
    undecided: np.ndarray
    confusion_matrices: np.ndarray
    confusion_defined: np.ndarray
    degenerate: bool
    #: The class probabilities, or a :class:`_PatternMaps` that makes them on first access.
    class_probabilities_source: Any = field(default=None, repr=False, compare=False)

    @property
    def class_probabilities(self) -> np.ndarray:
        """``(C, *spatial)`` float32 one-versus-rest posteriors (see the class notes)."""
        source = self.class_probabilities_source
        if isinstance(source, _PatternMaps):
            source = source.materialize()
            object.__setattr__(self, "class_probabilities_source", source)
        return source

    @property
    def num_classes(self) -> int:
        """Number of classes ``C``."""
        return int(self.probabilities.shape[0])

    @property
    def num_raters(self) -> int:
        """Number of raters ``R``."""
        return int(self.sensitivities.shape[0])


# ----------------------------------------------------------------------------------------------
# EM over vote patterns (ITK's definitions; written by hand because no library runs STAPLE on a histogram)
# ----------------------------------------------------------------------------------------------
def _binary_em(
    foreground: np.ndarray, counts: np.ndarray, max_iterations: int | None, confidence_weight: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ITK's binary STAPLE on ``(P, R)`` foreground patterns with voxel ``counts``: per-pattern float64
    posterior, sensitivities and specificities (``(R,)``)."""
    num_raters = foreground.shape[1]
    weight = counts.astype(np.float64)
    votes = foreground.astype(np.float64)
    rest = 1.0 - votes
    posterior = foreground.sum(axis=1) / float(num_raters)  # ITK: +1.0 per rater, then / R
    prior = float(weight @ posterior) / float(counts.sum()) * confidence_weight
    last_p = np.full(num_raters, -10.0)
    last_q = np.full(num_raters, -10.0)
    limit = _UNBOUNDED if max_iterations is None else max_iterations
    iteration = 0
    with np.errstate(invalid="ignore", divide="ignore"):
        while iteration < limit:
            inside = weight * posterior
            outside = weight * (1.0 - posterior)
            p = (inside @ votes) / inside.sum()
            q = (outside @ rest) / outside.sum()
            alpha = np.ones(foreground.shape[0])
            beta = np.ones(foreground.shape[0])
            for rater in range(num_raters):  # the products in ITK's order
                alpha *= np.where(foreground[:, rater], p[rater], 1.0 - p[rater])
                beta *= np.where(foreground[:, rater], 1.0 - q[rater], q[rater])
            posterior = prior * alpha / (prior * alpha + (1.0 - prior) * beta)
            converged = iteration != 0 and not (
                np.any((p - last_p) * (p - last_p) > _BINARY_MIN_SQUARED_CHANGE)
                or np.any((q - last_q) * (q - last_q) > _BINARY_MIN_SQUARED_CHANGE)
            )
            last_p, last_q = p, q
            if converged:
                break
            iteration += 1
    return posterior, last_p, last_q


def _itk_vote(patterns: np.ndarray, num_labels: int) -> np.ndarray:
    """ITK's LabelVotingImageFilter on ``(P, R)`` patterns: the most voted label, ``num_labels`` on a tie."""
    votes = np.stack([np.count_nonzero(patterns == label, axis=1) for label in range(num_labels)], axis=1)
    return _itk_winner(votes, best=votes[:, 0], winner=np.zeros(len(votes), np.int64), first=1,
                       undecided=num_labels)


def _itk_winner(values: np.ndarray, *, best: np.ndarray, winner: np.ndarray, first: int, undecided: int) -> np.ndarray:
    """ITK's sequential arg-max over the columns ``first …`` of ``values`` (``(P, L)``): a larger value wins; a
    value not smaller than the best so far (equal, or NaN) marks the row undecided until a later, larger one."""
    best, winner = best.copy(), winner.copy()
    for label in range(first, values.shape[1]):
        column = values[:, label]
        larger = column > best
        not_smaller = ~larger & ~(column < best)
        winner = np.where(larger, label, np.where(not_smaller, undecided, winner))
        best = np.where(larger, column, best)
    return winner


def _multilabel_em(
    patterns: np.ndarray, counts: np.ndarray, max_iterations: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """ITK's MultiLabelSTAPLE on ``(P, R)`` patterns: per-pattern fused label (``L`` = undecided, with ``L``
    the largest label plus one) and the ``(R, L + 1, L)`` confusion matrices."""
    num_patterns, num_raters = patterns.shape
    num_labels = int(patterns.max()) + 1
    weight = counts.astype(np.float64)
    vote = _itk_vote(patterns, num_labels)
    confusion = np.zeros((num_raters, (num_labels + 1) * num_labels))
    for rater in range(num_raters):
        # ITK's `matrix[j][vote]` with vote == L (a tie) lands on row j + 1, column 0 (row-major storage).
        np.add.at(confusion[rater], patterns[:, rater] * num_labels + vote, weight)
    confusion = confusion.reshape(num_raters, num_labels + 1, num_labels)
    row_sums = confusion.sum(axis=2, keepdims=True)
    np.divide(confusion, row_sums, out=confusion, where=row_sums > 0)
    label_totals = np.array([weight @ np.count_nonzero(patterns == label, axis=1) for label in range(num_labels)])
    prior = label_totals / label_totals.sum()
    one_hot = np.stack([(patterns[:, rater][None, :] == np.arange(num_labels + 1)[:, None]).astype(np.float64)
                        for rater in range(num_raters)])  # (R, L + 1, P)
    limit = _UNBOUNDED if max_iterations is None else max_iterations
    iteration = 0
    while iteration < limit:
        posterior = _label_products(prior, confusion, patterns)
        total = posterior[:, 0].copy()
        for label in range(1, num_labels):
            total += posterior[:, label]
        np.divide(posterior, total[:, None], out=posterior, where=total[:, None] != 0)
        updated = one_hot @ (weight[:, None] * posterior)  # (R, L + 1, L)
        column_sums = updated.sum(axis=1, keepdims=True)
        np.divide(updated, column_sums, out=updated, where=column_sums != 0)
        change = float(np.max(np.abs(updated - confusion)))
        confusion = updated
        if change < _MULTILABEL_THRESHOLD:
            break
        iteration += 1
    products = _label_products(prior, confusion, patterns)
    fused = _itk_winner(products, best=np.zeros(num_patterns), winner=np.full(num_patterns, num_labels), first=0,
                        undecided=num_labels)
    return fused, confusion


def _label_products(prior: np.ndarray, confusion: np.ndarray, patterns: np.ndarray) -> np.ndarray:
    """``(P, L)``: ``prior[c] * conf_0[j_0, c] * conf_1[j_1, c] * …`` multiplied in ITK's order."""
    out = np.repeat(prior[None, :], patterns.shape[0], axis=0)
    for rater in range(patterns.shape[1]):
        out *= confusion[rater][patterns[:, rater]]
    return out


def _embed_confusion(raw: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """ITK's ``(R, L + 1, L)`` matrices (``L`` = largest label + 1) as ``(R, C + 1, C)`` with empty columns NaN,
    and which columns are defined."""
    num_raters, present = raw.shape[0], raw.shape[2]
    matrices = np.full((num_raters, num_classes + 1, num_classes), np.nan)
    matrices[:, :present, :present] = raw[:, :present]
    matrices[:, present:num_classes, :present] = 0.0
    matrices[:, num_classes, :present] = raw[:, present]
    # A class whose column ITK never filled (it wins the initial vote nowhere) comes back as zeros.
    defined = np.zeros(num_classes, dtype=bool)
    defined[:present] = np.all(matrices[:, :, :present].sum(axis=1) > 0, axis=0)
    matrices[:, :, ~defined] = np.nan
    return matrices, defined


def _normalize_over_classes(class_probabilities: np.ndarray, fractions: np.ndarray) -> np.ndarray:
    """Soft labels from the one-versus-rest posteriors ``(C, ...)``: ``[1 - p1, p1]`` for two classes, else
    normalized over classes (the rater vote ``fractions`` where every posterior is 0)."""
    if class_probabilities.shape[0] == 2:
        return np.stack([1.0 - class_probabilities[1], class_probabilities[1]]).astype(np.float32)
    total = class_probabilities.sum(axis=0, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        normalized = class_probabilities / total
    return np.where(total > 0, normalized, fractions).astype(np.float32)


def _one_versus_rest_patterns(
    votes: VotePatterns, num_classes: int, max_iterations: int | None, confidence_weight: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Binary STAPLE per class on the patterns: ``(C, P)`` float32 posteriors, ``(R, C)`` sensitivities and
    specificities (the special cases of an absent or everywhere-present class as the SimpleITK path)."""
    num_raters = votes.patterns.shape[1]
    probabilities = np.empty((num_classes, len(votes.counts)), dtype=np.float32)
    sensitivities = np.empty((num_raters, num_classes))
    specificities = np.empty((num_raters, num_classes))
    for class_index in range(num_classes):
        foreground = votes.patterns == class_index
        if not foreground.any():
            probability, sensitivity, specificity = np.zeros(len(votes.counts)), np.nan, 1.0
        elif foreground.all():
            probability, sensitivity, specificity = np.ones(len(votes.counts)), 1.0, np.nan
        else:
            probability, sensitivity, specificity = _binary_em(foreground, votes.counts, max_iterations,
                                                               confidence_weight)
            if not np.all(np.isfinite(probability)):
                _warn_non_finite()
                fraction = foreground.sum(axis=1) / float(num_raters)
                probability = np.where(np.isfinite(probability), probability, fraction)
        probabilities[class_index] = probability
        sensitivities[:, class_index] = sensitivity
        specificities[:, class_index] = specificity
    return probabilities, sensitivities, specificities


def _warn_non_finite() -> None:
    warnings.warn("STAPLE returned non-finite probabilities; using the rater vote fraction there.",
                  RuntimeWarning, stacklevel=4)


def _staple_patterns(
    raters: np.ndarray, num_classes: int, max_iterations: int | None, confidence_weight: float
) -> dict[str, Any]:
    """Both STAPLEs by EM over the vote-pattern histogram, mapped back to the voxels once."""
    votes = vote_patterns(raters, num_classes)
    class_probabilities, sensitivities, specificities = _one_versus_rest_patterns(
        votes, num_classes, max_iterations, confidence_weight)
    pattern_counts = np.stack([np.count_nonzero(votes.patterns == c, axis=1) for c in range(num_classes)])
    fractions = vote_fractions(pattern_counts, votes.patterns.shape[1])
    probabilities = _normalize_over_classes(class_probabilities, fractions)
    fused, raw = _multilabel_em(votes.patterns, votes.counts, max_iterations)
    undecided = fused == raw.shape[2]
    labels = fused.astype(label_dtype(num_classes))
    labels[undecided] = np.argmax(probabilities, axis=0)[undecided]
    confusion_matrices, confusion_defined = _embed_confusion(raw, num_classes)
    probabilities, labels, undecided = votes.to_voxels(probabilities, labels, undecided)
    return {
        "probabilities": probabilities,
        "class_probabilities_source": _PatternMaps(votes, class_probabilities),
        "sensitivities": sensitivities,
        "specificities": specificities,
        "labels": labels,
        "undecided": undecided,
        "confusion_matrices": confusion_matrices,
        "confusion_defined": confusion_defined,
    }


def _as_array(array: np.ndarray) -> np.ndarray:
    """Unpickles a :class:`_PatternMaps` as the map it made."""
    return array


class _PatternMaps:
    """Per-pattern values and the vote patterns' per-voxel index, made into per-voxel maps on first
    :meth:`materialize` (once, under a lock; the index is dropped then). Pickles as the finished map, so a
    :class:`StapleResult` can cross processes."""

    def __init__(self, votes: VotePatterns, values: np.ndarray) -> None:
        self._votes: VotePatterns | None = votes
        self._values = values
        self._maps: np.ndarray | None = None
        self._lock = threading.Lock()

    def materialize(self) -> np.ndarray:
        """The ``(C, *spatial)`` maps (checked to fit before they are allocated)."""
        with self._lock:
            if self._maps is None:
                votes = self._votes
                shape = (self._values.shape[0], *votes.index.shape)
                check_allocation(array_bytes(shape, np.float32),
                                 what=f"STAPLE's class probabilities of shape {shape}",
                                 cause=f"num_classes={shape[0]} with label maps of shape {shape[1:]}",
                                 advice="free memory (e.g. drop other results) or use a smaller region")
                self._maps = votes.to_voxels(self._values)[0]
                self._votes = None  # the index is no longer needed
            return self._maps

    def __reduce__(self) -> tuple:
        return _as_array, (self.materialize(),)


# ----------------------------------------------------------------------------------------------
# SimpleITK's filters (method="simpleitk")
# ----------------------------------------------------------------------------------------------
def _sitk_binary_staple(
    masks: np.ndarray, max_iterations: int | None, confidence_weight: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SimpleITK binary STAPLE on ``(R, *spatial)`` 0/1 masks: (probability, sensitivity, specificity)."""
    import SimpleITK as sitk

    num_raters = masks.shape[0]
    if not masks.any():  # nobody drew this class: it is absent, sensitivity undefined
        return np.zeros(masks.shape[1:], np.float32), np.full(num_raters, np.nan), np.ones(num_raters)
    if masks.all():  # everybody drew it everywhere: specificity undefined
        return np.ones(masks.shape[1:], np.float32), np.ones(num_raters), np.full(num_raters, np.nan)
    staple_filter = sitk.STAPLEImageFilter()
    staple_filter.SetForegroundValue(1)
    staple_filter.SetConfidenceWeight(confidence_weight)
    if max_iterations is not None:
        staple_filter.SetMaximumIterations(max_iterations)
    probability = sitk.GetArrayFromImage(staple_filter.Execute([sitk.GetImageFromArray(m) for m in masks]))
    if not np.all(np.isfinite(probability)):
        _warn_non_finite()
        fraction = masks.mean(axis=0)
        probability = np.where(np.isfinite(probability), probability, fraction)
    return (
        probability.astype(np.float32),
        np.asarray(staple_filter.GetSensitivity(), dtype=np.float64),
        np.asarray(staple_filter.GetSpecificity(), dtype=np.float64),
    )


def _sitk_multilabel_staple(raters: np.ndarray, num_classes: int, max_iterations: int | None) -> tuple:
    """SimpleITK multi-label STAPLE: labels (``num_classes`` marks undecided) and ITK's raw matrices."""
    import SimpleITK as sitk

    dtype = label_dtype(num_classes + 1)  # room for the undecided label
    fusion = sitk.MultiLabelSTAPLEImageFilter()
    fusion.SetLabelForUndecidedPixels(num_classes)
    if max_iterations is not None:
        fusion.SetMaximumNumberOfIterations(max_iterations)
    fused = sitk.GetArrayFromImage(fusion.Execute([sitk.GetImageFromArray(r.astype(dtype)) for r in raters]))
    present = int(raters.max()) + 1  # ITK sizes its matrices by the largest label seen
    raw = np.stack([np.asarray(fusion.GetConfusionMatrix(r), dtype=np.float64).reshape(present + 1, present)
                    for r in range(raters.shape[0])])
    return fused, raw


def _staple_simpleitk(
    raters: np.ndarray, num_classes: int, max_iterations: int | None, confidence_weight: float
) -> dict[str, Any]:
    """Both STAPLEs with SimpleITK's filters, one binary run per class."""
    num_raters, spatial = raters.shape[0], raters.shape[1:]
    class_probabilities = np.empty((num_classes, *spatial), dtype=np.float32)
    sensitivities = np.empty((num_raters, num_classes))
    specificities = np.empty((num_raters, num_classes))
    for class_index in range(num_classes):
        masks = (raters == class_index).astype(np.uint8)
        class_probabilities[class_index], sensitivities[:, class_index], specificities[:, class_index] = \
            _sitk_binary_staple(masks, max_iterations, confidence_weight)
    fractions = map_count_vectors(raters, num_classes, lambda counts: vote_fractions(counts, num_raters),
                                  np.empty((num_classes, *spatial), np.float32))
    probabilities = _normalize_over_classes(class_probabilities, fractions)
    fused, raw = _sitk_multilabel_staple(raters, num_classes, max_iterations)
    undecided = fused == num_classes
    labels = fused.astype(label_dtype(num_classes))
    labels[undecided] = np.argmax(probabilities, axis=0)[undecided]
    confusion_matrices, confusion_defined = _embed_confusion(raw, num_classes)
    return {
        "probabilities": probabilities,
        "class_probabilities_source": class_probabilities,
        "sensitivities": sensitivities,
        "specificities": specificities,
        "labels": labels,
        "undecided": undecided,
        "confusion_matrices": confusion_matrices,
        "confusion_defined": confusion_defined,
    }


def staple(
    raters: Any,
    *,
    num_classes: int | None = None,
    max_iterations: int | None = None,
    confidence_weight: float = 1.0,
    method: str = "patterns",
) -> StapleResult:
    """STAPLE label fusion (Warfield et al. 2004; Rohlfing et al. 2004): soft labels, rater performance, labels.

    Two STAPLEs, as SimpleITK's two filters define them (see the module notes for the exact definitions):

    * binary STAPLE (``STAPLEImageFilter``), once per class with that class as foreground and the rest as
      background. It gives the per-voxel posterior probability of the class and each rater's sensitivity and
      specificity. These make ``probabilities``, ``class_probabilities``, ``sensitivities`` and
      ``specificities``.
    * multi-label STAPLE (``MultiLabelSTAPLEImageFilter``), which gives a fused label map and one confusion
      matrix per rater but no probabilities. These make ``labels``, ``undecided``, ``confusion_matrices``,
      ``confusion_defined`` and ``degenerate``.

    When every voxel is a tie (two raters who disagree everywhere, for instance) multi-label STAPLE
    estimates nothing and SimpleITK returns all-zero confusion matrices. That case is reported rather than
    passed on: the matrices are NaN, ``degenerate`` is True and a ``RuntimeWarning`` is issued. The soft
    labels (``probabilities``) come from binary STAPLE and stay valid.

    Parameters
    ----------
    raters : array_like of int, shape (R, Y, X) or (R, Z, Y, X), or a list of R label maps
        Label maps of ``R`` raters on the same grid.
    num_classes : int, optional
        Number of classes ``C``; inferred as ``max label + 1`` (at least 2) when omitted.
    max_iterations : int, optional
        Cap on EM iterations for both STAPLEs; SimpleITK's default (run to convergence) when None.
    confidence_weight : float, default 1.0
        Binary STAPLE's confidence weight (scales the prior); must be > 0.
    method : {"patterns", "simpleitk"}, default "patterns"
        ``"patterns"``: EM over the histogram of the raters' vote patterns, mapped back to the voxels once
        (seconds and about the size of the outputs in memory on a 300×512×512 CT); equals SimpleITK's filters
        to within 1e-6. ``"simpleitk"``: SimpleITK's filters themselves (about a minute and several GB on
        such a CT).

    Returns
    -------
    StapleResult
        See :class:`StapleResult` for each field. ``probabilities`` has shape ``(C, *spatial)``, float32,
        summing to 1 over classes.

    Raises
    ------
    TypeError, ValueError
        If the raters are not an integer stack of 2-D/3-D maps within range, or an option is invalid.
    OutputTooLargeError
        If the outputs would not fit in the available memory (raised before allocating them).

    Warns
    -----
    RuntimeWarning
        If the multi-label fusion is degenerate (every voxel a tie); see :attr:`StapleResult.degenerate`.

    References
    ----------
    .. [1] S. K. Warfield, K. H. Zou and W. M. Wells, IEEE Trans. Med. Imaging 23(7), 903-921, 2004.
    .. [2] T. Rohlfing, D. B. Russakoff and C. R. Maurer, IEEE Trans. Med. Imaging 23(8), 983-994, 2004.

    Examples
    --------
    >>> import numpy as np
    >>> truth = np.zeros((16, 16), dtype=int)
    >>> truth[4:12, 4:12] = 1
    >>> raters = np.stack([truth, truth, np.roll(truth, 1, axis=1)])
    >>> result = staple(raters)
    >>> result.probabilities.shape, result.sensitivities.shape, result.confusion_matrices.shape
    ((2, 16, 16), (3, 2), (3, 3, 2))
    >>> bool(np.allclose(result.probabilities.sum(axis=0), 1))
    True
    >>> result.confusion_defined.tolist(), result.degenerate
    ([True, True], False)
    """
    if num_classes is not None:
        num_classes = check_num_classes(num_classes)
    raters = as_rater_stack(raters, num_classes=num_classes)
    num_classes = infer_num_classes(raters, num_classes)
    if max_iterations is not None:
        max_iterations = check_int(max_iterations, name="max_iterations", minimum=1)
    confidence_weight = check_positive(confidence_weight, name="confidence_weight")
    method = check_choice(method, name="method", choices=STAPLE_METHODS)

    spatial = raters.shape[1:]
    per_class = array_bytes((num_classes, *spatial), np.float32)
    voxel_maps = array_bytes(spatial, label_dtype(num_classes)) + array_bytes(spatial, bool)
    # patterns: the probabilities, the label maps and the per-voxel pattern index now, the class
    # probabilities when first asked for; SimpleITK: both maps, one float64 posterior, its float32 copy and
    # the uint8 masks per class at a time.
    extra = array_bytes(spatial, np.uint32) if method == "patterns" else array_bytes(spatial, np.float64) * 3
    check_allocation(2 * per_class + voxel_maps + extra,
                     what=f"STAPLE's probabilities and labels of shape {(num_classes, *spatial)} (with temporaries)",
                     cause=f"num_classes={num_classes} with label maps of shape {spatial}",
                     advice="check num_classes (labels are 0 .. num_classes - 1) or use a smaller region")
    compute = _staple_patterns if method == "patterns" else _staple_simpleitk
    fields = compute(raters, num_classes, max_iterations, confidence_weight)
    degenerate = not fields["confusion_defined"].any()
    if degenerate:
        warnings.warn(
            "MultiLabelSTAPLE decided no voxel: every voxel is a tie between the raters, so the confusion "
            "matrices are undefined (NaN) and labels is the argmax of the one-versus-rest STAPLE "
            "probabilities; StapleResult.degenerate is True.",
            RuntimeWarning,
            stacklevel=2,
        )
    return StapleResult(degenerate=degenerate, **fields)
