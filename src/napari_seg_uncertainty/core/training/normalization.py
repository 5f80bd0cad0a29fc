"""Image normalization for training and prediction: one dict describes it, stored in every checkpoint.

Three modes (``TrainConfig.normalization``):

``"dataset"``
    Subtract the training data's per-channel mean and divide by its standard deviation; both are
    stored: ``{"mode": "dataset", "mean": [...], "std": [...]}``. Checkpoints written before modes
    existed hold ``{"mean", "std"}`` only and mean the same.
``"zscore"``
    Per case and channel, the mean and standard deviation over the body mask (voxels whose image is
    non-zero in some channel; every voxel when there are none): ``{"mode": "zscore"}``.
``"percentile"``
    Per case and channel, clip to the ``clip_percentiles`` of its voxels, then z-score over every
    voxel (CT): ``{"mode": "percentile", "clip_percentiles": [low, high]}``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from .._memory import array_bytes
from .._validation import check_choice, describe
from .config import NORMALIZATIONS

__all__ = [
    "NORMALIZATIONS",
    "NORMALIZE_PLANES",
    "RunningMoments",
    "SlabNormalizer",
    "body_mask",
    "normalization_parameters",
    "normalize_image",
    "statistics_bytes",
]

#: A standard deviation below this counts as a constant channel (divided by 1 instead).
_TINY = 1e-8
#: Planes per slab of :class:`SlabNormalizer`'s statistics.
NORMALIZE_PLANES = 16


def body_mask(image: np.ndarray) -> np.ndarray:
    """``True`` where a ``(channels, *S)`` image is non-zero in some channel; all ``True`` when none is."""
    mask = np.any(image != 0, axis=0)
    if not mask.any():
        mask = np.ones_like(mask)
    return mask


def normalization_parameters(
    mode: str,
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    clip_percentiles: Sequence[float] = (0.5, 99.5),
) -> dict[str, Any]:
    """The normalization dict stored in a checkpoint (``payload["model"]["normalization"]``).

    Parameters
    ----------
    mode : {"dataset", "zscore", "percentile"}
        See the module docstring.
    mean, std : sequence of float, optional
        Per-channel statistics of the training data; required for ``"dataset"``. A standard
        deviation at or below ``1e-8`` is stored as 1.
    clip_percentiles : (float, float)
        ``(low, high)`` percentiles of ``"percentile"``, ``0 <= low < high <= 100``.

    Returns
    -------
    dict
        ``{"mode": ...}`` and the mode's parameters, in plain Python types.

    Examples
    --------
    >>> normalization_parameters("dataset", mean=[2.0], std=[0.0])
    {'mode': 'dataset', 'mean': [2.0], 'std': [1.0]}
    >>> normalization_parameters("percentile", clip_percentiles=(1, 99))
    {'mode': 'percentile', 'clip_percentiles': [1.0, 99.0]}
    """
    mode = check_choice(mode, name="mode", choices=NORMALIZATIONS)
    if mode == "dataset":
        if mean is None or std is None:
            raise ValueError("mode='dataset' needs the per-channel mean and std of the training data, got None.")
        mean_list = [float(v) for v in np.asarray(mean, dtype=np.float64).reshape(-1)]
        std_list = [float(v) if v > _TINY else 1.0 for v in np.asarray(std, dtype=np.float64).reshape(-1)]
        if len(mean_list) != len(std_list) or not mean_list:
            raise ValueError(f"mean and std must have one entry per channel, got {len(mean_list)} and {len(std_list)}.")
        return {"mode": "dataset", "mean": mean_list, "std": std_list}
    if mode == "zscore":
        return {"mode": "zscore"}
    low, high = (float(v) for v in clip_percentiles)
    if not 0.0 <= low < high <= 100.0:
        raise ValueError(f"clip_percentiles must satisfy 0 <= low < high <= 100, got {(low, high)}.")
    return {"mode": "percentile", "clip_percentiles": [low, high]}


def normalize_image(image: np.ndarray, normalization: dict[str, Any]) -> np.ndarray:
    """Normalize a ``(channels, *S)`` float image as described by ``normalization``.

    Parameters
    ----------
    image : numpy.ndarray
        ``(channels, *S)`` image (raw intensities).
    normalization : dict
        From :func:`normalization_parameters`, or an old checkpoint's ``{"mean", "std"}``.

    Returns
    -------
    numpy.ndarray
        float32 ``(channels, *S)``.

    Examples
    --------
    >>> import numpy as np
    >>> image = np.array([[[0.0, 1.0], [2.0, 3.0]]], dtype=np.float32)
    >>> normalize_image(image, {"mean": [1.0], "std": [2.0]}).tolist()
    [[[-0.5, 0.0], [0.5, 1.0]]]
    >>> np.round(normalize_image(image, {"mode": "zscore"}).astype(float), 3).tolist()  # body: non-zero voxels
    [[[-2.449, -1.225], [0.0, 1.225]]]
    """
    if not isinstance(normalization, dict):
        raise TypeError(f"normalization must be a dict such as {{'mode': 'zscore'}}, got {describe(normalization)}.")
    if not isinstance(image, np.ndarray) or image.ndim < 2:
        raise TypeError(f"image must be a (channels, *S) numpy array, got {describe(image)}.")
    mode = normalization.get("mode", "dataset")
    if mode == "dataset":
        mean = np.asarray(normalization["mean"], dtype=np.float32)
        std = np.asarray(normalization["std"], dtype=np.float32)
        if mean.size != image.shape[0]:
            raise ValueError(
                f"image has {image.shape[0]} channel(s) but the normalization holds {mean.size}; "
                "give an image with the channels the model was trained on."
            )
        shape = (-1, *[1] * (image.ndim - 1))
        return (image - mean.reshape(shape)) / std.reshape(shape)
    if mode == "zscore":
        mask = body_mask(image)
        out = np.empty(image.shape, dtype=np.float32)
        for c in range(image.shape[0]):
            values = image[c][mask].astype(np.float64)
            out[c] = (image[c] - values.mean()) / _safe_std(values.std())
        return out
    if mode == "percentile":
        low, high = normalization.get("clip_percentiles", (0.5, 99.5))
        out = np.empty(image.shape, dtype=np.float32)
        for c in range(image.shape[0]):
            lo, hi = np.percentile(image[c], [low, high])
            clipped = np.clip(image[c].astype(np.float64), lo, hi)
            out[c] = (clipped - clipped.mean()) / _safe_std(clipped.std())
        return out
    raise ValueError(f"normalization mode must be one of {NORMALIZATIONS}, got {mode!r}.")


def _safe_std(value: float) -> float:
    return float(value) if value > _TINY else 1.0


class RunningMoments:
    """Per-channel mean and standard deviation accumulated one image at a time (float64, Chan et al.).

    Used for ``"dataset"`` normalization of a cohort: every training case is read once, the memory
    held is two numbers per channel, and the result equals the statistics of all voxels together.

    Examples
    --------
    >>> import numpy as np
    >>> moments = RunningMoments()
    >>> moments.add(np.array([[1.0, 2.0]])); moments.add(np.array([[3.0, 4.0, 5.0]]))
    >>> moments.mean.tolist(), round(float(moments.std[0]), 6)
    ([3.0], 1.414214)
    """

    def __init__(self) -> None:
        self.count = 0
        self.mean: np.ndarray | None = None
        self._m2: np.ndarray | None = None

    def add(self, image: np.ndarray) -> None:
        """Add a ``(channels, *S)`` image."""
        flat = np.asarray(image, dtype=np.float64).reshape(image.shape[0], -1)
        n = flat.shape[1]
        if n == 0:
            return
        mean = flat.mean(axis=1)
        m2 = ((flat - mean[:, None]) ** 2).sum(axis=1)
        if self.mean is None:
            self.count, self.mean, self._m2 = n, mean, m2
            return
        if mean.shape != self.mean.shape:
            raise ValueError(f"every image must have {self.mean.size} channel(s), got {mean.size}.")
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * n / total
        self._m2 = self._m2 + m2 + delta**2 * self.count * n / total
        self.count = total

    def extend(self, images: Iterable[np.ndarray]) -> RunningMoments:
        """Add every image of an iterable; returns ``self``."""
        for image in images:
            self.add(image)
        return self

    @property
    def std(self) -> np.ndarray:
        """Per-channel (population) standard deviation."""
        if self.mean is None:
            raise ValueError("no image was added.")
        return np.sqrt(self._m2 / self.count)


def statistics_bytes(mode: str, spatial: tuple[int, ...]) -> int:
    """Peak temporaries of :class:`SlabNormalizer`'s statistics on a ``(*spatial)`` image (one channel at a time).

    ``percentile``: a float32 copy of one channel (numpy's percentile); ``zscore``/``percentile``: four
    float64 slabs of :data:`NORMALIZE_PLANES` planes.
    """
    if mode not in ("zscore", "percentile"):
        return 0
    slabs = 4 * array_bytes((min(NORMALIZE_PLANES, spatial[0]), *spatial[1:]), np.float64)
    return max(slabs, array_bytes(spatial, np.float32)) if mode == "percentile" else slabs


class SlabNormalizer:
    """:func:`~.normalization.normalize_image` one slab at a time, with the image's statistics computed once.

    ``"dataset"``: the stored per-channel mean and std; ``"zscore"``: mean and std over the body mask (voxels
    non-zero in some channel, every voxel when none is); ``"percentile"``: the channel's percentiles, then the
    mean and std of the clipped channel, all in float64 as the whole-image function, by slabs.
    """

    def __init__(self, image: np.ndarray, normalization: dict[str, Any], *, step: int = NORMALIZE_PLANES) -> None:
        self.mode = normalization.get("mode", "dataset")
        self.step = step
        channels = image.shape[0]
        if self.mode == "dataset":
            mean = np.asarray(normalization["mean"], dtype=np.float32)
            std = np.asarray(normalization["std"], dtype=np.float32)
            if mean.size != channels:
                raise ValueError(
                    f"image has {channels} channel(s) but the normalization holds {mean.size}; "
                    "give an image with the channels the model was trained on."
                )
            self.shift, self.scale = mean, std
        elif self.mode == "zscore":
            any_body = any(bool(np.any(image[:, z : z + step])) for z in range(0, image.shape[1], step))
            def body(part: np.ndarray, c: int) -> np.ndarray:
                return part[c][np.any(part != 0, axis=0)] if any_body else part[c].ravel()

            self.shift, self.scale = self._moments(image, body)
        elif self.mode == "percentile":
            low, high = normalization.get("clip_percentiles", (0.5, 99.5))
            self.clip = [_channel_percentiles(image[c], (low, high)) for c in range(channels)]
            self.shift, self.scale = self._moments(
                image, lambda part, c: np.clip(part[c].astype(np.float64), *self.clip[c]).ravel()
            )
        else:
            raise ValueError(f"normalization mode must be one of {NORMALIZATIONS}, got {self.mode!r}.")

    def _slabs(self, image: np.ndarray) -> Iterator[np.ndarray]:
        """The image ``step`` planes at a time, as float32 (an integer image is converted slab by slab)."""
        for z in range(0, image.shape[1], self.step):
            yield image[:, z : z + self.step].astype(np.float32, copy=False)

    def _moments(self, image: np.ndarray, values: Callable[[np.ndarray, int], np.ndarray]) -> tuple[Any, Any]:
        """Per-channel float64 mean and std (two passes, as numpy's) of ``values(slab, channel)``."""
        means, stds = [], []
        for c in range(image.shape[0]):
            count = sum(values(p, c).size for p in self._slabs(image))
            mean = sum(float(values(p, c).astype(np.float64).sum()) for p in self._slabs(image)) / count
            square = sum(float(((values(p, c).astype(np.float64) - mean) ** 2).sum()) for p in self._slabs(image))
            means.append(mean)
            stds.append(_safe_std(math.sqrt(square / count)))
        return np.asarray(means), np.asarray(stds)

    def __call__(self, part: np.ndarray) -> np.ndarray:
        """The float32 normalized ``(channels, *s)`` slab (of the raw image, in any numeric dtype)."""
        part = part.astype(np.float32, copy=False)
        shape = (-1, *[1] * (part.ndim - 1))
        if self.mode == "dataset":
            return (part - self.shift.reshape(shape)) / self.scale.reshape(shape)
        if self.mode == "percentile":
            low = np.asarray([c[0] for c in self.clip]).reshape(shape)
            high = np.asarray([c[1] for c in self.clip]).reshape(shape)
            part = np.clip(part.astype(np.float64), low, high)
        return ((part - self.shift.reshape(shape)) / self.scale.reshape(shape)).astype(np.float32)


def _channel_percentiles(channel: np.ndarray, q: tuple[float, float]) -> tuple[Any, ...]:
    """``np.percentile`` of one channel as float32, with one channel-size copy (numpy's own, or the conversion)."""
    if channel.dtype == np.float32:
        return tuple(np.percentile(channel, q))
    return tuple(np.percentile(channel.astype(np.float32), q, overwrite_input=True))
