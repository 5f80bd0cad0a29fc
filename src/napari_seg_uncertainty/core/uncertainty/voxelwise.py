"""Voxel-wise uncertainty maps: entropy of a prediction and its split over ensemble members.

Entropy
    ``H(p) = -sum_c p_c ln p_c`` per voxel, normalized by ``ln C`` by default so that it lies in [0, 1]
    for any number of classes (the SSN paper's eq. 9 uses ``log_C``, the same thing); with a single
    class the entropy is 0. ``0 ln 0 = 0``.
Mutual information
    For a stack of M members (deep ensemble, MC-dropout passes, SSN samples), ``MI = H(mean_m p_m) -
    mean_m H(p_m)``: the part of the predictive entropy due to disagreement between members (epistemic
    uncertainty). Normalized by ``ln C`` like the entropy; small negative rounding is clipped to 0.

References
----------
Monteiro et al., "Stochastic Segmentation Networks", MICCAI 2020 (eq. 9).
Mehrtash et al., "Confidence calibration and predictive uncertainty estimation for deep medical
image segmentation", IEEE TMI 2020.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .._numeric import entropy_nats, softmax
from .._validation import as_probability_array, check_flag, describe, to_numpy_array

__all__ = ["PredictiveUncertainty", "entropy", "expected_entropy", "mutual_information", "predictive_uncertainty"]


def _as_members(member_probs: Any, *, from_logits: bool, name: str = "member_probs") -> np.ndarray:
    if from_logits:
        arr = to_numpy_array(member_probs, name=name)
        if arr.ndim not in (4, 5) or not np.issubdtype(arr.dtype, np.floating):
            raise ValueError(
                f"{name} must be floating-point logits shaped (M, C, Y, X) or (M, C, Z, Y, X), "
                f"got {describe(arr)}."
            )
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} contains NaN or infinite logits.")
        return softmax(arr, axis=1)
    return as_probability_array(member_probs, name=name, leading_axes=2)


def entropy(probs: Any, *, normalize: bool = True) -> np.ndarray:
    """Voxel-wise Shannon entropy of class probabilities.

    Parameters
    ----------
    probs : array_like
        Class probabilities ``(C, *spatial)`` summing to 1 over ``C``.
    normalize : bool
        Divide by ``ln C`` so the map lies in [0, 1] (0 for a single class); otherwise nats.

    Returns
    -------
    numpy.ndarray
        Entropy map ``(*spatial)``, float32.

    Examples
    --------
    >>> import numpy as np
    >>> probs = np.array([[[0.5, 1.0]], [[0.5, 0.0]]], dtype=np.float32)
    >>> entropy(probs).tolist()
    [[1.0, 0.0]]
    """
    normalize = check_flag(normalize, name="normalize")
    p = as_probability_array(probs, name="probs")
    h = entropy_nats(p, axis=0)
    if normalize:
        h = h / np.log(p.shape[0]) if p.shape[0] > 1 else np.zeros_like(h)
    return h.astype(np.float32)


@dataclass(frozen=True)
class PredictiveUncertainty:
    """Mean prediction of a member stack and the decomposition of its entropy (all ``(*spatial)``)."""

    mean_probs: np.ndarray
    predictive_entropy: np.ndarray
    expected_entropy: np.ndarray
    mutual_information: np.ndarray


def predictive_uncertainty(
    member_probs: Any, *, normalize: bool = True, from_logits: bool = False
) -> PredictiveUncertainty:
    """Mean probabilities, predictive entropy, expected entropy and mutual information of M members.

    Parameters
    ----------
    member_probs : array_like
        ``(M, C, *spatial)``: probabilities of M ensemble members, MC-dropout passes or SSN samples
        (or their logits with ``from_logits=True``).
    normalize : bool
        Divide the entropies and the mutual information by ``ln C``.
    from_logits : bool
        Apply a softmax over the class axis first (e.g. SSN logit samples).

    Returns
    -------
    PredictiveUncertainty
        ``mean_probs`` ``(C, *spatial)`` and the three ``(*spatial)`` float32 maps, with
        ``mutual_information = predictive_entropy - expected_entropy`` (clipped at 0).

    Examples
    --------
    >>> import numpy as np
    >>> members = np.array([[[[1.0]], [[0.0]]], [[[0.0]], [[1.0]]]], dtype=np.float32)  # sure, opposite
    >>> u = predictive_uncertainty(members)
    >>> float(u.predictive_entropy[0, 0]), float(u.expected_entropy[0, 0]), float(u.mutual_information[0, 0])
    (1.0, 0.0, 1.0)
    """
    normalize = check_flag(normalize, name="normalize")
    from_logits = check_flag(from_logits, name="from_logits")
    members = _as_members(member_probs, from_logits=from_logits)
    num_classes = members.shape[1]
    mean = members.mean(axis=0, dtype=np.float64)
    predictive = entropy_nats(mean, axis=0)
    expected = np.zeros_like(predictive)
    for member in members:
        expected += entropy_nats(member, axis=0)
    expected /= members.shape[0]
    mi = np.maximum(predictive - expected, 0.0)
    scale = np.log(num_classes) if num_classes > 1 else np.inf
    if normalize:
        predictive, expected, mi = predictive / scale, expected / scale, mi / scale
    return PredictiveUncertainty(
        mean_probs=mean.astype(np.float32),
        predictive_entropy=predictive.astype(np.float32),
        expected_entropy=expected.astype(np.float32),
        mutual_information=mi.astype(np.float32),
    )


def mutual_information(member_probs: Any, *, normalize: bool = True, from_logits: bool = False) -> np.ndarray:
    """Mutual information between the prediction and the member (ensemble / MC dropout / SSN samples).

    ``MI = H(mean_m p_m) - mean_m H(p_m)``, see :func:`predictive_uncertainty`.

    Parameters
    ----------
    member_probs : array_like
        ``(M, C, *spatial)`` member probabilities (or logits with ``from_logits=True``).
    normalize : bool
        Divide by ``ln C`` (the largest possible value), giving [0, 1].
    from_logits : bool
        Apply a softmax over the class axis first.

    Returns
    -------
    numpy.ndarray
        ``(*spatial)`` float32 map.

    Examples
    --------
    >>> import numpy as np
    >>> same = np.full((3, 2, 1, 1), 0.5, dtype=np.float32)  # members agree: no epistemic part
    >>> float(mutual_information(same)[0, 0])
    0.0
    """
    return predictive_uncertainty(
        member_probs, normalize=normalize, from_logits=from_logits
    ).mutual_information


def expected_entropy(member_probs: Any, *, normalize: bool = True, from_logits: bool = False) -> np.ndarray:
    """Mean over members of the members' entropies (the aleatoric part), ``(*spatial)`` float32.

    Parameters
    ----------
    member_probs : array_like
        ``(M, C, *spatial)`` member probabilities (or logits with ``from_logits=True``).
    normalize : bool
        Divide by ``ln C``.
    from_logits : bool
        Apply a softmax over the class axis first.

    Returns
    -------
    numpy.ndarray
        ``(*spatial)`` float32 map.

    Examples
    --------
    >>> import numpy as np
    >>> members = np.full((2, 2, 1, 1), 0.5, dtype=np.float32)
    >>> float(expected_entropy(members)[0, 0])
    1.0
    """
    return predictive_uncertainty(member_probs, normalize=normalize, from_logits=from_logits).expected_entropy


