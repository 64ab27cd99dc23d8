"""The online learner behind the quality gate, on the real broker."""

from __future__ import annotations

import threading

import pytest

from consumers.subscriber import ModelSubscriber
from model_publisher.learning_loop import LearningLoop
from model_publisher.policy import PublishPolicy
from streamml.config import Settings
from streamml.lag import consumer_lag
from streamml.registry import read_history
from streamml.topics import Groups, Topics
from tests.integration.test_models_learner import produce_features

pytestmark = pytest.mark.integration


def test_candidates_wait_for_their_window_and_the_decision_is_in_the_registry(
    settings: Settings, topics: Topics
) -> None:
    # A wide margin: this test is about when candidates are held and published;
    # which margin decides is the unit tests' (on 100 events two good models
    # differ by a few points by chance, see docs/quality-gate.md).
    gated = settings.with_overrides(gate_events=100, publish_every_events=300, gate_margin=0.1)
    published = []
    loop = LearningLoop(gated, max_events=1000, on_publish=published.append, policy=PublishPolicy(300, 3600))
    reports = []
    runner = threading.Thread(target=lambda: reports.append(loop.run()))
    runner.start()
    try:
        assert loop.caught_up.wait(60)  # an empty topic: nothing to catch up on, the cadence applies at once
        produce_features(gated, topics, 1000)  # live events
        runner.join(90)
    finally:
        loop.stop.set()
        runner.join(30)
    [report] = reports
    # v1 has no champion: at once. v2 and v3 are frozen at 600 and 900 and published
    # after 100 more events; the last 100 make a final candidate nobody could score.
    assert [e.n_learned for e in published] == [300, 600, 900, 1000]
    gates = [e.lineage["gate"] for e in published]
    assert gates == ["promoted", "promoted", "promoted", "refused"], [e.lineage.get("gate_reason") for e in published]
    assert "first version" in published[0].lineage["gate_reason"]
    assert published[1].lineage["gate_events"] == "100" and published[1].lineage["gate_champion_version"].endswith(
        "v1"
    )
    assert float(published[2].lineage["gate_candidate"]) > 0.85
    assert "unjudged" in published[3].lineage["gate_reason"]
    assert report.withheld == 1
    history = read_history(loop.cluster, model_name=gated.model_name)
    assert history.served(gated.model_name) == 3
    # The withheld final version still owns the offsets: nothing is replayed on restart.
    [lag] = consumer_lag(loop.cluster, [Groups.from_settings(gated).learner], topics={})
    assert lag.total == 0 and sum(p.committed or 0 for p in lag.partitions) == 1000


def test_a_worse_model_is_withheld_and_consumers_keep_the_champion(settings: Settings, topics: Topics) -> None:
    gated = settings.with_overrides(gate_events=100)
    produce_features(gated, topics, 600)
    first = LearningLoop(gated, max_events=600, policy=PublishPolicy(600, 3600)).run()
    assert first.last_version == 1
    # A learner of the same name with a model that only knows the label prior:
    # a fresh model, it retrains on the history, then must beat v1 on live events.
    prior = gated.with_overrides(model_spec="river.dummy:PriorClassifier")
    published = []
    loop = LearningLoop(prior, max_events=750, on_publish=published.append, policy=PublishPolicy(10_000, 3600))
    runner = threading.Thread(target=loop.run)
    runner.start()
    try:
        assert loop.caught_up.wait(60)
        produce_features(gated, topics, 150, seed=2)
        runner.join(60)
    finally:
        loop.stop.set()
        runner.join(30)
    decisions = [(e.version, e.lineage["gate"]) for e in published]
    assert decisions[0] == (2, "refused"), [e.lineage.get("gate_reason") for e in published]
    reason = published[0].lineage["gate_reason"]
    assert reason.startswith("worse than the champion on 100 held-back events") and "v1" in reason
    assert float(published[0].lineage["gate_candidate"]) < float(published[0].lineage["gate_champion"]) - 0.02
    assert read_history(loop.cluster).served(gated.model_name) == 1
    with ModelSubscriber(gated) as subscriber:
        assert subscriber.wait_for_version(1, timeout=20)
        assert subscriber.version == 1
        assert any("quality gate" in r.reason for r in subscriber.refused)
