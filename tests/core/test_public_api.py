"""The console API: ``import napari_seg_uncertainty as nsu``."""

from __future__ import annotations

import subprocess
import sys

import napari_seg_uncertainty as nsu


def test_every_export_resolves_and_has_a_docstring():
    for name in nsu.__all__:
        obj = getattr(nsu, name)
        if name != "__version__":
            assert obj.__doc__, name


def test_import_does_not_pull_in_qt_napari_or_torch():
    code = ("import sys, napari_seg_uncertainty as nsu; nsu.load_raters; "
            "print(sorted(m for m in ('napari', 'qtpy', 'PyQt6', 'magicgui') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def _package_classes(annotation) -> set[type]:
    """Classes of this package named anywhere in a (possibly nested) type annotation."""
    import typing

    found: set[type] = set()
    stack = [annotation]
    while stack:
        item = stack.pop()
        if isinstance(item, type) and item.__module__.startswith("napari_seg_uncertainty"):
            found.add(item)
        stack.extend(typing.get_args(item))
    return found


def test_every_returned_type_is_exported():
    """A result a public function returns can be named from the console (``nsu.StapleResult``)."""
    import inspect
    import typing

    exported = {id(getattr(nsu, name)) for name in nsu.__all__ if name != "__version__"}
    missing = set()
    for name in nsu.__all__:
        obj = getattr(nsu, name)
        functions = [obj] if inspect.isfunction(obj) else []
        if inspect.isclass(obj):
            functions = [m for n, m in vars(obj).items() if inspect.isfunction(m) and not n.startswith("_")]
            functions += [m.__func__ for n, m in vars(obj).items() if isinstance(m, classmethod | staticmethod)]
        for function in functions:
            try:
                hints = typing.get_type_hints(function)
            except Exception:  # an annotation naming a type only imported for type checking
                continue
            for cls in _package_classes(hints.get("return")):
                if id(cls) not in exported and not cls.__name__.startswith("_"):
                    missing.add(f"{cls.__module__}.{cls.__name__} (returned by {name})")
    assert not missing, sorted(missing)


def _public_callables():
    import inspect

    for name in nsu.__all__:
        obj = getattr(nsu, name)
        if inspect.isfunction(obj):
            yield name, obj
        elif inspect.isclass(obj):
            yield name, obj
            for attr, member in vars(obj).items():
                if inspect.isfunction(member) and not attr.startswith("_"):
                    yield f"{name}.{attr}", member


def test_one_argument_convention():
    """``num_classes`` is keyword-only everywhere; one name per idea; American spelling."""
    import inspect

    wrong = []
    for name, obj in _public_callables():
        try:
            parameters = inspect.signature(obj).parameters
        except (TypeError, ValueError):
            continue
        for parameter in parameters.values():
            if parameter.name == "num_classes" and parameter.kind is not inspect.Parameter.KEYWORD_ONLY:
                wrong.append(f"{name}: num_classes is not keyword-only")
            if parameter.name in {"n_bins", "tace_bins", "nbins", "epsilon", "n_classes", "normalise"}:
                wrong.append(f"{name}: parameter {parameter.name!r} (see docs/scripting.md, Conventions)")
    for name in nsu.__all__:
        if "alis" in name or "alise" in name:  # normalise, generalised: American spelling
            wrong.append(f"{name}: British spelling")
    assert not wrong, "\n".join(wrong)
