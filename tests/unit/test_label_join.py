"""The delayed-label join state machine: in order, out of order, duplicates, time-to-live."""

from __future__ import annotations

from typing import Any

from stream_processors.labels import FEATURES, JOINED, LABEL, LabelJoin, apply

TTL = 10_000


def _vector(event_id: str) -> dict[str, Any]:
    return {"key": "c1", "event_id": event_id, "event_time": 5, "features": {"x": 1.0}, "label": None,
            "source_topic": "raw", "source_partition": 0, "source_offset": 7}


def _run(join: LabelJoin, store: dict[bytes, Any], step: Any) -> Any:
    if step is not None:
        apply(store, step)
    return step


def test_features_then_label_join_once_with_the_label() -> None:
    join, store = LabelJoin(TTL), {}
    first = _run(join, store, join.on_features(store, b"e1", _vector("e1"), 2, now_ms=0))
    assert first.joined is None and store[b"e1"]["s"] == FEATURES and first.partition == 2
    step = _run(join, store, join.on_label(store, b"e1", 1, 100, 2, now_ms=50))
    assert step.joined == {**_vector("e1"), "label": 1}
    assert store[b"e1"] == {"s": JOINED, "t": 50, "p": 2}
    assert join.counts.joined == 1 and join.counts.joined_label_first == 0


def test_a_label_before_its_features_waits_and_joins_when_they_come() -> None:
    join, store = LabelJoin(TTL), {}
    _run(join, store, join.on_label(store, b"e1", True, 100, 0, now_ms=0))
    assert store[b"e1"]["s"] == LABEL and join.pending(store) == {FEATURES: 0, LABEL: 1}
    step = _run(join, store, join.on_features(store, b"e1", _vector("e1"), 0, now_ms=10))
    assert step.joined["label"] is True
    assert join.counts.joined == 1 and join.counts.joined_label_first == 1
    assert join.pending(store) == {FEATURES: 0, LABEL: 0}


def test_duplicates_are_counted_and_never_joined_twice() -> None:
    join, store = LabelJoin(TTL), {}
    _run(join, store, join.on_features(store, b"e1", _vector("e1"), 0, now_ms=0))
    assert join.on_features(store, b"e1", _vector("e1"), 0, now_ms=1) is None  # a replayed vector
    _run(join, store, join.on_label(store, b"e1", 0, 5, 0, now_ms=2))
    assert join.on_label(store, b"e1", 1, 6, 0, now_ms=3) is None  # a second label after the join
    assert join.on_features(store, b"e1", _vector("e1"), 0, now_ms=4) is None  # a replay after the join
    _run(join, store, join.on_label(store, b"e2", 1, 6, 0, now_ms=5))
    assert join.on_label(store, b"e2", 0, 7, 0, now_ms=6) is None  # two labels before the features
    step = join.on_features(store, b"e2", _vector("e2"), 0, now_ms=7)
    assert step is not None and step.joined["label"] == 1  # the first label stands
    c = join.counts
    assert (c.joined, c.duplicate_labels, c.duplicate_features) == (2, 2, 2)


def test_entries_past_the_time_to_live_expire_and_are_counted_by_kind() -> None:
    join, store = LabelJoin(TTL), {}
    _run(join, store, join.on_features(store, b"unlabelled", _vector("unlabelled"), 1, now_ms=0))
    _run(join, store, join.on_label(store, b"orphan", 1, 0, 2, now_ms=0))
    _run(join, store, join.on_features(store, b"done", _vector("done"), 0, now_ms=0))
    _run(join, store, join.on_label(store, b"done", 1, 0, 0, now_ms=1))
    _run(join, store, join.on_features(store, b"fresh", _vector("fresh"), 0, now_ms=9_000))
    assert join.expire(store, now_ms=TTL) == []  # nothing older than the time-to-live yet
    steps = join.expire(store, now_ms=TTL + 2)
    assert {(s.key, s.partition, s.entry) for s in steps} == {
        (b"unlabelled", 1, None), (b"orphan", 2, None), (b"done", 0, None)
    }
    for step in steps:
        apply(store, step)
    assert list(store) == [b"fresh"]
    assert join.counts.expired_unlabelled == 1 and join.counts.unmatched_labels == 1
    # A label after its features expired waits as a new one: never joined with nothing.
    step = join.on_label(store, b"unlabelled", 1, 0, 1, now_ms=TTL + 3)
    assert step is not None and step.joined is None


def test_unreadable_state_is_dropped_not_trusted() -> None:
    join, store = LabelJoin(TTL), {b"junk": {"s": "nonsense"}, b"old": "text"}
    step = join.on_label(store, b"junk", 1, 0, 0, now_ms=0)
    assert step is not None and step.entry["s"] == LABEL  # treated as absent
    assert {s.key for s in join.expire(store, now_ms=0)} == {b"junk", b"old"}
