"""Load the label maps of several raters from files, folders, ``.npz`` archives or arrays.

The common public layouts are recognised: QUBIQ case folders, MSSEG-2016 case folders and
LIDC-style ``.npz`` stacks. Every rater must label the same grid with one label scheme.
"""

from __future__ import annotations

import glob
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._memory import array_bytes, check_allocation
from .._numeric import label_dtype
from .._validation import as_label_array, check_spacing, describe
from ..io import ImageMeta, check_npz_fits, file_suffix, is_supported_file, read_image
from .rater_set import RaterSet, _as_image_array, _as_names, _is_tensor
from .votes import empty_output, flat_voxels, iter_slabs

__all__ = ["load_raters", "qubiq_tasks"]

_SPACING_RTOL = 1e-3
#: Label values below this are remapped with a lookup table, larger ones by binary search.
_LOOKUP_LIMIT = 1 << 20
_IMAGE_NAME = re.compile(r"^(image|img|flair|t1|t2|pd|ct|mr|dp|volume)([_\-.].*)?$", re.IGNORECASE)
_QUBIQ_SEG = re.compile(r"^task(\d+)_seg(\d+)\.nii(\.gz)?$", re.IGNORECASE)
_MSSEG_SEG = re.compile(r"^ManualSegmentation_(\d+)\.nii(\.gz)?$", re.IGNORECASE)


def load_raters(
    source: Any,
    *,
    spacing: Sequence[float] | None = None,
    class_names: Sequence[str] | None = None,
    rater_names: Sequence[str] | None = None,
    task: int | None = None,
    image: np.ndarray | None = None,
) -> RaterSet:
    """Load the label maps of several raters and check they agree on grid and label scheme.

    Parameters
    ----------
    source : str, path, list or array
        Any of:

        - a folder of label files (``.nii``, ``.nii.gz``, ``.nrrd``, ``.mha``/``.mhd``, ``.tif``, ``.png``;
          files named ``image*``, ``img*``, ``flair*``, ``t1*``… are taken as the image, not a rater);
        - a QUBIQ case folder (``image.nii.gz`` + ``task01_seg01.nii.gz``, ``task01_seg02.nii.gz`` …);
        - an MSSEG-2016 case folder (``ManualSegmentation_1..7.nii.gz``, anywhere below it);
        - a glob pattern (``"case1/rater_*.nii.gz"``) or a list of files;
        - a LIDC-style ``.npz`` with ``image`` and ``masks`` ``(R, *spatial)`` arrays;
        - an ``(R, *spatial)`` integer array or a list of ``(*spatial)`` arrays;
        - a :class:`RaterSet` (returned as is).
    spacing : sequence of float, optional
        Voxel size per spatial axis in numpy order; overrides what the files say (TIFF/PNG and
        arrays usually carry none).
    class_names : sequence of str, optional
        One name per class including background.
    rater_names : sequence of str, optional
        One name per rater; defaults to file names.
    task : int, optional
        QUBIQ task number when a case folder holds several tasks (default: the lowest).
    image : numpy.ndarray, optional
        The annotated image, when not part of ``source``.

    Returns
    -------
    RaterSet

    Raises
    ------
    ValueError
        Empty rater list, raters of different shapes or spacings, non-integer, negative or NaN labels,
        4-D data, or raters that use different label schemes (e.g. 0/255 against 0/1).
    FileNotFoundError
        A path or folder that does not exist, or a folder without label files.

    Warns
    -----
    UserWarning
        With a single rater: inter-rater statistics, mSVLS and STAPLE need at least two.

    Examples
    --------
    >>> import numpy as np
    >>> rs = load_raters(np.array([[[0, 1], [1, 1]], [[0, 1], [0, 1]]]), spacing=(0.5, 0.5))
    >>> rs.num_raters, rs.num_classes, rs.shape
    (2, 2, (2, 2))
    """
    if isinstance(source, RaterSet):
        return source
    if image is not None:
        image = _as_image_array(image)
    maps, metas, names, found_image = _collect(source, task=task)
    if image is None:
        image = found_image
    if rater_names is not None:
        names = _as_names(rater_names, "rater_names")
        if len(names) != len(maps):
            raise ValueError(f"rater_names has {len(names)} names but {len(maps)} raters were found.")
    return _build(maps, metas, names, spacing=spacing, class_names=class_names, image=image)


