"""A multi-choice list of layers that keeps its selection across renames and reorders.

The values are the layer objects (see :mod:`._layer_choices`); the list also takes layer *names*
(scripts and the Guide set it that way) and says why a layer that does not fit is refused.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from magicgui.widgets import Select

from ._layer_choices import choices_for

if TYPE_CHECKING:
    import napari

__all__ = ["LayerSelect"]


class LayerSelect(Select):
    """A list of the viewer's layers that fit (``accept``), in layer-list order; the value is a list of layers.

    Setting the value accepts layers or layer names. A layer that is not offered is refused: the
    selection is emptied and :attr:`refused` holds ``explain(layer)`` (what is wrong with it and what
    is expected), which :meth:`check` raises as ``ValueError`` when the widget computes, so the user
    gets one notification naming the layer instead of a traceback. A selected layer that stops
    fitting (its data or the widget's layout changed) is refused the same way. The selection survives
    renames and moves of the selected layers; a removed layer leaves it.
    """

    def __init__(
        self,
        viewer: napari.viewer.Viewer,
        accept: Callable[[Any], bool],
        *,
        explain: Callable[[Any], str | None] | None = None,
        **kwargs: Any,
    ) -> None:
        self._viewer = viewer
        self._explain = explain
        self.refused: str | None = None
        top_first = choices_for(viewer, accept)

        def in_list_order(widget: Any = None) -> list[tuple[str, Any]]:
            return top_first(widget)[::-1]  # rater 1 before rater 2: selections read in layer-list order

        super().__init__(choices=in_list_order, **kwargs)

    @property
    def value(self) -> list[Any]:
        """The selected layers, in list order."""
        return list(Select.value.fget(self))  # type: ignore[attr-defined]

    @value.setter
    def value(self, value: Any) -> None:
        items = list(value) if isinstance(value, (list, tuple)) else [value]
        try:
            layers = [self._resolve(item) for item in items]
        except ValueError as exc:
            self.refused = str(exc)
            Select.value.fset(self, [])  # type: ignore[attr-defined]
            return
        self.refused = None
        Select.value.fset(self, layers)  # type: ignore[attr-defined]

    def check(self) -> None:
        """Raise ``ValueError`` with the reason a layer was refused, while nothing has been selected since."""
        if self.refused and not self.value:
            raise ValueError(self.refused)

    def _resolve(self, item: Any) -> Any:
        offered = self.choices
        if isinstance(item, str):
            matches = [layer for layer in offered if getattr(layer, "name", None) == item]
            if matches:
                return matches[0]
            if item not in self._viewer.layers:
                raise ValueError(f"there is no layer named {item!r}; choose one of "
                                 f"{[layer.name for layer in offered]}.")
            item = self._viewer.layers[item]
        if any(item is layer for layer in offered):
            return item
        reason = self._explain(item) if self._explain is not None else None
        raise ValueError(reason or f"layer {getattr(item, 'name', item)!r} cannot be used for {self.label!r}; "
                                   f"choose one of {[layer.name for layer in offered]}.")

    def reset_choices(self, *_args: Any) -> None:
        """Refresh from the viewer in layer-list order, keeping the selected layers that are still offered."""
        before = self.value
        fresh = self._default_choices(self) if callable(self._default_choices) else []
        with self.changed.blocked():
            current = [name for name, _ in self._widget._mgui_get_choices()]
            if current != [name for name, _ in fresh]:
                self.choices = ()  # rebuild in order (a renamed item would otherwise move to the end)
            super().reset_choices()
            kept = [layer for layer in before if any(layer is c for c in self.choices)]
            Select.value.fset(self, kept)  # type: ignore[attr-defined]
        unfit = [layer for layer in before if layer not in kept and layer in self._viewer.layers]
        if unfit and self._explain is not None:  # still there, but no longer fits: say why at the next compute
            self.refused = self._explain(unfit[0])
        if len(kept) != len(before):
            self.changed.emit(self.value)
