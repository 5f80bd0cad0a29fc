"""Atomic checkpoint files that load with ``torch.load(weights_only=True)``.

A checkpoint is a plain dictionary of tensors, numbers, strings, lists and dicts (nothing that
needs pickled classes), so loading it never executes code. The training loop stores:

``format``
    ``"napari-seg-uncertainty/checkpoint"``, and ``version`` (int).
``config``
    :class:`~napari_seg_uncertainty.core.training.TrainConfig` as a dict.
``model``
    ``spatial_dims``, ``in_channels``, ``num_classes``, ``patch_size``, ``normalization``
    (per-channel ``mean``/``std`` of the training image).
``class_names``, ``spacing``
    Carried from the raters so that predictions go back out with the right names and geometry.
``state_dict``, ``optimizer``, ``scaler``, ``rng``
    Weights, optimizer state, AMP scaler state and random-generator states (for exact resume).
``epoch``, ``global_step``, ``best_metric``, ``history``, ``reason``
    Progress and why the file was written (``"periodic"``, ``"best"``, ``"final"``, ``"cancelled"``, ``"error"``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ._atomic import atomic_write
from ._validation import describe

__all__ = ["CHECKPOINT_FORMAT", "CHECKPOINT_VERSION", "load_checkpoint", "save_checkpoint"]

CHECKPOINT_FORMAT = "napari-seg-uncertainty/checkpoint"
CHECKPOINT_VERSION = 1


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> str:
    """Write ``payload`` to ``path`` atomically (:func:`~napari_seg_uncertainty.core._atomic.atomic_write`).

    A reader never sees a half-written file: either the previous checkpoint or the new one.

    Parameters
    ----------
    path : str or path-like
        Destination file; its folder is created if missing.
    payload : dict
        Tensors, numbers, strings, lists and dicts only (what ``weights_only`` loading accepts).
        ``format`` and ``version`` are added.

    Returns
    -------
    str
        The path written.

    Examples
    --------
    >>> import os, tempfile, torch
    >>> p = save_checkpoint(os.path.join(tempfile.mkdtemp(), "ckpt.pt"), {"w": torch.ones(2)})
    >>> load_checkpoint(p)["w"].tolist()
    [1.0, 1.0]
    """
    if not isinstance(payload, dict):
        raise TypeError(f"payload must be a dict, got {describe(payload)}.")
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or path-like, got {describe(path)}.")
    path = Path(path)
    data = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **payload}
    with atomic_write(path, overwrite=True) as tmp_path, open(tmp_path, "wb") as handle:
        torch.save(data, handle)
        handle.flush()
        os.fsync(handle.fileno())
    return str(path)


def load_checkpoint(path: str | os.PathLike, *, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` with ``torch.load(weights_only=True)``.

    Parameters
    ----------
    path : str or path-like
        The checkpoint file.
    map_location : str or torch.device
        Where tensors are loaded (default CPU).

    Returns
    -------
    dict
        The payload, including ``format`` and ``version``.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is not a checkpoint of this package (or is corrupt).

    Examples
    --------
    >>> import os, tempfile
    >>> p = save_checkpoint(os.path.join(tempfile.mkdtemp(), "c.pt"), {"epoch": 3})
    >>> load_checkpoint(p)["epoch"]
    3
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or path-like, got {describe(path)}.")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist.")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means "not a checkpoint"
        raise ValueError(
            f"checkpoint {str(path)!r} could not be read ({exc}); is it a training checkpoint?"
        ) from exc
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(
            f"checkpoint {str(path)!r} is not a napari-seg-uncertainty checkpoint "
            f"(format {data.get('format') if isinstance(data, dict) else type(data).__name__!r})."
        )
    if int(data.get("version", 0)) > CHECKPOINT_VERSION:
        raise ValueError(
            f"checkpoint {str(path)!r} has version {data['version']}, newer than this package reads "
            f"({CHECKPOINT_VERSION}); update napari-seg-uncertainty."
        )
    return data
