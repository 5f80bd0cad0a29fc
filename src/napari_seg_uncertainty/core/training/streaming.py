"""Streaming training patches from a cohort on disk: MONAI transforms, a torch Sampler and DataLoader.

A cohort can be far larger than memory, so its cases are read when needed and forgotten again:

1. **Deterministic part** of a case (a MONAI ``Compose``): read the image and the raters
   (``cohort.load_case``), normalize the image (:mod:`.normalization`), attach the soft target from
   the on-disk :class:`~.target_cache.TargetCache`, the background mask and the union of the raters'
   foreground. Prepared cases are kept in a memory cache bounded by ``cache_mb`` (per process: the
   budget is split across the DataLoader workers); anything not cached is read from disk again.
2. **Random part** (MONAI dictionary transforms): ``RandCropByPosNegLabeld`` draws
   ``patches_per_case`` patches (centred on the raters' foreground with probability
   ``foreground_fraction``), ``RandFlipd`` per axis (``augment``), ``RandAffined``
   (``augment_spatial``), ``RandScaleIntensityd`` / ``RandShiftIntensityd`` (``augment_intensity``)
   and, for ``target="random_rater"``, one rater per patch one-hot encoded.
3. **Order**: :class:`CaseKeySampler` yields ``(case_index, item_seed)`` keys; the case order of a
   pass comes from a ``DistributedSampler`` (``set_epoch(pass)``), the seed is a function of
   ``(seed, rank, pass, position)``. A patch depends only on its key, so the patches are the same
   with any number of workers, and a resumed run skips the keys it consumed and sees exactly the
   patches an uninterrupted run would.
4. :class:`CohortPatchLoader` wraps a torch ``DataLoader`` with the ``sample(count)`` interface
   of the in-memory ``PatchSampler``.
"""

from __future__ import annotations

import math
import time
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from .._validation import check_int, describe
from .config import TrainConfig
from .data import Case, background_mask
from .normalization import RunningMoments, normalization_parameters, normalize_image
from .target_cache import TargetCache

__all__ = [
    "CaseKeySampler",
    "CohortPatchDataset",
    "CohortPatchLoader",
    "PreparedCaseCache",
    "StreamedCases",
    "cohort_normalization",
    "item_seed",
]


# ----------------------------------------------------------------------------------------------
# the deterministic part: MONAI map transforms
# ----------------------------------------------------------------------------------------------
def _monai_transforms():
    from monai.transforms import MapTransform, Randomizable

    return MapTransform, Randomizable


class _LoadCase:
    """``{"case_index": i}`` → adds ``image`` (float32 ``(Cin, *S)``), ``raters``, ``spacing``, ``case_id``."""

    def __init__(self, cohort: Any, case_ids: Sequence[str]) -> None:
        self.cohort = cohort
        self.case_ids = list(case_ids)

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        d = dict(data)
        case_id = self.case_ids[int(d["case_index"])]
        loaded = self.cohort.load_case(case_id)
        if loaded.image is None:
            raise ValueError(f"case {case_id!r} has no image; training needs an image for every case.")
        d["case_id"] = case_id
        d["image"] = np.ascontiguousarray(loaded.image, dtype=np.float32)
        d["raters"] = np.ascontiguousarray(loaded.raters)
        d["spacing"] = tuple(float(s) for s in loaded.spacing)
        return d


class _Normalize:
    """Normalizes ``image`` and adds the background ``mask`` ``(1, *S)`` (from the raw image) when asked."""

    def __init__(self, normalization: dict[str, Any], *, keep_mask: bool) -> None:
        self.normalization = normalization
        self.keep_mask = keep_mask

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        d = dict(data)
        if self.keep_mask:
            d["mask"] = background_mask(d["image"])[None].astype(np.uint8)
        d["image"] = np.ascontiguousarray(normalize_image(d["image"], self.normalization), dtype=np.float32)
        return d


class _SoftTarget:
    """Adds the cached soft ``target`` ``(C, *S)`` (not for ``random_rater``, which keeps ``raters``)."""

    def __init__(self, cohort: Any, cache: TargetCache | None) -> None:
        self.cohort = cohort
        self.cache = cache

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        d = dict(data)
        if self.cache is not None:
            digest = self.cohort.content_digest(d["case_id"])
            # a copy in memory (not the memory map): what the memory cache counts is what it holds
            d["target"] = np.array(self.cache.get(digest, d["raters"], d["spacing"]))
        return d


