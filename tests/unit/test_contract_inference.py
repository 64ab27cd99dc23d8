"""``streamml contract infer``: schema and data-contract inference from a sample (no broker)."""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from click.testing import CliRunner

from stream_processors.contract_inference import PROFILE_ATTRIBUTE, infer_schema
from stream_processors.samples import frame_from_records, frame_from_source
from streamml.errors import ConfigError, SourceError
from streamml.records import DEMO_EVENTS_SCHEMA_PATH
from streamml.serde import AvroSchema, AvroSerde
from streamml.validation import validate
from streamml_cli import cli, main


def _field(schema: dict[str, Any], name: str) -> dict[str, Any]:
    return next(f for f in schema["fields"] if f["name"] == name)


def _python(value: Any) -> Any:
    """A frame cell as the Python value a decoded event would hold (None for a missing value)."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    return value.item() if hasattr(value, "item") else value


def _rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [{k: _python(v) for k, v in row.items()} for row in frame.astype(object).to_dict("records")]


def _round_trip(schema: AvroSchema, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    serde = AvroSerde(schema)
    headers = serde.headers
    return [serde.decode(serde.encode(row), headers) for row in rows]


def _assert_every_row_valid(raw: dict[str, Any], frame: pd.DataFrame) -> AvroSchema:
    schema = AvroSchema.from_dict(raw)
    rows = _rows(frame)
    for row in rows:
        assert validate(row, schema) == [], row
    for decoded in _round_trip(schema, rows):
        assert validate(decoded, schema) == [], decoded
    return schema


@pytest.fixture()
def mixed() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "flag": [True, False, True, True],
            "count": [1, 5, 3, 2],
            "big": [0, 2**40, 7, 1],
            "ratio": [0.5, 1.25, -2.0, 0.0],
            "colour": ["red", "blue", "red", "green"],
            "when": pd.to_datetime(["2024-01-01", "2024-01-02", "2024-01-03", "2024-01-04"]),
            "maybe": pd.array([1, None, 3, 4], dtype="Int64"),
            "note": ["a", None, "b", "c"],
        }
    )


def test_types_follow_the_dtypes_and_every_field_is_a_nullable_union(mixed: pd.DataFrame) -> None:
    raw = infer_schema(mixed)
    types = {f["name"]: f["type"] for f in raw["fields"]}
    assert types == {
        "flag": ["null", "boolean"],
        "count": ["null", "int"],
        "big": ["null", "long"],
        "ratio": ["null", "double"],
        "colour": ["null", "string"],
        "when": ["null", {"type": "long", "logicalType": "timestamp-millis"}],
        "maybe": ["null", "int"],
        "note": ["null", "string"],
    }
    assert all(f["default"] is None for f in raw["fields"])
    assert raw["name"] == "Event" and raw["namespace"] == "streamml.user"
    assert "4 rows" in raw["doc"] and "review" in raw["doc"]


def test_object_columns_are_typed_by_their_values() -> None:
    frame = pd.DataFrame(
        {"i": pd.Series([1, None, 2], dtype=object), "b": pd.Series([True, None, False], dtype=object),
         "x": pd.Series([b"\x00", b"\x01", None], dtype=object)}
    )
    types = {f["name"]: f["type"][1] for f in infer_schema(frame)["fields"]}
    assert types == {"i": "int", "b": "boolean", "x": "bytes"}


def test_required_only_where_the_sample_has_no_null(mixed: pd.DataFrame) -> None:
    raw = infer_schema(mixed)
    required = {f["name"]: f["contract"]["required"] for f in raw["fields"]}
    assert required == {n: n not in ("maybe", "note") for n in mixed.columns}
    schema = AvroSchema.from_dict(raw)
    assert schema.rule("maybe").nullable and not schema.rule("maybe").required
    assert schema.rule("count").required


def test_ranges_are_the_observed_ones_without_margin(mixed: pd.DataFrame) -> None:
    raw = infer_schema(mixed)
    assert {k: _field(raw, "count")["contract"][k] for k in ("min", "max")} == {"min": 1, "max": 5}
    assert {k: _field(raw, "ratio")["contract"][k] for k in ("min", "max")} == {"min": -2, "max": 1.25}
    assert _field(raw, "maybe")["contract"]["min"] == 1 and _field(raw, "maybe")["contract"]["max"] == 4
    assert "min" not in _field(raw, "flag")["contract"] and "min" not in _field(raw, "when")["contract"]
    assert isinstance(_field(raw, "count")["contract"]["min"], int)


def test_margin_widens_ranges_outwards_to_round_numbers() -> None:
    frame = pd.DataFrame({"i": [3, 103], "neg": [-50, 50], "f": [1.5, 3.5], "g": [-7.25, -0.25]})
    contracts = {f["name"]: f["contract"] for f in infer_schema(frame, margin=0.1)["fields"]}
    # A column never seen negative keeps a minimum of at least 0; ints stay ints.
    assert (contracts["i"]["min"], contracts["i"]["max"]) == (0, 120)
    assert (contracts["neg"]["min"], contracts["neg"]["max"]) == (-60, 60)
    assert (contracts["f"]["min"], contracts["f"]["max"]) == (1.3, 3.7)
    assert (contracts["g"]["min"], contracts["g"]["max"]) == (-8, 0)  # and one never seen positive stays <= 0
    assert all(isinstance(contracts[n][k], int) for n in ("i", "neg") for k in ("min", "max"))
    _assert_every_row_valid(infer_schema(frame, margin=0.1), frame)


def test_int_bounds_stay_in_the_type_range() -> None:
    frame = pd.DataFrame({"i": [0, 2**31 - 1]})
    field = _field(infer_schema(frame, margin=0.5), "i")
    assert field["type"] == ["null", "int"]
    assert field["contract"]["max"] == 2**31 - 1


def test_allowed_lists_only_for_low_cardinality_strings() -> None:
    frame = pd.DataFrame(
        {
            "colour": ["red", "blue", "red", "green"] * 5,
            "id": [f"id{i}" for i in range(20)],
            "code": [1, 2, 1, 3] * 5,
            "flag": [True, False] * 10,
        }
    )
    contracts = {f["name"]: f["contract"] for f in infer_schema(frame, max_categories=3)["fields"]}
    assert contracts["colour"]["allowed"] == ["blue", "green", "red"]
    assert all("allowed" not in contracts[n] for n in ("id", "code", "flag"))
    assert "allowed" not in _field(infer_schema(frame, max_categories=2), "colour")["contract"]
    assert "allowed" not in _field(infer_schema(frame, max_categories=0), "colour")["contract"]
    # Every value distinct: an id, not a category, even when few.
    assert "allowed" not in _field(infer_schema(frame.head(3), max_categories=20), "id")["contract"]


def test_inferred_schema_parses_and_keeps_statistics_out_of_the_contracts(mixed: pd.DataFrame) -> None:
    raw = infer_schema(mixed, source="sample.csv")
    schema = AvroSchema.from_dict(json.loads(json.dumps(raw)))
    assert schema.name == "streamml.user.Event"
    contract_keys = {"required", "min", "max", "allowed", "max_null_rate"}
    assert all(set(f["contract"]) <= contract_keys for f in raw["fields"])
    profile = raw[PROFILE_ATTRIBUTE]
    assert profile["rows"] == 4 and profile["inferred_from"] == "sample.csv"
    assert profile["columns"]["maybe"]["max_null_rate"] == 0.25
    assert profile["columns"]["count"]["max_null_rate"] == 0.0
    # The batch-level rule is in the contract only where the sample had nulls.
    assert _field(raw, "maybe")["contract"]["max_null_rate"] == 0.25
    assert "max_null_rate" not in _field(raw, "count")["contract"]
    assert schema.rule("maybe").max_null_rate == 0.25


def test_inferred_profile_holds_a_reference_the_drift_monitor_reads() -> None:
    from stream_processors.profiles import CategoricalReference, NumericReference, Reference

    frame = pd.DataFrame({"size": list(range(1, 101)), "colour": ["red"] * 75 + ["blue"] * 25})
    raw = json.loads(json.dumps(infer_schema(frame)))
    reference = Reference.from_schema_profile(raw, ["size", "colour"])
    assert reference is not None and reference.origin == "schema profile" and reference.events == 100
    size, colour = reference.fields["size"], reference.fields["colour"]
    assert isinstance(size, NumericReference) and isinstance(colour, CategoricalReference)
    assert size.quantiles[0] == 1 and size.quantiles[50] == 50 and size.quantiles[-1] == 100
    assert colour.shares == {"blue": 0.25, "red": 0.75}
    # A field the profile does not cover: no reference from it (the monitor freezes one from events).
    assert Reference.from_schema_profile(raw, ["size", "weight"]) is None


def test_max_null_rate_rounds_up_to_hundredths() -> None:
    def max_null_rate(values: list[float | None]) -> float:
        rate = infer_schema(pd.DataFrame({"x": values}))[PROFILE_ATTRIBUTE]["columns"]["x"]["max_null_rate"]
        assert isinstance(rate, float)
        return rate

    assert max_null_rate([None] * 7 + [1.0] * 93) == 0.07  # exactly 7%: not pushed to 0.08 by float error
    assert max_null_rate([None] + [1.0] * 299) == 0.01  # 0.33% rounds up


def test_every_input_row_is_valid_and_violations_are_caught(mixed: pd.DataFrame) -> None:
    schema = _assert_every_row_valid(infer_schema(mixed), mixed)
    good = _rows(mixed)[0]
    assert [v.rule for v in validate({**good, "count": 6}, schema)] == ["above_max"]
    assert [v.rule for v in validate({**good, "ratio": -2.5}, schema)] == ["below_min"]
    assert [v.rule for v in validate({**good, "colour": "purple"}, schema)] == ["not_allowed"]
    assert [v.rule for v in validate({**good, "count": None}, schema)] == ["required"]
    assert validate({**good, "maybe": None, "note": None}, schema) == []


def test_key_and_time_fields_get_no_range_nor_allowed_list() -> None:
    frame = pd.DataFrame({"user": ["a", "b", "a"], "t": [1_700_000_000_000, 1_700_000_000_500, 1_700_000_001_000]})
    raw = infer_schema(frame, key_field="user", time_field="t")
    assert _field(raw, "user")["contract"] == {"required": True}
    assert _field(raw, "t")["contract"] == {"required": True, "min": 0}
    with pytest.raises(ConfigError, match="key field 'nope'"):
        infer_schema(frame, key_field="nope")


def test_invalid_column_names_are_a_config_error_naming_them() -> None:
    frame = pd.DataFrame({"ok": [1], "order id": [2], "2nd": [3], "a-b": [4]})
    with pytest.raises(ConfigError) as caught:
        infer_schema(frame)
    message = str(caught.value)
    assert "'order id'" in message and "'2nd'" in message and "'a-b'" in message and "'ok'" not in message
    assert "'order_id'" in message  # the hint: a name that would do
    with pytest.raises(ConfigError, match="schema name"):
        infer_schema(pd.DataFrame({"a": [1]}), name="my event")


def test_mixed_types_empty_samples_and_bad_options_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="'m'.*int, str"):
        infer_schema(pd.DataFrame({"m": pd.Series([1, "x"], dtype=object)}))
    with pytest.raises(ConfigError, match="no rows"):
        infer_schema(pd.DataFrame({"a": pd.Series([], dtype="int64")}))
    with pytest.raises(ConfigError, match="margin"):
        infer_schema(pd.DataFrame({"a": [1]}), margin=-0.1)


def test_non_finite_values_are_left_out_of_the_range_and_counted() -> None:
    frame = pd.DataFrame({"x": [1.0, float("inf"), 3.0]})
    raw = infer_schema(frame)
    assert _field(raw, "x")["contract"] == {"required": True, "min": 1, "max": 3}
    assert raw[PROFILE_ATTRIBUTE]["columns"]["x"]["non_finite"] == 1
    json.dumps(raw, allow_nan=False)


def test_frame_from_records_keeps_python_types() -> None:
    when = datetime(2024, 1, 1, tzinfo=timezone.utc)
    frame = frame_from_records([{"i": 1, "f": 1.0, "s": "a", "t": when}, {"i": None, "f": 2.0, "b": True}])
    types = {f["name"]: f["type"][1] for f in infer_schema(frame)["fields"]}
    assert types == {
        "i": "int", "f": "double", "s": "string", "t": {"type": "long", "logicalType": "timestamp-millis"},
        "b": "boolean",
    }


def test_writer_types_can_replace_the_guess() -> None:
    frame = pd.DataFrame({"n": [1, 2, 3]})
    field = _field(infer_schema(frame, types={"n": "long"}), "n")
    assert field["type"] == ["null", "long"] and field["contract"] == {"required": True, "min": 1, "max": 3}


# -- files ----------------------------------------------------------------------------------------------------


@pytest.fixture()
def table() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": [f"e{i}" for i in range(10)],
            "age": pd.array([20, 31, None, 45, 52, 60, 18, 33, 41, 29], dtype="Int64"),
            "score": [0.5, 0.25, 1.0, 0.75, 0.0, 0.5, 0.5, 0.125, 0.875, 0.5],
            "tier": ["gold", "silver", "gold", "bronze", "gold", "silver", "gold", "gold", "bronze", "silver"],
            "ok": [True, False, True, True, False, True, True, True, False, True],
        }
    )


def _write(frame: pd.DataFrame, path: Path) -> Path:
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    elif path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_json(path, orient="records", lines=True)
    return path


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".jsonl"])
def test_frame_from_source_reads_each_format_bounded_by_limit(
    suffix: str, table: pd.DataFrame, tmp_path: Path
) -> None:
    path = _write(table, tmp_path / f"events{suffix}")
    assert len(frame_from_source(path, None)) == 10
    frame = frame_from_source(path, 4)
    assert len(frame) == 4 and list(frame.columns) == list(table.columns)
    raw = infer_schema(frame)
    types = {f["name"]: f["type"][1] for f in raw["fields"]}
    assert types == {"id": "string", "age": "int", "score": "double", "tier": "string", "ok": "boolean"}
    assert _field(raw, "age")["contract"] == {"required": False, "min": 20, "max": 45, "max_null_rate": 0.25}
    assert _field(raw, "tier")["contract"]["allowed"] == ["bronze", "gold", "silver"]
    _assert_every_row_valid(raw, frame)


def test_frame_from_source_refuses_unknown_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\.xlsx"):
        frame_from_source(tmp_path / "events.xlsx", None)
    with pytest.raises(SourceError, match="no such file"):
        frame_from_source(tmp_path / "missing.csv", None)
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"not parquet at all")
    with pytest.raises(SourceError, match="cannot read"):
        frame_from_source(broken, None)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(SourceError, match="cannot read"):
        frame_from_source(empty, None)


# -- the command ----------------------------------------------------------------------------------------------


def test_cli_infers_from_a_csv_and_writes_a_loadable_schema(table: pd.DataFrame, tmp_path: Path) -> None:
    path = _write(table, tmp_path / "events.csv")
    out = tmp_path / "inferred.avsc"
    result = CliRunner().invoke(
        cli,
        ["contract", "infer", "--from", str(path), "--out", str(out), "--name", "Visit", "--key-field", "id",
         "--limit", "8", "--margin", "0.1"],
    )
    assert result.exit_code == 0, result.output
    schema = AvroSchema.from_file(out)
    assert schema.name == "streamml.user.Visit"
    assert schema.field_names == list(table.columns)
    raw = json.loads(out.read_text())
    assert raw[PROFILE_ATTRIBUTE]["rows"] == 8
    assert _field(raw, "id")["contract"] == {"required": True}
    assert "8 rows: 5 columns, 4 required, 2 with ranges, 1 with allowed lists" in result.stderr
    assert result.stdout == ""


def test_cli_prints_to_stdout_without_out(table: pd.DataFrame, tmp_path: Path) -> None:
    path = _write(table, tmp_path / "events.jsonl")
    result = CliRunner().invoke(cli, ["contract", "infer", "--from", str(path)])
    assert result.exit_code == 0, result.output
    assert AvroSchema.from_dict(json.loads(result.stdout)).field_names == list(table.columns)


@pytest.mark.parametrize("args", [[], ["--from", "x.csv", "--topic", "events"]])
def test_cli_needs_exactly_one_of_from_and_topic(args: list[str]) -> None:
    result = CliRunner().invoke(cli, ["contract", "infer", *args])
    assert result.exit_code == 2
    assert "exactly one of --from PATH and --topic TOPIC" in result.output


def test_cli_bad_input_is_one_line_not_a_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad name.csv"
    bad.write_text("order id,x\n1,2\n")
    for argv, code in ((["--from", str(bad)], 2), (["--from", str(tmp_path / "missing.parquet")], 1)):
        with pytest.raises(SystemExit) as exited:
            main(["contract", "infer", *argv])
        assert exited.value.code == code
        err = capsys.readouterr().err.strip()
        assert err.startswith("streamml: error: ") and "\n" not in err and "Traceback" not in err


def test_cli_topic_mode_decodes_with_the_writer_schema(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from producers.synthetic import SyntheticSource

    writer = AvroSchema.from_file(DEMO_EVENTS_SCHEMA_PATH)
    serde = AvroSerde(writer)
    rows = [row for row in SyntheticSource(60, seed=3, clock=lambda: 1.7e9) if isinstance(row, dict)]

    class Message:
        def __init__(self, value: bytes, headers: list[tuple[str, bytes]]) -> None:
            self._value, self._headers = value, headers

        def value(self) -> bytes:
            return self._value

        def headers(self) -> list[tuple[str, bytes]]:
            return self._headers

    messages = [Message(b"\x01garbage", serde.headers)] + [Message(serde.encode(r), serde.headers) for r in rows]

    class FakeCluster:
        def __init__(self, settings: object) -> None:
            pass

        def wait_ready(self, timeout: float | None = None) -> None:
            pass

        def partitions(self, topic: str) -> list[int]:
            return [0]

    def fake_read_to_end(cluster: object, topic: str) -> Any:
        yield from messages

    monkeypatch.setattr("streamml.cluster.Cluster", FakeCluster)
    monkeypatch.setattr("streamml.reader.read_to_end", fake_read_to_end)
    out = tmp_path / "inferred.avsc"
    result = CliRunner().invoke(
        cli,
        ["contract", "infer", "--topic", "events", "--schema", str(DEMO_EVENTS_SCHEMA_PATH), "--limit", "50",
         "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    assert "skipped 1 undecodable records" in result.stderr
    raw = json.loads(out.read_text())
    assert raw[PROFILE_ATTRIBUTE]["rows"] == 50
    assert raw["name"] == "LoanApplication" and raw["namespace"] == "streamml.demo"
    inferred = AvroSchema.from_dict(raw)
    # The writer's types are kept (event_time stays a long), so the inferred schema can read the topic.
    assert [r.avro_type for r in inferred.rules] == [r.avro_type for r in writer.rules]
    assert AvroSerde(inferred, [writer]).decode(serde.encode(rows[0]), serde.headers)["salary"] == rows[0]["salary"]


# -- the demo's data ------------------------------------------------------------------------------------------


def test_inferred_contract_of_the_demo_data_covers_it_and_matches_the_demo_contract() -> None:
    from producers.synthetic import SyntheticSource

    rows = [row for row in SyntheticSource(400, seed=7, bad_fraction=0.0, clock=lambda: 1.7e9) if isinstance(row, dict)]
    assert len(rows) == 400
    frame = frame_from_records(rows)
    raw = infer_schema(frame, name="LoanApplication", key_field="customer_id", time_field="event_time")
    inferred = _assert_every_row_valid(raw, frame)
    demo = AvroSchema.from_file(DEMO_EVENTS_SCHEMA_PATH)
    assert inferred.field_names == demo.field_names
    for rule in inferred.rules:
        expected = demo.rule(rule.name)
        assert rule.required, rule.name
        if rule.minimum is None or rule.name == "event_time":
            continue
        values = [row[rule.name] for row in rows]
        assert rule.minimum == min(values) and rule.maximum == max(values), rule.name
        # The demo's contract (range or allowed ints) contains what was seen.
        low = expected.minimum if expected.allowed is None else min(expected.allowed)
        high = expected.maximum if expected.allowed is None else max(expected.allowed)
        assert low is not None and low <= rule.minimum, rule.name
        assert high is None or (rule.maximum is not None and rule.maximum <= high), rule.name
    # 400 rows see every demo category of the small int codes.
    for name in ("elevel", "zipcode"):
        allowed = demo.rule(name).allowed
        assert allowed is not None
        assert (inferred.rule(name).minimum, inferred.rule(name).maximum) == (min(allowed), max(allowed))
        assert {row[name] for row in rows} == set(allowed)
