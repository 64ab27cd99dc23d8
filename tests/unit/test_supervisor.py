"""The supervisor runs real `streamml` child processes and reports the ones that fail."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamml.config import load_settings
from streamml.errors import ComponentError
from streamml_cli.orchestration.supervisor import Supervisor
from tests.conftest import eventually


def test_an_expected_clean_exit_is_not_a_failure(tmp_path: Path) -> None:
    with Supervisor(load_settings(env={}), tmp_path) as supervisor:
        component = supervisor.start("version", ["--version"], expected_exit=True)
        eventually(lambda: component.exit_code is not None, timeout=30, what="streamml --version to exit")
        supervisor.check()
        assert "version" in component.log_path.read_text()


def test_a_failed_component_is_reported_with_its_log(tmp_path: Path) -> None:
    settings = load_settings(env={}, home=tmp_path / "home")
    with Supervisor(settings, tmp_path) as supervisor:
        component = supervisor.start("status", ["broker", "status", "--port", "1"])
        eventually(lambda: component.exit_code is not None, timeout=30, what="broker status to exit")
        with pytest.raises(ComponentError, match=r"status \('streamml broker status --port 1'\) exited with code 1"):
            supervisor.check()


def test_children_receive_the_parent_settings(tmp_path: Path) -> None:
    settings = load_settings(env={}, home=tmp_path / "home")
    with Supervisor(settings, tmp_path) as supervisor:
        component = supervisor.start("status", ["broker", "status"])
        eventually(lambda: component.exit_code is not None, timeout=30, what="broker status to exit")
    # The child looked for brokers in the parent's STREAMML_HOME.
    assert f"none recorded under {tmp_path / 'home'}" in component.log_path.read_text()
