"""process_batch: one output per input, whatever the input is."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from stream_processors.batches import SourceRecord
from stream_processors.dead_letters import read_rejection
from stream_processors.pipeline import FEATURIZE_ERROR, BatchProcessor
from streamml.config import Settings
from streamml.records import FEATURE_VECTOR_SCHEMA
from streamml.serde import SCHEMA_HEADER, AvroSchema, AvroSerde, bundled_schema, header_value
from streamml.windows import WindowSpec, WindowState, window_features

SETTINGS = Settings(partitions=3)
SCHEMA = AvroSchema.from_file(SETTINGS.schema_path)
SERDE = AvroSerde(SCHEMA)
FEATURES = AvroSerde(bundled_schema(FEATURE_VECTOR_SCHEMA))
T0 = 1_700_000_000_000


def incompatible_writer() -> AvroSchema:
    raw = json.loads(SETTINGS.schema_path.read_text())
    for field in raw["fields"]:
        if field["name"] == "salary":
            field["type"] = ["null", "string"]
            field.pop("contract")  # min/max on a string field is itself a schema problem
    return AvroSchema.from_dict(raw)


WRONG = AvroSerde(incompatible_writer())
PROCESSOR = BatchProcessor.from_settings(SETTINGS, writer_schemas=[WRONG.reader])


def event(i: int, customer: str = "alice", **overrides: object) -> dict:
    base = {"event_id": f"e{i}", "customer_id": customer, "event_time": T0 + i * 1000, "salary": 50000.0,
            "commission": 0.0, "age": 30, "elevel": 1, "car": 2, "zipcode": 3, "hvalue": 1e5, "hyears": 4,
            "loan": 100.0 * (i + 1), "label": None}
    return {**base, **overrides}


def record(value: bytes | None, headers=None, *, key: bytes | None = b"alice", offset: int = 0,
           partition: int = 1) -> SourceRecord:
    headers = SERDE.headers if headers is None else headers
    return SourceRecord(value, key, tuple(headers), "raw", partition, offset, 1234)


def good(i: int, customer: str = "alice", **overrides: object) -> SourceRecord:
    return record(SERDE.encode(event(i, customer, **overrides)), key=customer.encode(), offset=i)


VALID = SERDE.encode(event(0))
BAD = {
    "random": (record(b"\xff" * 32), "decode", "undecodable", ""),
    "truncated": (record(VALID[:9]), "decode", "undecodable", ""),
    "trailing": (record(VALID + b"\x01\x02"), "decode", "trailing_bytes", ""),
    "empty": (record(b""), "decode", "empty_value", ""),
    "tombstone": (record(None), "decode", "empty_value", ""),
    "no_header": (record(VALID, []), "decode", "missing_schema_header", ""),
    "unknown_fp": (record(VALID, [(SCHEMA_HEADER, b"ffffffffffffffff")]), "decode", "unknown_schema", ""),
    "wrong_type": (record(WRONG.encode(event(0, salary="high")), WRONG.headers), "decode", "schema_resolution", ""),
    "nan": (record(SERDE.encode(event(0, loan=float("nan")))), "validate", "not_finite", "loan"),
    "missing": (record(SERDE.encode(event(0, age=None))), "validate", "required", "age"),
    "below_min": (record(SERDE.encode(event(0, hyears=0))), "validate", "below_min", "hyears"),
    "above_max": (record(SERDE.encode(event(0, salary=1e9))), "validate", "above_max", "salary"),
    "not_allowed": (record(SERDE.encode(event(0, zipcode=42))), "validate", "not_allowed", "zipcode"),
    "label": (record(SERDE.encode(event(0, label=7))), "validate", "not_allowed", "label"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_each_kind_of_bad_record_is_quarantined_unchanged(name: str) -> None:
    source, stage, rule, field = BAD[name]
    features, dead = PROCESSOR.process_batch([source])
    assert features == [] and len(dead) == 1
    out = dead[0]
    assert (out.key, out.value) == (source.key, source.value)
    assert out.headers[: len(source.headers)] == list(source.headers)
    reason = read_rejection(out.headers)
    assert (reason["stage"], reason["rule"], reason["field"]) == (stage, rule, field)
    assert (reason["source.topic"], reason["source.partition"], reason["source.offset"]) == ("raw", 1, 0)


def test_a_mixed_batch_gives_one_output_per_record_in_order() -> None:
    batch = [good(0)] + [BAD[name][0] for name in sorted(BAD)] + [good(1, "bob"), good(2)]
    result = PROCESSOR.process_batch(batch)
    assert len(result.features) + len(result.dead_letters) == len(batch)
    assert [o.source for o in result.features] == [batch[0], batch[-2], batch[-1]]
    assert [o.source for o in result.dead_letters] == batch[1:-2]


def test_feature_vector_contents() -> None:
    [out], [] = PROCESSOR.process_batch([good(4, "carol", label=1)])
    vector = FEATURES.decode(out.value, out.headers)
    assert header_value(out.headers, SCHEMA_HEADER) == FEATURES.reader.fingerprint.encode()
    assert (out.key, out.partition) == (b"carol", 1)
    assert vector == {
        "key": "carol", "event_id": "e4", "event_time": T0 + 4000, "label": 1,
        "source_topic": "raw", "source_partition": 1, "source_offset": 4,
        "features": {"salary": 50000.0, "commission": 0.0, "age": 30.0, "car": 2.0, "hvalue": 1e5,
                     "hyears": 4.0, "loan": 500.0, "elevel=1": 1.0, "zipcode=3": 1.0,
                     "key_events_60s": 1.0, "loan_mean_60s": 500.0},
    }


def test_windows_accumulate_per_key_within_and_across_batches() -> None:
    first = PROCESSOR.process_batch([good(0), good(1, "bob"), good(2)])
    counts = [FEATURES.decode(o.value, o.headers)["features"]["key_events_60s"] for o in first.features]
    assert counts == [1.0, 1.0, 2.0]
    stored = {key: update.state for key, update in first.window_updates.items()}
    assert set(stored) == {b"alice", b"bob"}
    [out], [] = PROCESSOR.process_batch([good(3)], stored)
    features = FEATURES.decode(out.value, out.headers)["features"]
    assert features["key_events_60s"] == 3.0
    assert features["loan_mean_60s"] == pytest.approx((100 + 300 + 400) / 3)


def test_window_updates_name_the_source_partition() -> None:
    batch = [record(SERDE.encode(event(0)), key=b"alice", partition=2)]
    assert PROCESSOR.process_batch(batch).window_updates[b"alice"].partition == 2


def test_rejected_records_do_not_touch_the_window() -> None:
    result = PROCESSOR.process_batch([BAD["nan"][0], good(1)])
    [out] = result.features
    assert FEATURES.decode(out.value, out.headers)["features"]["key_events_60s"] == 1.0


def test_a_record_without_a_kafka_key_uses_the_key_field() -> None:
    source = record(SERDE.encode(event(0, "dora")), key=None)
    result = PROCESSOR.process_batch([source])
    assert list(result.window_updates) == [b"dora"] and result.features[0].key is None


def test_features_partition_is_left_to_the_producer_when_out_of_range() -> None:
    [out], [] = PROCESSOR.process_batch([record(VALID, partition=7)])
    assert out.partition is None


def test_featurization_errors_are_quarantined_not_raised() -> None:
    broken = BatchProcessor(event_schema=SCHEMA, key_field="customer_id", label_field="label",
                            time_field="not_a_field", window=WindowSpec(60.0), features_partitions=3)
    [], [out] = broken.process_batch([good(0)])
    reason = read_rejection(out.headers)
    assert (reason["stage"], reason["rule"]) == ("featurize", FEATURIZE_ERROR)
    assert "not_a_field" in reason["message"]


def test_unreadable_stored_state_restarts_the_window() -> None:
    [out], [] = PROCESSOR.process_batch([good(0)], {b"alice": {"bucket_ms": 5000, "fields": ["loan"]}})
    assert FEATURES.decode(out.value, out.headers)["features"]["key_events_60s"] == 1.0


def test_the_input_state_mapping_is_not_modified() -> None:
    stored: dict = {}
    PROCESSOR.process_batch([good(0)], stored)
    assert stored == {}


@hsettings(max_examples=300, deadline=None)
@given(value=st.one_of(st.none(), st.binary(max_size=200)),
       header=st.one_of(st.none(), st.binary(max_size=20), st.just(SCHEMA.fingerprint.encode())))
def test_no_input_crashes_or_disappears(value: bytes | None, header: bytes | None) -> None:
    headers = [] if header is None else [(SCHEMA_HEADER, header)]
    result = PROCESSOR.process_batch([record(value, headers)])
    assert len(result.features) + len(result.dead_letters) == 1
    for out in result.dead_letters:
        assert read_rejection(out.headers)["stage"] in ("decode", "validate")


@hsettings(max_examples=100, deadline=None)
@given(data=st.data())
def test_corrupted_valid_records_never_crash(data: st.DataObject) -> None:
    raw = bytearray(VALID)
    for _ in range(data.draw(st.integers(1, 4))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    result = PROCESSOR.process_batch([record(bytes(raw))])
    assert len(result.features) + len(result.dead_letters) == 1


def test_live_state_objects_in_the_store_are_updated_in_place_and_changelogged_as_json() -> None:
    first = PROCESSOR.process_batch([good(0)])
    stored = {b"alice": first.window_updates[b"alice"].state}
    before = stored[b"alice"].copy()
    second = PROCESSOR.process_batch([good(1)], stored)
    update = second.window_updates[b"alice"]
    assert update.state is stored[b"alice"] and update.state != before  # no copy per batch
    assert json.loads(update.value) == update.state.dump(PROCESSOR.window)
    assert WindowState.load(json.loads(update.value), PROCESSOR.window) == update.state  # what a recovery rebuilds


def test_a_dump_store_is_not_changed_by_a_batch() -> None:
    first = PROCESSOR.process_batch([good(0)])
    dumped = json.loads(first.window_updates[b"alice"].value)
    stored = {b"alice": dumped}
    snapshot = json.loads(json.dumps(dumped))
    PROCESSOR.process_batch([good(1)], stored)
    assert stored[b"alice"] == snapshot


def _window_features(result) -> list[tuple[int, float, float]]:
    """(source offset, key_events_60s, loan_mean_60s) of each feature vector, in order."""
    out = []
    for o in result.features:
        vector = FEATURES.decode(o.value, o.headers)
        out.append((vector["source_offset"], vector["features"]["key_events_60s"],
                    vector["features"]["loan_mean_60s"]))
    return out


def _recovered(result, before: dict | None = None) -> dict:
    """The store as a recovery rebuilds it: the changelogged dumps, through JSON."""
    store = dict(before or {})
    store.update({key: json.loads(u.value) for key, u in result.window_updates.items()})
    return store


def test_replaying_a_batch_over_state_that_already_counts_it_changes_nothing() -> None:
    # A crash after the batch's changelog records were acked but before its
    # offsets were committed: recovery restores state with the batch in it and
    # the batch is consumed again.
    earlier = PROCESSOR.process_batch([good(0), good(1, "bob")])
    stored = _recovered(earlier)
    batch = [good(2), good(3, "bob"), good(4), good(5), good(6, "bob")]
    first = PROCESSOR.process_batch(batch, stored)
    recovered = _recovered(first, stored)

    replay = PROCESSOR.process_batch(batch, recovered)
    assert _window_features(replay) == _window_features(first)
    assert [o.value for o in replay.features] == [o.value for o in first.features]
    assert replay.window_updates == {}  # the recovered state is already the state after the batch
    # ... and the next batch sees each of alice's events once: 0, 2, 4, 5 and itself.
    assert _window_features(PROCESSOR.process_batch([good(7)], _recovered(replay, recovered))) == [
        (7, 5.0, pytest.approx((100 + 300 + 500 + 600 + 800) / 5))]


def test_a_replay_that_runs_past_the_counted_records_counts_only_the_new_ones() -> None:
    first = PROCESSOR.process_batch([good(0), good(1), good(2)])
    recovered = _recovered(first)
    replay = PROCESSOR.process_batch([good(0), good(1), good(2), good(3), good(4)], recovered)
    assert _window_features(replay)[:3] == _window_features(first)
    assert [count for _, count, _ in _window_features(replay)[3:]] == [4.0, 5.0]
    state = replay.window_updates[b"alice"].state
    assert state.applied == {1: 4}
    assert window_features(state, T0 + 9000, {"loan": 0.0}, PROCESSOR.window)["key_events_60s"] == 6.0


def test_a_replay_cut_into_other_batches_gets_its_first_features() -> None:
    # The 3.0 -> 6.0: the state is newer than the replayed batch (it
    # counts offsets 2 and 3 too); the journal gives the head its own features.
    first = PROCESSOR.process_batch([good(i) for i in range(4)])
    recovered = _recovered(first)
    head = PROCESSOR.process_batch([good(0), good(1)], recovered)
    tail = PROCESSOR.process_batch([good(2), good(3)], recovered)
    expected = _window_features(first)
    assert _window_features(head) == expected[:2] and _window_features(tail) == expected[2:]
    assert [o.value for o in head.features + tail.features] == [o.value for o in first.features]  # byte for byte
    assert head.window_updates == tail.window_updates == {}


def test_a_replay_of_float_means_is_bit_identical() -> None:
    # Recomputing by subtraction would round differently: the journal stores what was emitted.
    batch = [good(i, loan=0.1 * (i + 1) + 1e-9 * i) for i in range(6)]
    first = PROCESSOR.process_batch(batch)
    replay = PROCESSOR.process_batch(batch[:3], _recovered(first))
    assert [o.value for o in replay.features] == [o.value for o in first.features[:3]]


def test_committed_records_are_pruned_from_the_journal() -> None:
    first = PROCESSOR.process_batch([good(i) for i in range(4)], committed={1: 2})
    state = first.window_updates[b"alice"].state
    assert [entry[1] for entry in state.recent] == [2, 3]  # offsets 0 and 1 can never be replayed
    bounded = BatchProcessor.from_settings(SETTINGS, writer_schemas=[WRONG.reader])
    bounded.journal_limit = 1
    result = bounded.process_batch([good(i) for i in range(4)])
    assert [entry[1] for entry in result.window_updates[b"alice"].state.recent] == [3]



def test_replayed_and_too_late_events_get_their_first_features() -> None:
    late = good(1, event_time=T0 - 10_000_000)  # too late to be counted, before and after the crash
    batch = [good(0, event_time=T0 + 1_000_000), late, good(2, event_time=T0 + 1_000_001)]
    first = PROCESSOR.process_batch(batch)
    assert [count for _, count, _ in _window_features(first)] == [1.0, 1.0, 2.0]
    assert _window_features(PROCESSOR.process_batch(batch, _recovered(first))) == _window_features(first)


def test_a_key_arriving_on_another_partition_is_not_mistaken_for_a_replay() -> None:
    first = PROCESSOR.process_batch([good(i) for i in range(3)])  # partition 1, offsets 0..2
    moved = record(SERDE.encode(event(3)), key=b"alice", offset=0, partition=2)
    result = PROCESSOR.process_batch([moved], _recovered(first))
    assert [count for _, count, _ in _window_features(result)] == [4.0]
    assert result.window_updates[b"alice"].state.applied == {1: 2, 2: 0}
