"""The low-rank logit distribution an SSN checkpoint predicts for an image, whole or lazily.

* :func:`predict_ssn_distribution` runs MONAI sliding-window inference (plane by plane for a 2-D model
  on a volume) and returns a :class:`~napari_seg_uncertainty.core.ssn.LowRankLogits` holding the whole
  distribution.  It estimates its peak memory first and refuses with
  :class:`~napari_seg_uncertainty.core._memory.OutputTooLargeError` when that does not fit.
* :func:`predict_ssn_distribution_lazy` returns a
  :class:`~napari_seg_uncertainty.core.ssn.lazy.LazyLowRankLogits` for a volume of any size: a 2-D model
  runs on a plane when it is first needed (:class:`SlicePredictor`); a 3-D model is run slab by slab
  into a zarr store (:func:`~napari_seg_uncertainty.core.ssn.store.write_slabs`) read back plane by plane.

References
----------
.. [1] Monteiro M. et al., "Stochastic Segmentation Networks: Modelling Spatially Correlated
   Aleatoric Uncertainty", NeurIPS 2020.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .._memory import array_bytes, check_allocation
from .._validation import check_int
from ..ssn.lazy import DEFAULT_CACHE_PLANES, PlaneParameters, PlaneSource
from .inference import (
    TrainedModel,
    _batch_mask,
    _covariance_mask,
    _masked,
    _on_device,
    _prediction_image,
    _sliding_raw,
    load_trained_model,
)
from .normalization import normalize_image

if TYPE_CHECKING:
    from ..models import SegmentationNet
    from ..ssn import LowRankLogits
    from ..ssn.lazy import LazyLowRankLogits

__all__ = [
    "SlicePredictor",
    "estimate_ssn_memory",
    "predict_ssn_distribution",
    "predict_ssn_distribution_lazy",
]

_ADVICE = (
    "use predict_ssn_distribution_lazy (planes computed when shown, or a 3-D model's distribution kept on "
    "disk), a 2-D SSN, or crop the image"
)


def _ssn_model(checkpoint: Any, member: int, device: str | None) -> tuple[TrainedModel, SegmentationNet]:
    trained = load_trained_model(checkpoint)
    if trained.config.head != "ssn":
        raise ValueError(
            f"checkpoint was trained with head={trained.config.head!r}; an SSN distribution "
            "needs a model trained with head='ssn'."
        )
    member = check_int(member, name="member", minimum=0)
    if member >= trained.model.size:
        raise ValueError(f"member must be below the ensemble size {trained.model.size}, got {member}.")
    trained = _on_device(trained, device)
    net = trained.model.members[member]
    net.eval()
    return trained, net


def _spacing(trained: TrainedModel, ndim: int) -> tuple[float, ...] | None:
    """The checkpoint's spacing when it has one entry per axis of the prediction, else None.

    A 2-D model trained on 2-D images and run on a volume has a spacing of two entries: the caller
    (the image layer's scale) knows the volume's.
    """
    spacing = trained.spacing
    return spacing if spacing is not None and len(spacing) == ndim else None


#: Planes normalized at a time (statistics and the whole-volume network input of a 3-D model).
_NORMALIZE_PLANES = 16


def _slab_normalizer(trained: TrainedModel, image: np.ndarray) -> Any:
    """``normalize(part)``: the float32 network input of planes ``part = image[:, z0:z1]`` of a volume.

    Per-case modes (``"zscore"``, ``"percentile"``) need the whole volume's statistics; they are taken
    once, slab by slab, by the streamed prediction's normalizer
    (:class:`~napari_seg_uncertainty.core.training.normalization.SlabNormalizer`), so no normalized copy of the
    volume (and none of :func:`~.normalization.normalize_image`'s float64 temporaries, 7x the float32
    image) is made; ``"percentile"`` copies one channel for :func:`numpy.percentile`. The same normalizer
    serves the lazy and the whole computations, so their planes stay bit for bit equal.
    """
    from .normalization import SlabNormalizer as _Normalizer  # the statistics by slabs, shared with predict

    return _Normalizer(image, trained.info["normalization"], step=_NORMALIZE_PLANES)


def _normalized_volume(normalize: Any, image: np.ndarray) -> np.ndarray:
    """The whole float32 network input, normalized ``_NORMALIZE_PLANES`` planes at a time."""
    out = np.empty(image.shape, dtype=np.float32)
    for z0 in range(0, image.shape[1], _NORMALIZE_PLANES):
        out[:, z0 : z0 + _NORMALIZE_PLANES] = normalize(image[:, z0 : z0 + _NORMALIZE_PLANES])
    return out


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(tensor.detach().cpu().numpy(), dtype=np.float32)


@torch.no_grad()
def _run_ssn(
    trained: TrainedModel, net: SegmentationNet, normed: np.ndarray, mask: np.ndarray | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(mean, factor, diag)`` of a normalized ``(Cin, *S)`` input with the network's own dimension.

    One sliding-window pass on a batch of one: the same function for a plane (lazy or whole) and a
    whole 3-D image, hence the same numbers.
    """
    chunk = torch.from_numpy(np.ascontiguousarray(normed[None], dtype=np.float32)).to(trained.device)
    config = trained.config
    raw = _sliding_raw(
        net, chunk, roi_size=trained.info["patch_size"], overlap=config.sw_overlap, sw_batch_size=config.sw_batch_size
    ).float()
    parts = net.ssn_parameters(raw)
    parts = _masked(parts, _batch_mask(mask, False, parts.mean.device), eps=net.ssn_eps)
    return parts.mean[0], parts.cov_factor[0], parts.cov_diag[0]


class SlicePredictor(PlaneSource):
    """A 2-D SSN applied to plane ``z`` of a volume when :meth:`plane_parameters` asks for it.

    Holds the raw volume (no copy when it is float32), its normalization statistics (per-case modes
    need the whole volume's: computed once, slab by slab) and the model; a plane is normalized when it
    is computed.  A plane's numbers
    are bit for bit those of :func:`predict_ssn_distribution` (the same per-plane computation, with the
    same number of torch threads).

    Parameters
    ----------
    trained : TrainedModel
        A 2-D SSN model (``head="ssn"``).
    net : SegmentationNet
        The ensemble member to run.
    image : numpy.ndarray
        ``(in_channels, Z, Y, X)`` float32 image, not normalized.
    torch_threads : int, optional
        Torch intra-op threads while a plane runs (restored afterwards); None leaves torch's setting.
        One plane is many small convolutions: on a busy machine one thread can be several times faster
        than two (measured under load: 0.4 s against 4-7 s for a 512² plane of the default 2-D SSN).
        Bit for bit equality with the whole prediction needs the same thread count in both.
    """

    def __init__(
        self, trained: TrainedModel, net: SegmentationNet, image: np.ndarray, *, torch_threads: int | None = None
    ) -> None:
        self.trained, self.net = trained, net
        self.torch_threads = None if torch_threads is None else check_int(torch_threads, name="torch_threads",
                                                                          minimum=1)
        self._image = image
        self._normalize = _slab_normalizer(trained, image)
        self._mask = _covariance_mask(trained, image)
        self.num_classes = int(trained.info["num_classes"])
        self.rank = int(trained.config.ssn_rank)
        self.spatial_shape = tuple(int(s) for s in image.shape[1:])  # type: ignore[assignment]
        self.independent_planes = True
        self.class_names = tuple(trained.class_names)
        self.spacing = _spacing(trained, 3)

    def describe(self) -> str:
        return f"SlicePredictor({self.trained.checkpoint!r})"

    def normalized_plane(self, z: int) -> np.ndarray:
        """The network input of plane ``z``, ``(in_channels, Y, X)`` float32."""
        return self._normalize(self._image[:, z : z + 1])[:, 0]

    def plane_tensors(self, z: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(mean (C, Y, X), factor (K, C, Y, X), diag (C, Y, X))`` of plane ``z`` as torch tensors."""
        mask = None if self._mask is None else self._mask[z]
        if self.torch_threads is None:
            return _run_ssn(self.trained, self.net, self.normalized_plane(z), mask)
        previous = torch.get_num_threads()
        torch.set_num_threads(self.torch_threads)
        try:
            return _run_ssn(self.trained, self.net, self.normalized_plane(z), mask)
        finally:
            torch.set_num_threads(previous)

    def plane_parameters(self, z: int) -> PlaneParameters:
        mean, factor, diag = self.plane_tensors(z)
        return PlaneParameters(_numpy(mean), _numpy(factor), _numpy(diag))


def estimate_ssn_memory(trained: TrainedModel, image_shape: tuple[int, ...]) -> int:
    """Peak bytes :func:`predict_ssn_distribution` needs beyond its input for a ``(Cin, *S)`` image.

    The distribution itself (``(2 + K) * C`` float32 maps of ``S``), plus for a 3-D model the stitched
    network output, MONAI's weight map and the torch copies of the output (about three times the
    distribution together) and the image normalized as float32, or for a 2-D model on a volume one
    plane's temporaries; plus the normalization's statistics: for ``"percentile"`` a float32 copy of
    one channel (:func:`numpy.percentile`), and float64 temporaries of a few planes.
    """
    num_classes, rank = int(trained.info["num_classes"]), int(trained.config.ssn_rank)
    spatial = tuple(int(s) for s in image_shape[1:])
    maps = (2 + rank) * num_classes
    output = array_bytes((maps, *spatial), np.float32)
    stats = 4 * array_bytes((image_shape[0], _NORMALIZE_PLANES, *spatial[1:]), np.float64)
    if trained.info["normalization"].get("mode", "dataset") == "percentile":
        stats += array_bytes(spatial, np.float32)
    if len(spatial) == int(trained.info["spatial_dims"]):
        return 4 * output + array_bytes(image_shape, np.float32) + stats
    plane = array_bytes((maps + 1, *spatial[1:]), np.float32)
    return output + 6 * plane + stats


def _check_fits(trained: TrainedModel, image_shape: tuple[int, ...]) -> None:
    """Refuse (OutputTooLargeError) before any work when the whole distribution would not fit."""
    check_allocation(
        estimate_ssn_memory(trained, image_shape),
        what="predicting the whole SSN distribution and its temporaries (estimate)",
        cause=(
            f"image shape {tuple(image_shape[1:])}, rank {trained.config.ssn_rank}, "
            f"{trained.info['num_classes']} classes"
        ),
        advice=_ADVICE,
    )


def predict_ssn_distribution(
    checkpoint: str | os.PathLike | TrainedModel,
    image: Any,
    *,
    member: int = 0,
    device: str | None = None,
) -> LowRankLogits:
    """The low-rank logit distribution an SSN model predicts for an image, held whole in memory.

    Parameters
    ----------
    checkpoint : str, path-like or TrainedModel
        A model trained with ``head="ssn"``.
    image : array_like
        ``(*S)`` or ``(in_channels, *S)``.
    member : int
        Which ensemble member (0 for a single model).
    device : str, optional
        Default: the model's device.

    Returns
    -------
    LowRankLogits
        ``mean (C, *S)``, ``cov_factor (K, C, *S)`` and ``cov_diag (C, *S)`` (``exp(log_diag) + ε``)
        stitched from sliding windows, with the checkpoint's ``class_names`` and ``spacing``. A 2-D
        model on a volume predicts every plane separately, so the planes draw independent low-rank
        noise (``independent_planes=True``). A model trained with ``background_mask="covariance"``
        has its covariance zeroed where the image is 0 in every channel (factor 0, diagonal ``ε``).

    Raises
    ------
    OutputTooLargeError
        Before any work, when :func:`estimate_ssn_memory` exceeds the available memory (RAM, container
        and address-space limits): the message names the shape, the rank, the estimate, the available
        memory and what to do (:func:`predict_ssn_distribution_lazy`, a 2-D SSN, a crop).

    References
    ----------
    .. [1] Monteiro M. et al., "Stochastic Segmentation Networks: Modelling Spatially Correlated
       Aleatoric Uncertainty", NeurIPS 2020.

    Examples
    --------
    >>> import numpy as np, tempfile
    >>> from napari_seg_uncertainty.core.training import TrainConfig, train
    >>> raters = np.zeros((2, 16, 16), dtype=int); raters[:, 4:12, 4:12] = 1
    >>> cfg = TrainConfig(head="ssn", loss="ssn", ssn_rank=3, ssn_samples=4, target="random_rater",
    ...                   channels=(4, 8), strides=(2,), epochs=1, steps_per_epoch=1, batch_size=1,
    ...                   val_fraction=0.0, device="cpu", output_dir=tempfile.mkdtemp())
    >>> *_, last = train(cfg, (np.ones((16, 16)), raters))
    >>> dist = predict_ssn_distribution(last.checkpoint, np.ones((16, 16)))
    >>> dist.mean.shape, dist.cov_factor.shape, dist.cov_diag.shape, dist.independent_planes
    ((2, 16, 16), (3, 2, 16, 16), (2, 16, 16), False)
    """
    from ..ssn import LowRankLogits

    trained, net = _ssn_model(checkpoint, member, device)
    arr = _prediction_image(trained, image)
    _check_fits(trained, arr.shape)
    sliced = arr.ndim - 1 != net.spatial_dims
    if sliced:
        mean, factor, diag = _stacked_planes(SlicePredictor(trained, net, arr))
    else:
        normed = _normalized_volume(_slab_normalizer(trained, arr), arr) if arr.ndim == 4 else normalize_image(
            arr, trained.info["normalization"])
        parts = _run_ssn(trained, net, normed, _covariance_mask(trained, arr))
        del normed
        mean, factor, diag = (_numpy(t) for t in parts)
        del parts
    return LowRankLogits(
        mean=mean,
        cov_factor=factor,
        cov_diag=diag,
        class_names=list(trained.class_names),
        spacing=_spacing(trained, arr.ndim - 1),
        independent_planes=sliced,
    )


def _stacked_planes(source: SlicePredictor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every plane of a 2-D model on a volume, written into preallocated ``(C, Z, ...)`` arrays."""
    depth, height, width = source.spatial_shape
    c, k = source.num_classes, source.rank
    mean = np.empty((c, depth, height, width), dtype=np.float32)
    factor = np.empty((k, c, depth, height, width), dtype=np.float32)
    diag = np.empty((c, depth, height, width), dtype=np.float32)
    for z in range(depth):
        m, f, d = source.plane_tensors(z)
        mean[:, z], factor[:, :, z], diag[:, z] = m.cpu().numpy(), f.cpu().numpy(), d.cpu().numpy()
    return mean, factor, diag


def predict_ssn_distribution_lazy(
    checkpoint: str | os.PathLike | TrainedModel,
    image: Any,
    *,
    member: int = 0,
    cache_planes: int = DEFAULT_CACHE_PLANES,
    store: str | os.PathLike | None = None,
    device: str | None = None,
    slab_planes: int | None = None,
    progress: Any = None,
    torch_threads: int | None = None,
) -> LazyLowRankLogits:
    """The SSN distribution of a volume of any size, computed or read one plane at a time.

    Parameters
    ----------
    checkpoint : str, path-like or TrainedModel
        A model trained with ``head="ssn"``, 2-D or 3-D.
    image : array_like
        ``(Z, Y, X)`` or ``(in_channels, Z, Y, X)``.
    member : int
        Which ensemble member (0 for a single model).
    cache_planes : int
        Planes whose parameters are kept in memory (default 8; rank 10, 3 classes, 512²: 38 MiB each).
    store : str or path-like, optional
        3-D model only: the zarr directory to write the distribution to (default: a new temporary
        directory, removed when the distribution is garbage-collected).  Ignored for a 2-D model.
    device : str, optional
        Default: the model's device.
    slab_planes : int, optional
        3-D model only: about how many planes each slab of the slab-by-slab inference spans (default:
        what fits in a quarter of the available memory).  Any value gives the same numbers.
    progress : callable, optional
        3-D model only: called as ``progress(done_planes, total_planes)`` after each slab.
    torch_threads : int, optional
        2-D model only: torch threads while a plane runs (see :class:`SlicePredictor`); None leaves
        torch's setting.  The convolutions' sums depend on the thread count: a plane equals
        :func:`predict_ssn_distribution`'s bit for bit when both run with the same number of threads,
        and within float32 rounding (about 1e-5 relative) otherwise.

    Returns
    -------
    LazyLowRankLogits
        A 2-D model: planes run through the network when first asked for (``independent_planes=True``),
        each bit for bit the plane :func:`predict_ssn_distribution` computes.  A 3-D model: the whole
        distribution computed now, slab by slab along ``Z`` with sliding windows aligned on the grid of
        the whole-volume computation (each plane is stitched from the same windows, weights and order as
        in :func:`predict_ssn_distribution`: bit for bit in the tests; see
        :func:`~napari_seg_uncertainty.core.ssn.store.plan_slabs`), stored on disk (zarr) and read back
        lazily.

    References
    ----------
    .. [1] Monteiro M. et al., "Stochastic Segmentation Networks: Modelling Spatially Correlated
       Aleatoric Uncertainty", NeurIPS 2020.

    Examples
    --------
    >>> import numpy as np, tempfile
    >>> from napari_seg_uncertainty.core.training import TrainConfig, train
    >>> raters = np.zeros((2, 3, 16, 16), dtype=int); raters[:, :, 4:12, 4:12] = 1
    >>> cfg = TrainConfig(head="ssn", loss="ssn", ssn_rank=3, ssn_samples=4, target="random_rater",
    ...                   spatial_dims=2, channels=(4, 8), strides=(2,), epochs=1, steps_per_epoch=1,
    ...                   batch_size=1, val_fraction=0.0, device="cpu", output_dir=tempfile.mkdtemp())
    >>> *_, last = train(cfg, (np.ones((3, 16, 16)), raters))
    >>> lazy = predict_ssn_distribution_lazy(last.checkpoint, np.ones((3, 16, 16)))
    >>> lazy.spatial_shape, lazy.rank, lazy.independent_planes, lazy.slice_labels(1, seed=0).shape
    ((3, 16, 16), 3, True, (16, 16))
    """
    from ..ssn.lazy import LazyLowRankLogits

    trained, net = _ssn_model(checkpoint, member, device)
    arr = _prediction_image(trained, image)
    if arr.ndim != 4:
        raise ValueError(
            f"predict_ssn_distribution_lazy is for volumes (Z, Y, X); got a {arr.ndim - 1}-D image of shape "
            f"{arr.shape[1:]}: use predict_ssn_distribution."
        )
    if net.spatial_dims == 2:
        source = SlicePredictor(trained, net, arr, torch_threads=torch_threads)
        return LazyLowRankLogits(source, cache_planes=cache_planes)
    from ..ssn.store import write_slabs

    source = write_slabs(
        _slab_runner(trained, net, arr),
        spatial_shape=tuple(int(s) for s in arr.shape[1:]),
        num_classes=int(trained.info["num_classes"]),
        rank=int(trained.config.ssn_rank),
        roi_depth=int(trained.info["patch_size"][0]),
        overlap=float(trained.config.sw_overlap),
        slab_planes=slab_planes,
        store=store,
        class_names=tuple(trained.class_names),
        spacing=_spacing(trained, 3),
        progress=progress,
    )
    return LazyLowRankLogits(source, cache_planes=cache_planes)


def _slab_runner(trained: TrainedModel, net: SegmentationNet, image: np.ndarray) -> Any:
    """``run(z0, z1) -> (mean, factor, diag)`` numpy arrays of a 3-D model on planes ``z0:z1`` of ``image``.

    Per-case normalizations need the whole volume's statistics: taken once, slab by slab; each slab is
    normalized when it runs (no normalized copy of the volume).
    """
    normalize = _slab_normalizer(trained, image)
    mask = _covariance_mask(trained, image)

    def run(z0: int, z1: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        slab = _normalized_volume(normalize, image[:, z0:z1])
        parts = _run_ssn(trained, net, slab, None if mask is None else mask[z0:z1])
        return tuple(t.cpu().numpy() for t in parts)  # type: ignore[return-value]

    return run

