"""ServingFeatures: a raw event gets at serving time exactly the features the stream gives it."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from consumers.serving_features import ServingFeatures
from stream_processors.batches import SourceRecord
from stream_processors.pipeline import BatchProcessor
from streamml.config import Settings
from streamml.errors import EventRejectedError, FeaturesUnavailableError
from streamml.records import FeatureVector, RecordCodec
from streamml.serde import AvroSchema, AvroSerde
from streamml.windows import WindowSpec, WindowState

SETTINGS = Settings(partitions=3, bootstrap_servers="127.0.0.1:1")
SCHEMA = AvroSchema.from_file(SETTINGS.schema_path)
SERDE = AvroSerde(SCHEMA)
VECTORS = RecordCodec(FeatureVector)
T0 = 1_700_000_000_000


class ChangelogView:
    """What a WindowView holds once caught up: the changelog's JSON value per key."""

    def __init__(self, spec: WindowSpec, *, ready: bool = True) -> None:
        self.spec = spec
        self.ready = ready
        self.problem = None if ready else "the window state is being read"
        self.values: dict[bytes, bytes] = {}

    def state(self, key: bytes) -> WindowState:
        raw = self.values.get(key)
        return WindowState() if raw is None else WindowState.load(json.loads(raw), self.spec)

    def start(self) -> ChangelogView:
        return self

    def stop(self) -> None:
        pass


def event(i: int, customer: str, t_ms: int, **overrides: Any) -> dict[str, Any]:
    base = {"event_id": f"e{i}", "customer_id": customer, "event_time": t_ms, "salary": 50000.0 + i,
            "commission": 10.0 * i, "age": 30 + i % 40, "elevel": i % 5, "car": 1 + i % 20, "zipcode": i % 9,
            "hvalue": 1e5 + 7.3 * i, "hyears": 1 + i % 30, "loan": 100.0 * (i + 1) + 0.1 * i, "label": i % 2}
    return {**base, **overrides}


def make(view: ChangelogView | None = None, **kwargs: Any) -> ServingFeatures:
    processor = BatchProcessor.from_settings(SETTINGS)
    window = processor.window
    return ServingFeatures(SETTINGS, event_schema=SCHEMA, window_view=view or ChangelogView(window),  # type: ignore[arg-type]
                           clock=lambda: T0 / 1000 + 3600, **kwargs)


def test_every_event_gets_the_stream_s_features_in_order_with_late_ones() -> None:
    processor = BatchProcessor.from_settings(SETTINGS, )
    processor._clock = lambda: T0 / 1000 + 3600  # type: ignore[attr-defined]  # inside the event-time bounds
    view = ChangelogView(processor.window)
    features = make(view)
    table: dict[bytes, Any] = {}
    customers = ["alice", "bob", "carol"]
    # Out-of-order times: some events are late within the window, some far behind (too late to count).
    offsets = [0, 5_000, 2_000, 61_000, 30_000, 64_000, 1_000, 200_000, 90_000, 0, 125_000, 124_000]
    checked = 0
    for i in range(60):
        customer = customers[i % 3]
        raw = event(i, customer, T0 + offsets[i % len(offsets)] + 7_000 * (i // 12))
        at_serving = features.vector(raw)
        source = SourceRecord(SERDE.encode(raw), customer.encode(), tuple(SERDE.headers), "raw", i % 3, i, None)
        result = processor.process_batch([source], table)
        [out] = result.features
        in_stream = VECTORS.decode(out.value, out.headers).features
        assert at_serving == in_stream, f"event {i}"
        checked += 1
        for key, update in result.window_updates.items():
            table[key] = json.loads(update.value)
            view.values[key] = update.value  # what the changelog record holds
    assert checked == 60


def test_values_take_the_types_the_stream_decodes() -> None:
    features = make()
    as_float = features.vector(event(1, "a", T0))
    as_int = features.vector(event(1, "a", T0, salary=50001, hvalue=100007))
    assert as_int == {**as_float, "salary": 50001.0, "hvalue": 100007.0}
    assert all(type(v) is float for v in as_int.values())
    assert "customer_id" not in as_float and "label" not in as_float and "event_time" not in as_float


def test_a_missing_time_is_now_and_a_missing_id_is_fine() -> None:
    features = make()
    raw = event(1, "a", T0)
    del raw["event_time"], raw["event_id"], raw["label"]
    vector = features.vector(raw)
    assert vector["key_events_60s"] == 1.0 and vector["loan"] == raw["loan"]


@pytest.mark.parametrize(
    ("overrides", "field", "rule"),
    [
        ({"age": None}, "age", "required"),
        ({"salary": 1e9}, "salary", "above_max"),
        ({"zipcode": 42}, "zipcode", "not_allowed"),
        ({"loan": float("nan")}, "loan", "not_finite"),
        ({"age": "thirty"}, "age", "wrong_type"),
        ({"event_time": T0 + 10 * 3600_000}, "event_time", "event_time_future"),
    ],
)
def test_an_event_the_stream_would_quarantine_is_rejected_naming_the_field(
    overrides: dict[str, Any], field: str, rule: str
) -> None:
    with pytest.raises(EventRejectedError) as caught:
        make().vector(event(1, "a", T0, **overrides))
    assert [(v["field"], v["rule"]) for v in caught.value.violations] == [(field, rule)]
    assert field in str(caught.value)


def test_every_broken_rule_is_listed_at_once() -> None:
    with pytest.raises(EventRejectedError) as caught:
        make().vector(event(1, "a", T0, age=None, car=99))
    assert {v["field"] for v in caught.value.violations} == {"age", "car"}


def test_windowed_features_are_unavailable_before_the_state_is_read_never_zero() -> None:
    view = ChangelogView(WindowSpec(60.0, ("loan",)), ready=False)
    with pytest.raises(FeaturesUnavailableError) as caught:
        make(view).vector(event(1, "a", T0))
    assert caught.value.retryable is True
    assert caught.value.features == ["key_events_60s", "loan_mean_60s"]


def test_without_a_window_view_the_windowed_features_are_declared_unavailable() -> None:
    features = ServingFeatures(SETTINGS, event_schema=SCHEMA, windows=False)
    with pytest.raises(FeaturesUnavailableError) as caught:
        features.vector(event(1, "a", T0))
    assert caught.value.retryable is False and "windows=False" in str(caught.value)
    assert features.ready is False and features.wait_ready(0) is False


def test_the_json_schema_follows_the_contract() -> None:
    schema = make().json_schema()
    props = schema["properties"]
    assert props["zipcode"]["enum"] == list(range(9)) and props["salary"]["minimum"] == 20000
    assert props["customer_id"]["type"] == "string"
    assert "age" in schema["required"] and "customer_id" in schema["required"]
    assert "event_time" not in schema["required"] and "event_id" not in schema["required"]
    assert "label" not in schema["required"]


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=10,
)


@hsettings(max_examples=300, deadline=None)
@given(overrides=st.dictionaries(st.sampled_from(SCHEMA.field_names + ["other"]), _json, max_size=6))
def test_no_event_makes_it_raise_anything_but_a_rejection(overrides: dict[str, Any]) -> None:
    features = make()
    try:
        vector = features.vector(event(1, "a", T0, **overrides))
    except EventRejectedError as exc:
        assert exc.violations
        return
    assert all(isinstance(v, float) for v in vector.values())


def test_a_non_object_is_rejected() -> None:
    with pytest.raises(EventRejectedError):
        make().vector([1, 2])  # type: ignore[arg-type]
