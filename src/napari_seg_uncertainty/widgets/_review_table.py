"""The *Cohort review* dock's case table: sortable, filterable, each row coloured by the case's uncertainty.

:class:`ReviewTable` is a plain ``QTableWidget`` (a few hundred test cases at most; sorting and row
colours come with it). Numbers sort by value, not by their text; the rows are ranked for review by
default (the review order of the session: most uncertain first). :meth:`ReviewTable.case_order` is
the order the rows are shown in (sorted, filtered): *Next* and *Previous* follow it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from ._tables import format_number

__all__ = ["COLUMNS", "ReviewTable", "uncertainty_color"]

#: The table's columns and the :class:`~napari_seg_uncertainty.workflow.review.ReviewRow` field each shows.
COLUMNS = (
    ("case", "case_id"),
    ("rank", "rank"),
    ("Dice", "dice"),
    ("ECE", "ece"),
    ("NLL", "nll"),
    ("entropy", "segment_entropy"),
    ("✓", "reviewed"),
)
#: What each column shows (the header's tooltip).
COLUMN_TIPS = (
    "The case id.",
    "Place in the review queue: 1 = most uncertain (highest segment-level entropy), review first.",
    "Mean Dice over the foreground classes against the fused reference.",
    "Expected calibration error against the fused reference, whole volume.",
    "Negative log-likelihood against the fused reference, whole volume.",
    "Segment-level entropy (nats), mean over the foreground structures (Mehrtash et al.).",
    "Reviewed (ticked with the Reviewed box below the table).",
)
#: Colour stops of the uncertainty ramp, from certain (0) to uncertain (1): pale green, pale yellow,
#: salmon. Light enough for dark text in both napari themes (the row text is drawn black on them).
RAMP = ((0.0, (0xd9, 0xf0, 0xd3)), (0.5, (0xfe, 0xf0, 0xb0)), (1.0, (0xf4, 0xa5, 0x82)))
#: Widest the table asks the dock to be (pixels).
MAX_WIDTH = 460
#: The text colour of coloured rows.
TEXT_COLOR = "#111111"


def uncertainty_color(uncertainty: float) -> str:
    """The row colour of a case with ``uncertainty`` in [0, 1] (linear between the :data:`RAMP` stops).

    Values outside [0, 1] are clipped; NaN (not scored) gives the middle colour.

    Examples
    --------
    >>> uncertainty_color(0.0), uncertainty_color(1.0), uncertainty_color(0.25)
    ('#d9f0d3', '#f4a582', '#ecf0c2')
    """
    u = 0.5 if not math.isfinite(uncertainty) else min(max(float(uncertainty), 0.0), 1.0)
    for (lo, low_rgb), (hi, high_rgb) in zip(RAMP, RAMP[1:]):
        if u <= hi:
            t = (u - lo) / (hi - lo)
            rgb = [round(a + t * (b - a)) for a, b in zip(low_rgb, high_rgb)]
            return "#" + "".join(f"{c:02x}" for c in rgb)
    return "#" + "".join(f"{c:02x}" for c in RAMP[-1][1])


def _sort_key(value: Any) -> tuple[int, Any]:
    """Numbers before text, by value; NaN and ``None`` (no rank) last."""
    if value is None:
        return (2, 0.0)
    if isinstance(value, bool):
        return (0, float(value))
    if isinstance(value, (int, float)):
        return (0, float(value)) if math.isfinite(float(value)) else (2, 0.0)
    return (1, str(value))


def _cell_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "✓" if value else ""
    return format_number(value)


class ReviewTable:
    """The evaluated cases of one candidate: rank, Dice, ECE, NLL, segment entropy, reviewed.

    Attributes
    ----------
    native : QTableWidget
    rows : list
        The :class:`~napari_seg_uncertainty.workflow.review.ReviewRow` objects shown, in the session's order.
    """

    def __init__(self) -> None:
        from qtpy.QtCore import Qt
        from qtpy.QtWidgets import QAbstractItemView, QHeaderView, QTableWidget, QTableWidgetItem

        class _Item(QTableWidgetItem):
            def __lt__(self, other: Any) -> bool:  # sort numbers by value (Qt compares the text)
                return _sort_key(self.data(Qt.ItemDataRole.UserRole)) < _sort_key(
                    other.data(Qt.ItemDataRole.UserRole)
                )

        self._item_type = _Item
        self.rows: list[Any] = []
        self.native = QTableWidget(0, len(COLUMNS))
        self.native.setHorizontalHeaderLabels([title for title, _ in COLUMNS])
        for j, tip in enumerate(COLUMN_TIPS):
            self.native.horizontalHeaderItem(j).setToolTip(tip)
        self.native.setToolTip(
            "The evaluated cases, most uncertain first (rank); rows coloured by uncertainty (green: certain, "
            "red: uncertain). Click a header to sort; select a case to open it."
        )
        self.native.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.native.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.native.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.native.setWordWrap(False)
        self.native.verticalHeader().setVisible(False)
        self.native.verticalHeader().setDefaultSectionSize(self.native.fontMetrics().height() + 6)
        header = self.native.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)  # "case_002" whole, not "…"
        header.setStretchLastSection(True)  # spare width goes to the last column
        header.setMinimumSectionSize(24)
        self.native.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)  # as wide as its columns
        self.native.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.native.setMinimumHeight(140)
        self.native.setMinimumWidth(0)
        self.native.setSortingEnabled(True)
        self._qt = (Qt, QTableWidgetItem)

    # filling ----------------------------------------------------------------------------------------
    def set_rows(self, rows: Sequence[Any]) -> None:
        """Show ``rows`` (ReviewRow objects), sorted by rank."""
        from qtpy.QtGui import QBrush, QColor

        Qt = self._qt[0]
        self.rows = list(rows)
        view = self.native
        view.setSortingEnabled(False)  # filling a sorting table moves rows under the loop
        view.clearContents()
        view.setRowCount(len(self.rows))
        text = QBrush(QColor(TEXT_COLOR))
        for i, row in enumerate(self.rows):
            background = QBrush(QColor(uncertainty_color(float(getattr(row, "uncertainty", math.nan)))))
            for j, (_title, field) in enumerate(COLUMNS):
                value = getattr(row, field)
                item = self._item_type(_cell_text(value))
                item.setData(Qt.ItemDataRole.UserRole, value)
                item.setBackground(background)
                item.setForeground(text)
                if j == 0:
                    item.setToolTip(f"{value}: uncertainty {format_number(getattr(row, 'uncertainty', math.nan))}")
                view.setItem(i, j, item)
        view.setSortingEnabled(True)
        view.sortItems(1, Qt.SortOrder.AscendingOrder)
        # as wide as its columns (the dock widens up to MAX_WIDTH rather than hide one)
        header = view.horizontalHeader()
        width = 2 * view.frameWidth() + len(COLUMNS) + 12 + view.verticalScrollBar().sizeHint().width()
        width += sum(max(view.sizeHintForColumn(j), header.sectionSizeHint(j)) for j in range(len(COLUMNS)))
        view.setMinimumWidth(min(width, MAX_WIDTH) if self.rows else 0)

    def set_reviewed(self, case_id: str, reviewed: bool) -> None:
        """Tick (or clear) the reviewed cell of ``case_id``."""
        Qt = self._qt[0]
        column = [field for _, field in COLUMNS].index("reviewed")
        for i in range(self.native.rowCount()):
            if self.case_at(i) == case_id:
                item = self.native.item(i, column)
                item.setText(_cell_text(bool(reviewed)))
                item.setData(Qt.ItemDataRole.UserRole, bool(reviewed))

    # reading ----------------------------------------------------------------------------------------
    def case_at(self, row: int) -> str:
        """The case id shown in table row ``row``."""
        return str(self.native.item(row, 0).data(self._qt[0].ItemDataRole.UserRole))

    def case_order(self) -> list[str]:
        """The case ids of the rows shown (not filtered out), top to bottom."""
        return [self.case_at(i) for i in range(self.native.rowCount()) if not self.native.isRowHidden(i)]

    def selected_case(self) -> str | None:
        """The case id of the selected row (``None`` when none is)."""
        rows = self.native.selectionModel().selectedRows()
        return self.case_at(rows[0].row()) if rows else None

    def select(self, case_id: str) -> bool:
        """Select the row of ``case_id`` and scroll to it; ``False`` when no row shows it."""
        for i in range(self.native.rowCount()):
            if self.case_at(i) == case_id and not self.native.isRowHidden(i):
                self.native.selectRow(i)
                self.native.scrollToItem(self.native.item(i, 0))
                return True
        return False

    def filter(self, text: str = "", *, only_not_reviewed: bool = False) -> None:
        """Show only the cases whose id contains ``text`` (case-insensitive) and, optionally, not reviewed."""
        Qt = self._qt[0]
        needle = str(text).strip().lower()
        column = [field for _, field in COLUMNS].index("reviewed")
        for i in range(self.native.rowCount()):
            reviewed = bool(self.native.item(i, column).data(Qt.ItemDataRole.UserRole))
            hidden = (needle and needle not in self.case_at(i).lower()) or (only_not_reviewed and reviewed)
            self.native.setRowHidden(i, bool(hidden))
