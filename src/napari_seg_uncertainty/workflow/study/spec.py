"""The study file: candidates × seeds on one cohort, read and checked before anything runs.

A study is a YAML file (or the same mapping in Python) read by :func:`load_study` into a
:class:`StudySpec`::

    name: svls-vs-ls
    description: one-hot vs label smoothing vs SVLS        # optional, one line for listings
    cohort: ../cohort/cohort.csv            # a folder, .npz or manifest, relative to the study file; or
    # cohort: {phantom: {n_cases: 12, ndim: 2, layout: generic, num_raters: 3, num_classes: 3, seed: 0}}
    #         (generated into OUT/cohort on the first run, reused after)
    cohort_options: {on_error: raise}       # load_cohort keywords: on_error, class_names, target_spacing, task
    split: {val: 0.2, test: 0.3, seed: 0}   # one case-level split shared by every run (Cohort.resolve_split)
    base: {epochs: 2, steps_per_epoch: 4, channels: [8, 16], strides: [2], device: auto}   # TrainConfig fields
    candidates:
      - {name: one-hot, config: {target: onehot}}
      - {name: ls, config: {target: label_smoothing, label_smoothing: 0.1}}
    grid: {loss: [ce, dice]}                # optional: crossed with the candidates (or alone), names generated
    seeds: [0]
    evaluate: {checkpoint: last, split: test, reference: majority, tolerance_mm: 1.0, num_bins: 15,
               num_resamples: 10000}
    table: {metrics: ["organ:dice", "all:ece_reference_volume"], reference: one-hot-ce, test: wilcoxon, alpha: 0.05}
    quality: {review_fraction: 0.2}
    launcher: {kind: local, jobs: 1, slurm: {partition: gpu, timeout_min: 120, gpus_per_node: 1}}
    out_dir: results/svls                   # optional default output folder, relative to the study file

Each candidate's configuration is ``base`` updated by its ``config`` (and by one combination of the
``grid``, whose keys are :class:`~napari_seg_uncertainty.core.training.TrainConfig` fields and whose
values are lists). A grid alone names its candidates from the values (``onehot-ce``); crossed with
``candidates`` the name is the candidate's followed by the values (``conv-staple``). Every
configuration is built into a ``TrainConfig`` here, so a misspelt field or a value out of range fails
before anything is trained, naming the candidate and the field. ``seed``, ``output_dir`` and
``overwrite`` are set per run (``seeds`` and the run folder) and are refused in ``base`` and ``config``.

The sections: ``evaluate`` (:class:`EvaluateSettings`: which checkpoint, split and reference, the
surface-Dice tolerance, bins, bootstrap resamples), ``table`` (:class:`TableSettings`: the columns as
``"<class>:<metric>"`` keys of the evaluation's rows, the reference candidate or null for the best,
the paired test, ``alpha``, columns shown in percent), ``quality`` (:class:`QualitySettings`) and
``launcher`` (:class:`LauncherSettings`, with :class:`SlurmSettings`). A generated cohort's classes are
named as :func:`~napari_seg_uncertainty.core.cohort.phantom.phantom_class_names` names them
(``organ``, ``lesion``, ``core``) unless ``cohort_options`` gives ``class_names``.

A run is one candidate with one seed, with the id ``"<candidate>/seed<k>"``; its folder is
``OUT/runs/<candidate>/seed<k>``. :meth:`StudySpec.to_dict` gives the resolved study (absolute
cohort path, every candidate's full configuration), written as ``OUT/study.yaml``; reading it back
gives the same study.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...core._validation import check_choice, check_seed, describe
from ...core.cohort.splits import SPLIT_KEYS
from .settings import (
    COHORT_OPTION_KEYS,
    LAUNCHERS,
    RUN_FIELDS,
    STUDY_KEYS,
    EvaluateSettings,
    LauncherSettings,
    PhantomCohort,
    QualitySettings,
    SlurmSettings,
    TableSettings,
    _mapping,
    _settings,
    _unknown,
    check_metric_classes,
)

__all__ = [
    "LAUNCHERS",
    "EvaluateSettings",
    "LauncherSettings",
    "PhantomCohort",
    "QualitySettings",
    "SlurmSettings",
    "StudyCandidate",
    "StudySpec",
    "TableSettings",
    "check_metric_classes",
    "load_study",
]

#: A candidate name also names its run folder.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+=-]*$")


@dataclass(frozen=True)
class StudyCandidate:
    """One candidate: a name and its full training configuration (seed and output folder set per run).

    Attributes
    ----------
    name : str
        Unique within the study; letters, digits and ``. _ + = -`` (it names a folder).
    config : TrainConfig
        ``base`` updated by the candidate's settings, validated.
    """

    name: str
    config: Any = field(repr=False)

    def run_config(self, *, seed: int, output_dir: str | os.PathLike) -> Any:
        """The configuration of this candidate's run with ``seed`` in ``output_dir``."""
        return dataclasses.replace(self.config, seed=seed, output_dir=os.fspath(output_dir))


