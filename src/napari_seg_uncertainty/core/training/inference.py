"""Running a trained model: loading a checkpoint, class probabilities and the SSN distribution.

:func:`predict` averages ensemble members, Monte-Carlo dropout passes and SSN logit samples into a
:class:`Prediction` with MONAI sliding-window inference, slice by slice for a 2-D model on a volume.
:func:`~.ssn_inference.predict_ssn_distribution` (the SSN's low-rank logit distribution) lives in
:mod:`.ssn_inference` and uses the helpers here.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Generator, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from .._validation import check_flag, check_int, check_seed
from ..checkpoint import load_checkpoint
from ..models import SegmentationEnsemble, SegmentationNet, build_model, mc_dropout
from .config import TrainConfig
from .data import check_image
from .device import resolve_device
from .normalization import normalize_image  # noqa: F401 - moved there; still importable from here
from .prediction_base import (  # noqa: F401 - shared with .streamed and .ssn_inference; importable from here
    Prediction,
    TrainedModel,
    _batch_mask,
    _covariance_mask,
    _masked,
    _ssn_sample_mean,
)

__all__ = ["Prediction", "TrainedModel", "load_trained_model", "predict", "predict_steps"]

def build_network(config: TrainConfig, info: dict[str, Any], *, seed: int | None) -> SegmentationEnsemble:
    """The network(s) that ``config`` and the data ``info`` (as stored in a checkpoint) describe.

    ``seed`` seeds the weight initialization (``None``: the global torch RNG).
    """
    return build_model(
        spatial_dims=info["spatial_dims"],
        in_channels=info["in_channels"],
        num_classes=info["num_classes"],
        head=config.head,
        ensemble_size=config.ensemble_size,
        channels=config.channels,
        strides=config.strides,
        num_res_units=config.num_res_units,
        dropout=config.dropout,
        ssn_rank=config.ssn_rank,
        ssn_eps=config.ssn_eps,
        seed=seed,
    )


def load_trained_model(checkpoint: str | os.PathLike | TrainedModel, *, device: str = "cpu") -> TrainedModel:
    """Rebuild the model stored in a checkpoint (``weights_only`` loading).

    Parameters
    ----------
    checkpoint : str, path-like or TrainedModel
        A ``last.pt`` / ``best.pt`` written by :func:`train` (a ``TrainedModel`` is returned as is).
    device : str
        Device to put the model on (``"auto"`` allowed).

    Returns
    -------
    TrainedModel

    Examples
    --------
    >>> import numpy as np, tempfile
    >>> from napari_seg_uncertainty.core.training import TrainConfig, train
    >>> raters = np.zeros((2, 16, 16), dtype=int); raters[:, 4:12, 4:12] = 1
    >>> cfg = TrainConfig(target="random_rater", channels=(4, 8), strides=(2,), epochs=1, steps_per_epoch=1,
    ...                   batch_size=1, val_fraction=0.0, device="cpu", output_dir=tempfile.mkdtemp())
    >>> *_, last = train(cfg, (np.ones((16, 16)), raters))
    >>> load_trained_model(last.checkpoint).class_names
    ['background', 'class 1']
    """
    if isinstance(checkpoint, TrainedModel):
        return checkpoint
    state = load_checkpoint(checkpoint)
    config = TrainConfig.from_dict(state["config"])
    info = state["model"]
    dev = resolve_device(device)
    model = build_network(config, info, seed=None)
    model.load_state_dict(state["state_dict"])
    model.to(dev).eval()
    spacing = None if state.get("spacing") is None else tuple(float(s) for s in state["spacing"])
    return TrainedModel(
        model=model,
        config=config,
        class_names=list(state["class_names"]),
        spacing=spacing,
        info=info,
        device=dev,
        checkpoint=str(checkpoint),
    )


def _prediction_image(trained: TrainedModel, image: Any, *, float32: bool = True) -> np.ndarray:
    """The image as the model's ``(in_channels, *S)`` input (not yet normalized), checked.

    ``float32=False`` keeps the input's dtype (no copy of a numpy array): :func:`predict` converts slab by slab.
    """
    arr = check_image(image, name="image")
    spatial_dims = trained.info["spatial_dims"]
    in_channels = trained.info["in_channels"]
    if in_channels == 1 and arr.ndim in (2, 3) and arr.ndim >= spatial_dims:
        arr = arr[None]
    if arr.shape[0] != in_channels or arr.ndim - 1 not in (spatial_dims, 3):
        raise ValueError(
            f"image must be (*spatial) or ({in_channels}, *spatial) with {spatial_dims}-D (or 3-D for slice "
            f"models) spatial axes for this model, got shape {arr.shape}."
        )
    return arr.astype(np.float32, copy=False) if float32 else arr


def _on_device(trained: TrainedModel, device: str | None) -> TrainedModel:
    if device is not None:
        trained.device = resolve_device(device)
        trained.model.to(trained.device)
    return trained


def predict(
    checkpoint: str | os.PathLike | TrainedModel,
    image: Any,
    *,
    num_samples: int | None = None,
    device: str | None = None,
    seed: int = 0,
    keep_members: bool = False,
    dtype: Any = np.float32,
    out: Any = None,
    slab_planes: int | None = None,
) -> Prediction:
    """Run a trained model on an image: probabilities, argmax labels and normalized entropy.

    Sliding-window inference runs block by block along Z into arrays allocated once
    (:func:`~.streamed.predict_streamed`): the peak memory is the outputs plus one window row's buffers,
    estimated first; a prediction that cannot fit is refused with an ``OutputTooLargeError`` naming the sizes
    and what to do (``dtype="float16"``, ``out=`` a file, a crop) instead of the process being killed.
    The result equals MONAI's ``sliding_window_inference`` over the whole image: bit for bit for a 2-D model on
    a volume, within 1e-6 for a 3-D model (its blended network output is bit for bit with
    ``sw_batch_size=1``).

    Parameters
    ----------
    checkpoint : str, path-like or TrainedModel
        The trained model.
    image : array_like
        ``(*S)`` or ``(in_channels, *S)``; a 2-D model runs slice by slice on a volume. Read as it is: an
        integer CT is converted to float32 (and checked finite) slab by slab, not copied whole.
    num_samples : int, optional
        SSN: logit samples averaged (0 = softmax of the mean); MC dropout: stochastic passes
        averaged (0 = dropout off). Default ``config.predict_samples``. Ensembles always average
        their members.
    device : str, optional
        Default: the model's device.
    seed : int
        Seed of SSN / dropout sampling.
    keep_members : bool
        Also return every member's and pass's probabilities (``Prediction.member_probabilities``,
        ``M`` times the memory of ``probabilities``), for the mutual information and GED² of an
        ensemble or MC-dropout model. The averaged probabilities are the same either way.
    dtype : {"float32", "float16"}
        dtype of the probabilities, the entropy and the member probabilities (computed in float32 and
        rounded once): float16 halves their memory.
    out : None, str, path-like or array, optional
        Write the probabilities there slab by slab instead of keeping them in memory: a path ending in
        ``.npy`` (a numpy memory map; read back with ``numpy.load(path, mmap_mode="r")``) or ``.zarr``
        (zarr >= 3, uncompressed chunks of 8 planes, each written once; ``zarr.open_array(path)``), or a
        writable ``(C, *S)`` array such as a numpy memmap or zarr array.
    slab_planes : int, optional
        Slices per chunk for a 2-D model on a volume (default 8; the name
        :func:`~.ssn_inference.predict_ssn_distribution_lazy` uses too). The result does not depend on it:
        random draws are tied to window and plane positions.

    Returns
    -------
    Prediction
        ``probabilities``, ``labels``, ``entropy``, ``class_names``, ``spacing`` and, with
        ``keep_members``, ``member_probabilities``.

    References
    ----------
    .. [1] Monteiro M. et al., "Stochastic Segmentation Networks: Modelling Spatially Correlated
       Aleatoric Uncertainty", NeurIPS 2020 (the SSN sample mean, appendix eq. 9).

    Examples
    --------
    >>> import numpy as np, tempfile
    >>> from napari_seg_uncertainty.core.training import TrainConfig, train
    >>> raters = np.zeros((2, 16, 16), dtype=int); raters[:, 4:12, 4:12] = 1
    >>> cfg = TrainConfig(target="random_rater", channels=(4, 8), strides=(2,), epochs=1, steps_per_epoch=1,
    ...                   batch_size=1, val_fraction=0.0, device="cpu", output_dir=tempfile.mkdtemp())
    >>> *_, last = train(cfg, (np.ones((16, 16)), raters))
    >>> out = predict(last.checkpoint, np.ones((16, 16)))
    >>> out.probabilities.shape, out.labels.shape
    ((2, 16, 16), (16, 16))
    """
    steps = predict_steps(
        checkpoint, image, num_samples=num_samples, device=device, seed=seed, keep_members=keep_members,
        dtype=dtype, out=out, slab_planes=slab_planes,
    )
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            return stop.value


def predict_steps(
    checkpoint: str | os.PathLike | TrainedModel,
    image: Any,
    *,
    num_samples: int | None = None,
    device: str | None = None,
    seed: int = 0,
    keep_members: bool = False,
    dtype: Any = np.float32,
    out: Any = None,
    slab_planes: int | None = None,
) -> Generator[Any, None, Prediction]:
    """:func:`predict` as a generator for front ends: yields a progress record after each block of planes.

    Takes :func:`predict`'s arguments and returns (``StopIteration.value``) its :class:`Prediction`;
    each yielded :class:`~.streamed.PredictProgress` says how many planes along Z are written. Arguments
    are checked, and a prediction too large for the memory refused, before the first yield.

    References
    ----------
    .. [1] Cardoso M. J. et al., "MONAI: An open-source framework for deep learning in healthcare",
       arXiv:2211.02701, 2022 (sliding-window inference).
    """
    from .streamed import check_prediction_dtype, predict_streamed_steps

    trained = _on_device(load_trained_model(checkpoint), device)
    if num_samples is None:
        num_samples = trained.config.predict_samples
    num_samples = check_int(num_samples, name="num_samples", minimum=0)
    seed = check_seed(seed)
    keep_members = check_flag(keep_members, name="keep_members")
    dtype = check_prediction_dtype(dtype)
    if slab_planes is not None:
        slab_planes = check_int(slab_planes, name="slab_planes", minimum=1)
    arr = _prediction_image(trained, image, float32=False)  # converted to float32 slab by slab
    return (yield from predict_streamed_steps(
        trained, arr, num_samples=num_samples, seed=seed, dtype=dtype, out=out, keep_members=keep_members,
        slab_planes=slab_planes,
    ))


@torch.no_grad()
def _sliding_raw(
    net: SegmentationNet, image: torch.Tensor, *, roi_size: Sequence[int], overlap: float, sw_batch_size: int
) -> torch.Tensor:
    """Raw network output for a normalized ``(B, Cin, *S)`` batch via MONAI sliding windows."""
    from monai.inferers import sliding_window_inference

    return sliding_window_inference(
        image,
        roi_size=list(roi_size),
        sw_batch_size=sw_batch_size,
        predictor=net,
        overlap=overlap,
        mode="gaussian",
    )


def _spatial_batches(image: np.ndarray, spatial_dims: int) -> tuple[np.ndarray, bool]:
    """``(Cin, *S)`` → a network batch: ``(1, Cin, *S)``, or ``(Z, Cin, Y, X)`` for a 2-D net on a volume."""
    if image.ndim - 1 == spatial_dims:
        return image[None], False
    return np.moveaxis(image, 1, 0), True


@torch.no_grad()
def _predict_raw_chunks(
    net: SegmentationNet, image: np.ndarray, info: dict[str, Any], device: torch.device, config: TrainConfig
) -> Iterator[tuple[slice, torch.Tensor]]:
    """Yield ``(index, raw)`` pieces of the network output on a normalized ``(Cin, *S)`` image."""
    batch, sliced = _spatial_batches(image, net.spatial_dims)
    step = 8 if sliced else 1
    for start in range(0, batch.shape[0], step):
        chunk = torch.from_numpy(np.ascontiguousarray(batch[start : start + step])).to(device)
        raw = _sliding_raw(
            net,
            chunk,
            roi_size=info["patch_size"],
            overlap=config.sw_overlap,
            sw_batch_size=config.sw_batch_size,
        )
        yield slice(start, start + step), raw.float()


def _assemble(pieces: list[torch.Tensor], sliced: bool) -> torch.Tensor:
    """Join per-chunk ``(b, K, *s)`` outputs into ``(K, *S)`` (slices go back along Z)."""
    joined = torch.cat(pieces, dim=0)
    return joined.movedim(0, 1) if sliced else joined[0]


def ensemble_probabilities(
    model: SegmentationEnsemble,
    normed: np.ndarray,
    info: dict[str, Any],
    device: torch.device,
    config: TrainConfig,
    *,
    num_samples: int,
    generator: torch.Generator | None = None,
    covariance_mask: np.ndarray | None = None,
    members: list[torch.Tensor] | None = None,
) -> torch.Tensor:
    """Mean class probabilities ``(C, *S)`` over ensemble members, MC-dropout passes and SSN samples.

    ``covariance_mask`` ``(*S)`` zeroes the SSN covariance where it is False before sampling. A list
    given as ``members`` receives every member's (and pass's) ``(C, *S)`` probabilities on the CPU.
    """
    total = None
    count = 0
    for net in model.members:
        _, sliced = _spatial_batches(normed, net.spatial_dims)
        masks = _batch_mask(covariance_mask, sliced, device)
        passes = num_samples if (net.dropout > 0 and num_samples > 0 and net.head != "ssn") else 1
        context = mc_dropout(net) if passes > 1 else contextlib.nullcontext()
        with context:
            for _ in range(passes):
                pieces = []
                for index, raw in _predict_raw_chunks(net, normed, info, device, config):
                    if net.head == "ssn" and num_samples > 0:
                        mask = None if masks is None else masks[index]
                        pieces.append(_ssn_sample_mean(net, raw, num_samples, generator, mask))
                    else:
                        pieces.append(net.probabilities(raw))
                probs = _assemble(pieces, sliced)
                if members is not None:
                    members.append(probs.cpu())
                total = probs if total is None else total + probs
                count += 1
    return (total / count).cpu()
