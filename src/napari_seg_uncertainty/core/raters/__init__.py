"""Multi-rater annotations: loading, the :class:`RaterSet`, and inter-rater statistics.

:func:`load_raters` reads the label maps of several raters from files, folders in the common
public layouts (QUBIQ, MSSEG-2016, LIDC-style ``.npz``) or arrays, checks that they describe the
same grid with one label scheme, and returns a :class:`RaterSet`. The statistics
(:func:`pairwise_dice`, :func:`agreement_map`, :func:`rater_entropy`) are pure functions on
``(R, *spatial)`` integer stacks; :class:`RaterSet` exposes them as methods.

Modules: :mod:`.statistics` (the statistics), :mod:`.rater_set` (:class:`RaterSet`,
:class:`SummaryTable`), :mod:`.loading` (:func:`load_raters` and the file layouts), :mod:`.votes`
(per-voxel count vectors and vote patterns computed slab by slab, which the statistics, the rater mean,
the majority vote and STAPLE are computed from at CT scale).
"""

from .loading import load_raters, qubiq_tasks
from .rater_set import RaterSet, SummaryTable
from .statistics import agreement_map, pairwise_dice, rater_entropy

__all__ = [
    "RaterSet",
    "SummaryTable",
    "agreement_map",
    "load_raters",
    "pairwise_dice",
    "qubiq_tasks",
    "rater_entropy",
]
