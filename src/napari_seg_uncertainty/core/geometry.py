"""Where an array lies in the world: voxel spacing, origin and direction, as napari layer arguments.

One small frozen dataclass, :class:`Geometry`, carries a grid's placement from the file (or the
source layer) to every layer the plugin adds, so that soft labels, predictions, uncertainty maps
and SSN samples sit exactly on the anatomy they were computed from. It maps to napari's layer
arguments ``scale``, ``translate`` and, for a non-identity direction, ``affine``; napari is not
imported here (the layer is read by duck typing), so the reader and the headless code use it too.

World coordinates follow ITK/SimpleITK: ``world = origin + direction @ (spacing * index)``, all in
numpy axis order ``(Z, Y, X)`` as napari shows them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Geometry"]


@dataclass(frozen=True)
class Geometry:
    """Placement of a ``(*spatial)`` grid in world (millimetre) coordinates.

    Parameters
    ----------
    spacing : tuple of float
        Voxel size per spatial axis, numpy order.
    origin : tuple of float
        World position of voxel ``(0, …, 0)``.
    direction : numpy.ndarray or None
        ``(ndim, ndim)`` direction cosines (columns are the axes' world directions); ``None``
        means the identity.

    Examples
    --------
    >>> g = Geometry(spacing=(3.0, 0.8, 0.8), origin=(10.0, -40.0, -50.0))
    >>> g.layer_kwargs()
    {'scale': (3.0, 0.8, 0.8), 'translate': (10.0, -40.0, -50.0)}
    >>> g.layer_kwargs(leading_axes=1)["scale"]  # a (C, Z, Y, X) stack
    (1.0, 3.0, 0.8, 0.8)
    """

    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: np.ndarray | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        spacing = tuple(float(s) for s in self.spacing)
        origin = tuple(float(o) for o in self.origin)
        if len(spacing) != len(origin):
            raise ValueError(f"spacing {spacing} and origin {origin} have different lengths; give one value per "
                             "spatial axis for both.")
        if not all(np.isfinite(s) and s > 0 for s in spacing):
            raise ValueError(f"spacing must be positive and finite, got {spacing}.")
        if not all(np.isfinite(o) for o in origin):
            raise ValueError(f"origin must be finite, got {origin}.")
        direction = self.direction
        if direction is not None:
            direction = np.asarray(direction, dtype=float)
            if direction.shape != (len(spacing),) * 2:
                raise ValueError(f"direction must be a {len(spacing)}×{len(spacing)} matrix, got shape "
                                 f"{direction.shape}.")
            if np.allclose(direction, np.eye(len(spacing)), atol=1e-9):
                direction = None
        object.__setattr__(self, "spacing", spacing)
        object.__setattr__(self, "origin", origin)
        object.__setattr__(self, "direction", direction)

    # construction ---------------------------------------------------------------------------------
    @classmethod
    def identity(cls, ndim: int) -> Geometry:
        """Unit spacing at the origin: the placement of an array with no geometry."""
        return cls(spacing=(1.0,) * ndim, origin=(0.0,) * ndim)

    @classmethod
    def from_meta(
        cls,
        ndim: int,
        *,
        spacing: Sequence[float] | None = None,
        origin: Sequence[float] | None = None,
        direction: Any = None,
    ) -> Geometry:
        """From a file's (or a :class:`~napari_seg_uncertainty.core.raters.RaterSet`'s) spacing, origin and
        direction, any of which may be ``None`` (unit spacing, zero origin, identity)."""
        return cls(
            spacing=tuple(spacing) if spacing is not None else (1.0,) * ndim,
            origin=tuple(origin) if origin is not None and len(origin) == ndim else (0.0,) * ndim,
            direction=direction if direction is not None and np.shape(direction) == (ndim, ndim) else None,
        )

    @classmethod
    def of(cls, source: Any, ndim: int | None = None) -> Geometry:
        """The geometry of a napari layer, a ``RaterSet``, an ``ImageMeta`` or a ``Geometry``.

        For a layer with more axes than ``ndim`` (a ``(C, *spatial)`` stack), the last ``ndim`` axes are
        the spatial ones.
        """
        if isinstance(source, Geometry):
            return source if ndim is None or ndim == source.ndim else _fail_ndim(source, ndim)
        if hasattr(source, "labels") and hasattr(source, "spacing") and hasattr(source, "origin"):  # RaterSet
            n = source.ndim
            return cls.from_meta(n, spacing=source.scale, origin=source.origin, direction=source.direction)
        if hasattr(source, "spacing") and hasattr(source, "origin") and not hasattr(source, "scale"):  # ImageMeta
            n = ndim if ndim is not None else len(source.spacing or source.origin or ())
            return cls.from_meta(n, spacing=source.spacing, origin=source.origin, direction=source.direction)
        if hasattr(source, "scale") and hasattr(source, "translate"):  # a napari layer
            n = int(ndim if ndim is not None else len(source.scale))
            if n > len(source.scale):
                raise ValueError(f"layer {getattr(source, 'name', source)!r} has {len(source.scale)} axes, "
                                 f"fewer than the {n} spatial axes asked for.")
            direction = None
            affine = getattr(source, "affine", None)
            matrix = getattr(affine, "affine_matrix", None)
            if matrix is not None:
                linear = np.asarray(matrix, dtype=float)[:-1, :-1][-n:, -n:]
                if not np.allclose(linear, np.eye(n), atol=1e-9):
                    direction = linear
            return cls(
                spacing=tuple(float(s) for s in source.scale[-n:]),
                origin=tuple(float(t) for t in source.translate[-n:]),
                direction=direction,
            )
        raise TypeError(f"cannot read a geometry from {type(source).__name__}; expected a napari layer, a "
                        "RaterSet, an ImageMeta or a Geometry.")

    # properties -----------------------------------------------------------------------------------
    @property
    def ndim(self) -> int:
        """Number of spatial axes."""
        return len(self.spacing)

    def layer_kwargs(self, *, leading_axes: int = 0) -> dict[str, Any]:
        """``scale``, ``translate`` (and ``affine`` for a non-identity direction) for ``viewer.add_*``.

        ``leading_axes`` non-spatial axes (a class, sample or rater axis in front) get scale 1 and
        translate 0, so napari shows them as a slider.
        """
        lead_scale, lead_shift = (1.0,) * leading_axes, (0.0,) * leading_axes
        kwargs: dict[str, Any] = {"scale": lead_scale + self.spacing, "translate": lead_shift + self.origin}
        if self.direction is not None:
            # napari applies ``affine`` after scale and translate: world = A (s·i + o); with
            # A = [[D, o − D o], [0, 1]] that is o + D (s·i), ITK's convention, and translate stays the origin.
            n = leading_axes + self.ndim
            matrix = np.eye(n + 1)
            d = self.direction
            o = np.asarray(self.origin)
            matrix[leading_axes:n, leading_axes:n] = d
            matrix[leading_axes:n, n] = o - d @ o
            kwargs["affine"] = matrix
        return kwargs

    def index_to_world(self, index: Sequence[float]) -> np.ndarray:
        """World position of a (fractional) voxel index."""
        idx = np.asarray(index, dtype=float)
        scaled = idx * np.asarray(self.spacing)
        if self.direction is not None:
            scaled = self.direction @ scaled
        return np.asarray(self.origin) + scaled

    def world_extent(self, shape: Sequence[int]) -> np.ndarray:
        """``(2, ndim)`` world corners of a grid of ``shape`` (first voxel centre, last voxel centre)."""
        shape = tuple(int(s) for s in shape)[-self.ndim:]
        return np.stack([self.index_to_world([0] * self.ndim), self.index_to_world([s - 1 for s in shape])])

    # derived grids --------------------------------------------------------------------------------
    def cropped(self, start: Sequence[int]) -> Geometry:
        """Geometry of the sub-grid that starts at voxel ``start`` (a crop or a sliding-window patch)."""
        start = tuple(int(s) for s in start)
        if len(start) != self.ndim:
            raise ValueError(f"crop start {start} must have {self.ndim} entries, one per spatial axis.")
        return Geometry(spacing=self.spacing, origin=tuple(self.index_to_world(start)), direction=self.direction)

    def resampled(self, spacing: Sequence[float]) -> Geometry:
        """Geometry of the same field of view resampled to ``spacing`` (voxel corner aligned).

        SimpleITK's resampling keeps the origin as the first voxel's centre; with corner
        alignment the first centre moves by half the change in voxel size.
        """
        spacing = tuple(float(s) for s in spacing)
        if len(spacing) != self.ndim:
            raise ValueError(f"spacing {spacing} must have {self.ndim} entries, one per spatial axis.")
        shift = (np.asarray(spacing) - np.asarray(self.spacing)) / 2.0
        if self.direction is not None:
            shift = self.direction @ shift
        return Geometry(spacing=spacing, origin=tuple(np.asarray(self.origin) + shift), direction=self.direction)

    def same_grid(self, other: Geometry, *, rtol: float = 1e-5, atol: float = 1e-4) -> bool:
        """Whether two geometries place voxels at the same world positions (to ``atol`` mm)."""
        if self.ndim != other.ndim:
            return False
        eye = np.eye(self.ndim)
        d1 = self.direction if self.direction is not None else eye
        d2 = other.direction if other.direction is not None else eye
        return bool(np.allclose(self.spacing, other.spacing, rtol=rtol, atol=atol)
                    and np.allclose(self.origin, other.origin, rtol=rtol, atol=atol)
                    and np.allclose(d1, d2, atol=1e-6))


def _fail_ndim(geometry: Geometry, ndim: int) -> Geometry:
    raise ValueError(f"geometry has {geometry.ndim} spatial axes, not {ndim}.")
