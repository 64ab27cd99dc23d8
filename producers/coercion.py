"""Coerce loosely typed rows (CSV cells, JSON values) to a schema's field types.

Files say ``"17"``, ``17.0`` or ``""`` where the schema wants an int or null.
:class:`RowCoercer` turns each row into a record of exactly the schema's
fields with the schema's Python types, or raises :class:`RecordError` naming
the row and field. It converts types only: ranges and allowed values are the
stream processor's data contract, checked there so bad rows are quarantined
with a reason instead of stopping ingestion.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from streamml.errors import RecordError
from streamml.serde import AvroSchema, FieldRule

__all__ = ["RowCoercer", "coerce_value", "is_missing"]

_INT_LIMITS = {"int": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}
_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no"}
#: Marks "the field has no default" (None is a valid default).
_NO_DEFAULT = object()


def is_missing(value: Any) -> bool:
    """True for an empty cell: None, an empty or blank string, or a float NaN.

    pandas reads a missing JSON value as NaN, so NaN means "missing" here; a
    literal ``nan`` text in a CSV cell is a string and parses as a float NaN.
    """
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    return isinstance(value, float) and math.isnan(value)


def _to_int(value: Any, avro_type: str) -> int:
    if isinstance(value, bool):
        raise ValueError
    if isinstance(value, int):
        result = value
    elif isinstance(value, float):
        if not value.is_integer():
            raise ValueError
        result = int(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            result = int(text)
        except ValueError:
            as_float = float(text)  # "17.0" is an int; "17.5" and "abc" are not
            if not as_float.is_integer():
                raise
            result = int(as_float)
    else:
        raise ValueError
    low, high = _INT_LIMITS[avro_type]
    if not low <= result <= high:
        raise OverflowError
    return result


def _to_float(value: Any, avro_type: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError
    return float(value.strip() if isinstance(value, str) else value)


def _to_str(value: Any, avro_type: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError
    # A JSON number in a string column: 17.0 read by pandas stays "17".
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _to_bool(value: Any, avro_type: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError


_CONVERTERS: dict[str, Callable[[Any, str], Any]] = {
    "int": _to_int,
    "long": _to_int,
    "float": _to_float,
    "double": _to_float,
    "string": _to_str,
    "boolean": _to_bool,
}
_TYPE_WORDS = {
    "int": "an int",
    "long": "a long",
    "float": "a float",
    "double": "a double",
    "string": "a string",
    "boolean": "a boolean",
}


def coerce_value(rule: FieldRule, value: Any, *, row: int | None = None, default: Any = _NO_DEFAULT) -> Any:
    """Return ``value`` as the Python type of ``rule``'s Avro type.

    A missing value becomes ``default`` if given, else ``None`` for a nullable
    field; otherwise, and for a value that cannot be converted, raises
    :class:`RecordError` with ``row`` and the field name. Types without a
    converter (records, enums, bytes, ...) pass through for the encoder to judge.
    """
    if is_missing(value):
        if default is not _NO_DEFAULT:
            return default
        if rule.nullable:
            return None
        raise RecordError("empty, but the field is not nullable", row=row, field=rule.name)
    converter = _CONVERTERS.get(rule.avro_type)
    if converter is None:
        return value
    try:
        return converter(value, rule.avro_type)
    except OverflowError:
        raise RecordError(f"{value!r} is out of range for {rule.avro_type}", row=row, field=rule.name) from None
    except ValueError:
        raise RecordError(f"{value!r} is not {_TYPE_WORDS[rule.avro_type]}", row=row, field=rule.name) from None


class RowCoercer:
    """Turns rows with loose types into records of one schema.

    Columns the schema does not know are dropped; schema fields absent from a
    row get their default, or None when nullable (the file readers check up
    front that required columns exist, so an absence here is per row).
    """

    def __init__(self, schema: AvroSchema) -> None:
        self.schema = schema
        defaults = {f["name"]: f["default"] for f in schema.parsed["fields"] if "default" in f}
        self._fields = [(rule, defaults.get(rule.name, _NO_DEFAULT)) for rule in schema.rules]

    @property
    def required_columns(self) -> list[str]:
        """Fields a file must have a column for: not nullable and without a default."""
        return [rule.name for rule, default in self._fields if not rule.nullable and default is _NO_DEFAULT]

    def unknown_columns(self, columns: list[str]) -> list[str]:
        """Columns the schema has no field for, in file order."""
        known = set(self.schema.field_names)
        return [c for c in columns if c not in known]

    def coerce(self, row: Mapping[str, Any], row_number: int) -> dict[str, Any]:
        """Return the record for one row; ``row_number`` is 1-based, for errors."""
        return {
            rule.name: coerce_value(rule, row.get(rule.name), row=row_number, default=default)
            for rule, default in self._fields
        }