@dataclass(frozen=True)
class StudySpec:
    """A checked study (see the module docstring for the file format).

    Attributes
    ----------
    name, description : str
        The study's name and a one-line description.
    cohort : str or PhantomCohort
        The cohort's absolute source (folder, ``.npz`` or manifest), or the settings of a generated one.
    cohort_options : dict
        ``load_cohort`` keywords.
    split : dict, str or None
        The case-level split setting (:meth:`Cohort.resolve_split`), resolved once for all runs.
    candidates : tuple of StudyCandidate
        In the order of the file.
    seeds : tuple of int
        Every candidate is trained once per seed.
    evaluate, table, quality, launcher
        The settings of each step.
    source : str or None
        The study file (None for a mapping).
    out_dir : str or None
        The file's default output folder (absolute), if it names one.
    """

    name: str
    cohort: str | PhantomCohort
    candidates: tuple[StudyCandidate, ...]
    seeds: tuple[int, ...] = (0,)
    cohort_options: dict[str, Any] = field(default_factory=dict)
    split: Any = None
    evaluate: EvaluateSettings = field(default_factory=EvaluateSettings)
    table: TableSettings = field(default_factory=TableSettings)
    quality: QualitySettings = field(default_factory=QualitySettings)
    launcher: LauncherSettings = field(default_factory=LauncherSettings)
    description: str = ""
    source: str | None = None
    out_dir: str | None = None

    @property
    def run_ids(self) -> tuple[str, ...]:
        """``"<candidate>/seed<k>"`` for every candidate and seed, candidates first."""
        return tuple(f"{c.name}/seed{s}" for c in self.candidates for s in self.seeds)

    def candidate(self, name: str) -> StudyCandidate:
        """The candidate called ``name``."""
        for candidate in self.candidates:
            if candidate.name == name:
                return candidate
        raise KeyError(f"no candidate {name!r}; the candidates are {[c.name for c in self.candidates]}.")

    def to_dict(self) -> dict[str, Any]:
        """The resolved study: absolute cohort path, every candidate's full configuration, every setting."""
        cohort = {"phantom": self.cohort.to_dict()} if isinstance(self.cohort, PhantomCohort) else self.cohort
        launcher = dataclasses.asdict(self.launcher)
        launcher["slurm"]["setup"] = list(self.launcher.slurm.setup)
        candidates = []
        for c in self.candidates:
            config = {k: v for k, v in c.config.to_dict().items() if k not in RUN_FIELDS}
            candidates.append({"name": c.name, "config": config})
        return {
            "name": self.name,
            "description": self.description,
            "cohort": cohort,
            "cohort_options": dict(self.cohort_options),
            "split": self.split,
            "seeds": list(self.seeds),
            "candidates": candidates,
            "evaluate": dataclasses.asdict(self.evaluate),
            "table": {**dataclasses.asdict(self.table), "metrics": list(self.table.metrics),
                      "percent": list(self.table.percent)},
            "quality": dataclasses.asdict(self.quality),
            "launcher": launcher,
        }


