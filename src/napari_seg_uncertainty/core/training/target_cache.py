"""Soft targets of cohort cases, computed once and cached on disk as ``.npy`` files.

A fused soft target (:func:`~napari_seg_uncertainty.core.training.data.fused_target`: mean one-hot,
(m)SVLS, STAPLE, …) costs a pass over the raters and, for STAPLE, several EM iterations. Streaming
training reads a case many times, so the target of each case is computed the first time and written
to ``<target_cache_dir>/<key>.npy``; later reads (by any process) map that file (``mmap_mode="r"``).

The key is a SHA-256 over what the target depends on: the method, the method's parameters
(``svls_sigma`` for ``"svls"``/``"msvls"``, ``label_smoothing`` for ``"label_smoothing"``),
``num_classes``, the cohort's ``target_spacing`` and the case's ``content_digest`` (the bytes of its
image and rater files). Changing any of them gives a new file; stale files are never read.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._atomic import atomic_write
from .._validation import check_num_classes, describe
from .config import TrainConfig
from .data import fused_target

__all__ = ["TargetCache", "target_cache_key"]

#: The config fields each target method depends on (besides num_classes and the data).
_METHOD_PARAMETERS = {
    "mean": (),
    "onehot": (),
    "staple": (),
    "svls": ("svls_sigma",),
    "msvls": ("svls_sigma",),
    "label_smoothing": ("label_smoothing",),
}


def target_cache_key(
    config: TrainConfig,
    *,
    num_classes: int,
    content_digest: str,
    target_spacing: Sequence[float] | None = None,
) -> str:
    """The SHA-256 hex key of one case's soft target.

    Parameters
    ----------
    config : TrainConfig
        Gives ``target`` and its parameters.
    num_classes : int
        Classes including background.
    content_digest : str
        ``Cohort.content_digest(case)``: the SHA-256 of the case's files.
    target_spacing : sequence of float, optional
        The cohort's resampling spacing (None: every case on its own grid).

    Returns
    -------
    str
        64 hex digits.

    Examples
    --------
    >>> a = target_cache_key(TrainConfig(target="svls"), num_classes=2, content_digest="ab")
    >>> b = target_cache_key(TrainConfig(target="svls", svls_sigma=2.0), num_classes=2, content_digest="ab")
    >>> c = target_cache_key(TrainConfig(target="svls", label_smoothing=0.3), num_classes=2, content_digest="ab")
    >>> a != b, a == c
    (True, True)
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {describe(config)}.")
    if config.target not in _METHOD_PARAMETERS:
        raise ValueError(
            f"target {config.target!r} has no fused soft target to cache; expected one of {sorted(_METHOD_PARAMETERS)}."
        )
    if not isinstance(content_digest, str) or not content_digest:
        raise TypeError(f"content_digest must be a non-empty string, got {describe(content_digest)}.")
    description = {
        "method": config.target,
        "parameters": {name: getattr(config, name) for name in _METHOD_PARAMETERS[config.target]},
        "num_classes": check_num_classes(num_classes, minimum=2),
        "target_spacing": None if target_spacing is None else [float(s) for s in target_spacing],
        "content_digest": content_digest,
    }
    return hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()


class TargetCache:
    """Soft targets of a cohort's cases on disk, one ``<key>.npy`` per case and setting.

    Parameters
    ----------
    folder : str or path-like
        Where the ``.npy`` files live (created when needed).
    config : TrainConfig
        The target method and its parameters.
    num_classes : int
        Classes including background.
    target_spacing : sequence of float, optional
        The cohort's resampling spacing (part of the key).

    Attributes
    ----------
    hits, misses : int
        Reads served from a cached file, and targets computed and written (this process).
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        config: TrainConfig,
        *,
        num_classes: int,
        target_spacing: Sequence[float] | None = None,
    ) -> None:
        if not isinstance(folder, (str, os.PathLike)):
            raise TypeError(f"folder must be a folder path, got {describe(folder)}.")
        self.folder = Path(folder)
        self.config = config
        self.num_classes = check_num_classes(num_classes, minimum=2)
        self.target_spacing = None if target_spacing is None else tuple(float(s) for s in target_spacing)
        self.hits = 0
        self.misses = 0

    def path(self, content_digest: str) -> Path:
        """The cache file of the case whose files have ``content_digest``."""
        key = target_cache_key(
            self.config,
            num_classes=self.num_classes,
            content_digest=content_digest,
            target_spacing=self.target_spacing,
        )
        return self.folder / f"{key}.npy"

    def get(self, content_digest: str, raters: np.ndarray, spacing: Sequence[float] | None) -> np.ndarray:
        """The float32 ``(C, *S)`` soft target: memory-mapped from the cache, computed and written if absent.

        Parameters
        ----------
        content_digest : str
            The case's ``Cohort.content_digest``.
        raters : numpy.ndarray
            ``(R, *S)`` label maps of the case (as loaded, on the training grid).
        spacing : sequence of float or None
            The case's voxel spacing (SVLS kernels are in mm).
        """
        path = self.path(content_digest)
        expected = (self.num_classes, *raters.shape[1:])
        if path.is_file():
            try:
                cached = np.load(path, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError):  # unreadable: computed again below
                cached = None
            if cached is not None and cached.shape == expected and cached.dtype == np.float32:
                self.hits += 1
                return cached
        target = fused_target(np.asarray(raters), self.num_classes, self.config, _spacing(spacing))
        with atomic_write(path, overwrite=True, suffix=".npy") as temporary:
            np.save(temporary, target)
        self.misses += 1
        return np.load(path, mmap_mode="r", allow_pickle=False)


def _spacing(spacing: Any) -> tuple[float, ...] | None:
    return None if spacing is None else tuple(float(s) for s in spacing)
