"""Training data: the cases, their fused soft targets, the train/validation split and the patch sampler."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .._validation import as_rater_stack, check_num_classes, check_spacing, describe
from .config import TrainConfig

__all__ = ["TrainingData", "as_training_data"]

@dataclass(kw_only=True)
class TrainingData:
    """Images and their raters' label maps, as the training loop reads them.

    Attributes
    ----------
    images : list of numpy.ndarray
        One float32 ``(in_channels, *S)`` array per case.
    raters : list of numpy.ndarray
        One integer ``(R, *S)`` stack per case (same ``*S`` as its image).
    num_classes : int
        Classes including background.
    class_names : list of str
        One name per class.
    spacing : tuple of float or None
        Voxel spacing (carried into checkpoints and predictions).
    """

    images: list[np.ndarray]
    raters: list[np.ndarray]
    num_classes: int
    class_names: list[str] = field(default_factory=list)
    spacing: tuple[float, ...] | None = None

    @property
    def ndim(self) -> int:
        """Spatial dimensions of the data (2 or 3)."""
        return self.raters[0].ndim - 1

    @property
    def in_channels(self) -> int:
        """Image channels."""
        return int(self.images[0].shape[0])

    @classmethod
    def from_arrays(
        cls,
        image: Any,
        raters: Any,
        *,
        num_classes: int | None = None,
        class_names: Sequence[str] | None = None,
        spacing: Sequence[float] | None = None,
    ) -> TrainingData:
        """Validate one case (or lists of cases) and wrap it.

        Parameters
        ----------
        image : array_like or list of array_like
            ``(*S)`` or ``(in_channels, *S)``.
        raters : array_like, RaterSet, or a list of them
            ``(R, *S)`` integer stack; a ``RaterSet`` also gives class names and spacing.
        num_classes : int, optional
            Default: from ``class_names`` or the largest label + 1 (at least 2).
        class_names : sequence of str, optional
            One name per class.
        spacing : sequence of float, optional
            Voxel spacing per spatial axis.

        Returns
        -------
        TrainingData

        Examples
        --------
        >>> import numpy as np
        >>> data = TrainingData.from_arrays(np.zeros((8, 8)), np.zeros((3, 8, 8), int), num_classes=2)
        >>> data.images[0].shape, data.raters[0].shape, data.class_names
        ((1, 8, 8), (3, 8, 8), ['background', 'class 1'])
        """
        images = list(image) if isinstance(image, (list, tuple)) else [image]
        if isinstance(class_names, str):
            raise TypeError(f"class_names must be a sequence of names, one per class, got the string "
                            f"{class_names!r}; write e.g. ['background', 'lesion'].")
        rater_list = list(raters) if isinstance(raters, (list, tuple)) and _is_case_list(raters) else [raters]
        if len(images) != len(rater_list):
            raise ValueError(
                f"image and raters must list the same number of cases, got {len(images)} and "
                f"{len(rater_list)}."
            )
        stacks = []
        for i, r in enumerate(rater_list):
            if hasattr(r, "labels") and hasattr(r, "class_names"):  # a RaterSet
                if class_names is None and r.class_names:
                    class_names = list(r.class_names)
                if spacing is None and getattr(r, "spacing", None) is not None:
                    spacing = r.spacing
                r = r.labels
            stacks.append(as_rater_stack(r, name="raters" if len(rater_list) == 1 else f"raters[{i}]"))
        ndim = stacks[0].ndim - 1
        if any(s.ndim - 1 != ndim for s in stacks):
            raise ValueError("raters must all be 2-D or all be 3-D cases.")
        num_classes, class_names = _classes(stacks, num_classes, class_names)
        arrays = _channel_first_images(images, stacks)
        spacing = check_spacing(spacing, ndim)
        return cls(
            images=arrays,
            raters=[s.astype(np.int64) for s in stacks],
            num_classes=num_classes,
            class_names=class_names,
            spacing=spacing,
        )


def _classes(
    stacks: list[np.ndarray], num_classes: int | None, class_names: Sequence[str] | None
) -> tuple[int, list[str]]:
    """The number of classes and their names, from what was given and the largest label."""
    largest = max(int(s.max()) for s in stacks)
    if num_classes is None and class_names:
        if largest >= len(class_names):
            raise ValueError(
                f"class_names must have at least {largest + 1} entries (one per class, the raters "
                f"use labels up to {largest}), got {len(class_names)}."
            )
        num_classes = len(class_names)
    if num_classes is None:
        num_classes = max(largest + 1, 2)
    num_classes = check_num_classes(num_classes, minimum=2)
    if largest >= num_classes:
        raise ValueError(
            f"raters contain label {largest}, outside 0..{num_classes - 1} for num_classes={num_classes}."
        )
    if class_names is None:
        class_names = ["background"] + [f"class {k}" for k in range(1, num_classes)]
    class_names = [str(n) for n in class_names]
    if len(class_names) != num_classes:
        raise ValueError(
            f"class_names must have {num_classes} entries (one per class), got {len(class_names)}."
        )
    return num_classes, class_names


def _channel_first_images(images: list[Any], stacks: list[np.ndarray]) -> list[np.ndarray]:
    """Every image as float32 ``(in_channels, *S)`` on its raters' grid."""
    arrays = []
    for i, (img, stack) in enumerate(zip(images, stacks)):
        name = "image" if len(images) == 1 else f"image[{i}]"
        arr = as_image(img, name=name)
        spatial = stack.shape[1:]
        if arr.shape == spatial:
            arr = arr[None]
        elif arr.ndim != len(spatial) + 1 or arr.shape[1:] != spatial:
            raise ValueError(
                f"{name} must have the raters' spatial shape {spatial} (or (channels, *{spatial})), "
                f"got shape {arr.shape}."
            )
        arrays.append(np.ascontiguousarray(arr, dtype=np.float32))
    if any(a.shape[0] != arrays[0].shape[0] for a in arrays):
        raise ValueError("every image must have the same number of channels.")
    return arrays