def _is_glob(text: str) -> bool:
    return any(ch in text for ch in "*?[")


def _natural_key(path: str | Path) -> list[Any]:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", Path(path).name)]


def _collect(source: Any, *, task: int | None) -> tuple[list[np.ndarray], list[ImageMeta | None], list[str], Any]:
    """Turn any supported source into lists of label arrays, their metadata and names, plus an image."""
    if isinstance(source, np.ndarray) or _is_tensor(source):
        stack = np.asarray(source.detach().cpu().numpy() if _is_tensor(source) else source)
        if stack.ndim == 2:
            raise ValueError(
                f"source is a single 2-D array of shape {stack.shape}; stack raters as (R, Y, X) "
                "(use source[None] for one rater)."
            )
        if stack.ndim == 5:
            raise ValueError(f"source has shape {stack.shape}: 4-D label maps (time or channels) are not "
                             "supported; give each rater a 2-D or 3-D label map stacked as (R, Z, Y, X).")
        if stack.ndim not in (3, 4):
            raise ValueError(f"source must be an (R, Y, X) or (R, Z, Y, X) array, got shape {stack.shape}.")
        return [stack[i] for i in range(stack.shape[0])], [None] * stack.shape[0], [], None
    if isinstance(source, (str, os.PathLike)):
        text = os.fspath(source)
        if _is_glob(text):
            files = sorted(glob.glob(text), key=_natural_key)
            files = [f for f in files if os.path.isfile(f)]
            if not files:
                raise FileNotFoundError(f"source pattern {text!r} matches no file.")
            return _read_files(files)
        path = Path(text)
        if not path.exists():
            raise FileNotFoundError(f"source {text!r} does not exist.")
        if path.is_dir():
            return _read_folder(path, task=task)
        if file_suffix(path) == ".npz":
            return _read_npz(path)
        return _read_files([path])
    if isinstance(source, (list, tuple)):
        if len(source) == 0:
            raise ValueError("source is an empty list; give at least one rater (a file or an array).")
        if all(isinstance(s, (str, os.PathLike)) for s in source):
            return _read_files([Path(s) for s in source])
        if all(isinstance(s, np.ndarray) or _is_tensor(s) for s in source):
            arrays = [np.asarray(s.detach().cpu().numpy() if _is_tensor(s) else s) for s in source]
            return arrays, [None] * len(arrays), [], None
        kinds = sorted({type(s).__name__ for s in source})
        raise TypeError(f"source list must hold only file paths or only arrays, got {', '.join(kinds)}.")
    raise TypeError(
        f"source must be a folder, file, glob pattern, list of files or arrays, or an (R, *spatial) array; "
        f"got {describe(source)}."
    )


def _read_files(files: Sequence[str | Path]) -> tuple[list[np.ndarray], list[ImageMeta | None], list[str], Any]:
    maps, metas, names = [], [], []
    for f in files:
        f = Path(f)
        if not f.exists():
            raise FileNotFoundError(f"rater file {str(f)!r} does not exist.")
        if not is_supported_file(f):
            raise ValueError(
                f"rater file {str(f)!r} has unsupported format {file_suffix(f) or '(no suffix)'!r}; "
                "supported: .nii, .nii.gz, .nrrd, .mha, .mhd, .tif, .tiff, .png (and .npz for LIDC-style stacks)."
            )
        arr, meta = read_image(f)
        if meta.channel_axis is not None:
            raise ValueError(f"rater file {str(f)!r} holds {arr.shape[0]} components per voxel; a label map "
                             "must hold one integer label per voxel.")
        maps.append(arr)
        metas.append(meta)
        names.append(_stem(f))
    return maps, metas, names, None


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".tiff", ".tif", ".png", ".npz"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def qubiq_tasks(folder: str | os.PathLike) -> list[int]:
    """Task numbers of a QUBIQ case folder (``task01_seg01.nii.gz`` …), sorted; ``[]`` for any other folder.

    Examples
    --------
    >>> qubiq_tasks("/no/such/folder")
    []
    """
    path = Path(folder)
    if not path.is_dir():
        return []
    return sorted({int(m.group(1)) for p in path.iterdir() if (m := _QUBIQ_SEG.match(p.name)) and p.is_file()})


