"""Architecture rules: import direction between the layers, and the public surface.

The layers, bottom to top::

    streamml            the kernel: contracts every component shares
    producers, stream_processors, model_publisher, consumers
                        the components: each imports the kernel, never another
    streamml_cli        the composition root (CLI, demo, supervisor, monitor):
                        the one package that imports components

Every import statement counts, including those deferred into functions.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
KERNEL = "streamml"
COMPOSITION_ROOT = "streamml_cli"
COMPONENTS = ["producers", "stream_processors", "model_publisher", "consumers"]
HEAVY = {"faust", "river", "sklearn", "pandas", "pyarrow"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, *, top_level_only: bool = False) -> set[str]:
    """Top-level package names ``path`` imports (relative imports resolved)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    package = _module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    names: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
            elif node.level > 0:
                base = package[: len(package) - (node.level - 1)]
                names.add(base[0] if base else (node.module or "").split(".")[0])
    return names


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def test_the_walker_sees_deferred_and_relative_imports(tmp_path: Path) -> None:
    # A rule that cannot see the import it forbids proves nothing: check the walker itself.
    probe = ROOT / KERNEL / "_architecture_probe.py"
    probe.write_text("def f():\n    from consumers import ModelSubscriber\n    from . import config\n")
    try:
        assert {"consumers", KERNEL} <= _imports(probe)
        assert _imports(probe, top_level_only=True) == set()
    finally:
        probe.unlink()


def test_kernel_imports_no_component_and_not_the_composition_root_at_any_depth() -> None:
    forbidden = set(COMPONENTS) | {COMPOSITION_ROOT}
    offenders = {str(p.relative_to(ROOT)): sorted(_imports(p) & forbidden) for p in _modules(KERNEL)}
    assert {k: v for k, v in offenders.items() if v} == {}


@pytest.mark.parametrize("component", COMPONENTS)
def test_components_import_the_kernel_never_each_other_nor_the_root(component: str) -> None:
    forbidden = (set(COMPONENTS) - {component}) | {COMPOSITION_ROOT}
    offenders = {str(p.relative_to(ROOT)): sorted(_imports(p) & forbidden) for p in _modules(component)}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_kernel_does_not_import_heavy_libraries_at_module_level() -> None:
    offenders = {}
    for path in _modules(KERNEL):
        heavy = _imports(path, top_level_only=True) & HEAVY
        if heavy:
            offenders[str(path.relative_to(ROOT))] = sorted(heavy)
    assert offenders == {}


def test_no_utils_modules() -> None:
    names = [p.name for pkg in [KERNEL, COMPOSITION_ROOT, *COMPONENTS] for p in _modules(pkg)]
    assert not [n for n in names if n in ("utils.py", "helpers.py", "misc.py", "models.py")]


def test_error_tree_has_one_root() -> None:
    import streamml.errors as errors

    for name in errors.__all__:
        assert issubclass(getattr(errors, name), errors.StreamMLError), name


@pytest.mark.parametrize("package", [KERNEL, *COMPONENTS])
def test_public_surface_is_declared(package: str) -> None:
    module = __import__(package)
    exported = getattr(module, "__all__", None)
    assert exported, f"{package} declares no __all__"
    missing = [name for name in exported if not hasattr(module, name)]
    assert missing == []


def test_schema_file_names_are_written_only_in_the_records_module() -> None:
    offenders = []
    for package in [KERNEL, COMPOSITION_ROOT, *COMPONENTS, "benchmarks", "tests"]:
        for path in _modules(package):
            if path == ROOT / KERNEL / "records.py" or path == Path(__file__):
                continue
            text = path.read_text()
            offenders += [f"{path.relative_to(ROOT)}: {name}" for name in _bundled_schemas() if name in text]
    assert offenders == []


def _bundled_schemas() -> list[str]:
    return sorted(p.name for p in (ROOT / KERNEL / "schemas").glob("*.avsc"))
