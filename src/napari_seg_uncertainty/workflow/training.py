"""Training run by a front end: a generator that never raises, advice for a failure, where a prediction lies.

The *Train* dock runs :func:`training_job` in a thread worker: every progress record of
:func:`napari_seg_uncertainty.core.training.train` is passed on, and a failure (bad settings, CUDA
out of memory, a diverging loss, a case file that went missing) comes back as a
:class:`TrainingFailure` record with advice instead of an exception. The data is the open layers
(:class:`~napari_seg_uncertainty.core.training.TrainingData`) or a cohort of cases on disk
(:class:`~napari_seg_uncertainty.core.cohort.Cohort`, with a case-level ``split``):
:func:`preview_cohort` loads one for the dock without raising for bad cases (its table, its problems,
the resolved split), :func:`progress_text` words a progress record (cases seen, loader throughput).
:func:`predict_within_memory` predicts in float32, or in float16 when only that fits.
:func:`prediction_geometry` and :func:`foreground_box` say where a prediction on a crop or on a
resampled grid lies in the image. PyTorch is imported on first use only.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core._validation import check_seed, describe, exception_text
from ..core.cohort.splits import SPLIT_KEYS
from ..core.geometry import Geometry

if TYPE_CHECKING:
    from ..core.cohort import Cohort, CohortProblem
    from ..core.training import TrainConfig, TrainingData, TrainProgress, TrainResult

__all__ = [
    "CohortPreview",
    "FittedPrediction",
    "TrainOutcome",
    "TrainingFailure",
    "advice_for",
    "foreground_box",
    "parse_patch_size",
    "predict",
    "predict_within_memory",
    "predict_within_memory_steps",
    "prediction_geometry",
    "preview_cohort",
    "progress_text",
    "split_counts",
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
    if isinstance(exc, FileExistsError):
        return (
            "The output folder holds an earlier run: choose another folder, resume from its last.pt, "
            "or allow overwriting it."
        )
    if isinstance(exc, FileNotFoundError):
        return "A file of the data went missing or moved: reload the cohort (its table names each case's files)."
    if isinstance(exc, (ValueError, TypeError)):
        return "Check the settings and the selected layers (or the cohort's cases and split)."
    if isinstance(exc, (OSError, PermissionError)):
        return "Check that the output folder exists and is writable."
    return "See the log for details; the viewer is still usable."


def train(
    config: TrainConfig,
    data: TrainingData | Cohort,
    resume: str | None = None,
    *,
    split: Mapping[str, Sequence[str]] | str | None = None,
) -> Generator[Any, Any, Any]:
    """:func:`napari_seg_uncertainty.core.training.train`, imported on first use (it imports PyTorch).

    ``split`` (a cohort's case-level split, see :meth:`Cohort.resolve_split`) is passed on only when
    given, so array data trains exactly as before.
    """
    from ..core.training import train as core_train

    if split is None:
        return core_train(config, data, resume=resume)
    return core_train(config, data, resume=resume, split=split)


def predict(checkpoint: str, image: Any, **kwargs: Any) -> dict[str, Any]:
    """:func:`napari_seg_uncertainty.core.training.predict`, imported on first use (it imports PyTorch)."""
    from ..core.training import predict as core_predict

    return core_predict(checkpoint, image, **kwargs)


@dataclass(frozen=True)
class FittedPrediction:
    """What :func:`predict_within_memory` returns: the prediction and, when it had to be made smaller, why.

    Attributes
    ----------
    prediction : Prediction
        :func:`~napari_seg_uncertainty.core.training.predict`'s result.
    note : str or None
        Set when the probabilities and entropy are float16 because float32 would not fit: what float32
        would have needed (the refusal's text).
    """

    prediction: Any
    note: str | None = None


def predict_within_memory(checkpoint: str, image: Any, **kwargs: Any) -> FittedPrediction:
    """:func:`predict_within_memory_steps` run to the end."""
    steps = predict_within_memory_steps(checkpoint, image, **kwargs)
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            return stop.value


def predict_within_memory_steps(checkpoint: str, image: Any, **kwargs: Any) -> Generator[Any, None, FittedPrediction]:
    """Predict in float32, or in float16 when float32 would not fit in the available memory.

    :func:`~napari_seg_uncertainty.core.training.predict` streams the sliding windows into preallocated
    outputs and estimates their size first; when float32 outputs would not fit, the same prediction is made
    in float16 (half the memory for the probabilities and entropy, rounding below 5e-4) and ``note`` says
    so. A generator for the *Train* dock's worker: it yields the core's progress records
    (:class:`~napari_seg_uncertainty.core.training.streamed.PredictProgress`) and returns a
    :class:`FittedPrediction`.

    Raises
    ------
    OutputTooLargeError
        Neither fits: the message names the float32 and float16 estimates, the memory available and what
        to do (crop with *Predict on*, or predict from the console with ``out=`` a file).

    References
    ----------
    .. [1] Cardoso M. J. et al., "MONAI: An open-source framework for deep learning in healthcare",
       arXiv:2211.02701, 2022 (sliding-window inference).
    """
    from ..core._memory import OutputTooLargeError
    from ..core.training.inference import predict_steps

    kwargs.pop("dtype", None)
    steps = predict_steps(checkpoint, image, dtype="float32", **kwargs)
    try:
        first_progress = next(steps)  # the memory check runs before the first record
    except StopIteration as stop:  # nothing to do in blocks (an empty image)
        return FittedPrediction(stop.value)
    except OutputTooLargeError as exc:
        first = str(exc)
    else:
        yield first_progress
        return FittedPrediction((yield from steps))
    try:
        steps = predict_steps(checkpoint, image, dtype="float16", **kwargs)
        first_progress = next(steps)
    except OutputTooLargeError as exc:
        raise OutputTooLargeError(
            f"the prediction does not fit in memory even in float16. float32: {first.split(';')[0]}. "
            f"float16: {exc}. In the Train dock, predict on a crop (Predict on) or on a smaller image; from the "
            "console, predict(..., out='probabilities.npy') writes the probabilities to disk as they come."
        ) from exc
    except StopIteration as stop:
        return FittedPrediction(stop.value, f"Probabilities and entropy shown in float16: {first.split(';')[0]}.")
    yield first_progress
    prediction = yield from steps
    return FittedPrediction(prediction, f"Probabilities and entropy shown in float16: {first.split(';')[0]}.")


def training_job(
    config: TrainConfig,
    data: TrainingData | Cohort,
    resume: str | None = None,
    *,
    split: Mapping[str, Sequence[str]] | str | None = None,
) -> Generator[TrainProgress | TrainingFailure, str | None, TrainResult | None]:
    """Run :func:`train` for a worker, turning any exception into a yielded :class:`TrainingFailure`.

    Thread workers swallow ``RuntimeError`` (CUDA out-of-memory is one), so the job never raises;
    values sent in (``"cancel"``) are passed on to the training generator.

    Parameters
    ----------
    config : TrainConfig
        The run's settings.
    data : TrainingData or Cohort
        The open layers' data, or a cohort (streamed from disk, cases of ``split["train"]`` only).
    resume : str, optional
        A checkpoint to continue from.
    split : dict or str, optional
        For a cohort: ``{"train": [...], "val": [...], "test": [...]}`` (e.g.
        :attr:`CohortPreview.split`), ``"manifest"``, fractions or folds (see
        :meth:`~napari_seg_uncertainty.core.cohort.Cohort.resolve_split`); None: the config's
        ``val_fraction``/``test_fraction`` with its seed.
    """
    try:
        gen = train(config, data, resume=resume, split=split)
    except Exception as exc:  # noqa: BLE001 - a bad argument is a failure record too
        yield TrainingFailure(message=f"{type(exc).__name__}: {exc}", advice=advice_for(exc), exception=exc)
        return None
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


def split_counts(split: Mapping[str, Sequence[str]] | None) -> str:
    """``"train 8, val 2, test 2"`` for a split dict (``""`` for None).

    Examples
    --------
    >>> split_counts({"train": ["a", "b"], "val": ["c"], "test": []})
    'train 2, val 1, test 0'
    """
    if split is None:
        return ""
    return ", ".join(f"{name} {len(split.get(name, ()))}" for name in SPLIT_KEYS)


def progress_text(record: Any) -> str:
    """One line for a progress record: epoch, step, loss, validation, cases seen and loader throughput.

    Reads the fields of :class:`~napari_seg_uncertainty.core.training.TrainProgress` that are set
    (``cases_seen`` and ``data_wait`` only for cohort training).

    Examples
    --------
    >>> from types import SimpleNamespace as R
    >>> progress_text(R(epoch=2, epochs=8, global_step=40, total_steps=160, loss=0.51234, val_nll=None,
    ...                 val_dice=0.8, cases_seen=24, throughput=150.0, data_wait=0.04))
    'epoch 2/8  step 40/160  loss 0.5123  val_dice 0.8000  cases seen 24  150.0 patches/s  data wait 4%'
    """
    parts = [f"epoch {record.epoch}/{record.epochs}", f"step {record.global_step}/{record.total_steps}"]
    for name in ("loss", "val_nll", "val_dice"):
        value = getattr(record, name, None)
        if value is not None:
            parts.append(f"{name} {value:.4f}")
    cases_seen = getattr(record, "cases_seen", None)
    if cases_seen is not None:
        parts.append(f"cases seen {cases_seen}")
    throughput = getattr(record, "throughput", None)
    if throughput is not None:
        parts.append(f"{throughput:.1f} patches/s")
    data_wait = getattr(record, "data_wait", None)
    if data_wait is not None:
        parts.append(f"data wait {100 * data_wait:.0f}%")
    return "  ".join(parts)


@dataclass(frozen=True)
class CohortPreview:
    """A cohort as the *Train* dock shows it: :func:`preview_cohort`'s answer, never an exception.

    Attributes
    ----------
    source : str
        What was asked for (a folder, an ``.npz`` or a manifest).
    cohort : Cohort or None
        The good cases (None when nothing could be loaded; :attr:`error` says why).
    rows : list of dict
        One row per case for a table: ``case_id``, ``shape``, ``spacing``, ``channels``, ``raters``,
        ``split`` (from the resolved split) and ``problem`` (empty for a good case); the skipped cases
        follow with their problem and no geometry.
    problems : tuple of CohortProblem
        The skipped cases (each names the case, the file and what is wrong).
    split : dict or None
        The resolved case-level split (``train``/``val``/``test`` lists of case ids), None when it
        could not be resolved.
    error : str or None
        Why there is no cohort or no split (a missing source, no good case, a bad split setting).
    """

    source: str
    cohort: Cohort | None
    rows: list[dict[str, Any]] = field(default_factory=list)
    problems: tuple[CohortProblem, ...] = ()
    split: dict[str, list[str]] | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Whether training can start: a cohort and a split."""
        return self.cohort is not None and self.split is not None and self.error is None

    @property
    def summary(self) -> str:
        """One line: cases, split sizes and skipped cases (or the error)."""
        if self.cohort is None:
            return f"No cohort: {self.error}"
        text = f"{len(self.cohort)} cases"
        if self.split is not None:
            text += f" ({split_counts(self.split)})"
        if self.problems:
            text += f"; {len(self.problems)} skipped"
        if self.error:
            text += f"; {self.error}"
        return text


def preview_cohort(
    source: str | os.PathLike,
    *,
    split: Mapping[str, Any] | str | None = None,
    seed: int = 0,
    class_names: Sequence[str] | None = None,
    task: int | None = None,
    target_spacing: Sequence[float] | None = None,
) -> CohortPreview:
    """Load a cohort for the *Train* dock: bad cases are skipped and listed, nothing raises for the data.

    Parameters
    ----------
    source : str or path-like
        A folder of case folders, a LIDC-style ``.npz`` or a manifest (``.csv``/``.yaml``/``.yml``).
    split : dict or str, optional
        The split setting (see :meth:`~napari_seg_uncertainty.core.cohort.Cohort.resolve_split`):
        None (20 % validation, 20 % test), ``"manifest"``, ``{"val": .., "test": ..}``,
        ``{"folds": 5, "fold": 0, "test": ..}`` or explicit lists.
    seed : int
        Seed of a random split.
    class_names, task, target_spacing
        Passed to :func:`~napari_seg_uncertainty.core.cohort.load_cohort`.

    Returns
    -------
    CohortPreview
        The cohort, its table rows, the skipped cases and the split; ``error`` when the source cannot
        be read, holds no good case, or the split setting does not fit it.

    Raises
    ------
    TypeError
        ``source`` is not a path, or ``seed`` not an integer (programming errors, not data problems).

    Examples
    --------
    >>> preview = preview_cohort("/no/such/folder")
    >>> preview.ok, preview.error is not None
    (False, True)
    """
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"source must be a folder, .npz or manifest path, got {describe(source)}.")
    seed = check_seed(seed)
    source = os.fspath(source)
    from ..core.cohort import load_cohort

    try:
        cohort = load_cohort(
            source, on_error="skip", class_names=class_names, task=task, target_spacing=target_spacing
        )
    except (ValueError, TypeError, OSError, KeyError) as exc:
        return CohortPreview(source=source, cohort=None, error=exception_text(exc))
    problems = tuple(cohort.problems)
    resolved: dict[str, list[str]] | None = None
    error = None
    try:
        resolved = {k: list(v) for k, v in cohort.resolve_split(split, seed=seed).items()}
    except (ValueError, TypeError, KeyError) as exc:
        error = f"the split does not fit this cohort: {exception_text(exc)}"
    where = {case_id: name for name, ids in (resolved or {}).items() for case_id in ids}
    rows = []
    for row in cohort.table():
        row = dict(row)
        row["split"] = where.get(row.get("case_id"), row.get("split") or "")
        row["problem"] = ""
        rows.append(row)
    for problem in problems:
        rows.append(
            {
                "case_id": problem.case_id,
                "shape": "",
                "spacing": "",
                "channels": "",
                "raters": "",
                "split": "skipped",
                "problem": f"{problem.file}: {problem.message}" if problem.file else problem.message,
            }
        )
    return CohortPreview(source=source, cohort=cohort, rows=rows, problems=problems, split=resolved, error=error)


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
