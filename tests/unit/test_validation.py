"""Data-contract validation: one row per rule, and all violations reported."""

from __future__ import annotations

import math

import pytest

from streamml.serde import AvroSchema, FieldRule
from streamml.validation import RULES, Violation, check_field, validate

SCHEMA = AvroSchema.from_dict(
    {
        "type": "record",
        "name": "E",
        "fields": [
            {"name": "id", "type": "string"},
            {"name": "amount", "type": ["null", "double"], "default": None,
             "contract": {"required": True, "min": 0, "max": 100}},
            {"name": "count", "type": "int", "contract": {"min": 1}},
            {"name": "level", "type": ["null", "int"], "default": None, "contract": {"allowed": [0, 1, 2]}},
            {"name": "note", "type": ["null", "string"], "default": None},
            {"name": "flag", "type": ["null", "boolean"], "default": None},
        ],
    }
)
VALID = {"id": "a", "amount": 50.0, "count": 3, "level": 1, "note": None, "flag": True}


@pytest.mark.parametrize(
    ("field", "value", "rule"),
    [
        ("amount", None, "required"),
        ("id", None, "required"),  # non-nullable fields are required by default
        ("amount", float("nan"), "not_finite"),
        ("amount", float("inf"), "not_finite"),
        ("amount", -float("inf"), "not_finite"),
        ("amount", -0.01, "below_min"),
        ("amount", 100.5, "above_max"),
        ("count", 0, "below_min"),
        ("level", 3, "not_allowed"),
        ("level", -1, "not_allowed"),
        ("amount", "12", "wrong_type"),
        ("amount", True, "wrong_type"),  # a bool is an int in Python, not a number here
        ("count", 2.5, "wrong_type"),
        ("count", 2**31, "wrong_type"),  # out of Avro int range
        ("level", False, "wrong_type"),
        ("id", 7, "wrong_type"),
        ("flag", 1, "wrong_type"),
    ],
)
def test_each_rule_is_reported_with_its_field(field: str, value: object, rule: str) -> None:
    record = {**VALID, field: value}
    [violation] = validate(record, SCHEMA)
    assert (violation.field, violation.rule) == (field, rule)
    assert field in violation.message
    assert violation.rule in RULES


@pytest.mark.parametrize(
    ("field", "value"),
    [("amount", 0.0), ("amount", 100.0), ("amount", 7), ("count", 1), ("level", 0), ("level", None),
     ("note", None), ("note", "x"), ("flag", None), ("flag", False)],
)
def test_valid_values_pass(field: str, value: object) -> None:
    assert validate({**VALID, field: value}, SCHEMA) == []


def test_every_violation_is_reported_in_schema_order() -> None:
    record = {**VALID, "amount": math.nan, "count": 0, "level": 9}
    assert [(v.field, v.rule) for v in validate(record, SCHEMA)] == [
        ("amount", "not_finite"),
        ("count", "below_min"),
        ("level", "not_allowed"),
    ]


def test_a_missing_key_counts_as_null() -> None:
    record = dict(VALID)
    del record["amount"]
    assert [v.rule for v in validate(record, SCHEMA)] == ["required"]


def test_one_violation_per_field_the_first_rule_that_fails() -> None:
    rule = FieldRule("x", "double", nullable=False, required=True, minimum=0, allowed=(1.0,))
    assert check_field(rule, -5.0) == Violation("x", "below_min", "x=-5.0 is below the minimum 0")


def test_the_demo_contract_is_enforced() -> None:
    from streamml.config import DEMO_SCHEMA_PATH

    demo = AvroSchema.from_file(DEMO_SCHEMA_PATH)
    event = {"event_id": "e", "customer_id": "c", "event_time": 1, "salary": 50000.0, "commission": 0.0,
             "age": 17, "elevel": 5, "car": 3, "zipcode": 1, "hvalue": 1.0, "hyears": 2, "loan": 1.0, "label": None}
    assert [(v.field, v.rule) for v in validate(event, demo)] == [("age", "below_min"), ("elevel", "not_allowed")]