def _read_folder(folder: Path, *, task: int | None) -> tuple[list[np.ndarray], list[ImageMeta | None], list[str], Any]:
    files = sorted((p for p in folder.iterdir() if p.is_file()), key=_natural_key)
    # QUBIQ: image.nii.gz + taskXX_segYY.nii.gz
    qubiq = [(p, _QUBIQ_SEG.match(p.name)) for p in files]
    qubiq = [(p, m) for p, m in qubiq if m]
    if qubiq:
        tasks = sorted({int(m.group(1)) for _, m in qubiq})
        chosen = tasks[0] if task is None else task
        if chosen not in tasks:
            raise ValueError(f"task={task} is not in QUBIQ case {str(folder)!r}; it has tasks {tasks}.")
        if task is None and len(tasks) > 1:
            warnings.warn(f"QUBIQ case {folder.name!r} has tasks {tasks}; loading task {chosen}. "
                          "Pass task=N to choose another.", UserWarning, stacklevel=3)
        segs = sorted(((int(m.group(2)), p) for p, m in qubiq if int(m.group(1)) == chosen))
        maps, metas, names, _ = _read_files([p for _, p in segs])
        return maps, metas, names, _find_image(files)
    # MSSEG-2016: ManualSegmentation_1..7.nii.gz anywhere below the case folder
    msseg = sorted(
        ((int(m.group(1)), p) for p in folder.rglob("*") if p.is_file() and (m := _MSSEG_SEG.match(p.name))),
    )
    if msseg:
        maps, metas, names, _ = _read_files([p for _, p in msseg])
        candidates = sorted((p for p in folder.rglob("*") if p.is_file() and "flair" in p.name.lower()
                             and is_supported_file(p)), key=lambda p: ("preprocessed" not in p.name.lower(), str(p)))
        return maps, metas, names, (read_image(candidates[0])[0] if candidates else None)
    npz = [p for p in files if file_suffix(p) == ".npz"]
    labels = [p for p in files if is_supported_file(p) and not _IMAGE_NAME.match(p.name)]
    if not labels and len(npz) == 1:
        return _read_npz(npz[0])
    if not labels:
        raise FileNotFoundError(
            f"folder {str(folder)!r} holds no label file (.nii, .nii.gz, .nrrd, .mha, .mhd, .tif, .tiff, .png); "
            "files named image*/img*/flair*/t1*/t2*/ct* are taken as images, not raters."
        )
    maps, metas, names, _ = _read_files(labels)
    return maps, metas, names, _find_image(files)


def _find_image(files: Sequence[Path]) -> np.ndarray | None:
    for p in files:
        if is_supported_file(p) and _IMAGE_NAME.match(p.name):
            arr, meta = read_image(p)
            return arr
    return None


def _read_npz(path: Path) -> tuple[list[np.ndarray], list[ImageMeta | None], list[str], Any]:
    check_npz_fits(path)  # readable, no pickled objects, fits in memory: checked from the headers
    try:
        with np.load(path, allow_pickle=False) as data:
            keys = set(data.files)
            key = next((k for k in ("masks", "labels", "raters", "segs") if k in keys), None)
            if key is None:
                raise ValueError(
                    f"{str(path)!r} has arrays {sorted(keys)}; a LIDC-style .npz needs 'masks' (R, *spatial) "
                    "and optionally 'image'."
                )
            masks = np.asarray(data[key])
            image = np.asarray(data["image"]) if "image" in keys else None
            spacing = tuple(float(s) for s in data["spacing"]) if "spacing" in keys else None
    except ValueError as exc:
        if "allow_pickle" in str(exc) or "pickle" in str(exc).lower():
            raise ValueError(f"{str(path)!r} contains pickled objects, which are refused for safety; "
                             "save plain numeric arrays with numpy.savez.") from exc
        if str(path) in str(exc):
            raise
        raise ValueError(f"could not read {str(path)!r}: not a valid .npz file ({exc}).") from exc
    except Exception as exc:  # noqa: BLE001 - zip and decompression errors of a truncated member
        raise ValueError(f"could not read {str(path)!r}: not a valid .npz file ({exc}).") from exc
    if masks.ndim not in (3, 4):
        raise ValueError(f"{str(path)!r}: '{key}' must be stacked as (R, Y, X) or (R, Z, Y, X), "
                         f"got shape {masks.shape}.")
    if image is not None and image.shape != masks.shape[1:]:
        if image.ndim == masks.ndim and image.shape[0] == 1:
            image = image[0]
    meta = ImageMeta(spacing=spacing, path=str(path))
    names = [f"{_stem(path)} rater {i + 1}" for i in range(masks.shape[0])]
    return [masks[i] for i in range(masks.shape[0])], [meta] * masks.shape[0], names, image