def _is_case_list(raters: Sequence[Any]) -> bool:
    """Whether a list of raters means several cases (list of stacks / RaterSets) or one case."""
    first = raters[0] if len(raters) else None
    if hasattr(first, "labels"):
        return True
    try:
        return np.asarray(first).ndim >= 3
    except Exception:  # noqa: BLE001
        return False


def check_image(image: Any, *, name: str) -> np.ndarray:
    """``image`` as a numeric numpy array in its own dtype (no copy of a numpy array), checked finite.

    The finiteness test runs a few planes at a time, so it needs no volume-size temporary; an integer or
    boolean image is finite by its dtype.
    """
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    if isinstance(image, (str, bytes)) or image is None:
        raise TypeError(f"{name} must be a numeric array, got {describe(image)}.")
    arr = np.asarray(image)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise TypeError(f"{name} must be a numeric array, got {describe(arr)}.")
    if arr.ndim not in (2, 3, 4):
        raise ValueError(f"{name} must be (Y, X), (Z, Y, X) or channels-first, got shape {arr.shape}.")
    if np.issubdtype(arr.dtype, np.inexact) and not _all_finite(arr):
        raise ValueError(f"{name} contains NaN or infinite values.")
    return arr


def _all_finite(arr: np.ndarray, planes: int = 16) -> bool:
    """``np.all(np.isfinite(arr))`` ``planes`` planes of the last three axes at a time."""
    if arr.ndim < 3:
        return bool(np.all(np.isfinite(arr)))
    for lead in np.ndindex(arr.shape[:-3]):
        volume = arr[lead]
        for z in range(0, volume.shape[0], planes):
            if not np.all(np.isfinite(volume[z : z + planes])):
                return False
    return True


def as_image(image: Any, *, name: str) -> np.ndarray:
    """:func:`check_image`, as float32 (a copy unless it already is)."""
    return check_image(image, name=name).astype(np.float32, copy=False)


def as_training_data(data: Any) -> TrainingData:
    """Accept :class:`TrainingData`, ``(image, raters)`` or a ``RaterSet`` carrying its image."""
    if isinstance(data, TrainingData):
        return data
    if isinstance(data, tuple) and len(data) == 2:
        return TrainingData.from_arrays(data[0], data[1])
    if hasattr(data, "labels") and getattr(data, "image", None) is not None:
        return TrainingData.from_arrays(data.image, data)
    raise TypeError(
        "data must be a TrainingData, an (image, raters) tuple or a RaterSet with an image, "
        f"got {describe(data)}."
    )


def one_hot(labels: torch.Tensor, *, num_classes: int) -> torch.Tensor:
    """``(*S)`` integer labels → ``(C, *S)`` float32 one-hot."""
    return torch.nn.functional.one_hot(labels.long(), num_classes).movedim(-1, 0).float()


