"""The README's CLI reference names every command, every setting and every exit code that exists."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import click

from streamml.config import ENV_PREFIX, Settings
from streamml_cli import cli

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def _section(title: str) -> str:
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end != -1 else len(README)]


def _command_paths(group: click.Group, prefix: str = "streamml") -> list[str]:
    paths = []
    for name, command in sorted(group.commands.items()):
        path = f"{prefix} {name}"
        if isinstance(command, click.Group):
            paths.extend(_command_paths(command, path))
        else:
            paths.append(path)
    return paths


def test_every_command_is_in_the_cli_reference() -> None:
    reference = _section("CLI reference")
    shown = re.findall(r"`(streamml [^`]*)`", reference)
    missing = []
    for path in _command_paths(cli):
        # `streamml models pin NAME V` names `streamml models pin`; a group's
        # subcommand may also appear as `/ stop` after its sibling.
        words = path.split()
        if not any(s.split()[: len(words)] == words for s in shown):
            group, last = " ".join(words[:-1]), words[-1]
            if not any(s.startswith(group) and f"/ `{last}" in reference for s in shown):
                missing.append(path)
    assert not missing, f"commands missing from the README's CLI reference: {missing}"


def test_every_setting_is_in_the_settings_table() -> None:
    reference = _section("CLI reference")
    missing = [
        ENV_PREFIX + f.name.upper()
        for f in dataclasses.fields(Settings)
        if f"`{ENV_PREFIX}{f.name.upper()}`" not in reference
    ]
    assert not missing, f"settings missing from the README: {missing}"


def test_every_exit_code_is_documented() -> None:
    from streamml import errors

    codes = {cls.exit_code for cls in vars(errors).values() if isinstance(cls, type) and hasattr(cls, "exit_code")}
    table = _section("CLI reference")
    documented = {int(code) for code in re.findall(r"^\| `(\d+)` \|", table, re.M)}
    expected = codes | {0, 130}
    assert expected <= documented, f"exit codes missing from the README: {sorted(expected - documented)}"