# ---------------------------------------------------------------------------------------------------
# reading a study
# ---------------------------------------------------------------------------------------------------
def load_study(study: str | os.PathLike | Mapping[str, Any] | StudySpec, *, base: str | os.PathLike | None = None
               ) -> StudySpec:
    """Read and check a study file (YAML) or mapping.

    Parameters
    ----------
    study : path, mapping or StudySpec
        A ``.yaml``/``.yml``/``.json`` study file, the same content as a mapping, or a checked study
        (returned as it is).
    base : path, optional
        Folder that relative paths (``cohort``, ``out_dir``) of a mapping are taken from; default the
        current folder. A file's paths are relative to the file.

    Returns
    -------
    StudySpec

    Raises
    ------
    TypeError, ValueError
        An unknown key, a wrong value, no candidate, two candidates with one name, a candidate whose
        configuration is not a valid ``TrainConfig`` (the message names the candidate and the field),
        or a table reference that is not a candidate.
    FileNotFoundError
        The study file, or a cohort given as a path, does not exist.

    Examples
    --------
    >>> spec = load_study({"name": "demo", "cohort": {"phantom": {"n_cases": 6}},
    ...                    "base": {"epochs": 1, "channels": [4, 8], "strides": [2]},
    ...                    "grid": {"target": ["onehot", "svls"]}, "seeds": [0, 1]})
    >>> spec.run_ids
    ('onehot/seed0', 'onehot/seed1', 'svls/seed0', 'svls/seed1')
    """
    if isinstance(study, StudySpec):
        return study
    source = None
    if isinstance(study, (str, os.PathLike)):
        from ...core.training import read_config_file

        source = os.path.abspath(os.fspath(study))
        values = read_config_file(source)
        folder = Path(source).parent
    elif isinstance(study, Mapping):
        values = _mapping(study, "the study")
        if base is not None and not isinstance(base, (str, os.PathLike)):
            raise TypeError(f"base must be a folder path or None, got {describe(base)}.")
        folder = Path(os.path.abspath(os.fspath(base if base is not None else os.getcwd())))
    else:
        raise TypeError(f"study must be a study file path, a mapping or a StudySpec, got {describe(study)}.")
    _unknown(values, STUDY_KEYS, "the study" if source is None else f"study file {source!r}")
    name = values.get("name", Path(source).stem if source else None)
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"the study needs a 'name' (a non-empty string), got {name!r}.")
    description = values.get("description") or ""
    if not isinstance(description, str):
        raise TypeError(f"the study's description must be a string, got {describe(description)}.")
    candidates = _candidates(values)
    table = _settings(TableSettings, values.get("table"), "table")
    if table.reference is not None and table.reference not in {c.name for c in candidates}:
        raise ValueError(
            f"table.reference {table.reference!r} is not a candidate; the candidates are "
            f"{[c.name for c in candidates]}."
        )
    out_dir = values.get("out_dir")
    if out_dir is not None:
        if not isinstance(out_dir, str) or not out_dir:
            raise TypeError(f"out_dir must be a folder path or null, got {describe(out_dir)}.")
        out_dir = str(folder / Path(out_dir).expanduser())
    return StudySpec(
        name=name.strip(), description=description.strip(), cohort=_cohort(values.get("cohort"), folder),
        cohort_options=_cohort_options(values.get("cohort_options")), split=_split(values.get("split")),
        candidates=candidates, seeds=_seeds(values.get("seeds", [0])),
        evaluate=_settings(EvaluateSettings, values.get("evaluate"), "evaluate"), table=table,
        quality=_settings(QualitySettings, values.get("quality"), "quality"),
        launcher=_settings(LauncherSettings, values.get("launcher"), "launcher"), source=source, out_dir=out_dir,
    )  # fmt: skip


def _cohort(value: Any, folder: Path) -> str | PhantomCohort:
    if value is None:
        raise ValueError("the study needs a 'cohort': a folder, .npz or manifest path, or {phantom: {n_cases: ...}}.")
    if isinstance(value, Mapping):
        _unknown(value, ("phantom",), "cohort")
        phantom = _mapping(value.get("phantom"), "cohort.phantom")
        if "n_cases" not in phantom:
            raise ValueError("cohort.phantom needs n_cases (the number of cases to generate), e.g. {n_cases: 12}.")
        return _settings(PhantomCohort, phantom, "cohort.phantom")
    if not isinstance(value, str) or not value:
        raise TypeError(f"cohort must be a path or {{phantom: {{...}}}}, got {describe(value)}.")
    path = folder / Path(value).expanduser()
    if not path.exists():
        raise FileNotFoundError(
            f"the study's cohort {str(path)!r} does not exist (paths are relative to the study file)."
        )
    return str(path.resolve())


