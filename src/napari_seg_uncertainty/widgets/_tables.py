"""Tables in a dock: one rule for showing a number, and tables that fit the dock's width.

Every table cell and status number of the plugin's docks goes through :func:`format_number`: counts
as integers with thousands separators, other numbers to 3 significant digits without an exponent
from 0.0001 up (magicgui's own display turns 0.0258 into ``2.580e-02`` and 1055000 into
``1.055e+06``). Tables hold the numbers themselves; only their display is formatted.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["SIGNIFICANT_DIGITS", "fit_rows", "fit_table", "format_number", "table_cell"]

#: Significant digits of a shown number (Dice 0.899, ECE 2.32 %, TACE 0.00123, 93.8 mm²): enough to compare
#: models and raters, and narrow enough for a 4-rater Dice table in a dock of napari's default width.
SIGNIFICANT_DIGITS = 3
#: Smallest magnitude shown without an exponent.
_PLAIN_FROM = 1e-4


def format_number(value: Any) -> str:
    """How a table or status line shows a number.

    ``1,234,567`` (integers and magnitudes of 1000 and more) · ``0.899`` · ``93.8`` · ``0.00123``
    (3 significant digits) · ``1.23e-05`` (below 0.0001) · ``0`` · ``n/a`` (NaN or infinite). Text
    that is not a number is returned as it is; text that is (a table cell's display text) is read
    first, so ``"2"`` stays ``2``.

    Examples
    --------
    >>> [format_number(v) for v in (1055000, 0.89912, 93.75, 0.0012345, 1.2e-05, 0.0, float("nan"), "organ")]
    ['1,055,000', '0.899', '93.8', '0.00123', '1.20e-05', '0', 'n/a', 'organ']
    """
    if isinstance(value, str):
        try:
            value = int(value)
        except ValueError:
            try:
                value = float(value)
            except ValueError:
                return value
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    if not math.isfinite(number):
        return "n/a"
    magnitude = abs(number)
    if magnitude == 0:
        return "0"
    if magnitude >= 1000:
        return f"{number:,.0f}"
    if magnitude >= _PLAIN_FROM:
        decimals = SIGNIFICANT_DIGITS - 1 - math.floor(math.log10(magnitude))
        text = f"{number:.{max(decimals, 0)}f}"
        if abs(float(text)) >= 1000:  # 999.96 rounds up to 1000.0
            return f"{number:,.0f}"
        return text
    return f"{number:.2e}"


def fit_table(table: Any, *, min_height: int = 120, show_index: bool = True) -> None:
    """Make a magicgui ``Table`` fit its dock: columns share the width, no horizontal scroll bar, and
    numbers shown by :func:`format_number`; cells are read-only."""
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QAbstractItemView, QHeaderView, QStyledItemDelegate

    class _NumberDelegate(QStyledItemDelegate):
        def displayText(self, value: Any, locale: Any) -> str:  # noqa: N802 - Qt's name
            return format_number(value)

    native = table.native
    native._number_delegate = _NumberDelegate(native)
    native.setItemDelegate(native._number_delegate)
    native.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    native.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    native.setWordWrap(False)
    native.setTextElideMode(Qt.TextElideMode.ElideMiddle)
    native.setMinimumHeight(min_height)
    native.setMinimumWidth(0)
    header = native.horizontalHeader()
    header.setMinimumSectionSize(24)
    header.setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
    native.verticalHeader().setVisible(show_index)
    native.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)


def fit_rows(table: Any, *, min_height: int = 40) -> None:
    """Fix a table's height to show every row, so the dock scrolls and not the table."""
    view = table.native
    view.resizeRowsToContents()
    height = view.horizontalHeader().height() + 2 * view.frameWidth() + 2
    height += sum(view.rowHeight(i) for i in range(view.rowCount()))
    view.setFixedHeight(max(height, min_height))


def table_cell(value: Any) -> Any:
    """What a table cell holds for ``value``: a float (shown by :func:`format_number`), ``"n/a"`` for NaN.

    Examples
    --------
    >>> table_cell(np.float32(0.25)), table_cell(float("nan")), table_cell("organ"), table_cell(3)
    (0.25, 'n/a', 'organ', 3)
    """
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else "n/a"
    return value
