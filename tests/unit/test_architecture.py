"""Architecture rules: import direction between packages, and the public surface."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMPONENTS = ["producers", "stream_processors", "model_publisher", "consumers"]
HEAVY = {"faust", "river", "sklearn", "pandas", "pyarrow"}


def _imports(path: Path, *, top_level_only: bool = False) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    names: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("component", COMPONENTS)
def test_components_import_the_core_never_each_other(component: str) -> None:
    others = set(COMPONENTS) - {component}
    offenders = {str(p.relative_to(ROOT)): sorted(_imports(p) & others) for p in _modules(component)}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_core_does_not_import_heavy_libraries_at_module_level() -> None:
    offenders = {}
    for path in _modules("streamml"):
        if "cli" in path.parts:
            continue  # commands import what they run, inside the command function
        heavy = _imports(path, top_level_only=True) & HEAVY
        if heavy:
            offenders[str(path.relative_to(ROOT))] = sorted(heavy)
    assert offenders == {}


def test_core_imports_no_component_at_module_level() -> None:
    offenders = {
        str(p.relative_to(ROOT)): sorted(_imports(p, top_level_only=True) & set(COMPONENTS))
        for p in _modules("streamml")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_no_utils_modules() -> None:
    names = [p.name for pkg in ["streamml", *COMPONENTS] for p in _modules(pkg)]
    assert not [n for n in names if n in ("utils.py", "helpers.py", "misc.py", "models.py")]


def test_error_tree_has_one_root() -> None:
    import streamml.errors as errors

    for name in errors.__all__:
        assert issubclass(getattr(errors, name), errors.StreamMLError), name


@pytest.mark.parametrize("package", ["streamml", *COMPONENTS])
def test_public_surface_is_declared(package: str) -> None:
    module = __import__(package)
    exported = getattr(module, "__all__", None)
    assert exported, f"{package} declares no __all__"
    missing = [name for name in exported if not hasattr(module, name)]
    assert missing == []
