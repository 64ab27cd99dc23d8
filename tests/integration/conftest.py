"""Integration fixtures: settings, topics and a publisher on the session broker.

The broker itself (``bootstrap_servers``) and the session's signing keys are
fixtures of ``tests/conftest.py``, shared with the CLI tier. Each test gets its
own namespace, so its topics and consumer groups are unique.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from streamml.cluster import Cluster
from streamml.config import Settings, load_settings
from streamml.topics import Topics

pytestmark = pytest.mark.integration



@pytest.fixture(autouse=True)
def model_keys_in_env(model_keys: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """Commands run by a test (CliRunner, subprocesses) sign and verify with the session's keys."""
    private, public = model_keys
    monkeypatch.setenv("STREAMML_MODEL_SIGNING_KEY_FILE", str(private))
    monkeypatch.setenv("STREAMML_MODEL_TRUSTED_KEYS", str(public))


@pytest.fixture
def settings(bootstrap_servers: str, tmp_path: Path, model_keys: tuple[Path, Path]) -> Settings:
    """Settings for one test: the session broker, a unique namespace, signed models (the default path)."""
    private, public = model_keys
    return load_settings(
        env={},
        bootstrap_servers=bootstrap_servers,
        namespace=f"t{uuid.uuid4().hex[:10]}.",
        home=tmp_path / "home",
        publish_every_events=500,
        publish_every_seconds=5.0,
        # Versions exactly by the publish policy here; the gated learner
        # (the default) has its own tests in test_gated_learner.py.
        gate_events=0,
        model_signing_key_file=private,
        model_trusted_keys=str(public),
    )


@pytest.fixture
def topics(settings: Settings) -> Topics:
    """The pipeline topics of this test's namespace, created."""
    names = Topics.from_settings(settings)
    Cluster(settings).create_topics(names.specs(settings))
    return names


def small_model(n: int) -> Any:
    """A river logistic regression trained on ``n`` rows of a fixed pattern (deterministic)."""
    from model_publisher import catalog

    model = catalog.build("logistic")
    for i in range(n):
        model.learn_one({"a": float(i % 5), "b": float(i % 3)}, i % 2 == 0)
    return model


@pytest.fixture
def publisher(settings: Settings, topics: Topics) -> Iterator[Any]:
    """A started ModelPublisher on this test's models topic."""
    from model_publisher.publisher import ModelPublisher

    p = ModelPublisher(settings)
    p.start()
    yield p
    p.close()
