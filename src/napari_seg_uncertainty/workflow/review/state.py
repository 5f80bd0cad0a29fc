"""The reviewer's state of a study or evaluation folder: ``review.json``, written atomically.

The file holds which cases a reviewer marked reviewed (with an optional note and the time) and every
annotation saved through the review (the file, its kind, who saved it and when). Every change reads
the file again, applies the change and replaces the file atomically, so two sessions on one folder
(a widget and a script) do not undo each other's marks.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ...core._atomic import atomic_write

__all__ = ["REVIEW_FILE", "REVIEW_STATE_VERSION", "KeptAnnotation", "ReviewMark", "read_state", "update_state"]

#: The file name of the review state inside a study (or evaluation) folder.
REVIEW_FILE = "review.json"
#: Version of the ``review.json`` layout.
REVIEW_STATE_VERSION = 1


@dataclass(frozen=True)
class ReviewMark:
    """One case's review mark.

    Attributes
    ----------
    case_id : str
        The case.
    reviewed : bool
        Whether the case is marked reviewed.
    note : str
        The reviewer's note (may be empty).
    time : str
        When the mark was last set (ISO 8601, UTC).
    """

    case_id: str
    reviewed: bool
    note: str
    time: str


@dataclass(frozen=True)
class KeptAnnotation:
    """A label map saved through the review.

    Attributes
    ----------
    case_id : str
        The case it annotates.
    path : str
        The file written (absolute).
    kind : str
        ``"ssn_sample"`` (a kept SSN sample) or ``"edited"`` (an edited prediction).
    reviewer : str or None
        Who saved it, when given.
    time : str
        When it was saved (ISO 8601, UTC).
    in_cohort : bool
        True when the file was written beside the case as one more rater (a folder cohort reloads it);
        False when it went to the cohort's ``_annotations`` folder (an ``.npz`` or manifest cohort, or a
        cohort resampled on load).
    """

    case_id: str
    path: str
    kind: str
    reviewer: str | None
    time: str
    in_cohort: bool


def now() -> str:
    """The current time as ISO 8601 in UTC, to the second."""
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def _empty() -> dict[str, Any]:
    return {"version": REVIEW_STATE_VERSION, "cases": {}, "annotations": []}


def read_state(path: str | os.PathLike) -> dict[str, Any]:
    """The content of a ``review.json`` (an empty state when the file does not exist).

    Raises
    ------
    ValueError
        The file is not a review state this package wrote (names the file and what to do).
    """
    path = Path(path)
    if not path.exists():
        return _empty()
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{str(path)!r} is not a readable review state ({exc}); move it aside to start a new "
                         "review of this folder.") from exc
    if not isinstance(state, dict) or not isinstance(state.get("cases"), dict) \
            or not isinstance(state.get("annotations"), list):
        raise ValueError(f"{str(path)!r} is not a review state (expected an object with 'cases' and "
                         "'annotations'); move it aside to start a new review of this folder.")
    if state.get("version") != REVIEW_STATE_VERSION:
        raise ValueError(f"{str(path)!r} has review state version {state.get('version')!r}; this version of the "
                         f"plugin reads version {REVIEW_STATE_VERSION}.")
    return state


def update_state(path: str | os.PathLike, change: Any) -> dict[str, Any]:
    """Read the state, apply ``change(state)`` (it edits the dict in place) and write it atomically.

    Returns
    -------
    dict
        The state as written.
    """
    state = read_state(path)
    change(state)
    with atomic_write(path, overwrite=True) as temporary:  # our own state file: replaced on every change
        temporary.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return state


def marks(state: dict[str, Any]) -> dict[str, ReviewMark]:
    """The review marks of a state, by case id."""
    return {
        case_id: ReviewMark(case_id, bool(entry.get("reviewed", False)), str(entry.get("note", "")),
                            str(entry.get("time", "")))
        for case_id, entry in state["cases"].items()
        if isinstance(entry, dict)
    }


def annotations(state: dict[str, Any]) -> tuple[KeptAnnotation, ...]:
    """The annotations recorded in a state, oldest first."""
    return tuple(
        KeptAnnotation(str(a["case_id"]), str(a["path"]), str(a["kind"]),
                   None if a.get("reviewer") is None else str(a["reviewer"]), str(a.get("time", "")),
                   bool(a.get("in_cohort", False)))
        for a in state["annotations"]
        if isinstance(a, dict) and {"case_id", "path", "kind"} <= set(a)
    )
