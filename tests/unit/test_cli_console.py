"""Tables written to a pipe are not cut at 80 columns (issue 10: ``vers… lear… accur…``)."""

from __future__ import annotations

import io

import pytest
from rich.table import Table

from streamml_cli.options import PIPE_WIDTH, console


def test_output_to_a_pipe_is_wide_and_a_wide_table_keeps_its_headers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    out = io.StringIO()  # not a terminal, like `streamml models list | less`
    monkeypatch.setattr("sys.stdout", out)
    shown = console()
    assert shown.width == PIPE_WIDTH
    table = Table()
    for name in ("version", "learned", "accuracy", "rolling accuracy", "signer", "status", "served because"):
        table.add_column(name)
    table.add_row("12", "24,000", "91.2%", "89.3%", "474c356d1eedd469", "acceptable", "the newest acceptable version")
    shown.print(table)
    text = out.getvalue()
    assert "rolling accuracy" in text and "served because" in text and "…" not in text


def test_columns_still_sets_the_width(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    monkeypatch.setattr("sys.stdout", io.StringIO())
    assert console().width == 100
