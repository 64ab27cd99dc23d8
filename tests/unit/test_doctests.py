"""Every docstring example in the installed packages runs, so examples cannot rot."""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ["streamml", "streamml_cli", "producers", "stream_processors", "model_publisher", "consumers"]


def _modules_with_examples() -> list[str]:
    names = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if ">>>" in path.read_text():
                parts = list(path.relative_to(ROOT).with_suffix("").parts)
                names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def test_some_module_has_examples() -> None:
    assert _modules_with_examples(), "no docstring examples found: the search below would test nothing"


@pytest.mark.parametrize("module_name", _modules_with_examples())
def test_docstring_examples_run(module_name: str) -> None:
    result = doctest.testmod(importlib.import_module(module_name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0