def _build(
    maps: list[np.ndarray],
    metas: list[ImageMeta | None],
    names: list[str],
    *,
    spacing: Sequence[float] | None,
    class_names: Sequence[str] | None,
    image: np.ndarray | None,
) -> RaterSet:
    if not maps:
        raise ValueError("no rater found; give at least one rater's label map.")
    names = names or [f"rater {i + 1}" for i in range(len(maps))]
    fixed = _label_maps(maps, metas, names)
    ndim = fixed[0].ndim
    final_spacing = _common_spacing(metas, names, spacing, ndim)
    meta0 = next((m for m in metas if m is not None), None)
    origin = meta0.origin if meta0 is not None and meta0.origin and len(meta0.origin) == ndim else None
    direction = meta0.direction if meta0 is not None and meta0.direction is not None \
        and meta0.direction.shape == (ndim, ndim) else None
    stack, label_values = _remap_labels(fixed, names)
    num_classes = max(len(label_values) if label_values is not None else int(stack.max()) + 1, 2)
    class_names = _class_names(class_names, num_classes, label_values)
    if image is not None:
        image = np.asarray(image)
        if image.shape != stack.shape[1:]:
            warnings.warn(f"image of shape {image.shape} does not match the raters' grid {stack.shape[1:]}; "
                          "it is left out.", UserWarning, stacklevel=3)
            image = None
    if len(fixed) == 1:
        warnings.warn("only one rater was loaded: inter-rater statistics, mSVLS and STAPLE need at least two "
                      "raters (they reduce to the single rater's labels).", UserWarning, stacklevel=3)
    sources = [m.path if m is not None and m.path else "array" for m in metas]
    return RaterSet(
        labels=stack,
        spacing=final_spacing,
        origin=origin,
        direction=direction,
        class_names=list(class_names),
        rater_names=list(names),
        image=image,
        label_values=label_values,
        sources=sources,
    )


def _label_maps(maps: list[np.ndarray], metas: list[ImageMeta | None], names: list[str]) -> list[np.ndarray]:
    """Each rater as a validated 2-D or 3-D label map; all of one shape."""
    fixed = []
    for arr, name, meta in zip(maps, names, metas):
        # error messages name the rater and, for files, where it came from
        label = f"rater {name!r}" + (f" (from {meta.path!r})" if meta is not None and meta.path else "")
        arr = np.asarray(arr)
        while arr.ndim > 3 and arr.shape[-1] == 1:
            arr = arr[..., 0]
        if arr.ndim == 4:
            raise ValueError(
                f"{label} is 4-D with shape {arr.shape} (a time series or several channels); "
                "each rater must be one 2-D or 3-D label map."
            )
        if arr.ndim not in (2, 3):
            raise ValueError(f"{label} must be a 2-D or 3-D label map, got shape {arr.shape}.")
        fixed.append(as_label_array(arr, name=label))
    shapes = {a.shape for a in fixed}
    if len(shapes) > 1:
        detail = "; ".join(f"{n}: {a.shape}" for n, a in zip(names, fixed))
        raise ValueError(f"raters have different shapes ({detail}); every rater must label the same grid. "
                         "Resample them onto the image grid first.")
    return fixed


