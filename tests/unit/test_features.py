"""Stateless featurization: which fields become which features."""

from __future__ import annotations

import pytest

from streamml.config import DEMO_SCHEMA_PATH
from streamml.featurization import FeatureSpec, featurize
from streamml.serde import AvroSchema

DEMO = AvroSchema.from_file(DEMO_SCHEMA_PATH)
DEMO_SPEC = FeatureSpec.from_schema(DEMO, exclude=("customer_id", "label", "event_time"))
EVENT = {"event_id": "e1", "customer_id": "c", "event_time": 1_700_000_000_000, "salary": 50000.0,
         "commission": 1000.0, "age": 40, "elevel": 2, "car": 3, "zipcode": 4, "hvalue": 2e5, "hyears": 5,
         "loan": 1234.5, "label": 1}


def test_demo_spec_splits_continuous_and_categorical_fields() -> None:
    assert DEMO_SPEC.continuous == ("salary", "commission", "age", "car", "hvalue", "hyears", "loan")
    assert DEMO_SPEC.categorical == ("elevel", "zipcode")


def test_demo_event_features() -> None:
    assert featurize(EVENT, DEMO_SPEC) == {
        "salary": 50000.0, "commission": 1000.0, "age": 40.0, "car": 3.0, "hvalue": 2e5, "hyears": 5.0,
        "loan": 1234.5, "elevel=2": 1.0, "zipcode=4": 1.0,
    }


def test_features_are_floats() -> None:
    assert all(type(v) is float for v in featurize(EVENT, DEMO_SPEC).values())


def test_key_time_label_id_and_strings_are_not_features() -> None:
    names = featurize(EVENT, DEMO_SPEC)
    for excluded in ("customer_id", "event_time", "label", "event_id"):
        assert not any(name == excluded or name.startswith(excluded + "=") for name in names)


def test_exclusions_follow_the_configured_fields() -> None:
    spec = FeatureSpec.from_schema(DEMO, exclude=("customer_id", "label", "age"))
    assert "age" not in spec.continuous and "event_time" in spec.continuous


def test_null_optional_values_yield_no_feature() -> None:
    schema = AvroSchema.from_dict({"type": "record", "name": "R", "fields": [
        {"name": "x", "type": ["null", "double"], "default": None},
        {"name": "k", "type": ["null", "long"], "default": None, "contract": {"allowed": [1, 2]}},
        {"name": "b", "type": ["null", "boolean"], "default": None},
        {"name": "s", "type": "string"},
    ]})
    spec = FeatureSpec.from_schema(schema, exclude=())
    assert (spec.continuous, spec.categorical, spec.boolean) == (("x",), ("k",), ("b",))
    assert featurize({"x": None, "k": None, "b": None, "s": "z"}, spec) == {}
    assert featurize({"x": 1, "k": 2, "b": False, "s": "z"}, spec) == {"x": 1.0, "k=2": 1.0, "b": 0.0}


def test_a_value_that_is_not_a_number_raises() -> None:
    with pytest.raises((TypeError, ValueError)):
        featurize({**EVENT, "salary": "lots"}, DEMO_SPEC)
