"""One case at a time: the layers a case brings are tagged with its name and replaced by the next case.

Every layer the plugin adds for a case (image, raters, soft labels, predictions, uncertainty maps,
SSN samples) carries ``metadata["nsu_case"]``, the case's name; widgets that derive a layer from
another copy the source layer's case with :func:`case_of`. :func:`begin_case` is called when a new
case is loaded: it removes the previous case's layers or, when the user asked to keep them, hides
them and prefixes their names with the case, so two cases are never drawn over each other. Layers
the user opened or drew (untagged) are never touched.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import napari

__all__ = ["CASE_KEY", "KEPT_KEY", "begin_case", "case_name_for", "case_of", "current_case"]

CASE_KEY = "nsu_case"
KEPT_KEY = "nsu_kept"


def case_of(layer: Any) -> str | None:
    """The case a layer belongs to, or ``None`` for a layer the plugin did not add for a case."""
    if layer is None:
        return None
    return (getattr(layer, "metadata", None) or {}).get(CASE_KEY)


def current_case(viewer: napari.viewer.Viewer) -> str | None:
    """Name of the case on show: the case of the newest tagged layer that was not kept aside."""
    for layer in reversed(list(viewer.layers)):
        meta = layer.metadata or {}
        if meta.get(CASE_KEY) is not None and not meta.get(KEPT_KEY):
            return str(meta[CASE_KEY])
    return None


def case_name_for(source: Any) -> str:
    """A short case name for a source: a folder's name, a file's stem, the first of several files."""
    if isinstance(source, (list, tuple)) and source:
        if all(isinstance(s, (str, Path)) for s in source):
            parents = {Path(s).parent.name for s in source}
            return parents.pop() if len(parents) == 1 and "" not in parents else _stem(Path(source[0]))
        return "layers"
    if isinstance(source, (str, Path)):
        path = Path(str(source).rstrip("/\\"))
        if any(ch in path.name for ch in "*?["):
            return path.parent.name or "case"
        return path.name if path.is_dir() else _stem(path)
    return "case"


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii", ".npz", ".nrrd", ".mha", ".mhd", ".tiff", ".tif", ".png"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)] or name
    return path.stem or name


def begin_case(viewer: napari.viewer.Viewer, case: str, *, keep_previous: bool = False) -> list[str]:
    """Make room for ``case``: the previous case's layers are removed, or hidden and renamed if kept.

    Returns the names of the layers removed or set aside. Layers already kept from an earlier case
    and layers without a case tag stay as they are.
    """
    touched: list[str] = []
    for layer in list(viewer.layers):
        meta = dict(layer.metadata or {})
        old = meta.get(CASE_KEY)
        if old is None or meta.get(KEPT_KEY):
            continue
        touched.append(layer.name)
        if keep_previous:
            meta[KEPT_KEY] = True
            layer.metadata = meta
            layer.visible = False
            prefix = f"{old}: "
            if not layer.name.startswith(prefix):
                layer.name = _unique(viewer, prefix + layer.name)
        else:
            viewer.layers.remove(layer)
    return touched


def _unique(viewer: napari.viewer.Viewer, name: str) -> str:
    if name not in viewer.layers:
        return name
    base = re.sub(r" \[\d+\]$", "", name)
    i = 1
    while f"{base} [{i}]" in viewer.layers:
        i += 1
    return f"{base} [{i}]"
