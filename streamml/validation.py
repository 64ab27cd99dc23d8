"""Data-contract validation of decoded events (pure, no Kafka).

The contract lives in the event schema (``contract`` attribute per field, read
into :class:`streamml.serde.FieldRule`). :func:`validate` checks every field and
returns every violation, so a quarantined event explains all that is wrong with
it at once; at most one violation is reported per field, the first rule that
fails in this order: ``required``, ``wrong_type``, ``not_finite``,
``below_min`` / ``above_max``, ``not_allowed``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from streamml.serde import AvroSchema, FieldRule

__all__ = ["Violation", "RULES", "validate", "check_field", "check_event_time"]

#: Every rule name :func:`validate` can report, for dead-letter readers.
RULES = ("required", "wrong_type", "not_finite", "below_min", "above_max", "not_allowed")

_INT_RANGES = {"int": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}


@dataclass(frozen=True)
class Violation:
    """One broken contract rule: which field, which rule, and a readable message."""

    field: str
    rule: str
    message: str

    def as_dict(self) -> dict[str, str]:
        """Return the violation as a JSON-ready mapping."""
        return {"field": self.field, "rule": self.rule, "message": self.message}


def validate(record: Mapping[str, Any], schema: AvroSchema) -> list[Violation]:
    """Return every contract violation of ``record`` (empty when it is valid).

    A field missing from ``record`` counts as ``None``. Fields of ``record``
    that the schema does not name are ignored (Avro decoding never yields them).
    """
    violations = []
    for rule in schema.rules:
        violation = check_field(rule, record.get(rule.name))
        if violation is not None:
            violations.append(violation)
    return violations


def check_field(rule: FieldRule, value: Any) -> Violation | None:
    """Return the first rule that ``value`` breaks for field ``rule``, or ``None``."""
    name = rule.name
    if value is None:
        if rule.required:
            return Violation(name, "required", f"{name} is required but missing (null)")
        return None
    if not _has_type(rule.avro_type, value):
        return Violation(name, "wrong_type", f"{name}={value!r} is not of type {rule.avro_type}")
    if rule.numeric and isinstance(value, float) and not math.isfinite(value):
        # NaN compares false with everything, so min/max below would pass it.
        return Violation(name, "not_finite", f"{name}={value!r} is not a finite number")
    if rule.minimum is not None and value < rule.minimum:
        return Violation(name, "below_min", f"{name}={value!r} is below the minimum {rule.minimum!r}")
    if rule.maximum is not None and value > rule.maximum:
        return Violation(name, "above_max", f"{name}={value!r} is above the maximum {rule.maximum!r}")
    if rule.allowed is not None and value not in rule.allowed:
        return Violation(name, "not_allowed", f"{name}={value!r} is not one of {list(rule.allowed)!r}")
    return None


def check_event_time(
    time_field: str, time_ms: int, now_ms: int, *, max_future_ms: int, max_age_ms: int
) -> Violation | None:
    """Return why an event time is out of the bounds the clock sets, or ``None``.

    Event time is bounded by the processor's clock: one far-future event
    would otherwise hold its key's window state ahead of every later event
    (they would all look late), one from 1970 is a unit or default bug. The
    rules are ``event_time_future`` and ``event_time_past``; the messages name
    the settings (``STREAMML_MAX_EVENT_FUTURE_SECONDS``, ``STREAMML_MAX_EVENT_AGE_SECONDS``).
    """
    if time_ms > now_ms + max_future_ms:
        ahead = (time_ms - now_ms) / 1000
        return Violation(
            time_field, "event_time_future",
            f"{time_field}={time_ms} is {ahead:.0f} s ahead of the processor's clock "
            f"(STREAMML_MAX_EVENT_FUTURE_SECONDS={max_future_ms / 1000:g})",
        )
    if time_ms < now_ms - max_age_ms:
        return Violation(
            time_field, "event_time_past",
            f"{time_field}={time_ms} is older than STREAMML_MAX_EVENT_AGE_SECONDS="
            f"{max_age_ms / 1000:g} (epoch 0, or seconds sent as milliseconds?)",
        )
    return None


def _has_type(avro_type: str, value: Any) -> bool:
    """Check the Python type of a value against an Avro primitive type.

    Avro decoding already guarantees types, but records can also reach the
    pipeline from other code (tests, replays), and a bool is an int in Python.
    Types this does not know (unions, logical and complex types) pass.
    """
    if avro_type in ("double", "float"):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if avro_type in _INT_RANGES:
        low, high = _INT_RANGES[avro_type]
        return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high
    if avro_type == "string":
        return isinstance(value, str)
    if avro_type == "boolean":
        return isinstance(value, bool)
    if avro_type == "bytes":
        return isinstance(value, (bytes, bytearray))
    return True