def _common_spacing(
    metas: list[ImageMeta | None], names: list[str], spacing: Sequence[float] | None, ndim: int
) -> tuple[float, ...] | None:
    """The given spacing, else the files' spacing (which must agree), else None."""
    if spacing is not None:
        return check_spacing(spacing, ndim)
    file_spacings = [m.spacing for m in metas if m is not None and m.spacing is not None]
    if not file_spacings:
        return None
    ref = file_spacings[0]
    for m, n in zip(metas, names):
        if m is not None and m.spacing is not None and not np.allclose(m.spacing, ref, rtol=_SPACING_RTOL):
            raise ValueError(
                f"raters have different voxel spacings: {names[0]!r} has {ref} but {n!r} has {m.spacing}; "
                "every rater must be on the same grid. Resample them, or pass spacing=... to override."
            )
    return tuple(ref) if len(ref) == ndim else None


def _remap_labels(fixed: list[np.ndarray], names: list[str]) -> tuple[np.ndarray, list[int] | None]:
    """Stack the raters after checking they share one label scheme; map gapped labels to ``0..C-1``.

    The stack is allocated once in the smallest label dtype and filled rater by rater, so loading never holds
    a second stack in the files' (often int64) dtype. Returns the stack and the original label values (None
    when they were already ``0..C-1``).
    """
    label_sets = [set(_label_values(a).tolist()) - {0} for a in fixed]
    if len(fixed) > 1:
        for i, s in enumerate(label_sets):
            others = set().union(*(t for j, t in enumerate(label_sets) if j != i))
            if s and others and not (s & others):
                raise ValueError(
                    f"rater {names[i]!r} uses labels {sorted(s)} but the other raters use {sorted(others)}; "
                    "all raters must share one label scheme (e.g. convert 0/255 masks to 0/1)."
                )
    values = sorted(set().union(*label_sets) | {0})
    identity = values == list(range(len(values)))
    dtype = label_dtype(max(len(values), 2))
    shape = (len(fixed), *fixed[0].shape)
    check_allocation(array_bytes(shape, dtype), what=f"the raters' label stack of shape {shape} ({dtype})",
                     cause=f"{len(fixed)} raters of shape {fixed[0].shape}", advice="load fewer raters or crop them")
    stack = empty_output(shape, dtype)
    lookup = None
    if not identity and values[-1] < _LOOKUP_LIMIT:
        lookup = np.zeros(values[-1] + 1, dtype=dtype)
        lookup[values] = np.arange(len(values), dtype=dtype)
    for i, labels in enumerate(fixed):
        if identity:
            stack[i] = labels
        elif lookup is not None:
            stack[i] = lookup[labels]
        else:  # huge label values (e.g. 2**40): no lookup table of that length
            stack[i] = np.searchsorted(np.asarray(values, dtype=labels.dtype), labels)
    return stack, (None if identity else values)


def _label_values(labels: np.ndarray) -> np.ndarray:
    """The sorted distinct values of a non-negative integer label map, without sorting the volume.

    Up to 255 the values not yet seen are looked for slab by slab (stopping once all are found; a compare per
    value and slab, fast on uint8 maps); up to :data:`_LOOKUP_LIMIT` they are counted with ``bincount``;
    beyond, ``numpy.unique``.
    """
    largest = int(labels.max())
    flat = flat_voxels(labels, 0)
    if largest < 256:
        missing = set(range(largest + 1))
        for region in iter_slabs(flat.size, voxels=1 << 18):
            chunk = flat[region]
            missing -= {value for value in missing if (chunk == value).any()}
            if not missing:
                break
        return np.array(sorted(set(range(largest + 1)) - missing), dtype=np.int64)
    if largest >= _LOOKUP_LIMIT:
        return np.unique(labels)
    seen = np.zeros(largest + 1, dtype=np.int64)
    for region in iter_slabs(flat.size, voxels=1 << 20):
        seen += np.bincount(flat[region].astype(np.intp, copy=False), minlength=largest + 1)
    return np.flatnonzero(seen)


def _class_names(class_names: Sequence[str] | None, num_classes: int, label_values: list[int] | None) -> list[str]:
    """The given class names (at least one per class), or defaults that show gapped file values."""
    if class_names is not None:
        class_names = _as_names(class_names, "class_names")
        if len(class_names) < num_classes:
            raise ValueError(f"class_names has {len(class_names)} names but the raters use {num_classes} classes "
                             "(including background); give one name per class.")
        return class_names
    if label_values is not None:
        return ["background"] + [f"label {v}" for v in label_values[1:]]
    return ["background"] + [f"class {k}" for k in range(1, num_classes)]
