"""The arguments of :func:`evaluate_checkpoints`: candidate names, the cohort and each checkpoint's evaluated cases."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...core._validation import describe
from ...core.cohort.splits import SPLIT_KEYS

if TYPE_CHECKING:
    from ...core.cohort import Cohort


def _candidate_names(checkpoints: Any) -> dict[str, str]:
    """``{name: path}`` from one path, a sequence of paths or a mapping of names to paths."""
    if isinstance(checkpoints, (str, os.PathLike)):
        checkpoints = [checkpoints]
    if isinstance(checkpoints, Mapping):
        pairs = list(checkpoints.items())
        for name, path in pairs:
            if not isinstance(name, str) or not name:
                raise TypeError(f"checkpoints must map names (non-empty str) to paths, got the key {describe(name)}.")
            if not isinstance(path, (str, os.PathLike)):
                raise TypeError(f"checkpoints[{name!r}] must be a path, got {describe(path)}.")
        if not pairs:
            raise ValueError("checkpoints is empty; give at least one checkpoint file.")
        return {name: os.fspath(path) for name, path in pairs}
    if not isinstance(checkpoints, Sequence) or isinstance(checkpoints, bytes):
        raise TypeError(
            f"checkpoints must be a path, a list of paths or a dict of names to paths, got {describe(checkpoints)}."
        )
    paths = [os.fspath(p) if isinstance(p, (str, os.PathLike)) else p for p in checkpoints]
    for i, p in enumerate(paths):
        if not isinstance(p, str):
            raise TypeError(f"checkpoints[{i}] must be a path, got {describe(p)}.")
    if not paths:
        raise ValueError("checkpoints is empty; give at least one checkpoint file.")
    if len(set(os.path.abspath(p) for p in paths)) < len(paths):
        raise ValueError(f"checkpoints names a file twice: {paths}.")
    return dict(zip(_unique_names(paths), paths, strict=True))


def _unique_names(paths: list[str]) -> list[str]:
    """Short names: the file stem, or its folder for ``last.pt`` (``folder/best`` for ``best.pt``);
    more of the path where two would coincide."""
    def name(p: str, depth: int) -> str:
        parts = Path(os.path.abspath(p)).with_suffix("").parts
        stem = parts[-1]
        if stem == "last":
            parts = parts[:-1]
        return "/".join(parts[-depth:]) if parts else stem

    depth = 1
    names = [name(p, depth) for p in paths]
    while len(set(names)) < len(names) and depth < 12:
        depth += 1
        names = [name(p, depth) for p in paths]
    return names


def _as_cohort(cohort: Any) -> Cohort:
    from ...core.cohort import Cohort, load_cohort

    if isinstance(cohort, Cohort):
        return cohort
    if isinstance(cohort, (str, os.PathLike)):
        return load_cohort(cohort)
    raise TypeError(f"cohort must be a Cohort or the path of one (folder, .npz, manifest), got {describe(cohort)}.")


def _stored_split(state: dict[str, Any]) -> dict[str, list[str]] | None:
    cohort = state.get("cohort")
    split = cohort.get("split") if isinstance(cohort, dict) else None
    return {k: list(split.get(k, [])) for k in SPLIT_KEYS} if isinstance(split, dict) else None


def _evaluated_cases(
    name: str, path: str, cohort: Cohort, split: str, split_spec: Any, seed: int
) -> list[str]:
    """The case ids of ``split`` for one checkpoint; refuses a case the checkpoint trained on."""
    from ...core.checkpoint import load_checkpoint

    stored = _stored_split(load_checkpoint(path))
    if split_spec is None:
        if stored is None:
            raise ValueError(
                f"checkpoint {path!r} ({name}) was not trained on a cohort, so it stores no split; pass "
                "split_spec (e.g. {'train': [...], 'test': [...]}) to say which cases to evaluate."
            )
        chosen = stored
    else:
        chosen = cohort.resolve_split(split_spec, seed=seed)
    cases = list(chosen.get(split, []))
    unknown = [c for c in cases if c not in set(cohort.case_ids)]
    if unknown:
        raise ValueError(
            f"the {split} split of checkpoint {path!r} ({name}) names case(s) {unknown[:5]} that are not in the "
            f"cohort from {cohort.source!r}; evaluate on the cohort it was trained on or pass split_spec."
        )
    if not cases:
        raise ValueError(f"the {split} split of {name} ({path!r}) holds no case; nothing to evaluate.")
    if stored is not None:
        leaked = [c for c in cases if c in set(stored["train"])]
        if leaked:
            raise ValueError(
                f"case(s) {leaked[:5]}{' …' if len(leaked) > 5 else ''} of the evaluated {split} split were "
                f"training cases of checkpoint {path!r} ({name}); evaluating on them would overstate its quality. "
                "Evaluate on held-out cases (the checkpoint's own split by default)."
            )
    order = {c: i for i, c in enumerate(cohort.case_ids)}
    return sorted(cases, key=order.__getitem__)


def cohort_options(cohort: Cohort) -> dict[str, Any]:
    """The options of :func:`~napari_seg_uncertainty.core.cohort.load_cohort` that load ``cohort`` again.

    Parameters
    ----------
    cohort : Cohort
        A loaded cohort.

    Returns
    -------
    dict
        ``class_names`` (list or None), ``target_spacing`` (list or None), ``task`` (the QUBIQ task all
        cases were read from, or None) and ``on_error`` (``"skip"`` when cases were left out), JSON-ready.
    """
    tasks = {
        int(match.group(1))
        for case in cohort.cases
        for path in case.rater_files
        if (match := re.match(r"task(\d+)_seg\d+", os.path.basename(path)))
    }
    spacing = cohort.target_spacing
    return {
        "class_names": None if cohort.class_names is None else list(cohort.class_names),
        "target_spacing": None if spacing is None else [float(s) for s in spacing],
        "task": tasks.pop() if len(tasks) == 1 else None,
        "on_error": "skip" if cohort.problems else "raise",
    }
