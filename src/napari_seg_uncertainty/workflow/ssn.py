"""SSN samples outside the viewer: a distribution from a checkpoint or a file, where it lies, metrics, export.

The *SSN samples* dock calls these in worker threads; a script can call them directly:

* :func:`checkpoint_kind` and :func:`distribution_from_checkpoint` — an SSN checkpoint (``.pt``)
  applied to an image, or a saved distribution (``.npz``), as a
  :class:`~napari_seg_uncertainty.core.ssn.LowRankLogits` with where it lies;
* :func:`place_distribution` — the distribution's grid in the world (an image layer's geometry, a
  crop, or the origin the file gives);
* :func:`sample_metrics` — GED² and diversity of samples against raters (:class:`SampleMetrics`);
* :func:`export_samples` — the current sample, all samples or the manipulated distribution, written
  atomically.

References
----------
.. [1] M. Monteiro et al., "Stochastic Segmentation Networks: Modelling Spatially Correlated
   Aleatoric Uncertainty", NeurIPS 2020.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..core._atomic import atomic_write
from ..core._validation import check_flag
from ..core.geometry import Geometry
from ..core.ssn import (
    LazyLowRankLogits,
    LowRankLogits,
    SampleLabelStack,
    generalized_energy_distance,
    load_distribution,
    sample_diversity,
    save_distribution,
)

__all__ = [
    "EXPORT_ALL",
    "EXPORT_CURRENT",
    "EXPORT_DISTRIBUTION",
    "SampleMetrics",
    "checkpoint_kind",
    "distribution_from_checkpoint",
    "distribution_from_prediction",
    "export_samples",
    "load_saved",
    "place_distribution",
    "prediction_function",
    "require_prediction_function",
    "sample_metrics",
]

EXPORT_CURRENT = "Current sample"
EXPORT_ALL = "All samples"
EXPORT_DISTRIBUTION = "Distribution with current scales (.npz)"
#: Keys of a saved distribution or a prediction that say where its grid lies.
PLACEMENT_KEYS = ("origin", "direction", "crop_start")


@dataclass(frozen=True)
class SampleMetrics:
    """GED² and diversity of SSN samples against raters.

    Attributes
    ----------
    ged2 : float
        Squared generalized energy distance between the samples and the raters (lower is better).
    sample_diversity, rater_diversity : float
        Mean pairwise ``1 - IoU`` distance among the samples, among the raters.
    num_samples, num_raters : int
        How many samples and raters were compared.

    References
    ----------
    .. [1] S. Kohl et al., "A Probabilistic U-Net for Segmentation of Ambiguous Images", NeurIPS 2018.
    """

    ged2: float
    sample_diversity: float
    rater_diversity: float
    num_samples: int
    num_raters: int


def sample_metrics(samples: np.ndarray, raters: np.ndarray, *, num_classes: int) -> SampleMetrics:
    """GED² of ``samples (N, *S)`` against ``raters (R, *S)`` and the diversity of each.

    Examples
    --------
    >>> a = np.zeros((2, 4, 4), np.uint8); a[1, :2] = 1
    >>> sample_metrics(a, a, num_classes=2).ged2
    0.0
    """
    return SampleMetrics(
        ged2=float(generalized_energy_distance(samples, raters, num_classes=num_classes)),
        sample_diversity=float(sample_diversity(samples, num_classes=num_classes)),
        rater_diversity=float(sample_diversity(raters, num_classes=num_classes)),
        num_samples=len(samples),
        num_raters=len(raters),
    )


def distribution_from_prediction(
    prediction: dict[str, Any] | LowRankLogits | LazyLowRankLogits, *, spacing: tuple[float, ...] | None = None
) -> LowRankLogits | LazyLowRankLogits:
    """Build a :class:`LowRankLogits` from what ``core.training.predict_ssn_distribution`` returns.

    Parameters
    ----------
    prediction : dict, LowRankLogits or LazyLowRankLogits
        ``mean``, ``cov_factor`` and ``cov_diag``; optional ``class_names``, ``spacing`` and
        ``independent_planes`` (True for a volume predicted plane by plane by a 2-D model). A
        ``LowRankLogits`` is returned as it is; so is a ``LazyLowRankLogits`` (from
        ``predict_ssn_distribution_lazy``), given ``spacing`` when it has none.
    spacing : tuple of float, optional
        Used when the prediction carries no spacing (e.g. the image layer's scale).

    Returns
    -------
    LowRankLogits
        The predicted distribution.

    Examples
    --------
    >>> pred = {"mean": np.zeros((2, 4, 4)), "cov_factor": np.ones((1, 2, 4, 4)),
    ...         "cov_diag": np.ones((2, 4, 4))}
    >>> distribution_from_prediction(pred).rank
    1
    """
    if isinstance(prediction, LowRankLogits):
        return prediction
    if isinstance(prediction, LazyLowRankLogits):
        if prediction.spacing is None and spacing is not None:
            return dataclasses.replace(prediction, spacing=spacing)
        return prediction
    if not isinstance(prediction, dict):
        raise TypeError(
            f"prediction must be a dict with mean, cov_factor and cov_diag, got {type(prediction)}."
        )
    missing = [key for key in ("mean", "cov_factor", "cov_diag") if key not in prediction]
    if missing:
        raise ValueError(f"prediction lacks {missing}; expected mean, cov_factor and cov_diag.")
    names = prediction.get("class_names")
    own_spacing = prediction.get("spacing")
    return LowRankLogits(
        prediction["mean"],
        prediction["cov_factor"],
        prediction["cov_diag"],
        class_names=None if names is None else [str(n) for n in names],
        spacing=own_spacing if own_spacing is not None else spacing,
        independent_planes=bool(prediction.get("independent_planes", False)),
    )


def export_samples(
    path: str | Path,
    stack: SampleLabelStack,
    *,
    what: str,
    entry: int = 0,
    overwrite: bool = False,
) -> Path:
    """Write the current sample, all samples or the manipulated distribution of ``stack`` to ``path``.

    Parameters
    ----------
    path : str or Path
        Destination. ``.npy`` / ``.npz`` are written with numpy (``.npz`` keeps the seed, sample
        indices, scales, temperature, class names and spacing with the samples); other suffixes go
        to :func:`napari_seg_uncertainty.core.io.write_image` with the spacing (all samples as a
        channel axis).
    stack : SampleLabelStack
        The samples shown in the viewer.
    what : str
        ``"Current sample"``, ``"All samples"`` or ``"Distribution with current scales (.npz)"``.
    entry : int
        Which sample is current.
    overwrite : bool
        Replace an existing file. Without it an existing file raises ``FileExistsError`` and is left
        untouched. Files are written to a temporary name and renamed into place, so an interrupted export
        never leaves a half-written file.

    Returns
    -------
    pathlib.Path
        The written file.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from napari_seg_uncertainty.core.ssn import synthetic_distribution
    >>> stack = SampleLabelStack(synthetic_distribution((16, 16), num_classes=3, rank=2), range(3), seed=0)
    >>> out = export_samples(pathlib.Path(tempfile.mkdtemp()) / "s.npy", stack, what="All samples")
    >>> np.load(out).shape
    (3, 16, 16)
    """
    target = Path(path)
    if str(path).strip() in ("", "."):
        raise ValueError("path is empty; choose a file to export to.")
    distribution = stack.distribution
    suffix = (
        "".join(target.suffixes[-2:]).lower() if target.suffix.lower() == ".gz" else target.suffix.lower()
    )
    check_flag(overwrite, name="overwrite")
    if target.exists() and not overwrite:
        raise FileExistsError(
            f"{str(target)!r} already exists; choose another name or tick 'Overwrite existing file'."
        )
    if what == EXPORT_DISTRIBUTION:
        if isinstance(distribution, LazyLowRankLogits):
            raise ValueError(
                "this distribution is computed plane by plane (a CT-size volume): it is never held whole, so it "
                "cannot be saved as one .npz; export the current sample or all samples instead."
            )
        return save_distribution(target, distribution, overwrite=overwrite)
    if what == EXPORT_CURRENT:
        labels = stack.sample(entry)
    elif what == EXPORT_ALL:
        labels = np.stack([stack.sample(i, keep_noise=i == entry) for i in range(len(stack))])
    else:
        raise ValueError(
            f"what must be one of {[EXPORT_CURRENT, EXPORT_ALL, EXPORT_DISTRIBUTION]}, got {what!r}."
        )
    if suffix == ".npy":
        with atomic_write(target, overwrite=overwrite) as temporary, open(temporary, "wb") as stream:
            np.save(stream, labels)
        return target
    if suffix == ".npz":
        indices = stack.sample_indices if what == EXPORT_ALL else (stack.sample_indices[entry],)
        _write_samples_npz(target, labels if what == EXPORT_ALL else labels[None], stack, indices,
                           overwrite=overwrite)
        return target
    from ..core.io import write_image

    written = write_image(
        target,
        labels,
        spacing=distribution.spacing,
        channel_axis=0 if what == EXPORT_ALL else None,
        overwrite=overwrite,
    )
    return Path(written)


def _write_samples_npz(
    target: Path, samples: np.ndarray, stack: SampleLabelStack, indices: Any, *, overwrite: bool
) -> None:
    """Samples ``(N, *S)`` with their seed, sample indices, scales, temperature, class names and spacing."""
    distribution = stack.distribution
    extra: dict[str, Any] = {}
    if distribution.spacing is not None:
        extra["spacing"] = np.asarray(distribution.spacing)
    with atomic_write(target, overwrite=overwrite) as temporary, open(temporary, "wb") as stream:
        np.savez(
            stream,
            samples=samples,
            seed=np.asarray(stack.seed),
            sample_indices=np.asarray(indices),
            class_scales=np.asarray(distribution.class_scales),
            temperature=np.asarray(distribution.temperature),
            class_names=np.asarray(distribution.class_names, dtype=np.str_),
            **extra,
        )


def prediction_function() -> Any:
    """``core.training.predict_ssn_distribution`` when this installation has it, else None."""
    try:
        from ..core import training
    except ImportError:  # pragma: no cover - training needs torch/monai, which are dependencies
        return None
    return getattr(training, "predict_ssn_distribution", None)


def require_prediction_function() -> Any:
    """:func:`prediction_function`, or a RuntimeError saying what to do without it."""
    predict = prediction_function()
    if predict is None:
        raise RuntimeError(
            "predicting from a checkpoint needs napari_seg_uncertainty.core.training."
            "predict_ssn_distribution, which this installation does not provide; "
            "save the distribution as .npz and load that instead."
        )
    return predict


def _not_a_checkpoint(path: Path) -> ValueError:
    return ValueError(
        f"{str(path)!r} is not a checkpoint of this plugin: expected a .pt written by Train/"
        "`napari-seg-uncertainty train` or a .npz SSN distribution."
    )


def checkpoint_kind(path: str | os.PathLike[str]) -> str:
    """``"distribution"`` for an ``.npz`` SSN distribution, ``"checkpoint"`` for a torch checkpoint.

    Only the file's header is read. Anything else (a NIfTI, a TIFF, a text file …) raises a
    ``ValueError`` that names the file and says what is expected, instead of torch's unpickling text.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> bad = pathlib.Path(tempfile.mkdtemp()) / "image.nii.gz"
    >>> _ = bad.write_bytes(b"not a checkpoint")
    >>> try:
    ...     checkpoint_kind(bad)
    ... except ValueError as exc:
    ...     print(str(exc).split(": ")[1])
    expected a .pt written by Train/`napari-seg-uncertainty train` or a .npz SSN distribution.
    """
    import zipfile

    source = Path(path)
    if not source.is_file():
        raise ValueError(f"choose an existing SSN checkpoint file (got {str(source)!r}).")
    try:
        if not zipfile.is_zipfile(source):  # torch.save and np.savez both write zip archives
            raise _not_a_checkpoint(source)
        with zipfile.ZipFile(source) as archive:
            names = archive.namelist()
    except (OSError, zipfile.BadZipFile) as exc:
        raise _not_a_checkpoint(source) from exc
    if any(name.endswith("data.pkl") for name in names):
        return "checkpoint"
    if names and all(name.endswith(".npy") for name in names):
        return "distribution"
    raise _not_a_checkpoint(source)


def load_saved(path: str | os.PathLike[str]) -> tuple[LowRankLogits, dict[str, Any]]:
    """A saved distribution and, when the file has them, where it lies (``origin``, ``direction``, ``crop_start``)."""
    distribution = load_distribution(path)
    placement: dict[str, Any] = {}
    with contextlib.suppress(Exception), np.load(path, allow_pickle=False) as archive:
        for key in PLACEMENT_KEYS:
            if key in archive.files:
                placement[key] = np.asarray(archive[key], dtype=float)
    return distribution, placement


def _load_prediction(predict: Any, path: Path, image: np.ndarray) -> Any:
    """``predict(path, image)`` with the checkpoint checked first and its loading errors made readable."""
    checkpoint_kind(path)
    try:
        return predict(str(path), image)
    except ValueError as exc:
        text = str(exc)
        if "not a napari-seg-uncertainty checkpoint" in text or "could not be read" in text:
            raise _not_a_checkpoint(path) from None
        raise


def distribution_from_checkpoint(
    path: str | os.PathLike[str], image: np.ndarray, *, scale: tuple[float, ...] = (), predict: Any = None
) -> tuple[LowRankLogits, dict[str, Any]]:
    """The SSN distribution a checkpoint predicts on ``image`` (or a saved ``.npz``), and where it lies.

    Parameters
    ----------
    path : str or os.PathLike
        An SSN checkpoint (``.pt``) or a saved distribution (``.npz``).
    image : numpy.ndarray
        The image to predict on (ignored for a saved distribution).
    scale : tuple of float
        The image's voxel spacing (its layer's scale): the distribution's spacing when the
        prediction carries none and it is not all ones.
    predict : callable, optional
        ``predict(checkpoint, image)``; default :func:`prediction_function`.

    Returns
    -------
    (LowRankLogits, dict)
        The distribution and its placement keywords for :func:`place_distribution`.
    """
    source = Path(path)
    if checkpoint_kind(source) == "distribution":
        return load_saved(source)
    predict = require_prediction_function() if predict is None else predict
    prediction = _load_prediction(predict, source, image)
    getter = prediction.get if isinstance(prediction, dict) else lambda key: getattr(prediction, key, None)
    if isinstance(prediction, LazyLowRankLogits):  # predict_ssn_distribution_lazy: no mean array to look at
        spatial_ndim = prediction.spatial_ndim
    else:
        spatial_ndim = np.ndim(getter("mean")) - 1
    spacing: tuple[float, ...] | None = (
        tuple(scale[-spatial_ndim:]) if 0 < spatial_ndim <= len(scale) else None
    )
    if spacing is not None and all(v == 1.0 for v in spacing):
        spacing = None
    placement = {key: getter(key) for key in PLACEMENT_KEYS}
    return distribution_from_prediction(prediction, spacing=spacing), placement


def spatial_shape(layer: Any, ndim: int) -> tuple[int, ...]:
    """The last ``ndim`` axes of a layer's (or array holder's) ``data`` shape."""
    return tuple(int(s) for s in np.shape(layer.data)[-ndim:])


def spatial_scale(layer: Any, ndim: int) -> tuple[float, ...] | None:
    """The last ``ndim`` entries of a layer's ``scale``; ``None`` when they are all 1."""
    scale = tuple(float(s) for s in layer.scale[-ndim:])
    return None if all(s == 1.0 for s in scale) else scale


