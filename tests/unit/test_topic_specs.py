"""What `streamml topics create` asks for: replication and min.insync.replicas from the settings."""

from __future__ import annotations

import pytest

from streamml.config import load_settings
from streamml.errors import ConfigError
from streamml.topics import Topics


def test_min_insync_replicas_above_one_is_set_on_every_pipeline_topic() -> None:
    settings = load_settings(env={"STREAMML_REPLICATION_FACTOR": "3", "STREAMML_MIN_INSYNC_REPLICAS": "2"})
    specs = Topics.from_settings(settings).specs(settings)
    assert {s.name for s in specs} == set(Topics.from_settings(settings).all())
    assert all(s.config["min.insync.replicas"] == "2" for s in specs)
    models = next(s for s in specs if s.name == Topics.from_settings(settings).models)
    assert models.config["retention.ms"] == "-1"  # the topic's own configs are kept beside it


def test_the_default_leaves_min_insync_replicas_to_the_broker() -> None:
    settings = load_settings(env={})
    assert settings.min_insync_replicas == 1
    assert not any("min.insync.replicas" in s.config for s in Topics.from_settings(settings).specs(settings))


@pytest.mark.parametrize(("rf", "isr"), [("1", "2"), ("3", "4"), ("3", "0")])
def test_min_insync_replicas_must_fit_the_replication_factor(rf: str, isr: str) -> None:
    with pytest.raises(ConfigError, match="min_insync_replicas: must be between 1 and replication_factor"):
        load_settings(env={"STREAMML_REPLICATION_FACTOR": rf, "STREAMML_MIN_INSYNC_REPLICAS": isr})
