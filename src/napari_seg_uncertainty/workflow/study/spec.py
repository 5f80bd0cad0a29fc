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
    table: {metrics: ["organ:dice", "all:ece_reference_volume"], reference: one-hot, test: wilcoxon, alpha: 0.05}
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
import difflib
import itertools
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...core._validation import check_choice, check_flag, check_int, check_real_in, check_seed, describe
from ...core.cohort.splits import SPLIT_KEYS
from ...core.evaluation.case_metrics import REFERENCES

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

#: Where the runs are trained: one after another in this process, several processes at once on this
#: machine (``submitit.LocalExecutor``), or SLURM jobs (``submitit.AutoExecutor``).
LAUNCHERS = ("local", "parallel", "slurm")
#: Paired tests of the study table.
TABLE_TESTS = ("wilcoxon", "bootstrap")
#: Top-level keys of a study file.
STUDY_KEYS = (
    "name", "description", "cohort", "cohort_options", "split", "base", "candidates", "grid", "seeds",
    "evaluate", "table", "quality", "launcher", "out_dir",
)  # fmt: skip
#: ``load_cohort`` keywords a study may set.
COHORT_OPTION_KEYS = ("on_error", "class_names", "target_spacing", "task")
#: TrainConfig fields the runner sets for each run.
RUN_FIELDS = ("seed", "output_dir", "overwrite")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+=-]*$")


def _unknown(values: Mapping[str, Any], known: Sequence[str], where: str) -> None:
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in {where}; known keys: {', '.join(known)}.")


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError(f"{where} must be a mapping, got {describe(value)}.")
    for key in value:
        if not isinstance(key, str):
            raise TypeError(f"{where} must have string keys, got the key {describe(key)}.")
    return dict(value)


def _settings(cls: type, values: Any, where: str) -> Any:
    """A settings dataclass from a mapping; unknown keys named with ``where``."""
    values = _mapping(values, where)
    _unknown(values, [f.name for f in dataclasses.fields(cls)], where)
    return cls(**values)


@dataclass(frozen=True)
class PhantomCohort:
    """A generated cohort (``make_phantom_cohort``), written into ``OUT/cohort``.

    Attributes
    ----------
    n_cases, ndim, layout, num_raters, num_classes, shape, channels, seed, split
        The arguments of ``make_phantom_cohort`` (``shape`` None: its default).
    """

    n_cases: int
    ndim: int = 2
    layout: str = "generic"
    num_raters: int = 3
    num_classes: int = 2
    shape: tuple[int, ...] | None = None
    channels: int = 1
    seed: int = 0
    split: bool = True

    def __post_init__(self) -> None:
        from ...core.cohort.phantom import PHANTOM_LAYOUTS

        check_int(self.n_cases, name="cohort.phantom.n_cases", minimum=2)
        if self.ndim not in (2, 3) or isinstance(self.ndim, bool):
            raise ValueError(f"cohort.phantom.ndim must be 2 or 3, got {self.ndim!r}.")
        check_choice(self.layout, name="cohort.phantom.layout", choices=PHANTOM_LAYOUTS)
        check_int(self.num_raters, name="cohort.phantom.num_raters", minimum=1)
        if self.num_classes not in (2, 3, 4) or isinstance(self.num_classes, bool):
            raise ValueError(f"cohort.phantom.num_classes must be 2, 3 or 4, got {self.num_classes!r}.")
        if self.shape is not None:
            if isinstance(self.shape, (str, bytes)) or not isinstance(self.shape, Sequence):
                raise TypeError(f"cohort.phantom.shape must be a list of sizes or null, got {describe(self.shape)}.")
            object.__setattr__(self, "shape", tuple(check_int(s, name="cohort.phantom.shape", minimum=8)
                                                    for s in self.shape))
        check_int(self.channels, name="cohort.phantom.channels", minimum=1)
        check_seed(self.seed, name="cohort.phantom.seed")
        check_flag(self.split, name="cohort.phantom.split")

    def source(self, folder: str | os.PathLike) -> str:
        """What ``load_cohort`` reads once the cohort is written into ``folder``."""
        # make_phantom_cohort returns the same path; it is needed here to reuse a cohort without rewriting it
        name = {"npz": "cohort.npz", "manifest": "cohort.csv"}.get(self.layout)
        folder = os.path.abspath(os.fspath(folder))
        return os.path.join(folder, name) if name else folder

    def to_dict(self) -> dict[str, Any]:
        """The settings as a plain mapping (``shape`` as a list)."""
        out = dataclasses.asdict(self)
        out["shape"] = None if self.shape is None else list(self.shape)
        return out