def fused_target(
    raters: np.ndarray, num_classes: int, config: TrainConfig, spacing: tuple[float, ...] | None
) -> np.ndarray:
    """The fused soft target ``(C, *S)`` of one case (not used for ``random_rater``)."""
    from ..labels import label_smoothing, majority_vote, msvls, one_hot, rater_mean, staple, svls

    method = config.target
    if method == "mean":
        out = rater_mean(raters, num_classes=num_classes)
    elif method == "msvls":
        out = msvls(raters, num_classes=num_classes, sigma=config.svls_sigma, spacing=spacing)
    elif method == "staple":
        out = staple(raters, num_classes=num_classes).probabilities
    else:
        majority = majority_vote(raters, num_classes=num_classes)
        if method == "svls":
            out = svls(
                majority, num_classes=num_classes, sigma=config.svls_sigma, spacing=spacing
            )
        elif method == "label_smoothing":
            out = label_smoothing(majority, num_classes=num_classes, alpha=config.label_smoothing)
        else:  # onehot
            out = one_hot(majority, num_classes=num_classes)
    out = np.asarray(out, dtype=np.float32)
    if out.shape != (num_classes, *raters.shape[1:]):
        raise ValueError(
            f"target {method!r} gave shape {out.shape}, expected {(num_classes, *raters.shape[1:])}."
        )
    return out


def background_mask(image: np.ndarray) -> np.ndarray:
    """``True`` where a ``(in_channels, *S)`` image is non-zero in some channel (the foreground mask)."""
    return np.any(image != 0, axis=0)


@dataclass
class Case:
    """One training or validation case (or slice) as the loop reads it."""

    image: np.ndarray  # (Cin, *S) raw float32
    raters: np.ndarray  # (R, *S)
    target: np.ndarray | None  # (C, *S) fused target, None for random_rater
    # (Cin, *S) the image normalized as a whole before slicing / splitting, for the per-case
    # normalizations ("zscore", "percentile"); None: normalize ``image`` when needed
    normed: np.ndarray | None = None


def prepare_cases(
    data: TrainingData, config: TrainConfig, spatial_dims: int, normalization: dict[str, Any] | None = None
) -> tuple[list[Case], list[Case]]:
    """Fused targets, slicing of volumes for 2-D training, and the train/validation split.

    A per-case ``normalization`` (``"zscore"``, ``"percentile"``) is applied to every whole image
    before it is sliced or split (``Case.normed``), as :func:`predict` does on a whole image.
    """
    per_case = normalization is not None and normalization.get("mode", "dataset") != "dataset"
    cases = []
    for image, raters in zip(data.images, data.raters):
        target = None
        if config.target != "random_rater":
            target = fused_target(raters, data.num_classes, config, data.spacing)
        normed = None
        if per_case:
            from .normalization import normalize_image

            normed = normalize_image(image, normalization)
        if spatial_dims == 2 and raters.ndim == 4:  # slice training on a volume
            for z in range(raters.shape[1]):
                cases.append(
                    Case(
                        image[:, z],
                        raters[:, z],
                        None if target is None else target[:, z],
                        None if normed is None else normed[:, z],
                    )
                )
        else:
            cases.append(Case(image, raters, target, normed))
    if config.val_fraction == 0:
        return cases, []
    if len(cases) >= 2:
        n_val = min(len(cases) - 1, max(1, round(config.val_fraction * len(cases))))
        return cases[:-n_val], cases[-n_val:]
    case = cases[0]
    extent = case.raters.shape[1]
    n_val = max(1, round(config.val_fraction * extent))
    if extent - n_val < 1:
        return cases, []

    def part(sl: slice) -> Case:
        return Case(
            case.image[:, sl],
            case.raters[:, sl],
            None if case.target is None else case.target[:, sl],
            None if case.normed is None else case.normed[:, sl],
        )

    return [part(slice(0, extent - n_val))], [part(slice(extent - n_val, extent))]


def resolve_patch_size(
    config: TrainConfig, cases: list[Case], spatial_dims: int, divisor: int
) -> tuple[int, ...]:
    """The training patch size: ``config.patch_size`` (checked) or a default that fits the smallest case."""
    return resolve_patch_size_for_shapes(
        config, [c.raters.shape[1 : 1 + spatial_dims] for c in cases], spatial_dims, divisor
    )


