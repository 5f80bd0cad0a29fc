"""Prediction at CT scale: sliding-window inference streamed block by block into preallocated outputs.

:func:`predict_streamed` (what :func:`~.inference.predict` runs) never holds the network's raw output for the
whole image, a full-size float32 temporary or the stack of ensemble members: the class probabilities are
computed a block of planes along the first spatial axis (Z) at a time and written into arrays allocated once,
in the ``dtype`` the caller chose (float32 or float16), or into a file (``out=``) as they come.

A 2-D network on a volume runs MONAI's ``sliding_window_inference`` on a few slices at a time (slices are
independent). A network over the whole grid goes one row of windows along Z at a time (:func:`_row_stream`):
the windows, MONAI's Gaussian weights, padding and summation order are those of ``sliding_window_inference``
over the whole image, but the blending buffers span one window row (the window's depth) and the planes that no
later row reaches are handed on after each row. MONAI's own ``buffer_steps`` only buffers windows on the compute
device before writing into an output of the whole image's size, which does not bound host memory.

How exactly this equals MONAI over the whole image: a 2-D net on a volume gives the same probabilities bit for
bit. For a 3-D net the blended network output is bit for bit MONAI's with ``sw_batch_size=1``; with
``sw_batch_size > 1`` a window row starts a new batch where MONAI's batching would not, and differently
composed batches round differently (within 1e-6); the probabilities, a softmax over blocks of planes, agree
within 1e-6 in both cases (tests/core/test_predict_stream_exact.py).

Randomness (Monte-Carlo dropout, SSN logit samples) is tied to where it is used, not to the order of work:
each dropout pass of a window is seeded from ``(seed, member, pass, window position)``, SSN samples of a slice
(2-D model) from ``(seed, member, slice)``, and for a 3-D SSN the rank-``K`` latent draws are shared by the
whole volume (the covariance couples every voxel) while the diagonal noise is drawn plane by plane. The
result therefore does not depend on how the work is cut.

References
----------
.. [1] Monteiro M. et al., "Stochastic Segmentation Networks: Modelling Spatially Correlated Aleatoric
   Uncertainty", NeurIPS 2020 (the SSN sample mean, appendix eq. 9).
.. [2] Gal Y., Ghahramani Z., "Dropout as a Bayesian Approximation", ICML 2016 (Monte-Carlo dropout).
.. [3] Cardoso M. J. et al., "MONAI: An open-source framework for deep learning in healthcare",
   arXiv:2211.02701, 2022 (sliding-window inference with Gaussian blending).
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .._memory import check_allocation
from .._numeric import entropy_nats, label_dtype
from ..models import SegmentationNet, mc_dropout
from .normalization import SlabNormalizer
from .prediction_base import Prediction, TrainedModel, _masked, _ssn_sample_mean
from .prediction_estimate import (
    _BLOCK_PLANES,
    _SSN_CHUNK,
    PREDICTION_DTYPES,
    PredictionEstimate,
    _in_sequence,
    _Layout,
    _layout,
    _raw_outputs,
    check_prediction_dtype,
    default_slab,
    estimate_prediction_bytes,
)
from .prediction_output import close_output, finish_output, open_output

__all__ = [
    "PREDICTION_DTYPES",
    "PredictProgress",
    "PredictionEstimate",
    "estimate_prediction_bytes",
    "predict_streamed",
    "predict_streamed_steps",
]

_DROPOUT, _SSN_SLICE, _SSN_LATENT, _SSN_PLANE = 1, 2, 3, 4  # domains of the derived seeds
_Block = tuple[int, int, torch.Tensor]  # output planes o0:o1 and their blended raw network output


def _derived_seed(*values: int) -> int:
    """A 63-bit seed determined by ``values`` (non-negative integers) alone."""
    state = np.random.SeedSequence([int(v) for v in values]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def _window_starts(length: int, roi: int, overlap: float) -> list[int]:
    """Window starts along one axis, as MONAI's ``_get_scan_interval`` and ``dense_patch_slices`` place them."""
    from monai.data.utils import dense_patch_slices
    from monai.inferers.utils import _get_scan_interval

    size = max(length, roi)
    interval = _get_scan_interval((size,), (roi,), 1, (overlap,))
    return [s[0].start for s in dense_patch_slices((size,), (roi,), interval)]


