"""Post-hoc temperature scaling: fit one scalar ``T`` on held-out voxels, apply ``softmax(z / T)``.

Not in the segmentation papers: it fits the ``T`` minimizing the NLL of ``softmax(logits / T)``
(Guo et al. 2017) and is applied at inference.

References
----------
.. [1] C. Guo, G. Pleiss, Y. Sun, K. Q. Weinberger, "On Calibration of Modern Neural Networks",
   ICML 2017, Sec. 4.2.
"""

from __future__ import annotations

from numbers import Real
from typing import Any

import numpy as np

from .._numeric import softmax
from .._validation import as_mask, check_int, check_positive, check_seed, describe, to_numpy_array
from ._targets import resolve_target

__all__ = ["apply_temperature", "fit_temperature"]


def _as_logits(logits: Any, *, name: str = "logits") -> np.ndarray:
    arr = to_numpy_array(logits, name=name)
    if arr.ndim not in (3, 4):
        raise ValueError(
            f"{name} must be shaped (C, Y, X) or (C, Z, Y, X) (class axis first), got {arr.ndim}-D data "
            f"of shape {arr.shape}."
        )
    if arr.size == 0 or arr.shape[0] < 2:
        raise ValueError(f"{name} must have at least 2 classes and one voxel, got shape {arr.shape}.")
    if not np.issubdtype(arr.dtype, np.floating):
        raise TypeError(f"{name} must be floating point (network outputs before the softmax), got {arr.dtype}.")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values.")
    return arr


def apply_temperature(logits: Any, *, temperature: float) -> np.ndarray:
    """Temperature-scaled softmax ``softmax(logits / T)`` over the class axis.

    Parameters
    ----------
    logits : array_like
        Network outputs before the softmax, ``(C, *spatial)``.
    temperature : float
        ``T > 0``; ``T > 1`` softens over-confident predictions, ``T = 1`` is the plain softmax.

    Returns
    -------
    numpy.ndarray
        Probabilities ``(C, *spatial)``, float32, summing to 1 over ``C``.

    References
    ----------
    Guo et al., ICML 2017, Sec. 4.2.

    Examples
    --------
    >>> import numpy as np
    >>> logits = np.array([[[2.0]], [[0.0]]])
    >>> [round(float(v), 4) for v in apply_temperature(logits, temperature=2.0)[:, 0, 0]]
    [0.7311, 0.2689]
    """
    z = _as_logits(logits)
    t = check_positive(temperature, name="temperature")
    # shift before dividing: z - max <= 0, so a tiny T gives -inf (weight 0), never inf - inf = NaN
    z = z.astype(np.float64)
    z -= z.max(axis=0, keepdims=True)
    with np.errstate(over="ignore", divide="ignore"):
        z /= t
    return softmax(z, axis=0, dtype=np.float32)


