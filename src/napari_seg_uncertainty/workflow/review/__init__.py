"""Reviewing the evaluated cases of a study or an evaluation, without any window.

:class:`ReviewSession` (``ReviewSession.open(folder)``) is what the *Cohort review* dock shows: the
table of each candidate's evaluated cases with Dice, ECE, NLL and segment-level entropy, ranked for
review (most uncertain first, as Mehrtash et al. propose), the case reloaded with its prediction and
SSN samples and placed for napari, and the reviewer's actions — marking cases reviewed and keeping
an SSN sample or an edited prediction as a new annotation beside the case — kept in ``review.json``.

* :mod:`.session` — :class:`ReviewSession` and :class:`ReviewCase`;
* :mod:`.table` — :class:`CaseReviewRow` and the ranking;
* :mod:`.annotations` — where an annotation goes and the write that never replaces a file;
* :mod:`.state` — ``review.json`` (:class:`ReviewMark`, :class:`KeptAnnotation`).

References
----------
.. [1] A. Mehrtash, W. M. Wells, C. M. Tempany, P. Abolmaesumi, T. Kapur, "Confidence Calibration and
   Predictive Uncertainty Estimation for Deep Medical Image Segmentation", IEEE TMI 39(12), 2020.
"""

from __future__ import annotations

from .annotations import ANNOTATION_KINDS, ANNOTATIONS_FOLDER
from .session import ReviewCase, ReviewSession
from .state import REVIEW_FILE, KeptAnnotation, ReviewMark
from .table import CaseReviewRow

__all__ = [
    "ANNOTATIONS_FOLDER",
    "ANNOTATION_KINDS",
    "REVIEW_FILE",
    "KeptAnnotation",
    "ReviewCase",
    "ReviewMark",
    "CaseReviewRow",
    "ReviewSession",
]
