"""Fixtures shared by the unit tests (no broker)."""

from __future__ import annotations

import pytest

from streamml.config import Settings, load_settings


@pytest.fixture
def dead_settings(unused_port: int) -> Settings:
    """Settings whose bootstrap server is a loopback port nothing listens on."""
    return load_settings(env={}, bootstrap_servers=f"127.0.0.1:{unused_port}", namespace="unit.")