def place_distribution(
    distribution: LowRankLogits,
    image_layer: Any = None,
    *,
    crop_start: Any = None,
    origin: Any = None,
    direction: Any = None,
) -> tuple[Geometry, str | None]:
    """Where a distribution's grid lies in the world, and a warning when that is a guess.

    Parameters
    ----------
    distribution : LowRankLogits
        The distribution (its ``spacing``, if any, is used when no image layer gives one).
    image_layer : napari layer, optional
        The image the distribution was predicted on (anything :meth:`Geometry.of` reads, with ``data``
        and ``name``).
    crop_start : sequence of int, optional
        Voxel of the image where the distribution's grid starts (a prediction on a crop).
    origin, direction : optional
        World position of the first voxel and direction cosines, when the file says so.

    Returns
    -------
    (Geometry, str or None)
        The placement and, when the grid does not match the image and nothing says where it lies,
        a warning for the user.

    Examples
    --------
    >>> from napari_seg_uncertainty.core.ssn import synthetic_distribution
    >>> dist = synthetic_distribution((4, 8, 8), num_classes=2, rank=1, spacing=(3.0, 0.8, 0.8))
    >>> place_distribution(dist, origin=(10.0, -40.0, -50.0))[0].origin
    (10.0, -40.0, -50.0)
    """
    ndim = distribution.spatial_ndim
    own_spacing = distribution.spacing or (1.0,) * ndim
    if image_layer is None:
        return Geometry.from_meta(ndim, spacing=own_spacing, origin=origin, direction=direction), None
    image = Geometry.of(image_layer, ndim=ndim)
    if crop_start is not None:
        return image.cropped([int(v) for v in np.ravel(crop_start)]), None
    if origin is not None:
        return Geometry.from_meta(ndim, spacing=image.spacing, origin=origin, direction=direction), None
    if spatial_shape(image_layer, ndim) == distribution.spatial_shape:
        return image, None
    warning = (
        f"the distribution's grid {distribution.spatial_shape} differs from image layer "
        f"{image_layer.name!r} {spatial_shape(image_layer, ndim)} and says nothing of where it lies; "
        "it is drawn from the image's first voxel."
    )
    return Geometry(spacing=distribution.spacing or image.spacing, origin=image.origin,
                    direction=image.direction), warning
