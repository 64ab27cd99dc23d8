"""The whole pipeline on a bounded, drifting stream with malformed events, on a real broker.

Runs the same orchestration as ``streamml demo`` (processor, learner and scorer
as child processes, a producer streaming synthetic events with injected faults,
an SDK subscriber in-process) against the session broker, in this test's own
namespace, and checks what the topics hold afterwards.
"""

from __future__ import annotations

import pytest

from streamml.cluster import Cluster
from streamml.config import Settings
from streamml.reader import read_to_end
from streamml.records import FEATURE_VECTOR_SCHEMA, PREDICTION_SCHEMA
from streamml.registry import read_versions
from streamml.serde import AvroSerde, bundled_schema
from streamml.topics import Topics
from streamml_cli.orchestration.demo import DemoOptions, run_demo

pytestmark = pytest.mark.integration

EVENTS = 8000
# 20 s of stream: longer than the components' start-up (the processor's first
# output comes about 12 s after it starts here), so the scorer is live while
# the learner publishes, as in a real deployment.
RATE = 400


@pytest.fixture(scope="module")
def outcome(bootstrap_servers: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, object]:
    import uuid

    from streamml.config import load_settings

    settings = load_settings(
        env={},
        bootstrap_servers=bootstrap_servers,
        namespace=f"e2e{uuid.uuid4().hex[:8]}.",
        home=tmp_path_factory.mktemp("e2e-home"),
        publish_every_events=500,
        publish_every_seconds=3.0,
    )
    result = run_demo(
        settings, DemoOptions(events=EVENTS, rate=RATE, bad_fraction=0.03, seed=7, timeout=300, embedded=False)
    )
    return settings, result


def test_every_check_of_the_run_passes(outcome: tuple[Settings, object]) -> None:
    _, result = outcome
    assert result.checks and all(result.checks.values()), result.checks  # type: ignore[attr-defined]


def test_no_event_is_lost_or_duplicated(outcome: tuple[Settings, object]) -> None:
    settings, _ = outcome
    topics = Topics.from_settings(settings)
    raw = list(read_to_end(Cluster(settings), topics.raw_events))
    features = list(read_to_end(Cluster(settings), topics.features))
    dead = list(read_to_end(Cluster(settings), topics.dead_letters))
    assert len(raw) == EVENTS
    sources = [(m.partition(), m.offset()) for m in raw]
    featurized = [
        (v["source_partition"], v["source_offset"])
        for v in (AvroSerde(bundled_schema(FEATURE_VECTOR_SCHEMA)).decode(m.value(), m.headers()) for m in features)
    ]
    quarantined = [
        (int(dict(m.headers())["streamml.dlq.source.partition"]), int(dict(m.headers())["streamml.dlq.source.offset"]))
        for m in dead
    ]
    assert len(set(featurized)) == len(featurized) and len(set(quarantined)) == len(quarantined)
    assert sorted(featurized + quarantined) == sorted(sources)
    assert dead, "the producer injected faults; some must be quarantined"


def test_quarantined_events_keep_their_bytes_and_carry_a_reason(outcome: tuple[Settings, object]) -> None:
    settings, _ = outcome
    topics = Topics.from_settings(settings)
    raw = {(m.partition(), m.offset()): m.value() for m in read_to_end(Cluster(settings), topics.raw_events)}
    rules = set()
    for message in read_to_end(Cluster(settings), topics.dead_letters):
        headers = dict(message.headers())
        source = (int(headers["streamml.dlq.source.partition"]), int(headers["streamml.dlq.source.offset"]))
        assert message.value() == raw[source]
        assert headers["streamml.dlq.stage"] in (b"decode", b"validate", b"featurize")
        rules.add(headers["streamml.dlq.rule"].decode())
    # The synthetic source injects NaNs, out-of-range values, missing fields,
    # unknown categories and corrupt bytes; each must show as its own rule.
    assert {"not_finite", "required", "not_allowed"} <= rules
    assert rules & {"below_min", "above_max"}
    assert rules & {"undecodable", "trailing_bytes"}


def test_versions_increase_and_every_one_reached_the_sdk(outcome: tuple[Settings, object]) -> None:
    settings, result = outcome
    versions = [r.version for r in read_versions(Cluster(settings)) if r.status == "ok"]
    assert len(versions) >= 3 and versions == sorted(set(versions))
    # The SDK subscriber started before the first model: it swapped to each one in turn.
    assert result.sdk_swaps == len(versions) and result.sdk_version == versions[-1]  # type: ignore[attr-defined]


def test_predictions_carry_the_version_that_made_them(outcome: tuple[Settings, object]) -> None:
    settings, result = outcome
    published = {r.version for r in read_versions(Cluster(settings)) if r.status == "ok"}
    serde = AvroSerde(bundled_schema(PREDICTION_SCHEMA))
    predictions = read_to_end(Cluster(settings), Topics.from_settings(settings).predictions)
    used = {serde.decode(m.value(), m.headers())["model_version"] for m in predictions}
    assert used and used <= published
    assert len(used) >= 2, "the scorer should have hot-swapped at least once during the stream"


def test_lag_is_zero_after_the_run(outcome: tuple[Settings, object]) -> None:
    _, result = outcome
    assert {g.group.rsplit(".", 1)[-1]: g.total for g in result.lag} == {  # type: ignore[attr-defined]
        "learner": 0,
        "processor": 0,
        "scorer": 0,
    }
