"""``streamml monitor``'s sampler and Prometheus metrics, over fake readers (no broker)."""

from __future__ import annotations

import re
import threading

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from streamml.errors import KafkaClientError
from streamml.lag import GroupLag
from streamml.lag_status import LagStatus
from streamml_cli.orchestration.monitor import PipelineSnapshot
from streamml_cli.orchestration.monitor_series import SampleRing
from streamml_cli.orchestration.monitor_service import METRIC_FAMILIES, METRIC_NAMES, MonitorCollector, Sampler
from tests.conftest import eventually
from tests.unit.test_monitor_series import GROUPS, TOPICS, group_lag, snapshot


def scrape(ring: SampleRing) -> dict[str, list[tuple[dict[str, str], float]]]:
    registry = CollectorRegistry()
    registry.register(MonitorCollector(ring, "demo-classifier"))
    text = generate_latest(registry).decode()
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def sampler(ring: SampleRing, lags: list[object], snaps: list[object], **kwargs: object) -> Sampler:
    """A sampler whose reads return (or raise) the next item of ``lags`` / ``snaps``."""
    def next_of(items: list[object]) -> object:
        item = items.pop(0) if len(items) > 1 else items[0]
        if isinstance(item, BaseException):
            raise item
        return item

    return Sampler(ring, read_lag=lambda: next_of(lags), read_topics=lambda: next_of(snaps),  # type: ignore[arg-type,return-value]
                   unknown=list(GROUPS), **kwargs)  # type: ignore[arg-type]


def healthy_lag(lag: int = 4) -> list[GroupLag]:
    return [group_lag(g, 100 - lag, 100) for g in GROUPS]


def test_every_family_the_collector_exports_is_listed_and_every_listed_one_is_exported() -> None:
    ring = SampleRing(TOPICS)
    sampler(ring, [healthy_lag()], [snapshot(1000)]).sample()
    exported = {re.sub(r"_total$", "", name) for name in scrape(ring)}
    assert exported == set(METRIC_FAMILIES)
    assert set(scrape(ring)) <= set(METRIC_NAMES)


def test_lag_metrics_per_partition_and_group_with_a_status_gauge_per_status() -> None:
    ring = SampleRing(TOPICS)
    sampler(ring, [healthy_lag(4)], [snapshot(1000)]).sample()
    samples = scrape(ring)
    records = {(labels["group"], labels["partition"]): v for labels, v in samples["streamml_monitor_lag_records"]}
    assert records == {(g, "0"): 4.0 for g in GROUPS}
    assert {labels["group"]: v for labels, v in samples["streamml_monitor_lag_seconds"]} == {g: 1.5 for g in GROUPS}
    status = {(labels["group"], labels["status"]): v for labels, v in samples["streamml_monitor_group_status"]}
    assert {s for (g, s), v in status.items() if v == 1.0 and g == GROUPS[0]} == {"OK"}
    assert len(status) == len(GROUPS) * len(LagStatus)
    assert {v for _, v in samples["streamml_monitor_group_severity"]} == {0.0}


def test_an_unreachable_broker_is_status_error_and_no_lag_at_all_never_zero() -> None:
    ring = SampleRing(TOPICS)
    boom = KafkaClientError("cannot list consumer groups: no answer within 10s")
    sample = sampler(ring, [boom], [boom]).sample()
    assert sample.snapshot is None and len(sample.errors) == 2 and "no answer" in sample.errors[0]
    samples = scrape(ring)
    assert "streamml_monitor_lag_records" not in samples and "streamml_monitor_group_lag_records" not in samples
    errors = {labels["group"] for labels, v in samples["streamml_monitor_group_status"]
              if labels["status"] == "ERROR" and v == 1.0}
    assert errors == set(GROUPS)
    assert {v for _, v in samples["streamml_monitor_group_severity"]} == {float(LagStatus.ERROR.severity)}
    assert samples["streamml_monitor_up"] == [({}, 0.0)]
    assert samples["streamml_monitor_sample_errors_total"] == [({}, 1.0)]


def test_groups_observe_lag_reports_unknown_are_errors_of_the_sample() -> None:
    ring = SampleRing(TOPICS)
    sample = sampler(ring, [[GroupLag.unknown(g, "broker gone") for g in GROUPS]], [snapshot(10)]).sample()
    assert sample.errors == ("lag: broker gone",)
    assert {s.status for s in sample.statuses} == {LagStatus.ERROR}


