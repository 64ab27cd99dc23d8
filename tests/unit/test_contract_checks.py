"""Start-up checks of an event schema: its contract, the fields with a role, what the featurizer gets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from streamml.config import DEMO_SCHEMA_PATH, Settings
from streamml.errors import SchemaError
from streamml.featurization import feature_notice, featurizer_check
from streamml.serde import AvroSchema, load_event_schema

#: Settings whose roles fit :func:`schema`: key ``id``, time ``ts``, label ``y``, a window over ``amount``.
ROLES = Settings(key_field="id", time_field="ts", label_field="y", window_fields="amount")


def schema(*fields: dict[str, Any]) -> dict[str, Any]:
    """A record schema whose role fields fit :data:`ROLES`, plus ``fields``."""
    base = [
        {"name": "id", "type": "string"},
        {"name": "ts", "type": "long"},
        {"name": "y", "type": ["null", "int"], "default": None},
        {"name": "amount", "type": "double"},
    ]
    return {"type": "record", "name": "Mine", "fields": [*base, *fields]}


def problems_of(raw: dict[str, Any], tmp_path: Path, settings: Settings = ROLES) -> list[str]:
    """The problem lines :func:`load_event_schema` reports for ``raw`` (empty when it loads)."""
    path = tmp_path / "mine.avsc"
    path.write_text(json.dumps(raw))
    try:
        load_event_schema(settings, path, checks=[featurizer_check(settings)])
    except SchemaError as exc:
        lines = str(exc).splitlines()
        return [lines[0].split(": ", 1)[1]] if len(lines) == 1 else [line.strip() for line in lines[1:]]
    return []


def test_the_bundled_demo_schema_passes_with_the_default_settings() -> None:
    settings = Settings()
    loaded = load_event_schema(settings, checks=[featurizer_check(settings)])
    assert loaded == AvroSchema.from_file(DEMO_SCHEMA_PATH)


def test_a_good_schema_passes(tmp_path: Path) -> None:
    good = schema(
        {"name": "kind", "type": "int", "contract": {"allowed": [1, 2, 3], "min": 0, "max": 5}},
        {"name": "city", "type": {"type": "enum", "name": "City", "symbols": ["a", "b"]},
         "contract": {"allowed": ["a"], "max_category_share": 0.9, "max_null_rate": 0}},
    )
    assert problems_of(good, tmp_path) == []


CONTRACT_MISTAKES = [
    ({"type": "double", "contract": {"min": 10, "max": 5}}, "field 'f': contract min 10 is above max 5"),
    ({"type": "int", "contract": {"allowed": "abc"}},
     "field 'f': contract 'allowed' must be a non-empty list of int values, got 'abc'"),
    ({"type": "int", "contract": {"allowed": []}}, "field 'f': contract 'allowed' must be a non-empty list"),
    ({"type": "int", "contract": {"allowed": [1, "2", True]}}, "contract 'allowed' values ['2', True] are not int"),
    ({"type": "string", "contract": {"allowed": ["a", 1]}}, "field 'f': contract 'allowed' values [1] are not string"),
    ({"type": "int", "contract": {"allowed": [1, 9], "max": 5}}, "values [9] are outside min..max"),
    ({"type": {"type": "enum", "name": "E", "symbols": ["a"]}, "contract": {"allowed": ["b"]}},
     "values ['b'] are not symbols of the enum"),
    ({"type": "double", "contract": {"min": "5"}}, "field 'f': contract 'min' must be a finite number, got '5'"),
    ({"type": "double", "contract": {"max": float("nan")}}, "contract 'max' must be a finite number, got nan"),
    ({"type": "string", "contract": {"max": 3}}, "contract 'min'/'max' need a numeric field, but f is string"),
    ({"type": "double", "contract": {"max_null_rate": 2}},
     "field 'f': contract 'max_null_rate' must be a number from 0 to 1, got 2"),
    ({"type": "double", "contract": {"max_unseen_share": "half"}}, "contract 'max_unseen_share' must be a number"),
    ({"type": "double", "contract": {"required": "yes"}}, "contract 'required' must be true or false, got 'yes'"),
    ({"type": "double", "contract": {"maximum": 3}}, "unknown contract keys ['maximum'] (did you mean 'max' for"),
    ({"type": "double", "contract": "required"}, "field 'f': 'contract' must be an object, got 'required'"),
]


@pytest.mark.parametrize(("field", "expected"), CONTRACT_MISTAKES, ids=[m[1][:40] for m in CONTRACT_MISTAKES])
def test_each_contract_mistake_is_one_line(tmp_path: Path, field: dict[str, Any], expected: str) -> None:
    found = problems_of(schema({"name": "f", **field}), tmp_path)
    assert len(found) == 1 and expected in found[0], found


def without(name: str) -> dict[str, Any]:
    raw = schema()
    raw["fields"] = [f for f in raw["fields"] if f["name"] != name]
    return raw


def retyped(name: str, avro_type: Any) -> dict[str, Any]:
    raw = schema()
    for field in raw["fields"]:
        if field["name"] == name:
            field["type"] = avro_type
            field.pop("default", None)
    return raw


ROLE_MISTAKES = [
    (without("id"), "key field 'id' (STREAMML_KEY_FIELD) is not in the schema"),
    (without("ts"), "event-time field 'ts' (STREAMML_TIME_FIELD) is not in the schema"),
    (without("y"), "label field 'y' (STREAMML_LABEL_FIELD, in the events: STREAMML_LABEL_MODE=inline) is not in"),
    (retyped("id", "double"), "key field 'id' is double; a record key needs one of string, int, long"),
    (retyped("id", {"type": "array", "items": "int"}), "key field 'id' is array"),
    (retyped("ts", "string"), "event-time field 'ts' is string; it must be a long of epoch milliseconds"),
    (retyped("ts", {"type": "long", "logicalType": "timestamp-millis"}),
     "'ts' is timestamp-millis (fastavro decodes it to a datetime)"),
    (retyped("ts", ["null", "long"]), "event-time field 'ts' may be null"),
    (retyped("y", {"type": "map", "values": "int"}), "label field 'y' is map; a label must be one of"),
]


@pytest.mark.parametrize(("raw", "expected"), ROLE_MISTAKES, ids=[m[1][:40] for m in ROLE_MISTAKES])
def test_each_role_mistake_is_one_line(tmp_path: Path, raw: dict[str, Any], expected: str) -> None:
    found = problems_of(raw, tmp_path)
    assert len(found) == 1 and expected in found[0], found


def test_a_missing_role_field_suggests_the_closest_name(tmp_path: Path) -> None:
    found = problems_of(schema(), tmp_path, ROLES.with_overrides(key_field="idd"))
    assert found == ["key field 'idd' (STREAMML_KEY_FIELD) is not in the schema; did you mean 'id'? "
                     "fields: id, ts, y, amount"]


def test_the_demo_default_window_field_is_named_when_the_schema_lacks_it(tmp_path: Path) -> None:
    found = problems_of(schema(), tmp_path, ROLES.with_overrides(window_fields="loan"))
    assert len(found) == 1 and found[0].startswith(
        "window field 'loan' (STREAMML_WINDOW_FIELDS, empty for none) is not in the schema"
    )
    assert problems_of(schema(), tmp_path, Settings(key_field="id", time_field="ts", label_field="y",
                                                    window_fields="")) == []


def test_a_window_field_must_be_numeric(tmp_path: Path) -> None:
    city = schema({"name": "city", "type": "string"})
    found = problems_of(city, tmp_path, ROLES.with_overrides(window_fields="city"))
    assert found == ["window field 'city' (STREAMML_WINDOW_FIELDS) is string; a windowed mean needs a numeric field"]


def test_delayed_labels_need_no_label_field_in_the_events(tmp_path: Path) -> None:
    assert problems_of(without("y"), tmp_path, ROLES.with_overrides(label_mode="delayed")) == []


def test_a_schema_nothing_can_be_learned_from_is_refused(tmp_path: Path) -> None:
    raw = schema({"name": "city", "type": "string"})
    raw["fields"] = [f for f in raw["fields"] if f["name"] != "amount"]
    found = problems_of(raw, tmp_path, ROLES.with_overrides(window_fields=""))
    assert found == [
        "no field becomes a feature, so nothing could be learned: id (key); ts (event time); y (label); city (string: "
        "text is not turned into numbers (encode it as an int with 'allowed' codes to one-hot it))"
    ]


def test_every_problem_comes_at_once_one_line_each(tmp_path: Path) -> None:
    raw = without("id")
    raw["fields"] += [
        {"name": "a", "type": "double", "contract": {"min": 3, "max": 1, "max_null_rate": 1.5}},
        {"name": "b", "type": "int", "contract": {"allowed": "abc"}},
    ]
    path = tmp_path / "bad.avsc"
    path.write_text(json.dumps(raw))
    with pytest.raises(SchemaError) as caught:
        load_event_schema(ROLES.with_overrides(window_fields="loan"), path)
    lines = str(caught.value).splitlines()
    assert lines[0] == f"schema {path} has 5 problems:"
    assert [line.split(":")[0].strip() for line in lines[1:]] == [
        "field 'a'", "field 'a'", "field 'b'", "key field 'id' (STREAMML_KEY_FIELD) is not in the schema; fields",
        "window field 'loan' (STREAMML_WINDOW_FIELDS, empty for none) is not in the schema; fields",
    ]
    assert caught.value.exit_code == 2


def test_contract_mistakes_are_refused_by_every_loader(tmp_path: Path) -> None:
    # from_file/from_dict (tail, writer schemas, producers): the contract, without the settings' roles.
    raw = without("id")
    raw["fields"].append({"name": "a", "type": "double", "contract": {"min": 3, "max": 1}})
    with pytest.raises(SchemaError, match=r"^schema Mine: field 'a': contract min 3 is above max 1"):
        AvroSchema.from_dict(raw)


def test_the_notice_says_what_is_not_a_feature_and_why() -> None:
    raw = schema({"name": "city", "type": "string"}, {"name": "kind", "type": "int", "contract": {"allowed": [1, 2]}},
                 {"name": "ok", "type": "boolean"}, {"name": "tags", "type": {"type": "array", "items": "string"}})
    line = feature_notice(AvroSchema.from_dict(raw), ROLES)
    assert line == (
        "features: amount (numeric); kind (one-hot); ok (0/1); key_events_60s, amount_mean_60s (windowed)"
        " | not features: id (key); ts (event time); y (label); city (string: text is not turned into numbers"
        " (encode it as an int with 'allowed' codes to one-hot it)); tags (array: not featurized)"
    )
