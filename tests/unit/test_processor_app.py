"""The faust app is configured from Settings (built, not started: no broker)."""

from __future__ import annotations

import pytest

from streamml.config import Settings
from streamml.topics import Groups, Topics, window_changelog


@pytest.fixture
def settings() -> Settings:
    return Settings(bootstrap_servers="h1:9092,h2:9093", namespace="ns.", partitions=4, session_timeout_ms=4000)


def test_app_identity_and_connection(settings: Settings) -> None:
    from stream_processors.app import build_app

    app = build_app(settings)
    assert app.conf.id == Groups.from_settings(settings).processor == "ns.streamml.processor"
    assert [str(u) for u in app.conf.broker] == ["kafka://h1:9092", "kafka://h2:9093"]
    assert app.conf.web_enabled is False
    assert str(app.conf.store) == "memory:"
    assert app.conf.broker_session_timeout == 4.0
    assert app.conf.broker_heartbeat_interval < app.conf.broker_session_timeout <= app.conf.broker_request_timeout
    assert app.conf.topic_partitions == 4
    # A clean stop waits for the in-flight batches' acks before its final commit.
    assert app.conf.stream_wait_empty is True


def test_pipeline_topics_are_raw_and_never_declared_by_faust(settings: Settings) -> None:
    from stream_processors.app import AGENT_NAME, WINDOW_TABLE, build_app

    app = build_app(settings)
    topics = Topics.from_settings(settings)
    [agent] = [a for a in app.agents.values() if a.name.endswith(AGENT_NAME)]
    assert list(agent.channel.topics) == [topics.raw_events]
    assert agent.channel.internal is False
    assert agent.channel.key_serializer == agent.channel.value_serializer == "raw"
    table = app.tables[WINDOW_TABLE]
    assert table.partitions == 4 and table.key_serializer == "raw" and table.value_serializer == "json"
    assert table.changelog_topic.get_topic_name() == "ns.streamml.processor-windows-changelog"
    # Serving apps find the window state by the kernel's name for it.
    assert table.changelog_topic.get_topic_name() == window_changelog(Groups.from_settings(settings))


def test_schema_path_comes_from_settings(tmp_path, settings: Settings) -> None:
    from stream_processors.app import build_app
    from streamml.errors import SchemaError

    with pytest.raises(SchemaError, match="not found"):
        build_app(settings.with_overrides(schema_path=str(tmp_path / "nope.avsc")))