class _Foreground:
    """Adds ``fg`` ``(1, *S)``: where some rater labelled foreground; drops ``raters`` when a target exists."""

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        d = dict(data)
        d["fg"] = (d["raters"] > 0).any(axis=0)[None].astype(np.uint8)
        if "target" in d:
            del d["raters"]
        return d


def _deterministic_chain(cohort, case_ids, config, normalization, cache):
    from monai.transforms import Compose

    return Compose(
        [
            _LoadCase(cohort, case_ids),
            _Normalize(normalization, keep_mask=config.background_mask != "none"),
            _SoftTarget(cohort, cache),
            _Foreground(),
        ]
    )


def _prepared_nbytes(item: dict[str, Any]) -> int:
    return int(sum(v.nbytes for v in item.values() if isinstance(v, (np.ndarray, torch.Tensor))))


class PreparedCaseCache:
    """A memory cache of prepared cases bounded in bytes (least recently used out first).

    Why not MONAI's ``CacheDataset`` or ``SmartCacheDataset``: ``CacheDataset`` fills its cache
    eagerly at construction with a fixed number of cases (``cache_num``), which is only a byte
    budget when every case has the same size, and its cache is filled in the main process before
    the workers fork; ``SmartCacheDataset`` replaces cached items on its own schedule in a
    background thread, which ties the data order to that schedule and not to the sampler's keys
    (so neither reproducible across worker counts nor resumable). A small least-recently-used
    dictionary around a MONAI ``Dataset`` holds exactly what fits in the budget, fills lazily in the
    process that reads (each worker its own share), and never changes what an item contains.

    Parameters
    ----------
    dataset : monai.data.Dataset
        Applies the deterministic chain to ``{"case_index": i}``.
    budget_bytes : int
        Bytes of prepared arrays this cache may hold (0 disables it).

    Attributes
    ----------
    held_bytes, peak_bytes : int
        Bytes held now and at most so far.
    hits, misses : int
        Cases served from memory and prepared from disk.
    """

    def __init__(self, dataset: Any, budget_bytes: int) -> None:
        self.dataset = dataset
        self.budget_bytes = check_int(int(budget_bytes), name="budget_bytes", minimum=0)
        self._items: OrderedDict[int, tuple[dict[str, Any], int]] = OrderedDict()
        self.held_bytes = 0
        self.peak_bytes = 0
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if index in self._items:
            self._items.move_to_end(index)
            self.hits += 1
            return self._items[index][0]
        self.misses += 1
        item = self.dataset[index]
        size = _prepared_nbytes(item)
        if size <= self.budget_bytes:
            while self.held_bytes + size > self.budget_bytes:
                _, (_, freed) = self._items.popitem(last=False)
                self.held_bytes -= freed
            self._items[index] = (item, size)
            self.held_bytes += size
            self.peak_bytes = max(self.peak_bytes, self.held_bytes)
        return item


# ----------------------------------------------------------------------------------------------
# the random part
# ----------------------------------------------------------------------------------------------
def _random_rater_transform(num_classes: int):
    """A MONAI randomizable map transform: one rater per patch, one-hot into ``target``."""
    MapTransform, Randomizable = _monai_transforms()

    class RandomRaterd(Randomizable, MapTransform):
        def __init__(self) -> None:
            MapTransform.__init__(self, keys=["raters"])
            self._rater = 0

        def randomize(self, data: Any = None) -> None:
            self._rater = int(self.R.randint(int(data)))

        def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
            d = dict(data)
            raters = torch.as_tensor(d.pop("raters"))
            self.randomize(raters.shape[0])
            labels = raters[self._rater].round().long()
            d["target"] = torch.nn.functional.one_hot(labels, num_classes).movedim(-1, 0).float()
            return d

    return RandomRaterd()


class _Finish:
    """Plain float tensors ``image``, ``target`` (and a bool ``mask`` ``(*S)``) plus ``case_index``."""

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        out = {
            "image": _plain(data["image"]).float(),
            "target": _plain(data["target"]).float(),
            "case_index": int(data["case_index"]),
        }
        if "mask" in data:
            out["mask"] = _plain(data["mask"])[0] > 0.5
        return out


def _plain(value: Any) -> torch.Tensor:
    tensor = torch.as_tensor(value)
    if hasattr(tensor, "as_tensor"):  # MONAI MetaTensor
        tensor = tensor.as_tensor()
    return tensor.contiguous()