def test_topic_metrics_count_what_the_topics_hold() -> None:
    ring = SampleRing(TOPICS)
    sampler(ring, [healthy_lag()], [snapshot(1000)]).sample()
    samples = scrape(ring)
    topics = {labels["topic"]: v for labels, v in samples["streamml_monitor_topic_records_total"]}
    assert topics["events.raw.v1"] == 1000.0 and topics["events.raw.v1.dlq"] == 10.0
    assert {labels["reason"]: v for labels, v in samples["streamml_monitor_dead_letters_total"]} == {
        "not_finite": 7.0, "required": 3.0}
    assert samples["streamml_monitor_model_versions_total"] == [({"model": "demo-classifier"}, 2.0)]
    accuracy = {labels["version"]: v for labels, v in samples["streamml_monitor_version_accuracy"]}
    assert accuracy == pytest.approx({"1": 0.7, "2": 0.9})
    assert samples["streamml_monitor_model_serving_version"] == [({"model": "demo-classifier"}, 2.0)]
    assert {labels["field"]: v for labels, v in samples["streamml_monitor_drift_psi"]} == {"amount": 0.4, "age": 0.02}
    assert samples["streamml_monitor_drift_alerts_total"] == [({"field": "amount", "rule": "psi"}, 1.0)]


def test_a_failed_read_of_the_topics_keeps_the_last_counts_in_metrics() -> None:
    ring = SampleRing(TOPICS)
    take = sampler(ring, [healthy_lag()], [snapshot(1000), KafkaClientError("gone")])
    take.sample()
    take.sample()
    assert ring.latest is not None and ring.latest.snapshot is None
    topics = {labels["topic"]: v for labels, v in scrape(ring)["streamml_monitor_topic_records_total"]}
    assert topics["events.raw.v1"] == 1000.0  # a counter must not fall to 0 because one read failed


def test_only_the_newest_versions_get_an_accuracy_series() -> None:
    from collections import Counter

    many = Counter({v: 10 for v in range(1, 31)})
    ring = SampleRing(TOPICS)
    sampler(ring, [healthy_lag()], [snapshot(10, versions_labelled=many, versions_correct=many)]).sample()
    versions = sorted(int(labels["version"]) for labels, _ in scrape(ring)["streamml_monitor_version_accuracy"])
    assert versions == list(range(21, 31))


def test_status_changes_are_logged_once_each(caplog: pytest.LogCaptureFixture) -> None:
    ring = SampleRing(TOPICS)
    take = sampler(ring, [healthy_lag(0), KafkaClientError("gone"), KafkaClientError("gone"), healthy_lag(0)],
                   [PipelineSnapshot()])
    with caplog.at_level("INFO", logger="streamml_cli.orchestration.monitor_service"):
        for _ in range(4):
            take.sample()
    changes = [r for r in caplog.records if getattr(r, "event", None) == "lag_status"]
    assert [(r.group, r.status) for r in changes if r.group == GROUPS[0]] == [  # type: ignore[attr-defined]
        (GROUPS[0], "OK"), (GROUPS[0], "ERROR"), (GROUPS[0], "OK")]
    assert sum("monitor sample incomplete" in r.getMessage() for r in caplog.records) == 1


def test_the_thread_samples_every_interval_until_stopped_and_survives_a_bug_in_a_read() -> None:
    ring = SampleRing(TOPICS)
    calls = threading.Semaphore(0)

    def read_topics() -> PipelineSnapshot:
        calls.release()
        raise RuntimeError("a bug")

    take = Sampler(ring, read_lag=healthy_lag, read_topics=read_topics, unknown=list(GROUPS), interval=0.01)
    with take:
        assert take.alive
        eventually(lambda: ring.counts[0] >= 3, timeout=10, what="three samples")
    assert not take.alive
    taken = ring.counts[0]
    assert ring.counts[1] == taken  # every one incomplete: the read failed, the thread went on
    assert ring.latest is not None and "topics: a bug" in ring.latest.errors


def test_a_sampler_refuses_a_non_positive_interval() -> None:
    with pytest.raises(ValueError, match="interval"):
        Sampler(SampleRing(TOPICS), read_lag=list, read_topics=PipelineSnapshot, unknown=[], interval=0)


def test_the_topic_reader_waits_for_every_topic_it_reads_before_it_starts_reading() -> None:
    from types import SimpleNamespace

    from streamml.config import load_settings
    from streamml.errors import MissingTopicError
    from streamml.topics import Topics
    from streamml_cli.orchestration.monitor_readers import TopicReader

    settings = load_settings(env={}, namespace="t.")
    topics = Topics.from_settings(settings)
    existing = {topics.raw_events: 3, topics.features: 3}
    cluster = SimpleNamespace(topics=topics, settings=settings, partition_counts=lambda names, timeout: existing)
    with pytest.raises(MissingTopicError) as missing:
        TopicReader(cluster)()  # type: ignore[arg-type]
    assert missing.value.topics == [topics.dead_letters, topics.predictions, topics.models, topics.monitoring]
