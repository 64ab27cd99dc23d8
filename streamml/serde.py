"""Avro schemas, data contracts and schemaless encoding with fastavro.

Wire format (chosen over the Confluent wire format because the pipeline needs
no schema registry service): the record value is plain schemaless Avro, and
the writer schema is named on every record by a header::

    streamml.schema = <CRC-64-AVRO fingerprint of the schema's canonical form, 16 hex chars>
    content-type    = application/avro

The fingerprint is the one the Avro specification defines for single-object
encoding, so any Avro library can compute it. A reader holds a set of known
writer schemas; a record written with another known schema is resolved to the
reader schema (Avro schema evolution), and an unknown fingerprint is an error
the caller can quarantine.

The data contract lives in the schema itself, as a ``contract`` attribute on a
field: ``{"required": true, "min": 0, "max": 100, "allowed": [..]}`` for each
event, and ``max_null_rate``, ``max_category_share``, ``max_unseen_share``
(shares from 0 to 1) checked over a window of events by the distribution
monitor of the stream processor. Avro
tools ignore attributes they do not know, so the file stays a valid schema.
The contract's rules and checks live in :mod:`streamml.contract`;
:func:`load_event_schema` is how commands load the event schema, checked.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

from streamml.avro_encoder import RecordEncoder
from streamml.contract import FieldRule, format_problems, parse_field, role_problems
from streamml.errors import DecodeError, RecordError, SchemaError

if TYPE_CHECKING:  # config imports this module (through records): no import cycle at run time
    from streamml.config import Settings

__all__ = [
    "SCHEMA_HEADER",
    "CONTENT_TYPE_HEADER",
    "AVRO_CONTENT_TYPE",
    "FieldRule",
    "AvroSchema",
    "AvroSerde",
    "DecodeError",
    "bundled_schema",
    "header_value",
    "load_event_schema",
]

SCHEMA_HEADER = "streamml.schema"
CONTENT_TYPE_HEADER = "content-type"
AVRO_CONTENT_TYPE = b"application/avro"

Headers = Sequence[tuple[str, bytes | None]] | None


@dataclass(frozen=True)
class AvroSchema:
    """A parsed Avro record schema, its fingerprint and its field rules."""

    name: str
    parsed: Any
    fingerprint: str
    rules: tuple[FieldRule, ...]

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], *, source: str = "") -> AvroSchema:
        """Parse a schema; raise :class:`SchemaError` naming every contract problem at once.

        ``source`` (a file name) prefixes the message.
        """
        schema, problems = cls._parse(raw, source)
        if problems:
            raise SchemaError(format_problems(source or schema.name, problems))
        return schema

    @classmethod
    def from_file(cls, path: str | Path) -> AvroSchema:
        return cls.from_dict(_read(Path(path)), source=str(path))

    @classmethod
    def _parse(cls, raw: Mapping[str, Any], source: str) -> tuple[AvroSchema, list[str]]:
        """The schema (ill-formed contract entries left out) and the problems of its contract."""
        where = f"schema {source}: " if source else ""
        try:
            parsed = fastavro.parse_schema(dict(raw))
        except Exception as exc:  # fastavro raises several unrelated types
            raise SchemaError(f"{where}invalid Avro schema: {exc}") from exc
        if not isinstance(parsed, dict) or parsed.get("type") != "record":
            raise SchemaError(f"{where}the event schema must be an Avro record")
        fp = fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO")
        rules, problems = [], []
        for field in parsed["fields"]:
            rule, found = parse_field(field)
            rules.append(rule)
            problems += found
        return cls(name=parsed["name"], parsed=parsed, fingerprint=fp, rules=tuple(rules)), problems

    @property
    def field_names(self) -> list[str]:
        return [rule.name for rule in self.rules]

    def rule(self, name: str) -> FieldRule:
        for rule in self.rules:
            if rule.name == name:
                return rule
        raise SchemaError(f"schema {self.name} has no field {name!r}")


def load_event_schema(
    settings: Settings,
    path: str | Path | None = None,
    *,
    checks: Iterable[Callable[[AvroSchema], list[str]]] = (),
) -> AvroSchema:
    """The event schema at ``path`` (default ``settings.schema_path``), checked for what the pipeline needs.

    Every command that reads or writes events loads its schema with this, so
    a broken schema stops it at start-up: the contract must be well-formed
    and the fields the settings give a role must fit it
    (:func:`streamml.contract.role_problems`); ``checks`` add a component's
    own (the stream processor's featurizer). Raises one :class:`SchemaError`
    (exit 2) naming every problem, one line each.
    """
    path = Path(settings.schema_path if path is None else path)
    schema, problems = AvroSchema._parse(_read(path), str(path))
    problems += role_problems(schema.rules, settings)
    for check in checks:
        problems += check(schema)
    if problems:
        raise SchemaError(format_problems(str(path), problems))
    return schema


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise SchemaError(f"schema file not found: {path}") from exc
    except (OSError, ValueError) as exc:
        raise SchemaError(f"cannot read schema {path}: {exc}") from exc


def bundled_schema(filename: str) -> AvroSchema:
    """Load one of the schemas shipped in ``streamml/schemas``."""
    text = resources.files("streamml.schemas").joinpath(filename).read_text()
    return AvroSchema.from_dict(json.loads(text))


def header_value(headers: Headers, name: str) -> bytes | None:
    """Return the last value of header ``name``, or ``None``."""
    found = None
    for key, value in headers or ():
        if key == name:
            found = value
    return found


class AvroSerde:
    """Encode records with one schema; decode records written with any known schema.

    ``reader`` is the schema records are encoded with and decoded into;
    ``writers`` are further schemas a producer may have written with (older or
    newer versions). Instances are cheap to share and thread-safe.
    """

    def __init__(self, reader: AvroSchema, writers: Iterable[AvroSchema] = ()) -> None:
        self.reader = reader
        self._writers = {reader.fingerprint: reader}
        for writer in writers:
            self._writers[writer.fingerprint] = writer
        self._headers = [
            (SCHEMA_HEADER, reader.fingerprint.encode()),
            (CONTENT_TYPE_HEADER, AVRO_CONTENT_TYPE),
        ]
        # fastavro's output byte for byte, generated once for the schema (streamml.avro_encoder).
        self._encoder = RecordEncoder(reader.parsed)

    @property
    def headers(self) -> list[tuple[str, bytes]]:
        """Headers to send with every record this serde encodes."""
        return list(self._headers)

    def encode(self, record: Mapping[str, Any]) -> bytes:
        """Encode one record; raise :class:`RecordError` with the failing field when known."""
        try:
            return self._encoder.encode(record)
        except Exception as exc:  # fastavro raises ValueError, TypeError, KeyError, ...
            field, reason = _describe_encode_error(self.reader, record, exc)
            raise RecordError(reason, field=field) from exc

    def decode(self, value: bytes | None, headers: Headers = None) -> dict[str, Any]:
        """Decode one record value; raise :class:`DecodeError` with a rule name.

        Rules: ``missing_schema_header``, ``unknown_schema``, ``empty_value``,
        ``undecodable`` (truncated or corrupt bytes), ``trailing_bytes``,
        ``non_canonical`` (bytes that decode only by accident, such as a
        negative union branch index), ``schema_resolution`` (writer and reader
        schemas are incompatible).
        """
        if value is None or len(value) == 0:
            raise DecodeError("record has no value", rule="empty_value")
        fp_raw = header_value(headers, SCHEMA_HEADER)
        if fp_raw is None:
            raise DecodeError(f"record has no {SCHEMA_HEADER} header", rule="missing_schema_header")
        fp = fp_raw.decode("ascii", errors="replace")
        writer = self._writers.get(fp)
        if writer is None:
            raise DecodeError(f"unknown writer schema fingerprint {fp!r}", rule="unknown_schema")
        buffer = io.BytesIO(value)
        try:
            if writer is self.reader:
                record = fastavro.schemaless_reader(buffer, writer.parsed, None)
            else:
                record = fastavro.schemaless_reader(buffer, writer.parsed, self.reader.parsed)
        except fastavro.read.SchemaResolutionError as exc:
            raise DecodeError(
                f"writer schema cannot be read as {self.reader.name}: {exc}", rule="schema_resolution"
            ) from exc
        except Exception as exc:  # EOFError, UnicodeDecodeError, IndexError, ...
            raise DecodeError(f"corrupt or truncated Avro: {type(exc).__name__}: {exc}", rule="undecodable") from exc
        if buffer.tell() != len(value):
            raise DecodeError(
                f"{len(value) - buffer.tell()} bytes left after the record", rule="trailing_bytes"
            )
        if not isinstance(record, dict):
            raise DecodeError("value is not an Avro record", rule="undecodable")
        if writer is self.reader:
            self._check_canonical(value, record)
        return record

    def _check_canonical(self, value: bytes, record: dict[str, Any]) -> None:
        """Refuse bytes that decode but are not what encoding the result gives back.

        fastavro reads a union's branch index as a Python list index, so a
        negative index (-1) silently picks the last branch instead of failing.
        Encoding the decoded record again and comparing catches that and any
        other non-canonical encoding, at the cost of one encode per record
        (by the generated encoder, fastavro's bytes at about a quarter of its cost).
        """
        try:
            again = self._encoder.encode(record)
        except Exception as exc:  # a value fastavro read but cannot write back
            raise DecodeError(f"decoded record does not re-encode: {exc}", rule="undecodable") from exc
        if again != value:
            raise DecodeError(
                "not a canonical Avro encoding (e.g. a negative union branch index)", rule="non_canonical"
            )


def _describe_encode_error(
    schema: AvroSchema, record: Mapping[str, Any], exc: Exception
) -> tuple[str | None, str]:
    """Return (field, reason) for the first field that does not fit; fastavro's message often omits it."""
    if not isinstance(record, Mapping):
        return None, f"expected a mapping, got {type(record).__name__}"
    for field in schema.parsed["fields"]:
        name = field["name"]
        if name not in record and "default" not in field:
            return name, "missing"
        if name in record and not fastavro.validation.validate(record[name], field["type"], raise_errors=False):
            return name, f"{record[name]!r} is not of type {_type_name(field['type'])}"
    return None, f"cannot encode as {schema.name}: {exc}"


def _type_name(avro_type: Any) -> str:
    if isinstance(avro_type, list):
        return " or ".join(_type_name(t) for t in avro_type)
    if isinstance(avro_type, dict):
        return str(avro_type.get("logicalType") or avro_type.get("type"))
    return str(avro_type).rsplit(".", 1)[-1]
