"""Case-level splits of a cohort: fractions, k-fold, a manifest's split column, or an explicit assignment.

Every split is a dict with the keys ``"train"``, ``"val"`` and ``"test"`` (lists of case ids, possibly
empty), holds no id twice, only ids of the cohort, at least one training case, and is the same for the
same seed. Splits are drawn over cases, never inside one, so no slice of a volume reaches two splits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from numbers import Real
from typing import Any

import numpy as np

from .._validation import check_int, check_real_in, check_seed, describe

__all__ = ["SPLIT_KEYS", "check_split", "fraction_split", "kfold_split"]

SPLIT_KEYS = ("train", "val", "test")


def _check_ids(ids: Sequence[str]) -> list[str]:
    ids = list(ids)
    if not ids:
        raise ValueError("the cohort holds no case; a split needs at least one case.")
    return ids


def _in_order(ids: list[str], chosen: set[str]) -> list[str]:
    return [i for i in ids if i in chosen]


def _counts(n: int, val: float, test: float) -> tuple[int, int]:
    """Validation and test case counts: rounded fractions, at least one each when asked and possible,
    always leaving one training case."""
    n_val, n_test = int(round(val * n)), int(round(test * n))
    if test > 0 and n_test == 0 and n - n_val >= 2:
        n_test = 1
    if val > 0 and n_val == 0 and n - n_test >= 2:
        n_val = 1
    while n_val + n_test > n - 1:
        if n_test >= n_val and n_test > 0:
            n_test -= 1
        else:
            n_val -= 1
    return n_val, n_test


def _fractions(val: Any, test: Any) -> tuple[float, float]:
    val = check_real_in(val, name="val", low=0.0, high=1.0, high_open=True)
    test = check_real_in(test, name="test", low=0.0, high=1.0, high_open=True)
    if val + test >= 1.0:
        raise ValueError(f"val + test must be below 1 to leave training cases, got val={val} and test={test} "
                         f"(sum {val + test}).")
    return val, test


def fraction_split(ids: Sequence[str], *, val: float = 0.2, test: float = 0.2, seed: int = 0) -> dict[str, list[str]]:
    """Random case-level split by fractions.

    Parameters
    ----------
    ids : sequence of str
        The cohort's case ids.
    val, test : float
        Fractions of the cases for validation and test, each in ``[0, 1)`` with ``val + test < 1``.
        Counts are rounded; a fraction above 0 gets at least one case while a training case remains.
    seed : int
        The same seed gives the same split.

    Returns
    -------
    dict
        ``{"train": [...], "val": [...], "test": [...]}``, ids in cohort order.

    Examples
    --------
    >>> s = fraction_split([f"c{i}" for i in range(10)], val=0.2, test=0.1, seed=1)
    >>> [len(s[k]) for k in ("train", "val", "test")]
    [7, 2, 1]
    >>> s == fraction_split([f"c{i}" for i in range(10)], val=0.2, test=0.1, seed=1)
    True
    """
    val, test = _fractions(val, test)
    seed = check_seed(seed)
    ids = _check_ids(ids)
    n_val, n_test = _counts(len(ids), val, test)
    order = np.random.default_rng(seed).permutation(len(ids))
    test_ids = {ids[i] for i in order[:n_test]}
    val_ids = {ids[i] for i in order[n_test:n_test + n_val]}
    train_ids = set(ids) - test_ids - val_ids
    return {"train": _in_order(ids, train_ids), "val": _in_order(ids, val_ids), "test": _in_order(ids, test_ids)}


def kfold_split(ids: Sequence[str], folds: int = 5, *, fold: int = 0, test: float = 0.0,
                seed: int = 0) -> dict[str, list[str]]:
    """Fold ``fold`` of a k-fold cross-validation over cases, with an optional fixed test set.

    The test cases (a fraction ``test``) are drawn first and are the same for every fold of a seed;
    the remaining cases are shuffled and cut into ``folds`` near-equal parts. Fold ``fold`` validates
    on part ``fold`` and trains on the others, so over the ``folds`` folds every non-test case is
    validated exactly once.

    Examples
    --------
    >>> ids = [f"c{i}" for i in range(7)]
    >>> vals = [kfold_split(ids, 3, fold=k, seed=0)["val"] for k in range(3)]
    >>> sorted(sum(vals, [])) == sorted(ids)
    True
    """
    folds = check_int(folds, name="folds", minimum=2)
    fold = check_int(fold, name="fold", minimum=0)
    if fold >= folds:
        raise ValueError(f"fold must lie in 0..{folds - 1} for folds={folds}, got {fold}.")
    test = check_real_in(test, name="test", low=0.0, high=1.0, high_open=True)
    seed = check_seed(seed)
    ids = _check_ids(ids)
    n = len(ids)
    _, n_test = _counts(n, 0.0, test)
    if n - n_test < folds:
        raise ValueError(f"folds={folds} needs at least {folds} cases outside the test set, but the cohort has "
                         f"{n} case(s) of which {n_test} are test cases; use fewer folds.")
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    test_ids = {ids[i] for i in order[:n_test]}
    rest = order[n_test:]
    parts = np.array_split(rest, folds)
    val_ids = {ids[i] for i in parts[fold]}
    train_ids = set(ids) - test_ids - val_ids
    return {"train": _in_order(ids, train_ids), "val": _in_order(ids, val_ids), "test": _in_order(ids, test_ids)}


def check_split(split: Any, ids: Sequence[str], *, name: str = "split") -> dict[str, list[str]]:
    """Check an explicit ``{"train": [...], "val": [...], "test": [...]}`` against the cohort's ids.

    Missing keys mean empty lists; cases named in no list are left out of training and evaluation.

    Raises
    ------
    TypeError
        If ``split`` is not a mapping of lists of case ids.
    ValueError
        On an unknown key, an unknown case id, an id in two splits (or twice in one) or no training case.

    Examples
    --------
    >>> check_split({"train": ["a"], "val": ["b"]}, ["a", "b", "c"])
    {'train': ['a'], 'val': ['b'], 'test': []}
    """
    if not isinstance(split, Mapping):
        raise TypeError(f"{name} must be a dict with keys 'train', 'val', 'test', got {describe(split)}.")
    unknown_keys = [k for k in split if k not in SPLIT_KEYS]
    if unknown_keys:
        raise ValueError(f"{name} has unknown key(s) {unknown_keys}; expected 'train', 'val' and 'test'.")
    known = set(ids)
    where: dict[str, str] = {}
    out: dict[str, list[str]] = {}
    for key in SPLIT_KEYS:
        value = split.get(key, [])
        if value is None:
            value = []
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            raise TypeError(f"{name}[{key!r}] must be a list of case ids, got {describe(value)}.")
        listed = []
        for cid in value:
            if not isinstance(cid, str):
                raise TypeError(f"{name}[{key!r}] must hold case ids (str), got {describe(cid)}.")
            if cid not in known:
                raise ValueError(f"{name}[{key!r}] names case {cid!r}, which is not in the cohort.")
            if cid in where:
                raise ValueError(f"case {cid!r} is in {name}[{where[cid]!r}] and {name}[{key!r}]; a case belongs "
                                 "to one split only.")
            where[cid] = key
            listed.append(cid)
        out[key] = listed
    if not out["train"]:
        raise ValueError(f"{name}['train'] is empty; a split needs at least one training case.")
    return out


def is_fraction(value: Any) -> bool:
    """Whether ``value`` is a real number (not a bool)."""
    return isinstance(value, Real) and not isinstance(value, bool)