def resolve_patch_size_for_shapes(
    config: TrainConfig, shapes: Sequence[Sequence[int]], spatial_dims: int, divisor: int
) -> tuple[int, ...]:
    """:func:`resolve_patch_size` from the cases' spatial shapes (a cohort's headers; ``spatial_dims`` axes each)."""
    smallest = tuple(min(int(shape[a]) for shape in shapes) for a in range(spatial_dims))
    if config.patch_size is not None:
        patch = tuple(config.patch_size)
        if len(patch) != spatial_dims:
            raise ValueError(
                f"patch_size {patch} must have {spatial_dims} entries for {spatial_dims}-D training."
            )
        if any(p > s for p, s in zip(patch, smallest)):
            raise ValueError(
                f"patch_size {patch} is larger than the training data {smallest}; "
                "choose a smaller patch_size."
            )
        return patch
    default = 64 if spatial_dims == 2 else 32
    patch = tuple((min(default, s) // divisor) * divisor for s in smallest)
    if min(patch) < divisor:
        hint = " or spatial_dims=2 (slice training)" if spatial_dims == 3 else ""
        raise ValueError(
            f"the training data {smallest} is too small for a U-Net that down-samples by {divisor}; "
            f"use fewer levels (shorter channels/strides){hint}."
        )
    return patch


class PatchSampler:
    """Random training patches with targets, from one torch generator (reproducible)."""

    def __init__(
        self,
        cases: list[Case],
        *,
        num_classes: int,
        patch_size: tuple[int, ...],
        mean: np.ndarray,
        std: np.ndarray,
        config: TrainConfig,
        generator: torch.Generator,
        normalization: dict[str, Any] | None = None,
    ) -> None:
        self.patch_size = patch_size
        self.num_classes = num_classes
        self.config = config
        self.generator = generator
        if normalization is not None and normalization.get("mode", "dataset") != "dataset":
            from .normalization import normalize_image  # per-case modes ("zscore", "percentile")

            self.images = [
                torch.from_numpy(normalize_image(c.image, normalization) if c.normed is None else c.normed).float()
                for c in cases
            ]
        else:
            self.images = [
                torch.from_numpy(
                    (c.image - mean.reshape(-1, *[1] * (c.image.ndim - 1)))
                    / std.reshape(-1, *[1] * (c.image.ndim - 1))
                ).float()
                for c in cases
            ]
        self.raters = [torch.from_numpy(c.raters) for c in cases]
        self.targets = [None if c.target is None else torch.from_numpy(c.target) for c in cases]
        self.masks = [
            torch.from_numpy(background_mask(c.image)) if config.background_mask != "none" else None
            for c in cases
        ]
        self.foreground = [torch.from_numpy(np.flatnonzero((c.raters > 0).any(axis=0))) for c in cases]

    def _randint(self, high: int) -> int:
        return int(torch.randint(high, (1,), generator=self.generator))

    def _rand(self) -> float:
        return float(torch.rand((), generator=self.generator))

    def sample(self, count: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        xs, ts, ms = [], [], []
        for _ in range(count):
            i = self._randint(len(self.images))
            shape = tuple(self.raters[i].shape[1:])
            fg = self.foreground[i]
            if len(fg) and self._rand() < self.config.foreground_fraction:
                centre = np.unravel_index(int(fg[self._randint(len(fg))]), shape)
                start = [
                    min(max(int(c) - p // 2, 0), s - p) for c, p, s in zip(centre, self.patch_size, shape)
                ]
            else:
                start = [self._randint(s - p + 1) for p, s in zip(self.patch_size, shape)]
            window = tuple(slice(b, b + p) for b, p in zip(start, self.patch_size))
            x = self.images[i][(slice(None), *window)]
            if self.targets[i] is None:
                rater = self._randint(self.raters[i].shape[0])
                t = one_hot(self.raters[i][(rater, *window)], num_classes=self.num_classes)
            else:
                t = self.targets[i][(slice(None), *window)]
            m = None if self.masks[i] is None else self.masks[i][window]
            if self.config.augment:
                for axis in range(len(self.patch_size)):
                    if self._rand() < 0.5:
                        x, t = x.flip(axis + 1), t.flip(axis + 1)
                        m = None if m is None else m.flip(axis)
            xs.append(x)
            ts.append(t)
            ms.append(m)
        mask = None if ms[0] is None else torch.stack(ms)
        return torch.stack(xs), torch.stack(ts), mask

