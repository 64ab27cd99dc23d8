"""The data contract of an event schema: field rules and the start-up checks on them.

A field's ``contract`` attribute (see :mod:`streamml.serde`) is read into a
:class:`FieldRule` by :func:`parse_field`, which never stops at the first
mistake: it returns the rule (ill-formed parts left out) and every problem it
found, one readable line each. :func:`role_problems` checks that the fields
the settings give a role (record key, event time, label, windowed means) exist
with a type that role can use. :func:`~streamml.serde.load_event_schema` runs
both, so every command that loads the event schema refuses a broken one at
start-up with all its problems at once, instead of running and quarantining
(or silently ignoring) every event.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:  # config imports this module (through records): no import cycle at run time
    from streamml.config import Settings

__all__ = ["FieldRule", "CONTRACT_KEYS", "SHARE_KEYS", "parse_field", "role_problems", "format_problems"]

#: Contract keys of the batch-level rules: shares of a window, from 0 to 1.
SHARE_KEYS = ("max_null_rate", "max_category_share", "max_unseen_share")
#: Every key a field's ``contract`` may hold.
CONTRACT_KEYS = ("required", "min", "max", "allowed", *SHARE_KEYS)

_NUMERIC = ("double", "float", "int", "long")
#: Types a record key is turned into text from without surprises.
_KEY_TYPES = ("string", "int", "long", "enum", "uuid")
#: Types the feature vector's label union carries.
_LABEL_TYPES = ("boolean", "int", "long", "float", "double", "string", "enum")


@dataclass(frozen=True)
class FieldRule:
    """One field of a schema with the data contract that applies to it."""

    name: str
    #: The non-null Avro type: "double", "float", "int", "long", "string", "boolean", ...
    #: (a logical type's name, such as "timestamp-millis", for a logical type).
    avro_type: str
    nullable: bool
    required: bool = False
    minimum: float | None = None
    maximum: float | None = None
    allowed: tuple[Any, ...] | None = None
    #: Batch-level rules, checked over a window of events by the distribution
    #: monitor (never quarantining one event): the largest share of nulls, of
    #: any one category, and of categories the reference never saw.
    max_null_rate: float | None = None
    max_category_share: float | None = None
    max_unseen_share: float | None = None

    @property
    def numeric(self) -> bool:
        return self.avro_type in _NUMERIC


def parse_field(field: Mapping[str, Any]) -> tuple[FieldRule, list[str]]:
    """Read one parsed Avro field and its ``contract``: the rule and every problem of the contract.

    An ill-formed entry (``"min": "5"``, ``"allowed": "abc"``) is left out of
    the rule and reported; the caller decides whether problems are fatal.
    """
    name = str(field["name"])
    ftype, nullable = _base_type(field["type"])
    where = f"field {name!r}"
    contract = field.get("contract")
    if contract is None:
        contract = {}
    if not isinstance(contract, Mapping):
        return FieldRule(name, ftype, nullable, required=not nullable), [
            f"{where}: 'contract' must be an object, got {contract!r}"
        ]
    problems: list[str] = []
    unknown = sorted(set(contract) - set(CONTRACT_KEYS))
    if unknown:
        hints = [f"{m[0]!r} for {k!r}" for k in unknown if (m := difflib.get_close_matches(k, CONTRACT_KEYS, 1))]
        hint = f" (did you mean {', '.join(hints)}?)" if hints else ""
        problems.append(f"{where}: unknown contract keys {unknown}{hint}; known: {', '.join(CONTRACT_KEYS)}")
    required = contract.get("required", not nullable)
    if not isinstance(required, bool):
        problems.append(f"{where}: contract 'required' must be true or false, got {required!r}")
        required = not nullable
    bounds = {key: _number(contract.get(key), f"{where}: contract {key!r}", problems) for key in ("min", "max")}
    minimum, maximum = bounds["min"], bounds["max"]
    if (minimum is not None or maximum is not None) and ftype not in _NUMERIC:
        problems.append(f"{where}: contract 'min'/'max' need a numeric field, but {name} is {ftype}")
        minimum = maximum = None
    if minimum is not None and maximum is not None and minimum > maximum:
        problems.append(f"{where}: contract min {minimum!r} is above max {maximum!r}: no value can pass")
    allowed = _allowed(contract.get("allowed"), ftype, field["type"], minimum, maximum, where, problems)
    shares: dict[str, float | None] = {}
    for key in SHARE_KEYS:
        share = contract.get(key)
        if share is not None and not (_is_number(share) and 0 <= share <= 1):
            problems.append(f"{where}: contract {key!r} must be a number from 0 to 1, got {share!r}")
            share = None
        shares[key] = share
    rule = FieldRule(
        name=name,
        avro_type=ftype,
        nullable=nullable,
        required=required,
        minimum=minimum,
        maximum=maximum,
        allowed=allowed,
        **shares,
    )
    return rule, problems


def role_problems(rules: Sequence[FieldRule], settings: Settings) -> list[str]:
    """Problems of the fields the settings give a role, one line each (empty when all fit).

    The key (``STREAMML_KEY_FIELD``) and event time (``STREAMML_TIME_FIELD``,
    epoch milliseconds) must be fields of a usable type; so must the label
    (``STREAMML_LABEL_FIELD``) when labels come in the events
    (``STREAMML_LABEL_MODE=inline``); every windowed field
    (``STREAMML_WINDOW_FIELDS``) must be numeric.
    """
    by_name = {rule.name: rule for rule in rules}
    problems: list[str] = []

    def lookup(name: str, role: str, setting: str) -> FieldRule | None:
        rule = by_name.get(name)
        if rule is None:
            close = difflib.get_close_matches(name, list(by_name), 1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            problems.append(
                f"{role} field {name!r} ({setting}) is not in the schema; {hint}fields: {', '.join(by_name)}"
            )
        return rule

    key = lookup(settings.key_field, "key", "STREAMML_KEY_FIELD")
    if key is not None and key.avro_type not in _KEY_TYPES:
        problems.append(f"key field {key.name!r} is {key.avro_type}; a record key needs one of {', '.join(_KEY_TYPES)}")
    time = lookup(settings.time_field, "event-time", "STREAMML_TIME_FIELD")
    if time is not None:
        if time.avro_type not in ("long", "int"):
            hint = " (fastavro decodes it to a datetime)" if time.avro_type.startswith("timestamp") else ""
            problems.append(
                f"event-time field {time.name!r} is {time.avro_type}{hint}; it must be a long of epoch milliseconds"
            )
        elif not time.required:
            problems.append(f"event-time field {time.name!r} may be null: give it \"contract\": {{\"required\": true}}")
    if settings.label_mode == "inline":
        label = lookup(settings.label_field, "label", "STREAMML_LABEL_FIELD, in the events: STREAMML_LABEL_MODE=inline")
        if label is not None and label.avro_type not in _LABEL_TYPES:
            problems.append(
                f"label field {label.name!r} is {label.avro_type}; a label must be one of {', '.join(_LABEL_TYPES)}"
            )
    elif settings.label_field in by_name and by_name[settings.label_field].avro_type not in _LABEL_TYPES:
        problems.append(f"label field {settings.label_field!r} is {by_name[settings.label_field].avro_type}; "
                        f"a label must be one of {', '.join(_LABEL_TYPES)}")
    for name in settings.window_field_list:
        rule = lookup(name, "window", "STREAMML_WINDOW_FIELDS, empty for none")
        if rule is not None and not rule.numeric:
            problems.append(f"window field {name!r} (STREAMML_WINDOW_FIELDS) is {rule.avro_type}; a windowed mean "
                            "needs a numeric field")
    return problems


def format_problems(source: str, problems: Iterable[str]) -> str:
    """One error message: a single problem on one line, several under a header line, one line each."""
    problems = list(problems)
    if len(problems) == 1:
        return f"schema {source}: {problems[0]}"
    return f"schema {source} has {len(problems)} problems:\n" + "\n".join(f"  {p}" for p in problems)


def _base_type(ftype: Any) -> tuple[str, bool]:
    """The non-null type's name (a logical type's name when it has one) and whether null is allowed."""
    nullable = False
    if isinstance(ftype, list):
        branches = [b for b in ftype if b != "null"]
        nullable = len(branches) < len(ftype)
        ftype = branches[0] if len(branches) == 1 else "union"
    if isinstance(ftype, dict):
        ftype = ftype.get("logicalType") or ftype.get("type", "complex")
    return str(ftype), nullable


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _number(value: Any, what: str, problems: list[str]) -> float | None:
    if value is None or _is_number(value):
        return cast("float | None", value)  # an int stays an int: messages show it as written
    problems.append(f"{what} must be a finite number, got {value!r}")
    return None


def _allowed(
    raw: Any, ftype: str, avro_type: Any, minimum: float | None, maximum: float | None, where: str, problems: list[str]
) -> tuple[Any, ...] | None:
    """The ``allowed`` values when they are a non-empty list of values of the field's type, else ``None``."""
    if raw is None:
        return None
    if not isinstance(raw, list) or not raw:
        problems.append(f"{where}: contract 'allowed' must be a non-empty list of {ftype} values, got {raw!r}")
        return None
    wrong = [v for v in raw if not _fits(v, ftype)]
    if wrong:
        problems.append(f"{where}: contract 'allowed' values {wrong[:5]!r} are not {ftype} values")
        return None
    symbols = _enum_symbols(avro_type)
    if symbols is not None and (strangers := [v for v in raw if v not in symbols]):
        problems.append(f"{where}: contract 'allowed' values {strangers[:5]!r} are not symbols of the enum")
    outside = [v for v in raw if _is_number(v) and (
        (minimum is not None and v < minimum) or (maximum is not None and v > maximum))]
    if outside:
        problems.append(f"{where}: contract 'allowed' values {outside[:5]!r} are outside min..max, so never valid")
    return tuple(raw)


def _fits(value: Any, ftype: str) -> bool:
    if ftype in ("int", "long"):
        return isinstance(value, int) and not isinstance(value, bool)
    if ftype in ("double", "float"):
        return _is_number(value)
    if ftype in ("string", "enum", "uuid"):
        return isinstance(value, str)
    if ftype == "boolean":
        return isinstance(value, bool)
    return True  # other types: Avro decoding decides what a value looks like


def _enum_symbols(avro_type: Any) -> list[str] | None:
    branches = avro_type if isinstance(avro_type, list) else [avro_type]
    for branch in branches:
        if isinstance(branch, dict) and branch.get("type") == "enum":
            return list(branch.get("symbols", []))
    return None
