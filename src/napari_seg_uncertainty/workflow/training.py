"""Training run by a front end: a generator that never raises, advice for a failure, where a prediction lies.

The *Train* dock runs :func:`training_job` in a thread worker: every progress record of
:func:`napari_seg_uncertainty.core.training.train` is passed on, and a failure (bad settings, CUDA
out of memory, a diverging loss) comes back as a :class:`TrainingFailure` record with advice instead of
an exception. :func:`prediction_geometry` and :func:`foreground_box` say where a prediction on a crop or
on a resampled grid lies in the image. PyTorch is imported on first use only.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core.geometry import Geometry

if TYPE_CHECKING:
    from ..core.training import TrainConfig, TrainingData, TrainProgress, TrainResult

__all__ = [
    "TrainOutcome",
    "TrainingFailure",
    "advice_for",
    "foreground_box",
    "parse_patch_size",
    "predict",
    "prediction_geometry",
    "train",
    "training_job",
    "warm_up_training",
]


@dataclass
class TrainingFailure:
    """Yielded by :func:`training_job` instead of raising: what failed and what to do about it."""

    message: str
    advice: str
    exception: BaseException


@dataclass(frozen=True)
class TrainOutcome:
    """How a training run of the *Train* dock ended.

    Attributes
    ----------
    checkpoint : str or None
        The last checkpoint written (``None`` when none was).
    result : TrainResult or None
        What :func:`~napari_seg_uncertainty.core.training.train` returned (``None`` after a failure).
    failure : TrainingFailure or None
        Why the run failed, if it did.
    cancelled : bool
        Whether the run was cancelled before its last epoch.
    layers : tuple of str
        Names of the prediction layers added to the viewer (empty when none were).
    """

    checkpoint: str | None
    result: TrainResult | None
    failure: TrainingFailure | None
    cancelled: bool
    layers: tuple[str, ...]


def advice_for(exc: BaseException) -> str:
    """A sentence telling the user how to get past ``exc``.

    Examples
    --------
    >>> advice_for(MemoryError())[:20]
    'Out of memory: lower'
    """
    import torch

    oom = (MemoryError, torch.OutOfMemoryError)
    if isinstance(exc, oom) or "out of memory" in str(exc).lower():
        return (
            "Out of memory: lower the batch size or patch size, use a smaller model, fewer ensemble "
            "members or a smaller SSN rank, or train on the CPU."
        )
    if isinstance(exc, FloatingPointError):
        return "The loss diverged: lower the learning rate (or, for SSN, enable background masking)."
    if isinstance(exc, (ValueError, TypeError)):
        return "Check the settings and the selected layers."
    if isinstance(exc, (OSError, PermissionError)):
        return "Check that the output folder exists and is writable."
    return "See the log for details; the viewer is still usable."


def train(config: TrainConfig, data: TrainingData, resume: str | None = None) -> Generator[Any, Any, Any]:
    """:func:`napari_seg_uncertainty.core.training.train`, imported on first use (it imports PyTorch)."""
    from ..core.training import train as core_train

    return core_train(config, data, resume=resume)


def predict(checkpoint: str, image: Any, **kwargs: Any) -> dict[str, Any]:
    """:func:`napari_seg_uncertainty.core.training.predict`, imported on first use (it imports PyTorch)."""
    from ..core.training import predict as core_predict

    return core_predict(checkpoint, image, **kwargs)


def training_job(
    config: TrainConfig, data: TrainingData, resume: str | None = None
) -> Generator[TrainProgress | TrainingFailure, str | None, TrainResult | None]:
    """Run :func:`train` for a worker, turning any exception into a yielded :class:`TrainingFailure`.

    Thread workers swallow ``RuntimeError`` (CUDA out-of-memory is one), so the job never raises;
    values sent in (``"cancel"``) are passed on to the training generator.
    """
    gen = train(config, data, resume=resume)
    try:
        command: str | None = None
        while True:
            try:
                record = gen.send(command)
            except StopIteration as stop:
                return stop.value
            command = yield record
    except Exception as exc:  # noqa: BLE001 - every failure becomes a notification
        yield TrainingFailure(message=f"{type(exc).__name__}: {exc}", advice=advice_for(exc), exception=exc)
        return None
    finally:
        gen.close()  # a worker aborted from outside still saves its checkpoint


def warm_up_training() -> None:
    """Do the one-off imports (PyTorch, MONAI) and the first convolution passes of a training run.

    Importing ``torch._dynamo`` (pulled in by the first optimizer) and the first convolution
    forward/backward pass would otherwise happen at the start of the first run.
    """
    import monai.inferers  # noqa: F401
    import monai.losses  # noqa: F401
    import torch
    import torch._dynamo  # noqa: F401

    from ..core import soft_labels  # noqa: F401
    from ..core.models import build_model

    for dims in (2, 3):
        net = build_model(
            spatial_dims=dims,
            in_channels=1,
            num_classes=2,
            channels=(2, 4),
            strides=(2,),
            num_res_units=1,
            seed=None,
        )
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
        net(torch.zeros((1, 1, 1) + (4,) * dims)).sum().backward()
        optimizer.step()


def parse_patch_size(text: str) -> tuple[int, ...] | None:
    """A patch size typed as ``"64, 64"`` (commas, semicolons or spaces); ``None`` for a blank text.

    Examples
    --------
    >>> parse_patch_size("32; 64 64")
    (32, 64, 64)
    >>> parse_patch_size("  ") is None
    True
    """
    stripped = str(text).strip()
    if not stripped:
        return None
    try:
        return tuple(int(v) for v in stripped.replace(";", ",").replace(" ", ",").split(",") if v)
    except ValueError as exc:
        raise ValueError(f"patch size {stripped!r} is not a list of integers, e.g. '64, 64'.") from exc


def prediction_geometry(
    image_geometry: Geometry,
    image_shape: tuple[int, ...],
    prediction_shape: tuple[int, ...],
    crop_start: tuple[int, ...] | None = None,
) -> Geometry:
    """Where a prediction lies: the image's grid, moved to a crop's first voxel, rescaled if resampled.

    ``image_shape`` is the spatial shape of the region the model saw (the crop, when there is one);
    a ``prediction_shape`` that differs from it means the prediction was made on a resampled grid
    covering the same field of view, whose spacing follows from the ratio of the shapes.

    Examples
    --------
    >>> g = Geometry(spacing=(3.0, 0.8, 0.8), origin=(10.0, -40.0, -50.0))
    >>> prediction_geometry(g, (20, 64, 64), (20, 64, 64), crop_start=(2, 10, 0)).origin
    (16.0, -32.0, -50.0)
    >>> prediction_geometry(g, (20, 64, 64), (20, 32, 32)).spacing
    (3.0, 1.6, 1.6)
    """
    placed = image_geometry if crop_start is None else image_geometry.cropped(crop_start)
    spatial = tuple(int(s) for s in image_shape)[-placed.ndim:]
    predicted = tuple(int(s) for s in prediction_shape)[-placed.ndim:]
    if predicted != spatial:
        spacing = tuple(sp * n / m for sp, n, m in zip(placed.spacing, spatial, predicted))
        placed = placed.resampled(spacing)
    return placed


def foreground_box(
    raters: np.ndarray, margin: int
) -> tuple[tuple[int, ...], tuple[slice, ...]] | tuple[None, None]:
    """Start and slices of the box around every rater's foreground in ``(R, *S)``, grown by ``margin`` voxels.

    ``(None, None)`` when no rater labelled anything.

    Examples
    --------
    >>> raters = np.zeros((2, 10, 10), np.uint8)
    >>> raters[0, 4, 5] = 1
    >>> foreground_box(raters, 2)
    ((2, 3), (slice(2, 7, None), slice(3, 8, None)))
    """
    foreground = np.any(raters > 0, axis=0)
    if not foreground.any():
        return None, None
    starts, slices = [], []
    for axis in range(foreground.ndim):
        other = tuple(a for a in range(foreground.ndim) if a != axis)
        hit = np.flatnonzero(foreground.any(axis=other))
        lo, hi = max(0, int(hit[0]) - margin), min(foreground.shape[axis], int(hit[-1]) + 1 + margin)
        starts.append(lo)
        slices.append(slice(lo, hi))
    return tuple(starts), tuple(slices)
