"""The dock's layout: its controls in a vertical scroll area, tables and status lines over the full width.

napari docks a magicgui widget's ``native`` (the inner widget, not magicgui's own ``scrollable``
area), so the scroll area has to sit inside the docked widget for a long dock to fit a small screen:
:func:`scroll_area_for` is the one way every dock of this plugin scrolls.
"""

from __future__ import annotations

from typing import Any

__all__ = ["full_width_after", "scroll_area_for"]


def scroll_area_for(owner: Any, content: Any, *, min_width: int = 300, min_height: int = 200) -> Any:
    """Put magicgui container ``content`` in a vertical scroll area inside ``owner`` (the docked container).

    Returns the ``QScrollArea``. The dock then never asks for more height than ``min_height``: a long
    dock scrolls instead of growing the main window beyond the screen; there is no horizontal scrolling.
    """
    from qtpy.QtCore import QEvent, QObject, Qt
    from qtpy.QtWidgets import QComboBox, QFrame, QScrollArea

    for combo in content.native.findChildren(QComboBox):  # long entries elide instead of widening the dock
        combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        combo.setMinimumContentsLength(12)
    content.native.layout().addStretch(1)  # spare height goes below the controls, not between them
    area = QScrollArea()
    area.setWidgetResizable(True)
    area.setFrameShape(QFrame.Shape.NoFrame)
    area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    area.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
    area.setWidget(content.native)
    area.setMinimumSize(min_width, min_height)

    class _FitWidth(QObject):
        """Keep the area at least as wide as the controls (there is no horizontal scrolling)."""

        def eventFilter(self, watched: Any, event: Any) -> bool:  # noqa: N802 - Qt's name
            if event.type() in (QEvent.Type.LayoutRequest, QEvent.Type.Show, QEvent.Type.Polish):
                needed = watched.minimumSizeHint().width() + area.verticalScrollBar().sizeHint().width() + 4
                if area.minimumWidth() < needed:
                    area.setMinimumWidth(max(min_width, needed))
            return False

    area._fit_width = _FitWidth(area)  # parented: lives and dies with the area
    content.native.installEventFilter(area._fit_width)
    layout = owner.native.layout()
    layout.setContentsMargins(0, 0, 0, 0)
    layout.addWidget(area)
    return area


def full_width_after(content: Any, anchor: Any, *widgets: Any) -> None:
    """Put ``widgets`` (tables, status lines) in ``content`` right after ``anchor``, over the whole width.

    A labelled magicgui container would give each its own (empty) label column, squeezing tables into
    the right-hand half of the dock. ``anchor`` must be an unlabelled widget of ``content`` (a button).
    """
    layout = content.native.layout()
    index = layout.indexOf(anchor.native)
    if index < 0:
        raise ValueError(f"{anchor!r} is not an unlabelled widget of the container.")
    from qtpy.QtWidgets import QSizePolicy

    for offset, widget in enumerate(widgets, start=1):
        widget.native.setSizePolicy(QSizePolicy.Policy.Expanding, widget.native.sizePolicy().verticalPolicy())
        layout.insertWidget(index + offset, widget.native)
