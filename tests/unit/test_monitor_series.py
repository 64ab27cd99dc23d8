"""``streamml monitor``'s memory: the sample ring and the series of ``/api/snapshot``, from fake samples (no broker)."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from streamml.lag import GroupLag, PartitionLag
from streamml.lag_status import LagEvaluator
from streamml_cli.orchestration.monitor import AlertSeen, DriftWindowSeen, ModelVersionSeen, PipelineSnapshot
from streamml_cli.orchestration.monitor_series import Sample, SampleRing

TOPICS = {"raw_events": "events.raw.v1", "features": "features.v1", "dead_letters": "events.raw.v1.dlq",
          "predictions": "predictions.v1"}
GROUPS = ("streamml.processor", "streamml.learner", "streamml.scorer")


def group_lag(group: str, committed: int, end: int) -> GroupLag:
    return GroupLag(group, [PartitionLag(group, "events.raw.v1", 0, committed, end, end - committed, 0,
                                         0.0 if end == committed else 1.5)])


def snapshot(produced: int, **overrides: object) -> PipelineSnapshot:
    snap = PipelineSnapshot(
        produced=produced, features=produced - 10, quarantined=10, predictions=produced - 20,
        quarantine_rules=Counter({"not_finite": 7, "required": 3}),
        versions=[ModelVersionSeen(1, 1_000_000, 500, 0.7, 0.7), ModelVersionSeen(2, 1_004_000, 1000, 0.8, 0.8)],
        versions_scored=Counter({1: 300, 2: 200}), first_scored_at={2: 1_005_000, 1: 1_001_000},
        versions_labelled=Counter({1: 300, 2: 200}), versions_correct=Counter({1: 210, 2: 180}),
        scorer_rolling=0.78,
        alerts=[AlertSeen("amount", "psi", 0.4, 2, 1000)],
        drift=[DriftWindowSeen(1, 1_002_000, "p", {"amount": 0.05, "age": 0.01}),
               DriftWindowSeen(2, 1_006_000, "p", {"amount": 0.4, "age": 0.02})],
        monitoring_windows=2,
        ends={"events.raw.v1": produced, "features.v1": produced - 10, "events.raw.v1.dlq": 10,
              "predictions.v1": produced - 20},
    )
    for name, value in overrides.items():
        setattr(snap, name, value)
    return snap


def ring_of(*samples: Sample, capacity: int = 600) -> SampleRing:
    ring = SampleRing(TOPICS, capacity=capacity, namespace="", psi_threshold=0.2)
    for sample in samples:
        ring.add(sample)
    return ring


def samples_over(ends: list[int | None], lags: list[int | None]) -> list[Sample]:
    """One sample a second; ``None`` in ``ends``: the topics were not read; in ``lags``: the lag was unknown."""
    evaluator = LagEvaluator()
    out = []
    for second, (end, lag) in enumerate(zip(ends, lags, strict=True)):
        report = [
            GroupLag.unknown(g, "no broker") if lag is None else group_lag(g, 100 - lag, 100) for g in GROUPS
        ]
        errors = ("broker down",) if end is None or lag is None else ()
        out.append(Sample(float(1000 + second), report, evaluator.observe(report, float(1000 + second)),
                          None if end is None else snapshot(end), errors))
    return out


def test_the_ring_keeps_the_newest_samples_and_counts_all_of_them() -> None:
    ring = ring_of(*samples_over([100, 200, None, 400, 500], [0, 0, None, 0, 0]), capacity=3)
    assert [s.at for s in ring.samples()] == [1002.0, 1003.0, 1004.0]
    assert ring.counts[:2] == (5, 1)  # five taken, one of them incomplete
    assert ring.latest is not None and ring.latest.at == 1004.0


def test_the_ring_refuses_a_capacity_that_cannot_make_a_rate() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        SampleRing(TOPICS, capacity=1)


def test_throughput_is_records_per_second_between_samples_and_a_gap_where_topics_were_not_read() -> None:
    series = ring_of(*samples_over([100, 300, None, 600, 1000], [0] * 5)).series()
    raw = next(t for t in series["throughput"]["topics"] if t["role"] == "raw_events")
    # No rate at the first sample, none across the gap (the sample after it restarts the count).
    assert raw["points"] == [[1001.0, 200.0], [1002.0, None], [1004.0, 400.0]]
    assert raw["total"] == 1000 and raw["topic"] == "events.raw.v1"
    assert {t["role"] for t in series["throughput"]["topics"]} == set(TOPICS)  # the labelled topic does not exist


def test_a_recreated_topic_is_no_negative_throughput() -> None:
    series = ring_of(*samples_over([500, 100], [0, 0])).series()
    assert next(t for t in series["throughput"]["topics"] if t["role"] == "raw_events")["points"] == [[1001.0, 0.0]]


def test_unknown_lag_is_a_gap_with_status_error_never_zero() -> None:
    series = ring_of(*samples_over([100, 200, 300], [5, None, 0])).series()
    groups = {g["group"]: g for g in series["lag"]["groups"]}
    assert sorted(groups) == sorted(GROUPS)
    scorer = groups["streamml.scorer"]
    assert [p[1] for p in scorer["points"]] == [5, None, 0]
    assert scorer["status"] == "OK" and scorer["total_lag"] == 0
    down = ring_of(*samples_over([100, 200], [3, None])).series()["lag"]["groups"][0]
    assert down["status"] == "ERROR" and down["total_lag"] is None and "no broker" in down["reason"]
    assert down["points"][-1] == [1001.0, None]


def test_accuracy_per_version_and_swaps_in_the_order_versions_began_serving() -> None:
    accuracy = ring_of(*samples_over([100, 200], [0, 0])).series()["accuracy"]
    by_version = {v["version"]: v for v in accuracy["versions"]}
    assert by_version[1]["accuracy"] == pytest.approx(0.7) and by_version[2]["accuracy"] == pytest.approx(0.9)
    assert by_version[2]["learner_accuracy"] == 0.8 and by_version[2]["published_at"] == 1004.0
    assert accuracy["swaps"] == [{"version": 1, "at": 1001.0}, {"version": 2, "at": 1005.0}]
    assert accuracy["rolling"] == [[1000.0, 0.78], [1001.0, 0.78]]


def test_a_version_without_labelled_predictions_has_no_accuracy_rather_than_zero() -> None:
    snap = snapshot(100, versions_labelled=Counter(), versions_correct=Counter())
    ring = ring_of(Sample(1.0, [], [], snap))
    assert {v["accuracy"] for v in ring.series()["accuracy"]["versions"]} == {None}


def test_dead_letters_by_reason_largest_first_and_drift_per_field() -> None:
    series = ring_of(*samples_over([100], [0])).series()
    assert series["dead_letters"] == {"reasons": [{"reason": "not_finite", "count": 7},
                                                  {"reason": "required", "count": 3}], "total": 10}
    amount, age = series["drift"]["fields"]
    assert amount == {"field": "amount", "points": [[1002.0, 0.05], [1006.0, 0.4]], "alerts": 1, "psi": 0.4,
                      "max_psi": 0.4}
    assert age["field"] == "age" and age["alerts"] == 0 and age["max_psi"] == 0.02
    assert series["drift"]["windows"] == 2 and series["drift"]["alerts"][0]["field"] == "amount"


def test_the_series_are_valid_json_with_the_context_and_totals() -> None:
    series = ring_of(*samples_over([100, 200], [0, 0])).series()
    text = json.dumps(series, allow_nan=False)
    assert json.loads(text)["psi_threshold"] == 0.2
    assert series["totals"]["serving_version"] == 2 and series["totals"]["champion_version"] == 2
    assert series["totals"]["drift_alerts"] == 1 and series["generated_at"] == 1001.0


def test_an_empty_ring_answers_with_empty_series() -> None:
    series = ring_of().series()
    assert series["lag"]["groups"] == [] and series["throughput"]["topics"] == []
    assert series["accuracy"]["versions"] == [] and series["dead_letters"]["total"] is None
    assert series["generated_at"] is None and series["totals"] == {}