def _seeded_predictor(net: SegmentationNet, key: tuple[int, ...], offset: int, sliced: bool) -> Callable[..., Any]:
    """A MONAI ``with_coord`` predictor that seeds dropout per window from its position in the whole image."""

    def run(windows: torch.Tensor, coords: Sequence[Sequence[slice]]) -> torch.Tensor:
        outputs = []
        with mc_dropout(net):
            for i, coord in enumerate(coords):
                starts = [int(s.start) for s in coord[2:]]
                position = (offset + int(coord[0].start), *starts) if sliced else (offset + starts[0], *starts[1:])
                torch.manual_seed(_derived_seed(*key, *position))
                outputs.append(net(windows[i : i + 1]))
        return torch.cat(outputs)

    return run


@torch.no_grad()
def _slice_stream(run: _Run, net: SegmentationNet, key: tuple[int, ...] | None, slab: int) -> Iterator[_Block]:
    """A 2-D net on a volume: MONAI's sliding windows on ``slab`` slices at a time, ``(L, K, Y, X)`` each."""
    from monai.inferers import sliding_window_inference

    layout, device = run.layout, run.trained.device
    for o0 in range(0, layout.spatial[0], slab):
        o1 = min(o0 + slab, layout.spatial[0])
        batch = np.moveaxis(run.normalize(run.image[:, o0:o1]), 1, 0)
        inputs = torch.from_numpy(np.ascontiguousarray(batch)).to(device)
        extra: dict[str, Any] = {"predictor": net}
        if key is not None:
            extra = {"predictor": _seeded_predictor(net, key, o0, True), "with_coord": True}
        raw = sliding_window_inference(
            inputs, roi_size=list(layout.roi), sw_batch_size=layout.sw_batch_size, overlap=layout.overlap,
            mode="gaussian", **extra,
        )
        yield o0, o1, raw.float()


def _padded_row(run: _Run, start: int, pads: list[tuple[int, int]]) -> torch.Tensor:
    """The normalized input planes ``start : start + roi`` of the padded volume, ``(1, Cin, roi, *rest)``."""
    roi, before = run.layout.roi[0], pads[0][0]
    lo, hi = max(start - before, 0), min(start + roi - before, run.layout.spatial[0])
    row = torch.from_numpy(run.normalize(run.image[:, lo:hi]))[None]
    widths = [w for pair in reversed([(lo - (start - before), start + roi - before - hi), *pads[1:]]) for w in pair]
    return torch.nn.functional.pad(row, widths) if any(widths) else row


def _window_reader(run: _Run, start: int, pads: list[tuple[int, int]]) -> Callable[[Sequence[slice]], torch.Tensor]:
    """``(1, Cin, *roi)`` normalized windows of the row of windows at ``start``, by their in-row slices.

    Without padding each window is read from the image and normalized on its own (no row-size copy).
    """
    if any(a or b for a, b in pads):
        row = _padded_row(run, start, pads)
        return lambda w: row[(slice(None), slice(None), slice(None), *w)]
    planes = slice(start, start + run.layout.roi[0])
    return lambda w: torch.from_numpy(run.normalize(run.image[(slice(None), planes, *w)]))[None]


