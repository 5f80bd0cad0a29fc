"""Training-time "random sampling" fusion: each draw returns one randomly chosen rater's target.

References
----------
.. [1] A. Jungo et al., "On the effect of inter-observer variability for a reliable estimation of uncertainty
   of medical image segmentation", MICCAI 2018, pp. 682-690.
.. [2] A. Lemay, C. Gros, E. N. Karthik and J. Cohen-Adad, "Label fusion and training methods for reliable
   representation of inter-rater uncertainty" (the SoftSeg label-fusion study).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from .._validation import (
    as_rater_stack,
    check_choice,
    check_flag,
    check_index,
    check_num_classes,
    check_positive,
    check_probability,
    check_seed,
    check_spacing,
)
from .smoothing import label_smoothing, one_hot, svls

__all__ = ["RandomRaterSampler", "SamplerTarget"]

SamplerTarget = Literal["labels", "one_hot", "label_smoothing", "svls"]
_SAMPLER_TARGETS = ("labels", "one_hot", "label_smoothing", "svls")


class RandomRaterSampler:
    """Training-time "random sampling" label fusion: each draw returns one randomly chosen rater's target.

    Instead of fusing the raters once, every training iteration sees one rater's annotation, chosen at random
    (Jungo et al. 2018; the "random sampling" fusion of the SoftSeg label-fusion study). Over an epoch the
    model sees all raters, contradictions included.

    Parameters
    ----------
    raters : array_like of int, shape (R, Y, X) or (R, Z, Y, X), or a list of R label maps
        Label maps of ``R`` raters on the same grid.
    num_classes : int
        Number of classes ``C``.
    seed : int, default 0
        Seed of the random generator: the same seed gives the same sequence of raters.
    target : {"one_hot", "labels", "label_smoothing", "svls"}, default "one_hot"
        What :meth:`sample` returns for the chosen rater: its float32 one-hot map ``(C, *spatial)``, its
        integer labels ``(*spatial)``, its LS map (``alpha``) or its SVLS map (``sigma``, ``spacing``).
    replacement : bool, default True
        Draw raters independently (True), or go through a fresh random permutation of all raters before
        repeating any (False), so that every rater is used equally often per ``R`` draws.
    alpha : float, default 0.1
        Label-smoothing factor for ``target="label_smoothing"``.
    sigma : float, default 1.0
        SVLS Gaussian σ for ``target="svls"``.
    spacing : sequence of float, optional
        Voxel spacing for ``target="svls"``.

    Raises
    ------
    TypeError, ValueError
        If the raters, ``num_classes``, ``seed`` or an option is invalid.

    Examples
    --------
    >>> import numpy as np
    >>> raters = np.stack([np.full((4, 4), r % 2) for r in range(3)])
    >>> sampler = RandomRaterSampler(raters, num_classes=2, seed=1)
    >>> target = sampler.sample()
    >>> target.shape, target.dtype
    ((2, 4, 4), dtype('float32'))
    >>> first = RandomRaterSampler(raters, num_classes=2, seed=7)
    >>> second = RandomRaterSampler(raters, num_classes=2, seed=7)
    >>> [first.sample_index() for _ in range(5)] == [second.sample_index() for _ in range(5)]
    True
    """

    def __init__(
        self,
        raters: Any,
        *,
        num_classes: int,
        seed: int = 0,
        target: SamplerTarget = "one_hot",
        replacement: bool = True,
        alpha: float = 0.1,
        sigma: float = 1.0,
        spacing: Sequence[float] | None = None,
    ) -> None:
        self.num_classes = check_num_classes(num_classes)
        self.raters = as_rater_stack(raters, num_classes=self.num_classes)
        self.seed = check_seed(seed)
        self.target: SamplerTarget = check_choice(target, name="target", choices=_SAMPLER_TARGETS)
        self.replacement = check_flag(replacement, name="replacement")
        self.alpha = check_probability(alpha, name="alpha")
        self.sigma = check_positive(sigma, name="sigma")
        self.spacing = check_spacing(spacing, self.raters.ndim - 1)
        self.reset()

    @property
    def num_raters(self) -> int:
        """Number of raters ``R``."""
        return int(self.raters.shape[0])

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """Shape of one label map."""
        return tuple(self.raters.shape[1:])

    def reset(self, seed: int | None = None) -> None:
        """Restart the random sequence (from ``seed`` if given, else from the constructor's seed)."""
        if seed is not None:
            self.seed = check_seed(seed)
        self._rng = np.random.default_rng(self.seed)
        self._queue: list[int] = []

    def sample_index(self) -> int:
        """Draw the index of the next rater (uniform over ``0 .. R - 1``)."""
        if self.replacement:
            return int(self._rng.integers(self.num_raters))
        if not self._queue:
            self._queue = [int(i) for i in self._rng.permutation(self.num_raters)]
        return self._queue.pop(0)

    def target_for(self, rater_index: int) -> np.ndarray:
        """The training target of rater ``rater_index`` (as configured by ``target``)."""
        rater_index = check_index(rater_index, name="rater_index", size=self.num_raters)
        labels = self.raters[rater_index]
        if self.target == "labels":
            return labels.copy()
        if self.target == "one_hot":
            return one_hot(labels, num_classes=self.num_classes)
        if self.target == "label_smoothing":
            return label_smoothing(labels, num_classes=self.num_classes, alpha=self.alpha)
        return svls(labels, num_classes=self.num_classes, sigma=self.sigma, spacing=self.spacing)

    def sample(self) -> np.ndarray:
        """Draw a rater and return its target."""
        return self.target_for(self.sample_index())

    def sample_with_index(self) -> tuple[int, np.ndarray]:
        """Draw a rater and return ``(rater_index, target)``."""
        index = self.sample_index()
        return index, self.target_for(index)

    def __call__(self) -> np.ndarray:
        return self.sample()

    def __repr__(self) -> str:
        return (
            f"RandomRaterSampler(num_raters={self.num_raters}, num_classes={self.num_classes}, "
            f"spatial_shape={self.spatial_shape}, target={self.target!r}, seed={self.seed})"
        )