@dataclass(frozen=True)
class EvaluateSettings:
    """How every run is evaluated (the keywords of ``evaluate_checkpoints``).

    ``checkpoint``: ``"last"`` evaluates the weights at the end of training (``last.pt``), ``"best"``
    those chosen on the validation cases (``best.pt``, written when the split has validation cases).
    """

    checkpoint: str = "last"
    split: str = "test"
    reference: str = "majority"
    tolerance_mm: float = 1.0
    num_bins: int = 15
    num_samples: int | None = None
    num_resamples: int = 10000
    seed: int = 0

    def __post_init__(self) -> None:
        check_choice(self.checkpoint, name="evaluate.checkpoint", choices=("last", "best"))
        check_choice(self.split, name="evaluate.split", choices=SPLIT_KEYS)
        check_choice(self.reference, name="evaluate.reference", choices=REFERENCES)
        check_real_in(self.tolerance_mm, name="evaluate.tolerance_mm", low=0.0, high=math.inf, high_open=True)
        check_int(self.num_bins, name="evaluate.num_bins", minimum=1)
        if self.num_samples is not None:
            check_int(self.num_samples, name="evaluate.num_samples", minimum=0)
        check_int(self.num_resamples, name="evaluate.num_resamples", minimum=1)
        check_seed(self.seed, name="evaluate.seed")


@dataclass(frozen=True)
class TableSettings:
    """The study table (``study_table``): metric keys ``"<class>:<metric>"``, the reference, the paired test.

    ``metrics`` empty: the Dice of every class with one and ``all:ece_reference_volume``. ``percent``:
    metric keys shown in percent in ``study.md`` and ``study.png`` (the CSV keeps the fractions).
    """

    metrics: tuple[str, ...] = ()
    reference: str | None = None
    test: str = "wilcoxon"
    alpha: float = 0.05
    percent: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "metrics", _metric_keys(self.metrics, "table.metrics"))
        object.__setattr__(self, "percent", _metric_keys(self.percent, "table.percent"))
        if self.reference is not None and not isinstance(self.reference, str):
            raise TypeError(f"table.reference must be a candidate name or null, got {describe(self.reference)}.")
        check_choice(self.test, name="table.test", choices=TABLE_TESTS)
        check_real_in(self.alpha, name="table.alpha", low=0.0, high=1.0, low_open=True, high_open=True)


def _metric_keys(value: Any, where: str) -> tuple[str, ...]:
    keys = [value] if isinstance(value, str) else value
    if keys is None:
        return ()
    if not isinstance(keys, Sequence):
        raise TypeError(f"{where} must be a list of '<class>:<metric>' keys, got {describe(value)}.")
    for key in keys:
        if not isinstance(key, str) or key.count(":") != 1 or not all(key.split(":")):
            raise ValueError(
                f"{where} entry {key!r} is not a '<class>:<metric>' key such as 'organ:dice' or "
                "'all:ece_reference_volume'."
            )
        _check_metric_name(key, where)
    return tuple(keys)


def _suggest(word: str, options: Sequence[str], template: str = "{}") -> str:
    """``"; did you mean 'a' or 'b'?"`` from the closest of ``options``, or nothing."""
    close = difflib.get_close_matches(word, options, n=3, cutoff=0.6)
    return f"; did you mean {' or '.join(repr(template.format(c)) for c in close)}?" if close else ""


def _check_metric_name(key: str, where: str) -> None:
    """Refuse a key whose metric ``evaluate_case`` does not write for its kind of class (per class or ``all``)."""
    from ...core.evaluation.case_metrics import CASE_METRICS, CLASS_METRICS, is_rater_metric

    structure, metric = key.split(":")
    if structure == "all":
        if metric not in CASE_METRICS:
            hint = f"; {metric!r} is per class: '<class>:{metric}'." if metric in CLASS_METRICS or is_rater_metric(
                metric) else _suggest(metric, CASE_METRICS, "all:{}")
            raise ValueError(f"{where} entry {key!r}: no case-level metric {metric!r}{hint or '.'}")
    elif metric not in CLASS_METRICS and not is_rater_metric(metric):
        hint = f"; case-level metrics have the class 'all': 'all:{metric}'." if metric in CASE_METRICS else _suggest(
            metric, (*CLASS_METRICS, "dice/rater_1"), f"{structure}:{{}}")
        raise ValueError(f"{where} entry {key!r}: no per-class metric {metric!r}{hint or '.'}")