def _random_chain(config: TrainConfig, *, num_classes: int, patch_size: Sequence[int], sliced: bool):
    from monai.transforms import (
        Compose,
        RandAffined,
        RandCropByPosNegLabeld,
        RandFlipd,
        RandScaleIntensityd,
        RandShiftIntensityd,
        SqueezeDimd,
    )

    random_rater = config.target == "random_rater"
    spatial = ["image", "raters" if random_rater else "target"]
    if config.background_mask != "none":
        spatial.append("mask")
    crop_size = (1, *patch_size) if sliced else tuple(patch_size)
    transforms: list[Any] = [
        RandCropByPosNegLabeld(
            keys=[*spatial, "fg"],
            label_key="fg",
            spatial_size=crop_size,
            pos=config.foreground_fraction,
            neg=1.0 - config.foreground_fraction,
            num_samples=config.patches_per_case,
        )
    ]
    if sliced:  # 2-D training on volumes: (C, 1, Y, X) patches → (C, Y, X)
        transforms.append(SqueezeDimd(keys=[*spatial, "fg"], dim=1))
    dims = len(patch_size)
    if config.augment:
        transforms += [RandFlipd(keys=spatial, prob=0.5, spatial_axis=axis) for axis in range(dims)]
    if config.augment_spatial:
        modes = ["bilinear", "nearest" if random_rater else "bilinear"] + ["nearest"] * (len(spatial) - 2)
        transforms.append(
            RandAffined(
                keys=spatial,
                prob=0.5,
                rotate_range=(math.radians(10.0),) * (1 if dims == 2 else 3),
                scale_range=(0.1,) * dims,
                mode=modes,
                padding_mode="border",
            )
        )
    if config.augment_intensity:
        transforms += [
            RandScaleIntensityd(keys="image", factors=0.1, prob=0.5),
            RandShiftIntensityd(keys="image", offsets=0.1, prob=0.5),
        ]
    if random_rater:
        transforms.append(_random_rater_transform(num_classes))
    transforms.append(_Finish())
    return Compose(transforms)


class CohortPatchDataset(torch.utils.data.Dataset):
    """Map-style dataset over ``(case_index, item_seed)`` keys: the patches of one read of a case.

    ``dataset[(i, seed)]`` takes prepared case ``i`` (from the memory cache or disk), seeds the
    random chain with ``seed`` (``Compose.set_random_state``) and returns ``patches_per_case``
    dicts ``{"image", "target", "case_index"[, "mask"]}``, so a patch depends only on its key.
    """

    def __init__(self, prepared: PreparedCaseCache, random_chain: Any) -> None:
        self.prepared = prepared
        self.random_chain = random_chain

    def __len__(self) -> int:
        return len(self.prepared)

    def __getitem__(self, key: tuple[int, int]) -> list[dict[str, Any]]:
        index, seed = key
        case = self.prepared[int(index)]
        self.random_chain.set_random_state(seed=int(seed))
        with warnings.catch_warnings():  # a case without foreground: MONAI warns and samples background
            warnings.filterwarnings("ignore", message=".*unable to generate class balanced samples.*")
            patches = self.random_chain(case)
        return patches if isinstance(patches, list) else [patches]


# ----------------------------------------------------------------------------------------------
# the order: a sampler of (case_index, item_seed) keys
# ----------------------------------------------------------------------------------------------
def item_seed(seed: int, rank: int, pass_index: int, position: int) -> int:
    """The seed of the random transforms of one read: a function of ``(seed, rank, pass, position)``.

    Examples
    --------
    >>> item_seed(0, 0, 0, 0) == item_seed(0, 0, 0, 0) != item_seed(0, 0, 0, 1)
    True
    """
    state = np.random.SeedSequence([int(seed), int(rank), int(pass_index), int(position)]).generate_state(1)
    return int(state[0])