@torch.no_grad()
def _row_stream(run: _Run, net: SegmentationNet, key: tuple[int, ...] | None) -> Iterator[_Block]:
    """A net over the whole spatial grid, one row of windows along Z at a time, ``(1, K, L, *rest)`` blocks.

    The windows, their Gaussian weights (MONAI's ``compute_importance_map``), the zero padding of a grid
    smaller than the window and the order in which window outputs are summed are those of MONAI's
    ``sliding_window_inference`` over the whole image, so every voxel gets the same value (bit for bit with
    ``sw_batch_size=1``; within 1e-6 otherwise, see the module docstring). Written here
    because MONAI's function blends into an output of the whole image's size; here the blending buffers
    span one window row, and the planes no later row reaches are handed on as soon as a row is done.
    """
    from monai.data.utils import compute_importance_map, dense_patch_slices
    from monai.inferers.utils import _get_scan_interval

    layout, device = run.layout, run.trained.device
    roi, spatial = layout.roi, layout.spatial
    pads = [(d // 2, d - d // 2) for d in (max(r - s, 0) for r, s in zip(roi, spatial))]
    padded = [s + a + b for s, (a, b) in zip(spatial, pads)]
    starts = _window_starts(padded[0], roi[0], layout.overlap)
    interval = _get_scan_interval(padded[1:], roi[1:], len(roi) - 1, (layout.overlap,) * (len(roi) - 1))
    windows = dense_patch_slices(padded[1:], roi[1:], interval)
    weight = compute_importance_map(tuple(roi), mode="gaussian", sigma_scale=0.125, device=device)[None, None]
    crop = tuple(slice(a, a + s) for (a, _), s in zip(pads[1:], spatial[1:]))
    total = torch.zeros((1, _raw_outputs(run.trained), roi[0], *padded[1:]), device=device)
    count = torch.zeros((1, 1, roi[0], *padded[1:]), device=device)
    for r, start in enumerate(starts):
        take = _window_reader(run, start, pads)
        for first in range(0, len(windows), layout.sw_batch_size):
            chosen = windows[first : first + layout.sw_batch_size]
            places = [(slice(None), slice(None), slice(None), *w) for w in chosen]
            batch = torch.cat([take(w) for w in chosen]).to(device)
            if key is None:
                output = net(batch).float()
            else:
                coords = [[slice(0, 1), slice(None), slice(start, start + roi[0]), *place[3:]] for place in places]
                output = _seeded_predictor(net, key, 0, False)(batch, coords).float()
            for i, place in enumerate(places):
                total[place] += output[i : i + 1] * weight
                count[place] += weight
        done = (starts[r + 1] if r + 1 < len(starts) else padded[0]) - start  # planes no later row reaches
        o0, o1 = max(start - pads[0][0], 0), min(start + done - pads[0][0], spatial[0])
        for p0 in range(o0, o1, _BLOCK_PLANES):  # a few planes at a time: small temporaries downstream
            p1 = min(p0 + _BLOCK_PLANES, o1)
            first_plane = p0 - (start - pads[0][0])
            part = (slice(None), slice(None), slice(first_plane, first_plane + p1 - p0), *crop)
            yield p0, p1, total[part] / count[part]
        keep = roi[0] - done
        total[:, :, :keep] = total[:, :, done:].clone()
        count[:, :, :keep] = count[:, :, done:].clone()
        total[:, :, keep:] = 0
        count[:, :, keep:] = 0


def _ssn_volume_mean(
    net: SegmentationNet, raw: torch.Tensor, mask: torch.Tensor | None, *,
    latent: torch.Tensor, key: tuple[int, ...], z0: int,
) -> torch.Tensor:
    """Mean softmax of SSN samples on a slab ``(1, K, L, ...)`` of a 3-D SSN's output starting at plane ``z0``.

    ``η = μ + P z + √D ⊙ e`` [1]_: ``z`` (``latent``, ``(num_samples, rank)``) is shared by the whole volume,
    ``e`` is drawn plane by plane from a seed of ``(key, sample chunk, plane)``, so slabs of any size give the
    same samples.
    """
    parts = _masked(net.ssn_parameters(raw), mask, eps=net.ssn_eps)
    mean, factor, scale = parts.mean[0], parts.cov_factor[0], parts.cov_diag[0].sqrt()
    total = torch.zeros_like(mean)
    planes = range(z0, z0 + mean.shape[1])
    for first in range(0, latent.shape[0], _SSN_CHUNK):
        z = latent[first : first + _SSN_CHUNK]
        noise = torch.stack(
            [
                torch.randn((z.shape[0], *mean.shape[:1], *mean.shape[2:]), dtype=mean.dtype, device=mean.device,
                            generator=torch.Generator(device=mean.device).manual_seed(_derived_seed(*key, first, p)))
                for p in planes
            ],
            dim=2,
        )
        samples = mean + torch.einsum("kc...,mk->mc...", factor, z) + scale * noise
        total += torch.softmax(samples, dim=1).sum(0)
    return total / latent.shape[0]


@dataclass
class _Run:
    """One prediction's fixed inputs: the model, the image and how randomness is derived."""

    trained: TrainedModel
    image: np.ndarray  # (Cin, *S) raw, in the caller's dtype (normalized to float32 slab by slab)
    normalize: SlabNormalizer
    layout: _Layout
    num_samples: int
    seed: int

    def passes(self, net: SegmentationNet) -> int:
        return self.num_samples if (net.dropout > 0 and self.num_samples > 0 and net.head != "ssn") else 1

    def mask(self, o0: int, o1: int) -> torch.Tensor | None:
        """The SSN covariance mask of output planes ``o0:o1`` in the network's batch layout, or None."""
        from .prediction_base import _batch_mask, _covariance_mask

        mask = _covariance_mask(self.trained, self.image[:, o0:o1])
        return _batch_mask(mask, self.layout.sliced, self.trained.device)


def _member_probabilities(run: _Run, net: SegmentationNet, index: int, raw: torch.Tensor, o0: int) -> torch.Tensor:
    """``(C, L, ...)`` probabilities of one member's (cropped) raw slab output; SSN: the mean over samples."""
    sliced, device = run.layout.sliced, run.trained.device
    if net.head != "ssn" or run.num_samples == 0:
        probs = net.probabilities(raw)
        return probs.movedim(0, 1) if sliced else probs[0]
    mask = run.mask(o0, o0 + (raw.shape[0] if sliced else raw.shape[2]))
    if sliced:  # one 2-D distribution per slice, its samples seeded by the slice
        means = []
        for b in range(raw.shape[0]):
            generator = torch.Generator(device=device).manual_seed(_derived_seed(run.seed, _SSN_SLICE, index, o0 + b))
            part = None if mask is None else mask[b : b + 1]
            means.append(_ssn_sample_mean(net, raw[b : b + 1], run.num_samples, generator, part))
        return torch.cat(means).movedim(0, 1)
    generator = torch.Generator(device=device).manual_seed(_derived_seed(run.seed, _SSN_LATENT, index))
    latent = torch.randn((run.num_samples, net.ssn_rank), generator=generator, device=device)
    return _ssn_volume_mean(net, raw, mask, latent=latent, key=(run.seed, _SSN_PLANE, index), z0=o0)


def _streams(run: _Run, slab: int) -> list[tuple[int, SegmentationNet, Iterator[_Block]]]:
    """One raw-output stream per ensemble member and Monte-Carlo dropout pass, member-major."""
    streams = []
    for index, net in enumerate(run.trained.model.members):
        passes = run.passes(net)
        for p in range(passes):
            key = (run.seed, _DROPOUT, index, p) if passes > 1 else None
            stream = _slice_stream(run, net, key, slab) if run.layout.sliced else _row_stream(run, net, key)
            streams.append((index, net, stream))
    return streams


def _write_block(outputs: tuple[Any, np.ndarray, np.ndarray], mean: np.ndarray, o0: int, dtype: np.dtype) -> None:
    """Probabilities, normalized entropy and labels of planes ``o0 : o0 + L`` from their float32 mean."""
    probabilities, entropy, labels = outputs
    log_classes = np.log(mean.shape[0])
    for start in range(0, mean.shape[1], 8):  # a few planes at a time: small temporaries
        part = mean[:, start : start + 8]
        planes = slice(o0 + start, o0 + start + part.shape[1])
        probabilities[:, planes] = part.astype(dtype, copy=False)
        entropy[planes] = (entropy_nats(part, axis=0) / log_classes).astype(dtype, copy=False)
        labels[planes] = part.argmax(axis=0)


def _run_streams(run: _Run, outputs: tuple[Any, np.ndarray, np.ndarray], members: Any, dtype: np.dtype,
                 slab: int, in_place: bool) -> Iterator[tuple[int, int]]:
    """Blend every stream block by block, average members and passes in float32, write each block.

    Yields ``(planes done, planes)`` after each block.
    """
    streams = _streams(run, slab)
    if _in_sequence(run.trained, run.layout, len(streams), in_place):
        yield from _run_in_sequence(run, streams, outputs, members, dtype, in_place)
        return
    for blocks in zip(*(stream for _, _, stream in streams)):
        o0, o1 = blocks[0][:2]
        total: torch.Tensor | None = None
        for count, ((index, net, _), (_, _, raw)) in enumerate(zip(streams, blocks)):
            probs = _member_probabilities(run, net, index, raw, o0)
            if members is not None:
                members[count, :, o0:o1] = probs.cpu().numpy().astype(dtype, copy=False)
            total = probs if total is None else total + probs
        assert total is not None
        mean = total if len(streams) == 1 else total / len(streams)
        del blocks, total
        _write_block(outputs, mean.cpu().numpy(), o0, dtype)
        yield o1, run.layout.spatial[0]


def _run_in_sequence(run: _Run, streams: list[tuple[int, SegmentationNet, Iterator[_Block]]],
                     outputs: tuple[Any, np.ndarray, np.ndarray], members: Any, dtype: np.dtype,
                     in_place: bool) -> Iterator[tuple[int, int]]:
    """Streams one after another, their probabilities summed in a float32 volume (the probabilities, in place).

    The sum is made in the order of the side-by-side path (member-major, float32), so the result is the same
    bit for bit; only one stream's row buffers exist at a time.
    """
    depth = run.layout.spatial[0]
    shape = (int(run.trained.info["num_classes"]), *run.layout.spatial)
    total = outputs[0] if in_place else np.empty(shape, dtype=np.float32)
    for count, (index, net, stream) in enumerate(streams):
        for o0, o1, raw in stream:
            probs = _member_probabilities(run, net, index, raw, o0).cpu().numpy()
            if members is not None:
                members[count, :, o0:o1] = probs.astype(dtype, copy=False)
            if count == 0:
                total[:, o0:o1] = probs
            else:
                total[:, o0:o1] += probs
            yield count * depth + o1, len(streams) * depth
    for o0 in range(0, depth, _BLOCK_PLANES * 2):
        _write_block(outputs, total[:, o0 : o0 + _BLOCK_PLANES * 2] / len(streams), o0, dtype)


def _check_memory(
    trained: TrainedModel, spatial: tuple[int, ...], *, dtype: np.dtype, members: int, streams: int,
    in_memory: bool, slab: int,
) -> None:
    """Refuse, naming the sizes and what to do, a prediction whose outputs and working memory cannot fit."""
    parts = estimate_prediction_bytes(
        trained, spatial, dtype=dtype, members=members, streams=streams, probabilities_in_memory=in_memory,
        slab_planes=slab,
    )
    classes = int(trained.info["num_classes"])
    shown = parts.describe()
    advice = []
    if dtype != np.float16:
        advice.append("dtype='float16' (halves the probabilities and entropy)")
    if in_memory:
        advice.append("out='<file>.npy' or '.zarr' (the probabilities are written to disk slab by slab)")
    if members:
        advice.append("keep_members=False")
    advice.append("crop the image to the region of interest")
    check_allocation(
        parts.total,
        what=f"predicting a {spatial} image with {classes} classes ({shown})",
        cause=f"image shape {spatial}, dtype={dtype.name}",
        advice="use " + ", or ".join(advice),
    )


@dataclass(frozen=True)
class PredictProgress:
    """Yielded by :func:`predict_streamed_steps` after each block: ``planes_done`` of ``planes`` computed.

    ``planes`` is the depth (Z), or depth x passes when Monte-Carlo passes / members run one after another.
    """

    planes_done: int
    planes: int

    @property
    def fraction(self) -> float:
        return self.planes_done / max(self.planes, 1)


def predict_streamed(trained: TrainedModel, image: np.ndarray, **kwargs: Any) -> Prediction:
    """:func:`predict_streamed_steps` run to the end: the :class:`Prediction`."""
    steps = predict_streamed_steps(trained, image, **kwargs)
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            return stop.value


def predict_streamed_steps(
    trained: TrainedModel,
    image: np.ndarray,
    *,
    num_samples: int,
    seed: int,
    dtype: Any = np.float32,
    out: Any = None,
    keep_members: bool = False,
    slab_planes: int | None = None,
) -> Generator[PredictProgress, None, Prediction]:
    """Class probabilities, labels and entropy of a ``(Cin, *S)`` image, block by block into preallocated arrays.

    A generator: it yields a :class:`PredictProgress` after each block of planes and returns the
    :class:`Prediction` (``StopIteration.value``); the memory check runs before the first yield.

    ``image`` is the ``(in_channels, *S)`` raw image as :func:`~.inference.predict` checks it, in its own dtype
    (an integer CT is converted to float32 slab by slab, never copied whole);
    ``num_samples``, ``seed``, ``dtype``, ``out``, ``keep_members`` and ``slab_planes`` are
    :func:`~.inference.predict`'s (checked there).

    Yields
    ------
    PredictProgress

    Returns
    -------
    Prediction

    Raises
    ------
    OutputTooLargeError
        Before anything is allocated, when the outputs and the working memory exceed the memory
        available; the message names the sizes and what to do (float16, ``out=`` a file, a crop).

    References
    ----------
    .. [1] Monteiro M. et al., "Stochastic Segmentation Networks: Modelling Spatially Correlated Aleatoric
       Uncertainty", NeurIPS 2020.
    .. [2] Gal Y., Ghahramani Z., "Dropout as a Bayesian Approximation", ICML 2016.
    """
    dtype = check_prediction_dtype(dtype)
    spatial = tuple(int(s) for s in image.shape[1:])
    layout = _layout(trained, spatial)
    slab = default_slab(trained, layout) if slab_planes is None else int(slab_planes)
    if slab < 1:
        raise ValueError(f"slab_planes must be a positive number of slices, got {slab}.")
    classes = int(trained.info["num_classes"])
    streams = sum(num_samples if (n.dropout > 0 and num_samples > 0 and n.head != "ssn") else 1
                  for n in trained.model.members)
    _check_memory(trained, spatial, dtype=dtype, members=streams if keep_members else 0, streams=streams,
                  in_memory=out is None, slab=slab)
    run = _Run(trained, image, SlabNormalizer(image, trained.info["normalization"]), layout, num_samples, seed)
    probabilities = open_output(out, (classes, *spatial), dtype)
    entropy = np.empty(spatial, dtype=dtype)
    labels = np.empty(spatial, dtype=label_dtype(classes))
    members = np.empty((streams, classes, *spatial), dtype=dtype) if keep_members else None
    device = trained.device
    try:
        with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
            outputs = (probabilities, entropy, labels)
            for done, planes in _run_streams(run, outputs, members, dtype, slab, out is None and dtype == np.float32):
                yield PredictProgress(done, planes)
    finally:
        close_output(probabilities)
    probabilities = finish_output(probabilities)
    return Prediction(
        probabilities=probabilities,
        labels=labels,
        entropy=entropy,
        class_names=list(trained.class_names),
        spacing=trained.spacing,
        member_probabilities=members,
    )
