"""How much memory :func:`~.streamed.predict_streamed` needs, estimated from shapes before anything is allocated.

:func:`estimate_prediction_bytes` returns a :class:`PredictionEstimate`: the arrays kept, the blending
buffers of one window row per stream (or one after another, when smaller) and the per-case normalization's
statistics. :mod:`.streamed` checks it against the available memory before it starts.

References
----------
.. [1] Cardoso M. J. et al., "MONAI: An open-source framework for deep learning in healthcare",
   arXiv:2211.02701, 2022 (sliding-window inference with Gaussian blending).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._memory import array_bytes, format_bytes
from .._numeric import label_dtype
from .normalization import statistics_bytes
from .prediction_base import TrainedModel

__all__ = ["PREDICTION_DTYPES", "PredictionEstimate", "check_prediction_dtype", "estimate_prediction_bytes"]

#: The dtypes the probabilities and entropy can be returned in.
PREDICTION_DTYPES = ("float32", "float16")
_SSN_CHUNK = 4  # SSN samples drawn at a time
_BLOCK_PLANES = 4  # planes handed on at a time by a window row


def check_prediction_dtype(dtype: Any) -> np.dtype:
    """``dtype`` as a numpy float32 or float16 dtype; ``ValueError`` naming the choices otherwise."""
    try:
        resolved = np.dtype(dtype)
    except TypeError as exc:
        raise ValueError(f"dtype must be one of {PREDICTION_DTYPES}, got {dtype!r}.") from exc
    if resolved.name not in PREDICTION_DTYPES:
        raise ValueError(f"dtype must be one of {PREDICTION_DTYPES}, got {dtype!r}.")
    return resolved


@dataclass(frozen=True)
class _Layout:
    """How a network meets the image: per slice (2-D net on a volume) or over the whole spatial grid."""

    spatial: tuple[int, ...]  # (*S) of the image
    sliced: bool  # a 2-D network run slice by slice along Z
    roi: tuple[int, ...]
    overlap: float
    sw_batch_size: int

    @property
    def plane(self) -> int:
        """Voxels of one plane across the first spatial axis (Z)."""
        return math.prod(self.spatial[1:])

    @property
    def step(self) -> int:
        """Planes that become final per window row (the scan interval along Z)."""
        return max(1, int(self.roi[0] * (1 - self.overlap))) if not self.sliced else 1


def _layout(trained: TrainedModel, spatial: tuple[int, ...]) -> _Layout:
    dims = trained.info["spatial_dims"]
    return _Layout(
        spatial=spatial,
        sliced=len(spatial) != dims,
        roi=tuple(int(p) for p in trained.info["patch_size"]),
        overlap=float(trained.config.sw_overlap),
        sw_batch_size=int(trained.config.sw_batch_size),
    )


def _raw_outputs(trained: TrainedModel) -> int:
    """Channels of the raw network output (the SSN head's mean, diagonal and rank-K factor)."""
    config, classes = trained.config, int(trained.info["num_classes"])
    return classes * (2 + config.ssn_rank) if config.head == "ssn" else classes


def _slab_bytes(trained: TrainedModel, layout: _Layout, slab: int, streams: int, in_place: bool = False) -> int:
    """Working memory: per stream (member x pass) its blending buffers, plus one emitted block and its windows.

    Window-row streams of several members/passes run side by side (one row buffer each) or, when that is
    smaller (:func:`_in_sequence`), one after another into a float32 sum of the whole volume (none when the
    float32 probabilities in memory are the sum, ``in_place``).
    """
    classes, raw = int(trained.info["num_classes"]), _raw_outputs(trained)
    cin = int(trained.info["in_channels"])
    ssn = 2 * _SSN_CHUNK * classes * (1 + trained.config.ssn_rank) if trained.config.head == "ssn" else 0
    windows = layout.sw_batch_size * math.prod(layout.roi) * (cin + raw + 2 * sum(trained.config.channels)) * 4
    if layout.sliced:  # MONAI on a chunk of slices: input, blended output and count, probabilities
        planes = min(slab, layout.spatial[0])  # the streams' raw blocks are all held at once
        return planes * layout.plane * 4 * (cin + (1 + streams) * raw + 1 + 3 * classes + ssn) + windows
    rows = min(layout.roi[0], layout.spatial[0])  # a buffer spans one window row
    block = min(layout.step, _BLOCK_PLANES, layout.spatial[0])
    side_by_side, one_by_one = _stream_buffers(trained, layout, streams, in_place)
    buffers = min(side_by_side, one_by_one) + cin * rows + block * (raw + 3 * classes + ssn)
    return buffers * layout.plane * 4 + windows


def _stream_buffers(trained: TrainedModel, layout: _Layout, streams: int, in_place: bool) -> tuple[int, int]:
    """Planes x channels of float32 the window-row streams hold side by side, and one after another."""
    classes, raw = int(trained.info["num_classes"]), _raw_outputs(trained)
    rows = min(layout.roi[0], layout.spatial[0])
    one_by_one = (raw + 1) * rows + (0 if in_place or streams == 1 else classes * layout.spatial[0])
    return streams * (raw + 1) * rows, one_by_one


def _in_sequence(trained: TrainedModel, layout: _Layout, streams: int, in_place: bool) -> bool:
    """Whether several window-row streams run one after another (when that needs less memory)."""
    if layout.sliced or streams == 1:
        return False
    side_by_side, one_by_one = _stream_buffers(trained, layout, streams, in_place)
    return one_by_one < side_by_side


def default_slab(trained: TrainedModel, layout: _Layout) -> int:
    """Slices per chunk of a 2-D net run slice by slice (a 3-D net goes window row by window row)."""
    return 8 if layout.sliced else layout.step


@dataclass(frozen=True)
class PredictionEstimate:
    """Peak memory of :func:`predict_streamed` beyond the input image, part by part, in bytes.

    Attributes
    ----------
    probabilities, entropy, labels, members : int
        The arrays kept (``probabilities`` 0 when written to ``out=``).
    working : int
        The blending buffers of the members x passes and one block of planes.
    statistics : int
        The per-case normalization's statistics, taken before the outputs are allocated: a float32 copy of
        one channel for ``percentile``, four float64 slabs for ``zscore``/``percentile``.
    """

    probabilities: int
    entropy: int
    labels: int
    members: int
    working: int
    statistics: int

    @property
    def total(self) -> int:
        """The peak: ``max(statistics, kept arrays + working)``."""
        kept = self.probabilities + self.entropy + self.labels + self.members + self.working
        return max(self.statistics, kept)

    def describe(self) -> str:
        """``"probabilities 1.0 MiB, entropy …"``: the non-zero parts."""
        sizes = dataclasses.asdict(self)
        return ", ".join(f"{name} {format_bytes(size)}" for name, size in sizes.items() if size)


def estimate_prediction_bytes(
    trained: TrainedModel,
    spatial: Sequence[int],
    *,
    dtype: Any = np.float32,
    members: int = 0,
    streams: int = 1,
    probabilities_in_memory: bool = True,
    slab_planes: int | None = None,
) -> PredictionEstimate:
    """Peak memory of :func:`predict_streamed` beyond the input image, part by part.

    The input image is read as it is (an integer CT is converted to float32 slab by slab, never copied whole).

    Returns
    -------
    PredictionEstimate
        The parts and their peak (``total``).
    """
    spatial = tuple(int(s) for s in spatial)
    layout = _layout(trained, spatial)
    classes = int(trained.info["num_classes"])
    dtype = check_prediction_dtype(dtype)
    return PredictionEstimate(
        probabilities=array_bytes((classes, *spatial), dtype) if probabilities_in_memory else 0,
        entropy=array_bytes(spatial, dtype),
        labels=array_bytes(spatial, label_dtype(classes)),
        members=array_bytes((members, classes, *spatial), dtype),
        working=_slab_bytes(trained, layout, slab_planes or default_slab(trained, layout), max(1, streams),
                            in_place=probabilities_in_memory and dtype == np.float32),
        statistics=statistics_bytes(trained.info["normalization"].get("mode", "dataset"), spatial),
    )
