"""The layers of the package, checked from the source: imports run widgets → workflow → core only,
no module imports itself back through others, and core/workflow never reach Qt or napari.

The graph is built with :mod:`ast` from every ``import`` statement in every module, including those
inside functions (a lazy import still makes a cycle a reader has to untangle) but not those under
``if TYPE_CHECKING:`` (annotations only, never run).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = "napari_seg_uncertainty"
SRC = Path(__file__).resolve().parents[1] / "src" / PACKAGE

#: Third-party roots that belong to the GUI side only.
GUI_ROOTS = {
    "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "napari", "magicgui", "superqt", "napari_matplotlib", "vispy",
}

#: Which layer may import which (a module's layer is the first folder under the package).
ALLOWED = {
    "core": {"core"},
    "workflow": {"workflow", "core"},
    "widgets": {"widgets", "workflow", "core"},
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def _is_package(name: str, modules: dict[str, Path]) -> bool:
    return modules[name].name == "__init__.py"


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                for inner in ast.walk(child):
                    if hasattr(inner, "lineno"):
                        lines.add(inner.lineno)
    return lines


def _imports(name: str, modules: dict[str, Path]) -> list[str]:
    """Absolute names of everything module ``name`` imports (package modules and third-party roots)."""
    tree = ast.parse(modules[name].read_text(), filename=str(modules[name]))
    skip = _type_checking_lines(tree)
    package = name if _is_package(name, modules) else name.rpartition(".")[0]
    found: list[str] = []
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            found.append(origin)
            for alias in node.names:  # `from . import x` names a submodule
                if f"{origin}.{alias.name}" in modules:
                    found.append(f"{origin}.{alias.name}")
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name in modules:
        targets = set()
        for imported in _imports(name, modules):
            # the innermost package module the import names (``a.b.c`` → ``a.b`` if c is an attribute)
            candidate = imported
            while candidate and candidate not in modules:
                candidate = candidate.rpartition(".")[0]
            parent_of_self = name.startswith(candidate + ".")  # importing one's own package runs first anyway
            if candidate and candidate != name and not parent_of_self and candidate != PACKAGE:
                targets.add(candidate)
        graph[name] = targets
    return graph


def _layer(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ALLOWED else None


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return stack[stack.index(target) :] + [target]
            if target not in state:
                found = visit(target)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_graph_is_built_from_the_source():
    graph = _graph()
    # a sanity check that relative imports resolve: the package's widgets reach core
    assert any(t.startswith(f"{PACKAGE}.core") for n, ts in graph.items() if ".widgets." in n for t in ts)


def test_no_import_cycle():
    cycle = _find_cycle(_graph())
    assert cycle is None, "import cycle: " + " → ".join(cycle)


def test_layers_import_downwards_only():
    wrong = []
    for name, targets in _graph().items():
        layer = _layer(name)
        if layer is None:
            continue
        for target in targets:
            other = _layer(target)
            if other is not None and other not in ALLOWED[layer]:
                wrong.append(f"{name} imports {target}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("layer", ["core", "workflow"])
def test_core_and_workflow_never_import_qt_or_napari(layer):
    modules = _modules()
    wrong = [
        f"{name} imports {imported}"
        for name in modules
        if _layer(name) == layer
        for imported in _imports(name, modules)
        if imported.split(".")[0] in GUI_ROOTS
    ]
    assert not wrong, "\n".join(wrong)


def test_importing_core_and_workflow_loads_no_qt_module():
    """In a fresh interpreter: every core and workflow module imported, then no GUI module is loaded."""
    names = [n for n in _modules() if _layer(n) in ("core", "workflow")]
    code = (
        "import importlib, json, sys\n"
        f"for name in {names!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {sorted(GUI_ROOTS)!r})))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded == [], loaded


def test_cycle_finder_finds_a_cycle():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None
