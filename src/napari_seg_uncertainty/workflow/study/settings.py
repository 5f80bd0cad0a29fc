"""The sections of a study file (:mod:`.spec`): the generated cohort, evaluation, table, quality control
and launcher settings, each a checked frozen dataclass, and the check of the table's metric keys.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ...core._validation import check_choice, check_flag, check_int, check_real_in, check_seed, describe
from ...core.cohort.splits import SPLIT_KEYS
from ...core.evaluation.case_metrics import REFERENCES

__all__ = [
    "COHORT_OPTION_KEYS",
    "LAUNCHERS",
    "RUN_FIELDS",
    "STUDY_KEYS",
    "TABLE_TESTS",
    "EvaluateSettings",
    "LauncherSettings",
    "PhantomCohort",
    "QualitySettings",
    "SlurmSettings",
    "TableSettings",
    "check_metric_classes",
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
