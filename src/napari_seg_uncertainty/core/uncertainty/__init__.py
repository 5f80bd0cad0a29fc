"""Voxel, segment and case-level uncertainty, and agreement of a prediction with the raters.

Modules
-------
:mod:`.voxelwise`
    Entropy maps and the split of an ensemble's predictive entropy into expected entropy and
    mutual information.
:mod:`.segments`
    Segment-level entropy (Mehrtash et al. eq. 7) per class and per connected structure, and the
    ranking of cases for review.
:mod:`.agreement`
    Entropy of the prediction against the raters' entropy, Dice and surface Dice per class against
    every rater and a fused reference.

The raters' own entropy is :func:`napari_seg_uncertainty.core.raters.rater_entropy`; GED² and
sample diversity live in :mod:`napari_seg_uncertainty.core.ssn.metrics`.
"""

from .agreement import (
    EntropyAgreement,
    RaterAgreement,
    agreement_with_raters,
    dice_per_class,
    entropy_agreement,
    surface_dice_per_class,
)
from .segments import CaseUncertainty, StructureUncertainty, rank_cases_for_review, segment_entropy, structure_entropy
from .voxelwise import PredictiveUncertainty, entropy, expected_entropy, mutual_information, predictive_uncertainty

__all__ = [
    "CaseUncertainty",
    "EntropyAgreement",
    "PredictiveUncertainty",
    "RaterAgreement",
    "StructureUncertainty",
    "agreement_with_raters",
    "dice_per_class",
    "entropy",
    "entropy_agreement",
    "expected_entropy",
    "mutual_information",
    "predictive_uncertainty",
    "rank_cases_for_review",
    "segment_entropy",
    "structure_entropy",
    "surface_dice_per_class",
]
