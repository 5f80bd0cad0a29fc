"""Helpers shared by the soft-label modules: the allocation guard and the inferred class count."""

from __future__ import annotations

from typing import Any

import numpy as np

from .._memory import array_bytes, check_allocation
from .._validation import check_num_classes


def check_class_maps_fit(
    num_classes: int, spatial: tuple[int, ...], *, what: str, bytes_per_value: int = 4
) -> None:
    """Refuse, before allocating, ``(C, *spatial)`` results (plus temporaries) that cannot fit in memory."""
    check_allocation(
        array_bytes((num_classes, *spatial), np.uint8) * bytes_per_value,
        what=f"{what} of shape {(num_classes, *spatial)}",
        cause=f"num_classes={num_classes} with label maps of shape {spatial}",
        advice="check num_classes (labels are 0 .. num_classes - 1) or use a smaller region",
    )


def infer_num_classes(raters: np.ndarray, num_classes: Any) -> int:
    """``num_classes`` checked, or ``max label + 1`` (at least 2) when it is None."""
    if num_classes is None:
        return max(int(raters.max()) + 1, 2)
    return check_num_classes(num_classes)