def _cohort_options(value: Any) -> dict[str, Any]:
    options = _mapping(value, "cohort_options")
    _unknown(options, COHORT_OPTION_KEYS, "cohort_options")
    if "on_error" in options:
        check_choice(options["on_error"], name="cohort_options.on_error", choices=("raise", "skip"))
    return options


def _split(value: Any) -> Any:
    if value is None or value == "manifest":
        return value
    split = _mapping(value, "split")
    _unknown(split, ("val", "test", "seed", "folds", "fold", *SPLIT_KEYS), "split")
    return split


def _seeds(value: Any) -> tuple[int, ...]:
    seeds = [value] if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(seeds, Sequence) or isinstance(seeds, str) or not seeds:
        raise ValueError(f"seeds must be a non-empty list of integers, got {value!r}.")
    seeds = tuple(check_seed(s, name="seeds") for s in seeds)
    if len(set(seeds)) < len(seeds):
        raise ValueError(f"seeds lists a seed twice: {list(seeds)}.")
    return seeds


def _config_part(value: Any, where: str) -> dict[str, Any]:
    part = _mapping(value, where)
    fixed = sorted(set(part) & set(RUN_FIELDS))
    if fixed:
        raise ValueError(
            f"{where} sets {fixed}, which the study sets for each run (seeds: [...] for the seed; the run "
            "folder OUT/runs/<candidate>/seed<k> for output_dir); remove them."
        )
    return part


def _candidates(values: Mapping[str, Any]) -> tuple[StudyCandidate, ...]:
    """Every candidate with its full, validated configuration."""
    from ...core.training import TrainConfig

    base = _config_part(values.get("base"), "base")
    named = _named_candidates(values.get("candidates"))
    grid = _grid(values.get("grid"))
    if not named and not grid:
        raise ValueError("the study has no candidate: give 'candidates' (a list of {name, config}) or a 'grid'.")
    combos = [({}, ())] if not grid else [
        (dict(zip(grid, combo, strict=True)), tuple(_value_name(v) for v in combo))
        for combo in itertools.product(*grid.values())
    ]  # fmt: skip
    out, seen = [], set()
    for cand_name, config in named or [(None, {})]:
        for overrides, words in combos:
            name = "-".join(([cand_name] if cand_name else []) + list(words))
            if not _NAME.match(name):
                raise ValueError(
                    f"candidate name {name!r} cannot name a folder; use letters, digits and . _ + = - only."
                )
            if name in seen:
                raise ValueError(f"two candidates are called {name!r}; give every candidate its own name.")
            seen.add(name)
            try:
                built = TrainConfig.from_dict({**base, **config, **overrides})
            except (TypeError, ValueError) as exc:
                raise type(exc)(f"candidate {name!r}: {exc}") from exc
            out.append(StudyCandidate(name, built))
    return tuple(out)


def _named_candidates(value: Any) -> list[tuple[str, dict[str, Any]]]:
    if value is None:
        return []
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Sequence):
        raise TypeError(f"candidates must be a list of {{name, config}} entries, got {describe(value)}.")
    if not value:
        raise ValueError("candidates is empty; list at least one {name, config} entry (or use a grid).")
    out = []
    for i, entry in enumerate(value):
        entry = _mapping(entry, f"candidates[{i}]")
        _unknown(entry, ("name", "config"), f"candidates[{i}]")
        name = entry.get("name")
        if not isinstance(name, str) or not name:
            raise ValueError(f"candidates[{i}] needs a 'name' (a non-empty string), got {name!r}.")
        out.append((name, _config_part(entry.get("config"), f"candidate {name!r}")))
    return out


def _grid(value: Any) -> dict[str, list[Any]]:
    grid = _config_part(value, "grid")
    for key, options in grid.items():
        if isinstance(options, (str, bytes, Mapping)) or not isinstance(options, Sequence) or not options:
            raise ValueError(f"grid.{key} must be a non-empty list of values, got {options!r}.")
        grid[key] = list(options)
    return grid


def _value_name(value: Any) -> str:
    """A grid value in a candidate name: ``svls``, ``0.1``, ``8x16`` for a list."""
    if isinstance(value, (list, tuple)):
        return "x".join(_value_name(v) for v in value)
    return str(value).lower() if isinstance(value, bool) else str(value)
