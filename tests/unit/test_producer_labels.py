"""Delayed labels without a broker: the schedule, label stripping, duplicates and option checks.

The scheduler's clock is a number the test passes in, so no test sleeps.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import pytest

import producers.app
from producers import ProduceReport, RawPayload, SyntheticSource, produce
from producers.labels import (
    LABEL_PARTITIONER,
    DetachedLabel,
    LabelProducer,
    LabelScheduler,
    check_label_options,
    detach_label,
)
from streamml.config import Settings
from streamml.errors import ConfigError
from streamml.records import LabelRecord, RecordCodec
from streamml_cli import main

WALL = 1_700_000_000.0


def scheduler(max_delay: float = 10.0, **kwargs: Any) -> LabelScheduler:
    return LabelScheduler(max_delay, wall_clock=lambda: WALL, **kwargs)


def schedule_of(s: LabelScheduler, n: int = 200, now: float = 0.0) -> list[tuple[float, str]]:
    """Add ``n`` labels at ``now`` and return ``(due, event id)`` of each, by releasing them one due time at a time."""
    for i in range(n):
        s.add(f"e{i}", i % 2, now)
    out = []
    while (due := s.next_due) is not None:
        out += [(due, r.event_id) for r in s.due(due)]
    return out


# -- the schedule -------------------------------------------------------------
def test_delays_are_uniform_in_zero_to_max_and_released_in_due_order() -> None:
    released = schedule_of(scheduler(10.0), n=2000, now=100.0)
    dues = [due for due, _ in released]
    assert len(released) == 2000 and dues == sorted(dues)
    assert all(100.0 <= due <= 110.0 for due in dues)
    # Uniform: each tenth of the range holds about a tenth of the labels.
    deciles = Counter(min(int(due - 100.0), 9) for due in dues)
    assert all(150 < deciles[d] < 250 for d in range(10)), deciles


def test_the_same_seed_gives_the_same_schedule_and_another_seed_another() -> None:
    assert schedule_of(scheduler(seed=7)) == schedule_of(scheduler(seed=7))
    assert schedule_of(scheduler(seed=7)) != schedule_of(scheduler(seed=8))


def test_due_releases_only_what_is_due_and_keeps_the_rest_pending() -> None:
    s = scheduler(10.0)
    assert (s.pending, s.next_due, s.due(1e9)) == (0, None, [])
    for i in range(50):
        s.add(f"e{i}", True, now=0.0)
    assert s.pending == 50
    first = s.next_due
    assert first is not None
    assert s.due(first - 1e-9) == []  # nothing is due before the earliest due time
    early = s.due(5.0)
    assert 0 < len(early) < 50 and s.pending == 50 - len(early)
    assert s.next_due is not None and s.next_due > 5.0
    rest = s.due(10.0)
    assert len(early) + len(rest) == 50 and s.pending == 0 and s.next_due is None
    assert sorted(r.event_id for r in early + rest) == sorted(f"e{i}" for i in range(50))
    assert (s.scheduled, s.released) == (50, 50)


def test_a_released_label_carries_its_event_id_label_and_the_wall_clock_time() -> None:
    wall = [WALL]
    s = LabelScheduler(0.0, wall_clock=lambda: wall[0])
    s.add("e1", 1, now=3.0)
    s.add("e2", "spam", now=3.0)
    wall[0] = WALL + 2.5
    assert s.due(3.0) == [
        LabelRecord(event_id="e1", label=1, label_time=1_700_000_002_500),
        LabelRecord(event_id="e2", label="spam", label_time=1_700_000_002_500),
    ]


def test_a_zero_delay_makes_each_label_due_when_it_is_added() -> None:
    s = scheduler(0.0)
    for now in (1.0, 2.0, 3.0):
        s.add(f"e{now:g}", 0, now)
        assert s.next_due == now
        assert [r.event_id for r in s.due(now)] == [f"e{now:g}"]


def test_labels_due_at_the_same_time_keep_the_order_they_were_added_in() -> None:
    s = scheduler(0.0)
    for i in range(20):
        s.add(f"e{i}", None if i % 3 else {"not": "comparable"}, now=0.0)
    assert [r.event_id for r in s.due(0.0)] == [f"e{i}" for i in range(20)]


# -- duplicates ---------------------------------------------------------------
def test_no_duplicates_by_default() -> None:
    s = scheduler()
    assert {s.add(f"e{i}", 1, 0.0) for i in range(500)} == {1}
    assert (s.scheduled, s.scheduled_duplicates) == (500, 0)


def test_a_fraction_of_labels_is_scheduled_twice_each_copy_with_its_own_delay() -> None:
    s = scheduler(10.0, duplicates=0.1)
    copies = sum(s.add(f"e{i}", 1, 0.0) - 1 for i in range(2000))
    assert 150 < copies < 250
    assert (s.scheduled, s.scheduled_duplicates) == (2000 + copies, copies)
    released: dict[str, list[float]] = {}
    while (due := s.next_due) is not None:
        for record in s.due(due):
            released.setdefault(record.event_id, []).append(due)
    twice = {k: v for k, v in released.items() if len(v) == 2}
    assert len(released) == 2000 and len(twice) == copies
    assert all(len(v) in (1, 2) for v in released.values())
    assert len({round(a - b, 9) for a, b in twice.values()}) > copies // 2  # independent delays, not one offset
    assert s.released_duplicates == copies


def test_every_label_is_sent_twice_with_fraction_one() -> None:
    s = scheduler(1.0, duplicates=1.0)
    assert {s.add(f"e{i}", 1, 0.0) for i in range(100)} == {2}
    assert Counter(Counter(r.event_id for r in s.due(math.inf)).values()) == {2: 100}


def test_duplicates_do_not_change_the_delays_of_the_first_copies() -> None:
    plain = schedule_of(scheduler(seed=3), n=300)
    noisy = schedule_of(scheduler(seed=3, duplicates=0.5), n=300)
    assert len(noisy) > len(plain) + 100
    # The plain schedule is the noisy one without its copies.
    assert not Counter(plain) - Counter(noisy)


# -- stripping labels off events ------------------------------------------------
def test_an_event_is_sent_with_its_label_set_to_none_and_the_input_untouched() -> None:
    event = {"event_id": "e1", "customer_id": "c1", "label": 1}
    stripped, detached = detach_label(event, "label")
    assert stripped == {"event_id": "e1", "customer_id": "c1", "label": None}
    assert detached == DetachedLabel("e1", 1)
    assert event["label"] == 1


def test_the_label_field_is_the_settings_one() -> None:
    stripped, detached = detach_label({"event_id": "e1", "outcome": True, "label": 5}, "outcome")
    assert stripped == {"event_id": "e1", "outcome": None, "label": 5}
    assert detached == DetachedLabel("e1", True)


@pytest.mark.parametrize(
    "item",
    [
        {"event_id": "e1", "label": None},
        {"event_id": "e1"},
        {"event_id": None, "label": 1},
        {"event_id": "", "label": 1},
        {"customer_id": "c1", "label": 1},
        RawPayload(b"\x00garbage", key="c1"),
    ],
    ids=["null-label", "no-label-field", "null-id", "empty-id", "no-id-field", "raw-payload"],
)
def test_events_without_an_id_or_a_label_and_raw_payloads_are_sent_unchanged(item: Any) -> None:
    unchanged, detached = detach_label(item, "label")
    assert unchanged is item and detached is None


def test_a_non_string_event_id_is_named_as_text() -> None:
    assert detach_label({"event_id": 42, "label": 0}, "label")[1] == DetachedLabel("42", 0)


def test_every_synthetic_event_gives_its_label_away() -> None:
    source = SyntheticSource(200, seed=4, bad_fraction=0.1)
    raw = 0
    for item in source:
        sent, detached = detach_label(item, "label")
        if isinstance(item, RawPayload):
            raw += 1
            assert detached is None and sent is item
        else:
            assert isinstance(sent, dict) and sent["label"] is None
            assert detached == DetachedLabel(item["event_id"], item["label"])
    assert raw == source.injected.get("corrupt_bytes", 0) > 0


# -- options ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("max_delay", "duplicates", "message"),
    [
        (-1.0, 0.0, "label delay must be a finite number of seconds >= 0, got -1.0"),
        (math.nan, 0.0, "label delay must be a finite number of seconds >= 0, got nan"),
        (math.inf, 0.0, "label delay must be a finite number of seconds >= 0, got inf"),
        (1.0, -0.1, "label duplicates must be a fraction between 0 and 1, got -0.1"),
        (1.0, 1.5, "label duplicates must be a fraction between 0 and 1, got 1.5"),
        (1.0, math.nan, "label duplicates must be a fraction between 0 and 1, got nan"),
        (None, 0.2, "label duplicates apply to delayed labels only: set a label delay too"),
        (
            -2.0, 2.0,
            "label delay must be a finite number of seconds >= 0, got -2.0; "
            "label duplicates must be a fraction between 0 and 1, got 2.0",
        ),
    ],
)
def test_invalid_label_options_are_refused_with_one_message(
    max_delay: float | None, duplicates: float, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        check_label_options(max_delay, duplicates)
    assert str(caught.value) == message
    if max_delay is not None:
        with pytest.raises(ConfigError):
            LabelScheduler(max_delay, duplicates=duplicates)


@pytest.mark.parametrize(("max_delay", "duplicates"), [(None, 0.0), (0.0, 0.0), (0.0, 1.0), (3600.0, 0.5)])
def test_valid_label_options_pass(max_delay: float | None, duplicates: float) -> None:
    check_label_options(max_delay, duplicates)


def test_produce_refuses_invalid_label_options_before_connecting(dead_settings: Settings) -> None:
    # A connection attempt to the dead port would take seconds and end in a KafkaClientError.
    with pytest.raises(ConfigError, match="label delay"):
        produce(dead_settings, SyntheticSource(5), label_delay=-1.0)
    with pytest.raises(ConfigError, match="label duplicates"):
        produce(dead_settings, SyntheticSource(5), label_delay=1.0, label_duplicates=2.0)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--label-delay", "-1"], "label delay must be a finite number of seconds >= 0, got -1.0"),
        (["--label-delay", "inf"], "label delay must be a finite number of seconds >= 0, got inf"),
        (["--label-delay", "1", "--label-duplicates", "1.5"], "label duplicates must be a fraction"),
        (["--label-duplicates", "0.5"], "set a label delay too"),
    ],
)
def test_the_cli_refuses_invalid_label_options_in_one_line(
    argv: list[str], message: str, dead_settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["produce", "-b", dead_settings.bootstrap_servers, "--limit", "5", *argv])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("streamml: error: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err


# -- the label producer (a real client facing a dead port) ------------------------
def test_the_label_producer_uses_the_murmur2_partitioner_and_keys_by_event_id(
    dead_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    overrides: list[dict[str, Any]] = []
    real = producers.app.make_producer

    def spy(settings: Settings, **config: Any) -> Any:
        overrides.append(config)
        return real(settings, **config)

    monkeypatch.setattr(producers.app, "make_producer", spy)
    # Even a caller's client config cannot change the partitioner: co-partitioning depends on it.
    now = [0.0]
    labels = LabelProducer(
        dead_settings,
        max_delay=1.0,
        seed=0,
        clock=lambda: now[0],
        wall_clock=lambda: 0.0,
        client_config={"log_level": 0, "partitioner": "consistent_random"},
    )
    assert LABEL_PARTITIONER == "murmur2_random"
    assert overrides == [{"log_level": 0, "partitioner": "murmur2_random"}]
    assert labels.topic == "unit.labels.v1"

    labels.schedule(DetachedLabel("e1", 1))
    labels.schedule(DetachedLabel("e2", 0))
    assert (labels.release(), labels.pending) == (0, 2)  # seed 0 draws delays of 0.84 s and 0.76 s
    now[0] = 1.0  # the maximum delay: everything is due
    assert labels.release() == 2
    assert (labels.pending, labels.next_due, labels.sent, labels.stats.sent, labels.duplicates_sent) == (
        0, None, 2, 2, 0
    )
    codec = RecordCodec(LabelRecord)
    assert labels.stats.bytes == len(codec.encode(LabelRecord("e1", 1, 0))) + len(codec.encode(LabelRecord("e2", 0, 0)))


# -- the report --------------------------------------------------------------------
def test_the_summary_shows_label_counts_only_when_labels_were_sent() -> None:
    base: dict[str, Any] = dict(
        source="s", topic="t", sent=10, delivered=10, failed=0, injected_bad=0, elapsed=2.0, rate=5.0
    )
    plain = ProduceReport(**base)
    assert plain.ok and "label" not in plain.summary()
    labelled = ProduceReport(
        **base, labels_topic="t.labels", labels_sent=11, labels_delivered=11, label_duplicates=1
    )
    assert labelled.ok
    assert labelled.summary() == (
        "10 events sent to t, 10 delivered in 2.0s (5 events/s, 0.0 MB); "
        "11 labels sent to t.labels (1 duplicates), 11 delivered"
    )
    failed = ProduceReport(
        **base, labels_topic="t.labels", labels_sent=10, labels_delivered=9, labels_failed=1
    )
    assert not failed.ok
    assert failed.summary().endswith("; 10 labels sent to t.labels, 9 delivered, 1 FAILED")