class CaseKeySampler(torch.utils.data.Sampler):
    """An endless stream of ``(case_index, item_seed)`` keys for one rank.

    Each pass over the training cases is ordered by a ``DistributedSampler`` (``shuffle=True``,
    ``seed``, ``set_epoch(pass)``; with ``world > 1`` every rank gets its share of the cases). The
    first ``start`` keys are skipped (a resumed run).

    Parameters
    ----------
    num_cases : int
        Training cases.
    seed, rank, world, start : int
        Run seed, this process's rank and the world size, keys to skip.

    Examples
    --------
    >>> keys = iter(CaseKeySampler(3, seed=0))
    >>> sorted(next(keys)[0] for _ in range(3))
    [0, 1, 2]
    """

    def __init__(self, num_cases: int, *, seed: int = 0, rank: int = 0, world: int = 1, start: int = 0) -> None:
        self.num_cases = check_int(num_cases, name="num_cases", minimum=1)
        self.seed = check_int(seed, name="seed", minimum=0)
        self.world = check_int(world, name="world", minimum=1)
        self.rank = check_int(rank, name="rank", minimum=0)
        self.start = check_int(start, name="start", minimum=0)
        self._order = torch.utils.data.DistributedSampler(
            range(self.num_cases), num_replicas=self.world, rank=self.rank, shuffle=True, seed=self.seed
        )

    @property
    def keys_per_pass(self) -> int:
        """Keys one rank draws per pass over the cases."""
        return len(self._order)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        pass_index, skip = divmod(self.start, self.keys_per_pass)
        while True:
            self._order.set_epoch(pass_index)
            for position, index in enumerate(self._order):
                if position < skip:
                    continue
                yield int(index), item_seed(self.seed, self.rank, pass_index, position)
            skip = 0
            pass_index += 1


# ----------------------------------------------------------------------------------------------
# the loader
# ----------------------------------------------------------------------------------------------
def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # workers prepare patches; the training process owns the cores