def fit_temperature(
    logits: Any,
    target: Any,
    *,
    mask: Any = None,
    bounds: tuple[float, float] = (0.05, 20.0),
    max_voxels: int = 1_000_000,
    seed: int = 0,
    target_kind: str | None = None,
) -> float:
    """Fit the temperature ``T`` minimising the NLL of ``softmax(logits / T)`` (temperature scaling).

    Post-hoc calibration beyond the segmentation papers (Guo et al. 2017): fit on a validation case, then apply
    :func:`apply_temperature` to new predictions. The NLL is convex in ``1/T``, so a safeguarded Newton
    search on ``1/T`` finds the global minimum within ``bounds``; if the optimum lies outside, the
    nearest bound is returned (e.g. a perfectly separable prediction wants ``T -> 0``).

    Parameters
    ----------
    logits : array_like
        Network outputs before the softmax, ``(C, *spatial)`` with ``C >= 2``.
    target : array_like
        Hard labels ``(*spatial)``, rater stack ``(R, *spatial)`` or soft labels ``(C, *spatial)``.
    mask : array_like of bool, optional
        Fit on these voxels only.
    bounds : tuple of float
        Smallest and largest temperature allowed.
    max_voxels : int
        Fit on at most this many voxels, drawn at random (``seed``) when there are more.
    seed : int
        Seed of the voxel subsample (same seed, same result).
    target_kind : {"labels", "raters", "one_hot", "soft"}, optional
        How to read ``target`` when an integer ``(C, *spatial)`` target is ambiguous. A rater stack
        fits the expected NLL against a rater drawn at random (the NLL against the rater mean).

    Returns
    -------
    float
        The fitted temperature.

    References
    ----------
    Guo et al., ICML 2017, Sec. 4.2.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> logits = rng.normal(scale=4.0, size=(3, 64, 64))
    >>> cumulative = np.cumsum(apply_temperature(logits, temperature=2.0), axis=0)
    >>> labels = (rng.random((64, 64))[None] < cumulative).argmax(axis=0)  # sampled at T = 2
    >>> round(fit_temperature(logits, labels), 1)
    2.0
    """
    z = _as_logits(logits)
    num_classes = z.shape[0]
    spatial = z.shape[1:]
    labels, soft, _ = resolve_target(target, num_classes=num_classes, spatial_shape=spatial, target_kind=target_kind)
    m = as_mask(mask, spatial_shape=spatial, name="mask")
    t_min, t_max = _check_bounds(bounds)
    max_voxels = check_int(max_voxels, name="max_voxels", minimum=1)
    seed = check_seed(seed)

    flat_z = z.reshape(num_classes, -1)
    index = np.flatnonzero(m.reshape(-1)) if m is not None else np.arange(flat_z.shape[1])
    if index.size > max_voxels:
        rng = np.random.default_rng(int(seed))
        index = np.sort(rng.choice(index, size=int(max_voxels), replace=False))
    zs = flat_z[:, index].astype(np.float64)
    # softmax and the NLL gradient ignore this per-voxel shift; beta * zs then stays finite
    zs -= zs.max(axis=0, keepdims=True)
    if labels is not None:
        ys = np.zeros_like(zs)
        ys[labels.reshape(-1)[index], np.arange(index.size)] = 1.0
    else:
        assert soft is not None
        ys = soft.reshape(num_classes, -1)[:, index].astype(np.float64)
    return _minimize_nll(zs, ys, t_min=t_min, t_max=t_max)


def _check_bounds(bounds: Any) -> tuple[float, float]:
    try:
        pair = tuple(bounds) if not isinstance(bounds, (str, bytes)) else ()
    except TypeError:
        pair = ()
    if len(pair) != 2 or not all(isinstance(b, Real) and not isinstance(b, bool) for b in pair):
        raise TypeError(f"bounds must be two numbers (T_min, T_max), got {describe(bounds)}.")
    t_min, t_max = (float(b) for b in pair)
    if not (0 < t_min < t_max and np.isfinite(t_max)):
        raise ValueError(f"bounds must satisfy 0 < T_min < T_max < inf, got {bounds}.")
    return t_min, t_max


def _minimize_nll(zs: np.ndarray, ys: np.ndarray, *, t_min: float, t_max: float) -> float:
    """The temperature in ``[t_min, t_max]`` minimizing the NLL of ``softmax(zs / T)`` against ``ys``.

    A safeguarded Newton search on ``beta = 1/T``: the NLL is convex in ``beta``, and the bracket
    shrinks at every step, falling back to bisection when the Newton step leaves it.
    """
    target_logit = np.mean(np.sum(ys * zs, axis=0))

    def gradient_and_curvature(beta: float) -> tuple[float, float]:
        p = softmax(beta * zs, axis=0, dtype=np.float64)
        mean_z = np.sum(p * zs, axis=0)
        var_z = np.sum(p * zs * zs, axis=0) - mean_z**2
        return float(np.mean(mean_z) - target_logit), float(np.mean(np.maximum(var_z, 0.0)))

    # bracket on beta = 1/T (capped: T_min may be subnormal); d NLL / d beta is non-decreasing
    lo, hi = 1.0 / t_max, min(1.0 / t_min, 1e300)
    g_lo, _ = gradient_and_curvature(lo)
    if g_lo >= 0:
        return t_max
    g_hi, _ = gradient_and_curvature(hi)
    if g_hi <= 0:
        return t_min
    beta = 1.0
    if not lo < beta < hi:
        beta = 0.5 * (lo + hi)
    for _ in range(100):
        g, h = gradient_and_curvature(beta)
        if g > 0:
            hi = beta
        else:
            lo = beta
        step = beta - g / h if h > 0 else np.nan
        beta_new = step if lo < step < hi else 0.5 * (lo + hi)
        if abs(beta_new - beta) <= 1e-10 * beta or hi - lo <= 1e-12 * hi:
            beta = beta_new
            break
        beta = beta_new
    return float(1.0 / beta)
