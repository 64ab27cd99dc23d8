"""Helpers and fixtures shared by every test tier.

The session broker lives here so that the integration tier and the CLI tier
share one embedded Tansu broker: it is started on a free port the first time a
test asks for ``bootstrap_servers`` (never for unit tests), unless
``STREAMML_TEST_BOOTSTRAP_SERVERS`` names a cluster to use instead.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from streamml.broker import EmbeddedBroker, free_port

T = TypeVar("T")


def eventually(
    condition: Callable[[], T], *, timeout: float = 30.0, interval: float = 0.05, what: str = "condition"
) -> T:
    """Re-check ``condition`` until it returns a truthy value; fail after ``timeout`` seconds.

    This waits on a condition with a bounded timeout; it never stands in for one.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


@pytest.fixture
def unused_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound once, then released)."""
    return free_port()


@pytest.fixture(scope="session")
def bootstrap_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The session's real Kafka-protocol broker: the embedded one, or STREAMML_TEST_BOOTSTRAP_SERVERS."""
    external = os.environ.get("STREAMML_TEST_BOOTSTRAP_SERVERS")
    if external:
        yield external
        return
    broker = EmbeddedBroker(port=free_port(), home=tmp_path_factory.mktemp("broker"))
    broker.start(timeout=30)
    try:
        yield broker.bootstrap_servers
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def model_keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The session's model signing key pair: ``(private key file, public key file)``."""
    from streamml.signing import generate_key_pair

    directory = tmp_path_factory.mktemp("keys")
    generate_key_pair(directory, "test-models")
    return directory / "test-models.key", directory / "test-models.pub"