class CohortPatchLoader:
    """Training patches streamed from a cohort's cases, with the ``sample(count)`` interface of ``PatchSampler``.

    Parameters
    ----------
    cohort : Cohort
        The cohort (``load_case``, ``content_digest``).
    case_ids : sequence of str
        The training cases (``split["train"]``); no other case is ever read.
    config : TrainConfig
        ``patches_per_case``, ``foreground_fraction``, augmentation, ``target``, ``num_workers``,
        ``cache_mb``, ``background_mask``, ``seed``.
    num_classes : int
        Classes including background.
    patch_size : sequence of int
        Spatial patch size (2 or 3 entries).
    normalization : dict
        From :func:`~.normalization.normalization_parameters`.
    target_cache : TargetCache or None
        Soft targets on disk (None for ``target="random_rater"``).
    patches_per_step : int
        Patches one ``sample`` call returns (``ensemble_size × batch_size``).
    rank, world : int
        This process's rank and the world size (``torchrun``).
    start_step : int
        Steps already done (a resumed run): their keys are skipped.
    pin_memory : bool
        Pin batches (CUDA training).

    Attributes
    ----------
    cases_per_step : int
        ``ceil(patches_per_step / patches_per_case)``.
    cases_seen : int
        Cases this rank has read so far, including the skipped steps of a resumed run.
    wait_seconds, last_wait : float
        Seconds spent waiting for the loader in total and in the last ``sample`` call.
    case_indices_read : set of int
        Indices (into ``case_ids``) of the cases whose patches were delivered.
    """

    def __init__(
        self,
        cohort: Any,
        case_ids: Sequence[str],
        *,
        config: TrainConfig,
        num_classes: int,
        patch_size: Sequence[int],
        normalization: dict[str, Any],
        target_cache: TargetCache | None,
        patches_per_step: int,
        rank: int = 0,
        world: int = 1,
        start_step: int = 0,
        pin_memory: bool = False,
    ) -> None:
        from monai.data import Dataset, list_data_collate

        if not isinstance(config, TrainConfig):
            raise TypeError(f"config must be a TrainConfig, got {describe(config)}.")
        case_ids = [str(c) for c in case_ids]
        if not case_ids:
            raise ValueError("case_ids must name at least one training case, got none.")
        if (config.target == "random_rater") != (target_cache is None):
            raise ValueError(
                "target_cache must be None exactly when target='random_rater' "
                f"(target={config.target!r}, target_cache={describe(target_cache)})."
            )
        self.config = config
        self.case_ids = case_ids
        self.patches_per_step = check_int(patches_per_step, name="patches_per_step", minimum=1)
        self.cases_per_step = math.ceil(self.patches_per_step / config.patches_per_case)
        self.patch_size = tuple(int(p) for p in patch_size)
        start = check_int(start_step, name="start_step", minimum=0) * self.cases_per_step
        sliced = len(self.patch_size) < cohort.ndim
        budget = int(config.cache_mb * 2**20) // max(1, config.num_workers)
        chain = _deterministic_chain(cohort, case_ids, config, normalization, target_cache)
        self.prepared = PreparedCaseCache(Dataset([{"case_index": i} for i in range(len(case_ids))], chain), budget)
        self.dataset = CohortPatchDataset(
            self.prepared,
            _random_chain(config, num_classes=num_classes, patch_size=self.patch_size, sliced=sliced),
        )
        self.sampler = CaseKeySampler(len(case_ids), seed=config.seed, rank=rank, world=world, start=start)
        workers = config.num_workers
        self.loader = torch.utils.data.DataLoader(
            self.dataset,
            batch_size=1,
            sampler=self.sampler,
            num_workers=workers,
            collate_fn=list_data_collate,
            pin_memory=pin_memory,
            persistent_workers=workers > 0,
            prefetch_factor=2 if workers > 0 else None,
            worker_init_fn=_worker_init if workers > 0 else None,
            # its own generator: starting the loader must not draw from the global torch RNG
            # (dropout), or a resumed run would differ from an uninterrupted one
            generator=torch.Generator().manual_seed(config.seed),
        )
        self._iterator: Iterator[dict[str, Any]] | None = None
        self.cases_seen = start
        self.wait_seconds = 0.0
        self.last_wait = 0.0
        self.case_indices_read: set[int] = set()

    def sample(self, count: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``count`` patches: images ``(count, Cin, *P)``, targets ``(count, C, *P)``, masks ``(count, *P)`` or None.

        Reads ``ceil(count / patches_per_case)`` cases; patches beyond ``count`` are dropped.
        """
        count = check_int(count, name="count", minimum=1)
        if self._iterator is None:
            self._iterator = iter(self.loader)
        t0 = time.perf_counter()
        batches = [next(self._iterator) for _ in range(math.ceil(count / self.config.patches_per_case))]
        self.last_wait = time.perf_counter() - t0
        self.wait_seconds += self.last_wait
        self.cases_seen += len(batches)
        for batch in batches:
            self.case_indices_read.update(int(i) for i in batch["case_index"])
        x = torch.cat([b["image"] for b in batches])[:count]
        t = torch.cat([b["target"] for b in batches])[:count]
        m = torch.cat([b["mask"] for b in batches])[:count] if "mask" in batches[0] else None
        return x, t, m

    def close(self) -> None:
        """Shut the worker processes down (safe to call more than once)."""
        iterator, self._iterator = self._iterator, None
        shutdown = getattr(iterator, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()
        self.loader = None  # a persistent iterator is also held by the DataLoader

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 — interpreter shutdown
            pass


# ----------------------------------------------------------------------------------------------
# validation cases and normalization statistics
# ----------------------------------------------------------------------------------------------
class StreamedCases:
    """Validation cases of a cohort read one at a time (an iterable of :class:`~.data.Case`).

    ``Case.image`` is the raw image (``evaluate`` normalizes it as the checkpoint does), ``target`` None.
    """

    def __init__(self, cohort: Any, case_ids: Sequence[str]) -> None:
        self.cohort = cohort
        self.case_ids = [str(c) for c in case_ids]

    def __len__(self) -> int:
        return len(self.case_ids)

    def __bool__(self) -> bool:
        return bool(self.case_ids)

    def __iter__(self) -> Iterator[Case]:
        for case_id in self.case_ids:
            loaded = self.cohort.load_case(case_id)
            if loaded.image is None:
                raise ValueError(f"validation case {case_id!r} has no image.")
            yield Case(np.asarray(loaded.image, dtype=np.float32), np.asarray(loaded.raters), None)


def cohort_normalization(cohort: Any, case_ids: Sequence[str], config: TrainConfig) -> dict[str, Any]:
    """The normalization dict of a cohort run.

    ``"dataset"``: the per-channel mean and standard deviation over **every voxel of every training
    case**, accumulated case by case (:class:`~.normalization.RunningMoments`: one read of each
    case, two numbers per channel in memory, the same result as on all voxels at once; a sample of
    cases would be cheaper but would make the statistics depend on the sample). The other modes
    need no statistics.
    """
    if config.normalization != "dataset":
        return normalization_parameters(config.normalization, clip_percentiles=config.clip_percentiles)
    moments = RunningMoments()
    for case in StreamedCases(cohort, case_ids):
        moments.add(case.image)
    return normalization_parameters("dataset", mean=moments.mean, std=moments.std)
