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
    assert max(len(line) for line in text.splitlines()) < 200  # nothing is padded to the console's width


def test_a_table_wider_than_any_terminal_is_not_cut_when_piped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    out = io.StringIO()
    monkeypatch.setattr("sys.stdout", out)
    table = Table()
    for i in range(12):
        table.add_column(f"column number {i}")
    table.add_row(*[f"value-{i}-" + "x" * 20 for i in range(12)])
    console().print(table)
    text = out.getvalue()
    assert all(f"column number {i}" in text and f"value-{i}-" + "x" * 20 in text for i in range(12))
    assert "…" not in text


def test_columns_still_sets_the_width(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    monkeypatch.setattr("sys.stdout", io.StringIO())
    assert console().width == 100
