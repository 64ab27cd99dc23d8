"""Infer an Avro schema with a data contract from a sample of data, for a person to review.

In the spirit of TFDV's ``infer_schema``: every column of a pandas frame becomes
a field ``["null", T]`` with ``"default": null`` (so a producer may omit it),
and a ``contract`` (see :mod:`streamml.serde`) that the sample satisfies:

* ``required: true`` when the column has no null in the sample;
* ``min`` / ``max`` for numbers, the observed range (optionally widened by
  ``margin`` times the range on each side, rounded outwards; ints stay ints);
* ``allowed`` for low-cardinality string columns: the sorted distinct values.

* ``max_null_rate`` (a batch-level rule) for a column with nulls: the
  sample's null rate rounded up to the next hundredth.

The sample's statistics (null rate, distinct counts, the observed ranges) and
the drift monitor's reference distribution of each column (101 quantiles or
category shares, :mod:`stream_processors.profiles`) go to a top-level
``streamml_profile`` attribute, which Avro tools ignore. Pure code, no Kafka; pandas is
imported inside the functions.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from stream_processors.profiles import (
    PROFILE_ATTRIBUTE,
    CategoricalReference,
    NumericReference,
    categorical_reference,
    category_of,
    numeric_reference,
)
from streamml.errors import ConfigError

if TYPE_CHECKING:
    import pandas

__all__ = ["infer_schema", "PROFILE_ATTRIBUTE"]


_AVRO_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)
_TIMESTAMP = {"type": "long", "logicalType": "timestamp-millis"}
_KINDS_BY_TYPE = {
    "boolean": "boolean", "int": "integer", "long": "integer", "float": "float", "double": "float",
    "string": "string", "bytes": "bytes",
}


def infer_schema(
    frame: pandas.DataFrame,
    *,
    name: str = "Event",
    namespace: str = "streamml.user",
    key_field: str | None = None,
    time_field: str | None = None,
    max_categories: int = 20,
    margin: float = 0.0,
    source: str | None = None,
    types: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Return an Avro record schema (a JSON-ready dict) whose contract every row of ``frame`` satisfies.

    ``key_field`` (the record key) and ``time_field`` (event time) get no
    range and no allowed list: new keys and later times are normal.
    ``source`` names the sample in the profile. ``types`` maps columns to the
    Avro type to use instead of guessing one from the dtype (the non-null
    branch; used with a topic, whose writer schema is known).

    Raises :class:`ConfigError` for column names that are not Avro names, an
    empty sample, or a column whose values mix types.

    >>> import pandas as pd
    >>> schema = infer_schema(pd.DataFrame({"size": [3, 5, 4], "colour": ["red", "blue", "red"]}))
    >>> [(f["name"], f["type"], f["contract"]) for f in schema["fields"]]  # doctest: +NORMALIZE_WHITESPACE
    [('size', ['null', 'int'], {'required': True, 'min': 3, 'max': 5}),
     ('colour', ['null', 'string'], {'required': True, 'allowed': ['blue', 'red']})]
    """
    if max_categories < 0:
        raise ConfigError(f"max_categories must be 0 or more, got {max_categories}")
    if not (margin >= 0 and math.isfinite(margin)):
        raise ConfigError(f"margin must be a finite number >= 0, got {margin}")
    _check_names(name, namespace)
    columns = list(frame.columns)
    _check_columns(columns)
    for what, given in (("key field", key_field), ("time field", time_field)):
        if given is not None and given not in columns:
            raise ConfigError(f"{what} {given!r} is not a column (columns: {', '.join(map(str, columns))})")
    rows = len(frame)
    if rows == 0:
        raise ConfigError("no rows to infer a contract from")
    fields = []
    profiles: dict[str, Any] = {}
    for column in columns:
        role: str | None = "key" if column == key_field else "time" if column == time_field else None
        override = (types or {}).get(column)
        field, profile = _infer_field(str(column), frame[column], rows, role, max_categories, margin, override)
        fields.append(field)
        profiles[str(column)] = profile
    described = source or "a sample"
    return {
        "type": "record",
        "name": name,
        "namespace": namespace,
        "doc": (
            f"Inferred by 'streamml contract infer' from {rows} rows of {described}. Each field's contract "
            "(required, min/max, allowed) only describes that sample: review and edit it before use."
        ),
        "fields": fields,
        PROFILE_ATTRIBUTE: {"rows": rows, "inferred_from": described, "columns": profiles},
    }


# -- one field -----------------------------------------------------------------------------------------------