def check_metric_classes(table: TableSettings, class_names: Sequence[str]) -> None:
    """Refuse a table metric key whose class is neither ``"all"`` nor one of the foreground ``class_names``.

    Parameters
    ----------
    table : TableSettings
        The study's table settings (``metrics`` and ``percent``).
    class_names : sequence of str
        The cohort's class names, background first (the evaluation writes no row for it).

    Raises
    ------
    ValueError
        One line naming the key and the closest class names.
    """
    foreground = [str(name) for name in list(class_names)[1:]]
    for where, keys in (("table.metrics", table.metrics), ("table.percent", table.percent)):
        for key in keys:
            structure, metric = key.split(":")
            if structure != "all" and structure not in foreground:
                hint = _suggest(structure, foreground, f"{{}}:{metric}") or f"; its classes are {foreground}."
                raise ValueError(f"{where} entry {key!r}: the cohort has no foreground class {structure!r}{hint}")


@dataclass(frozen=True)
class QualitySettings:
    """Quality control (Mehrtash): the share of the cases flagged for review."""

    review_fraction: float = 0.2

    def __post_init__(self) -> None:
        check_real_in(self.review_fraction, name="quality.review_fraction", low=0.0, high=1.0, low_open=True)


@dataclass(frozen=True)
class SlurmSettings:
    """SLURM job settings passed to ``submitit.AutoExecutor`` (``None``: the cluster's default).

    ``array``: submit the runs as one job array (``slurm_array_parallelism`` = the launcher's
    ``jobs``) instead of one job per run. ``setup``: shell lines run before the job (``module load``…).
    """

    partition: str | None = None
    timeout_min: int = 120
    gpus_per_node: int = 1
    cpus_per_task: int | None = None
    mem_gb: float | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    setup: tuple[str, ...] = ()
    array: bool = True

    def __post_init__(self) -> None:
        for name in ("partition", "account", "qos", "constraint"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise TypeError(f"launcher.slurm.{name} must be a non-empty string or null, got {describe(value)}.")
        check_int(self.timeout_min, name="launcher.slurm.timeout_min", minimum=1)
        check_int(self.gpus_per_node, name="launcher.slurm.gpus_per_node", minimum=0)
        if self.cpus_per_task is not None:
            check_int(self.cpus_per_task, name="launcher.slurm.cpus_per_task", minimum=1)
        if self.mem_gb is not None:
            check_real_in(self.mem_gb, name="launcher.slurm.mem_gb", low=0.0, high=math.inf, low_open=True,
                          high_open=True)
        setup = [self.setup] if isinstance(self.setup, str) else self.setup
        if not isinstance(setup, Sequence) or not all(isinstance(s, str) for s in setup):
            raise TypeError(f"launcher.slurm.setup must be a list of shell lines, got {describe(self.setup)}.")
        object.__setattr__(self, "setup", tuple(setup))
        check_flag(self.array, name="launcher.slurm.array")


@dataclass(frozen=True)
class LauncherSettings:
    """Where the runs are trained: ``kind`` (one of :data:`LAUNCHERS`), ``jobs`` at a time.

    ``jobs``: processes at once for ``parallel``, the array's parallelism for ``slurm`` (ignored by
    ``local``, which trains one run after another). ``timeout_min`` bounds one run of the ``parallel``
    launcher (submitit stops a job past it; its ``last.pt`` then resumes on the next start); a SLURM
    job's limit is ``slurm.timeout_min``.
    """

    kind: str = "local"
    jobs: int = 1
    timeout_min: int = 24 * 60
    slurm: SlurmSettings = field(default_factory=SlurmSettings)

    def __post_init__(self) -> None:
        check_choice(self.kind, name="launcher.kind", choices=LAUNCHERS)
        check_int(self.jobs, name="launcher.jobs", minimum=1)
        check_int(self.timeout_min, name="launcher.timeout_min", minimum=1)
        if not isinstance(self.slurm, SlurmSettings):
            object.__setattr__(self, "slurm", _settings(SlurmSettings, self.slurm, "launcher.slurm"))


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
