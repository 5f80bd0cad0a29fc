"""Soft labels from one or several raters: smoothing, fusion, random rater sampling.

Every soft-label function returns a float32 array of shape ``(C, *spatial)`` that sums to 1 over ``C``
(the class axis), where ``spatial`` is ``(Y, X)`` or ``(Z, Y, X)``. Raters are stacked as ``(R, *spatial)``
integer label maps (a list of equally shaped label maps works too). ``num_classes`` is keyword-only.

Modules
-------
smoothing
    One label map to soft labels: :func:`one_hot`, :func:`label_smoothing` (LS), :func:`svls` and
    :func:`svls_kernel`, and :func:`msvls` (SVLS averaged over raters).
fusion
    Several raters to one estimate: :func:`rater_mean` (mOH), :func:`majority_vote` and :func:`staple`
    (:class:`StapleResult`).
sampler
    :class:`RandomRaterSampler`: one random rater's target per training draw.
methods
    :func:`compute_soft_labels` by method name (:data:`SOFT_LABEL_METHODS`) and
    :func:`compare_soft_labels` (:class:`SoftLabelComparison`).
"""

from __future__ import annotations

from .fusion import StapleResult, majority_vote, rater_mean, staple
from .methods import (
    SINGLE_MAP_METHODS,
    SOFT_LABEL_METHODS,
    SoftLabelComparison,
    compare_soft_labels,
    compute_soft_labels,
)
from .sampler import RandomRaterSampler, SamplerTarget
from .smoothing import label_smoothing, msvls, one_hot, svls, svls_kernel

__all__ = [
    "SINGLE_MAP_METHODS",
    "SOFT_LABEL_METHODS",
    "RandomRaterSampler",
    "SamplerTarget",
    "SoftLabelComparison",
    "StapleResult",
    "compare_soft_labels",
    "compute_soft_labels",
    "label_smoothing",
    "majority_vote",
    "msvls",
    "one_hot",
    "rater_mean",
    "staple",
    "svls",
    "svls_kernel",
]