def _infer_field(
    name: str, series: Any, rows: int, role: str | None, max_categories: int, margin: float, override: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    values = series.dropna()
    nulls = rows - len(values)
    avro_type: Any = override
    kind = _kind(name, series, values) if override is None else _kind_of_type(override)
    profile: dict[str, Any] = {
        "null_rate": round(nulls / rows, 4),
        "max_null_rate": _ceil_hundredths(nulls, rows),
    }
    contract: dict[str, Any] = {"required": nulls == 0}
    notes = [f"Observed: {nulls} null{'s' if nulls != 1 else ''} in {rows} rows"]
    if kind in ("string", "integer", "float", "boolean", "bytes"):
        profile["distinct"] = int(values.nunique())
        notes[0] += f", {profile['distinct']} distinct value{'s' if profile['distinct'] != 1 else ''}"
    if len(values) == 0:
        notes.append("no value seen, so the type is a guess")

    if kind == "integer":
        ints = [int(v) for v in values.tolist()]
        if ints:
            low, high = min(ints), max(ints)
            if low < _INT64[0] or high > _INT64[1]:
                raise ConfigError(f"column {name!r} holds integers outside Avro's long range ({low}..{high})")
            avro_type = avro_type or ("int" if _INT32[0] <= low and high <= _INT32[1] else "long")
            profile.update(observed_min=low, observed_max=high)
            if role is None:
                bound_type = avro_type if avro_type in ("int", "long") else "long"
                contract["min"], contract["max"] = _widen_int(low, high, margin, bound_type)
            elif role == "time" and low >= 0:
                contract["min"] = 0
        avro_type = avro_type or "int"
    elif kind == "float":
        floats = [float(v) for v in values.tolist()]
        finite = [v for v in floats if math.isfinite(v)]
        if len(finite) < len(floats):
            profile["non_finite"] = len(floats) - len(finite)
            notes.append(f"{profile['non_finite']} non-finite values (NaN, inf) break any contract")
        if finite:
            low_f, high_f = min(finite), max(finite)
            profile.update(observed_min=_tidy(low_f), observed_max=_tidy(high_f))
            if role is None:
                lo, hi = _widen_float(low_f, high_f, margin)
                contract["min"], contract["max"] = _tidy(lo), _tidy(hi)
            elif role == "time" and low_f >= 0:
                contract["min"] = 0
        avro_type = avro_type or "double"
    elif kind == "string":
        avro_type = avro_type or "string"
        distinct = profile["distinct"]
        # A column whose every value is different looks like an id, not a category.
        if role is None and 0 < distinct <= max_categories and distinct < len(values):
            contract["allowed"] = sorted({str(v) for v in values.tolist()})
    elif kind == "timestamp":
        avro_type = avro_type or dict(_TIMESTAMP)
        if len(values):
            profile.update(observed_min=values.min().isoformat(), observed_max=values.max().isoformat())
        notes.append("no range is inferred for timestamps")
    elif kind == "boolean":
        avro_type = avro_type or "boolean"
    elif kind == "bytes":
        avro_type = avro_type or "bytes"
    else:  # another type given by ``types`` (enum, record, array, ...): only ``required`` is inferred
        avro_type = avro_type or "string"
    if nulls and role is None:
        # A batch-level rule (checked over windows, never quarantining one event).
        contract["max_null_rate"] = profile["max_null_rate"]
    reference = _reference(kind, values, nulls) if role is None else None
    if reference is not None:
        profile["reference"] = reference  # what the drift monitor compares windows with
    if role == "key":
        notes.append("record key: no range or allowed list")
    elif role == "time":
        notes.append("event time: no max, later events are normal")
    if isinstance(avro_type, list):  # a union given by ``types``: null first, so the default can be null
        union = ["null", *(branch for branch in avro_type if branch != "null")]
    else:
        union = ["null", avro_type]
    field = {
        "name": name,
        "type": union,
        "default": None,
        "doc": "; ".join(notes) + ".",
        "contract": contract,
    }
    return field, profile


def _reference(kind: str, values: Any, nulls: int) -> dict[str, Any] | None:
    """The drift monitor's reference for a column (:mod:`stream_processors.profiles`), if it has values."""
    found: NumericReference | CategoricalReference | None = None
    if kind in ("integer", "float"):
        numbers = [float(v) for v in values.tolist()]
        found = numeric_reference([v for v in numbers if math.isfinite(v)], nulls)
    elif kind in ("string", "boolean"):
        found = categorical_reference(Counter(category_of(v) for v in values.tolist()), nulls)
    return None if found is None else found.as_dict()


def _kind(name: str, series: Any, values: Any) -> str:
    """The kind of a column: from its dtype, else from the Python types of its values."""
    from pandas.api import types as ptypes

    dtype = series.dtype
    if ptypes.is_bool_dtype(dtype):
        return "boolean"
    if ptypes.is_integer_dtype(dtype):
        return "integer"
    if ptypes.is_float_dtype(dtype):
        return "float"
    if ptypes.is_datetime64_any_dtype(dtype):
        return "timestamp"
    seen = {type(v) for v in values.tolist()}
    if not seen or seen <= {str}:
        return "string"
    if seen <= {bool}:
        return "boolean"
    if all(issubclass(t, int) and not issubclass(t, bool) for t in seen):
        return "integer"
    if all(issubclass(t, (int, float)) and not issubclass(t, bool) for t in seen):
        return "float"
    if seen <= {bytes}:
        return "bytes"
    from datetime import datetime

    if all(issubclass(t, datetime) for t in seen):
        return "timestamp"
    found = ", ".join(sorted(t.__name__ for t in seen))
    raise ConfigError(
        f"column {name!r} holds values of types {found}: a field needs one type "
        "(clean or cast the column first; nested values are not supported)"
    )


def _kind_of_type(avro_type: Any) -> str:
    if isinstance(avro_type, str):
        return _KINDS_BY_TYPE.get(avro_type, "other")
    if isinstance(avro_type, Mapping) and str(avro_type.get("logicalType", "")).startswith("timestamp-"):
        return "timestamp"
    return "other"


# -- bounds ----------------------------------------------------------------------------------------------------


def _widen_int(low: int, high: int, margin: float, avro_type: str) -> tuple[int, int]:
    """Widen by ``margin`` times the range (of the value for a constant), outwards to a round number."""
    pad = margin * ((high - low) or abs(low))
    if pad > 0:
        step = 10 ** max(0, math.floor(math.log10(pad)))
        pad_int = math.ceil(pad)
        new_low, new_high = (low - pad_int) // step * step, -(-(high + pad_int) // step) * step
        # A column never seen negative (or positive) keeps its sign.
        low = max(new_low, 0) if low >= 0 else new_low
        high = min(new_high, 0) if high <= 0 else new_high
    floor, ceiling = _INT32 if avro_type == "int" else _INT64
    return max(low, floor), min(high, ceiling)


def _widen_float(low: float, high: float, margin: float) -> tuple[float, float]:
    pad = margin * ((high - low) or abs(low))
    if not (pad > 0 and math.isfinite(pad)):
        return low, high
    exponent = math.floor(math.log10(pad))
    step = 10.0**exponent
    new_low = round(math.floor((low - pad) / step) * step, -exponent)
    new_high = round(math.ceil((high + pad) / step) * step, -exponent)
    if not (math.isfinite(new_low) and new_low <= low):
        new_low = low
    if not (math.isfinite(new_high) and new_high >= high):
        new_high = high
    return (max(new_low, 0.0) if low >= 0 else new_low), (min(new_high, 0.0) if high <= 0 else new_high)


def _tidy(value: float) -> int | float:
    """A float that is a whole number reads better as an int (exact below 2**53)."""
    return int(value) if value.is_integer() and abs(value) < 2**53 else value


def _ceil_hundredths(part: int, whole: int) -> float:
    """``part / whole`` rounded up to 2 decimals, in integer arithmetic (0.07 stays 0.07)."""
    return -(-part * 100 // whole) / 100


# -- names and files -------------------------------------------------------------------------------------------


def _check_names(name: str, namespace: str) -> None:
    if not _AVRO_NAME.fullmatch(name):
        raise ConfigError(f"schema name {name!r} is not an Avro name (letters, digits, _; not starting with a digit)")
    if namespace and not all(_AVRO_NAME.fullmatch(part) for part in namespace.split(".")):
        raise ConfigError(f"namespace {namespace!r} is not a dotted Avro name (e.g. com.example.events)")


def _check_columns(columns: list[Any]) -> None:
    if not columns:
        raise ConfigError("the sample has no columns")
    bad = [c for c in columns if not (isinstance(c, str) and _AVRO_NAME.fullmatch(c))]
    if bad:
        suggestions = ", ".join(f"{c!r} -> {_suggest(c)!r}" for c in bad[:5])
        raise ConfigError(
            f"column name{'s' if len(bad) > 1 else ''} {', '.join(repr(c) for c in bad)} "
            f"{'are' if len(bad) > 1 else 'is'} not a valid Avro name: use letters, digits and _ only, "
            f"not starting with a digit; rename before inferring (e.g. {suggestions})"
        )
    duplicates = sorted({c for c in columns if columns.count(c) > 1})
    if duplicates:
        raise ConfigError(f"duplicate column names: {', '.join(duplicates)}")


def _suggest(column: Any) -> str:
    text = re.sub(r"[^A-Za-z0-9_]", "_", str(column)) or "_"
    return f"_{text}" if text[0].isdigit() else text
