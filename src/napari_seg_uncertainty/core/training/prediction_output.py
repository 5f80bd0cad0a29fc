"""Where :func:`~.streamed.predict_streamed` writes the probabilities: an array, a ``.npy`` file or a zarr array.

The writers take the blocks of planes in order along Z; :func:`finish_output` gives back what the
:class:`~.prediction_base.Prediction` holds (a read-only memory map, the zarr array, the array).
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

__all__ = ["ZARR_CHUNK_PLANES", "close_output", "finish_output", "open_output"]

#: Planes per chunk of ``predict(out='….zarr')``.
ZARR_CHUNK_PLANES = 8


class _NpyWriter:
    """A ``.npy`` file written block by block with plain file writes, read back as a read-only memory map.

    Written by hand rather than through ``numpy.memmap``: pages written through a memory map stay in the
    process's resident memory until the kernel writes them back, so the probabilities would count in full
    against the process; file writes leave them to the page cache.
    """

    def __init__(self, path: str, shape: tuple[int, ...], dtype: np.dtype) -> None:
        header = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)  # header, file size
        self.offset, self.shape, self.dtype, self.path = header.offset, shape, dtype, path
        del header
        self.plane = math.prod(shape[2:]) * dtype.itemsize
        self.handle = open(path, "r+b")  # noqa: SIM115 - closed in finish()

    def __setitem__(self, index: tuple[slice, slice], value: np.ndarray) -> None:
        planes = index[1]
        block = np.ascontiguousarray(value, dtype=self.dtype)
        for c in range(self.shape[0]):
            self.handle.seek(self.offset + (c * self.shape[1] + planes.start) * self.plane)
            self.handle.write(block[c].tobytes())

    def finish(self) -> np.memmap:
        self.handle.close()
        return np.load(self.path, mmap_mode="r", allow_pickle=False)


class _ZarrWriter:
    """A zarr 3 array written whole chunks at a time: planes arrive in order and are buffered to a chunk's depth.

    Chunks are ``(1, ZARR_CHUNK_PLANES, *rest)``, uncompressed (as :mod:`..ssn.store`): the blocks the
    prediction hands on (4 or ``slab`` planes, not aligned to chunks) written straight into zarr would read,
    decompress, patch, recompress and rewrite a chunk once per block; here every chunk is encoded and written
    once (3x64x256x256 float32 under load: 4.1 s with the former 64-plane zstd chunks and 4-plane blocks,
    0.22 s). The buffer holds one chunk of every class (``C * ZARR_CHUNK_PLANES`` planes).
    """

    def __init__(self, path: str, shape: tuple[int, ...], dtype: np.dtype) -> None:
        from .._zarr import require_zarr

        zarr = require_zarr("predict(out='….zarr')")
        self.depth = min(ZARR_CHUNK_PLANES, shape[1])
        self.array = zarr.create_array(
            store=path, shape=shape, chunks=(1, self.depth, *shape[2:]), dtype=dtype, compressors=None,
            overwrite=True,
        )
        self.buffer = np.empty((shape[0], self.depth, *shape[2:]), dtype=dtype)
        self.start = self.filled = 0  # buffer holds planes start : start + filled

    def __setitem__(self, index: tuple[slice, slice], value: np.ndarray) -> None:
        planes = index[1]
        if planes.start != self.start + self.filled:
            raise RuntimeError(f"planes must be written in order: expected {self.start + self.filled}, "
                               f"got {planes.start}.")
        value = np.asarray(value)
        while value.shape[1]:
            take = min(self.depth - self.filled, value.shape[1])
            self.buffer[:, self.filled : self.filled + take] = value[:, :take]
            self.filled, value = self.filled + take, value[:, take:]
            if self.filled == self.depth:
                self._flush()

    def _flush(self) -> None:
        if self.filled:
            self.array[:, self.start : self.start + self.filled] = self.buffer[:, : self.filled]
        self.start, self.filled = self.start + self.filled, 0

    def finish(self) -> Any:
        self._flush()
        return self.array


def open_output(out: Any, shape: tuple[int, ...], dtype: np.dtype) -> Any:
    """Where the probabilities go: a new array, a ``.npy`` memory map or ``.zarr`` array at a path, or ``out``."""
    if out is None:
        return np.empty(shape, dtype=dtype)
    if isinstance(out, (str, os.PathLike)):
        path = os.fspath(out)
        if path.endswith(".zarr"):
            return _ZarrWriter(path, shape, dtype)
        if not path.endswith(".npy"):
            raise ValueError(f"out must be a path ending in .npy or .zarr, or an array, got {path!r}.")
        return _NpyWriter(path, shape, dtype)
    if tuple(getattr(out, "shape", ())) != shape or not hasattr(out, "__setitem__"):
        raise ValueError(
            f"out must be a writable array of shape {shape} (C, *spatial) (e.g. a numpy memmap or a zarr array), "
            f"got {type(out).__name__} of shape {getattr(out, 'shape', None)}."
        )
    return out


def close_output(output: Any) -> None:
    """Release a writer's file after a failure or at the end (arrays: nothing)."""
    if isinstance(output, _NpyWriter):
        output.handle.close()


def finish_output(output: Any) -> Any:
    """What the prediction holds: a ``.npy`` memory map, the zarr array (all chunks written), or the array."""
    return output.finish() if isinstance(output, (_NpyWriter, _ZarrWriter)) else output
