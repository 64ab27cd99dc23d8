"""A schemaless Avro encoder built once per record schema, byte-identical to fastavro's.

``fastavro.schemaless_writer`` walks the parsed schema for every record: it
looks each field's type up again, collects the record's extra keys in a set,
and picks a union's branch by running the validator of every branch in turn.
For the demo event (13 fields, 9 of them ``["null", ...]`` unions) that walk
costs ~6 µs. :class:`RecordEncoder` does the walk once: it generates a Python
function for the schema whose body is one straight block per field, each
union's branch decided ahead of time for every Python type fastavro would
accept there (~1.5 µs for the demo event).

The generated function only handles values whose encoding is certain: exact
``str``, ``int``, ``float``, ``bool``, ``bytes`` and ``None`` where fastavro
would accept them, every field present, a plain ``dict`` record. Anything
else -- a missing field (fastavro fills in defaults), a ``numpy`` scalar, a
tuple naming a union branch, an out-of-range number, a value of the wrong
type -- makes it give up, and the record is encoded by fastavro itself. So
the output is fastavro's byte for byte, and a record that does not fit the
schema fails with fastavro's own exception.

Supported field types: ``null``, ``boolean``, ``int``, ``long``, ``float``,
``double``, ``string``, ``bytes``, ``enum`` (inline or named), and unions of
those. A schema with any other field type (a nested record, an array, a map,
``fixed``, a logical type) is encoded by fastavro throughout.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable, Mapping
from typing import Any

import fastavro

__all__ = ["RecordEncoder"]

INT_MIN, INT_MAX = -(2**31), 2**31 - 1
LONG_MIN, LONG_MAX = -(2**63), 2**63 - 1

_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "string", "bytes"})
_FLOATS = ("float", "double")

#: The zig-zag varint of every value in [-64, 64): one byte each, indexed by value + 64.
_SMALL = tuple(bytes([(v << 1) ^ (v >> 63)]) for v in range(-64, 64))
#: The varint of a non-negative length below 64: one byte each.
_LENGTHS = tuple(bytes([n << 1]) for n in range(64))

#: Varints 14 bits at a time (built on first use, ~1 MB): the last group of a
#: number (no continuation bit on its last byte), and a group before others.
_LAST: tuple[bytes, ...] = ()
_INNER: tuple[bytes, ...] = ()


class _Unsupported(Exception):
    """The schema has a type the generated encoder does not handle."""


class _GiveUp(Exception):
    """This record is left to fastavro (raised by generated code, caught by :meth:`RecordEncoder.encode`)."""


def _build_groups() -> None:
    global _LAST, _INNER
    _LAST = tuple(bytes([n]) if n < 0x80 else bytes([n & 0x7F | 0x80, n >> 7]) for n in range(0x4000))
    _INNER = tuple(bytes([n & 0x7F | 0x80, n >> 7 | 0x80]) for n in range(0x4000))


def _long(value: int) -> bytes:
    """Zig-zag varint of a long; ``OverflowError`` outside the 64-bit range (where fastavro fails too)."""
    if not LONG_MIN <= value <= LONG_MAX:
        raise OverflowError(value)
    n = (value << 1) ^ (value >> 63)
    if not _LAST:
        _build_groups()
    if n < 0x4000:
        return _LAST[n]
    if n < 0x10000000:
        return _INNER[n & 0x3FFF] + _LAST[n >> 14]
    if n < 0x40000000000:  # epoch milliseconds are here
        return _INNER[n & 0x3FFF] + _INNER[n >> 14 & 0x3FFF] + _LAST[n >> 28]
    groups = []
    while n >= 0x4000:
        groups.append(_INNER[n & 0x3FFF])
        n >>= 14
    groups.append(_LAST[n])
    return b"".join(groups)


class RecordEncoder:
    """Encode records of one parsed record schema as schemaless Avro.

    ``encode(record)`` returns exactly what ``fastavro.schemaless_writer``
    writes for ``schema`` and ``record``, and raises what it raises.
    ``specialized`` tells whether the schema got a generated encoder (if not,
    every record goes to fastavro) and ``source`` is its code. Instances are
    thread-safe.
    """

    def __init__(self, schema: dict[str, Any]) -> None:
        self.schema = schema
        self._fast: Callable[[Any], bytes] | None
        try:
            self._fast, self.source = _compile(schema)
        except _Unsupported:
            self._fast, self.source = None, ""

    @property
    def specialized(self) -> bool:
        return self._fast is not None

    def encode(self, record: Any) -> bytes:
        fast = self._fast
        if fast is not None:
            try:
                return fast(record)
            except Exception:  # _GiveUp, a missing field, an unencodable string, a range: fastavro decides
                pass
        return self.fallback(record)

    def fallback(self, record: Any) -> bytes:
        """Encode with fastavro itself, as :meth:`encode` does the records it gives up on."""
        buffer = io.BytesIO()
        fastavro.schemaless_writer(buffer, self.schema, record)
        return buffer.getvalue()


# Code generation. The function's body has one block per field that reads the
# value into ``v``, tests its exact type and assigns the field's bytes to
# ``p<i>`` (a string or bytes field also to ``s<i>``, its data after the
# length); it ends in one ``b"".join`` of all of them.

_GIVE_UP = "raise GiveUp"


def _compile(schema: Mapping[str, Any]) -> tuple[Callable[[Any], bytes], str]:
    """The generated encoder of a parsed record schema and its source; :class:`_Unsupported` if none."""
    if schema.get("type") != "record":
        raise _Unsupported("not a record")
    named = schema.get("__named_schemas") or {}
    constants: dict[str, Any] = {}
    body = ["if type(record) is not dict: raise GiveUp"]
    parts: list[str] = []
    for position, field in enumerate(schema["fields"]):
        field_ = _Field(position, constants)
        kind = _kind(field["type"], named)
        code = field_.union(kind) if isinstance(kind, list) else field_.plain(kind)
        body += [f"v = record[{field['name']!r}]", *code]
        parts += field_.parts
    body.append(f"return b''.join(({''.join(p + ', ' for p in parts)}))")
    source = "\n".join(["def encode(record):", *_indent(body, 1)])
    namespace: dict[str, Any] = {
        "GiveUp": _GiveUp,
        "SMALL": _SMALL,
        "LENGTHS": _LENGTHS,
        "long_": _long,
        "pack_d": struct.Struct("<d").pack,
        "pack_f": struct.Struct("<f").pack,
        **constants,
    }
    exec(compile(source, f"<avro encoder {schema.get('name')}>", "exec"), namespace)  # noqa: S102
    return namespace["encode"], source


def _kind(avro_type: Any, named: Mapping[str, Any]) -> Any:
    """A primitive name, an enum schema dict, or a list of those (a union); :class:`_Unsupported` otherwise."""
    if isinstance(avro_type, list):
        branches = [_kind(branch, named) for branch in avro_type]
        if any(isinstance(branch, list) for branch in branches):
            raise _Unsupported("nested union")
        return branches
    if isinstance(avro_type, str):
        if avro_type in _PRIMITIVES:
            return avro_type
        if avro_type in named:
            return _kind(named[avro_type], named)
        raise _Unsupported(f"unknown type {avro_type}")
    if isinstance(avro_type, dict):
        if "logicalType" in avro_type:
            raise _Unsupported("logical type")
        if avro_type.get("type") == "enum":
            return avro_type
        if avro_type.get("type") in _PRIMITIVES:
            return avro_type["type"]
    raise _Unsupported(f"type {avro_type!r}")


def _first(branches: list[Any], accepts: Callable[[str], bool]) -> int | None:
    """The branch fastavro's write_union picks: the first that validates, but a later double over a float."""
    for index, kind in enumerate(branches):
        if isinstance(kind, str) and accepts(kind):
            if kind == "float":
                later = [i for i, k in enumerate(branches) if i > index and k == "double"]
                return later[0] if later else index
            return index
    return None


#: The Python type a branch kind is usually given, for ordering the tests.
_NATURAL = {"null": "none", "boolean": "bool", "int": "int", "long": "int", "float": "float",
            "double": "float", "string": "str", "bytes": "bytes"}


class _Field:
    """The code of one field: its value is in ``v``, its bytes go to ``p<position>`` (and ``s<position>``)."""

    def __init__(self, position: int, constants: dict[str, Any]) -> None:
        self.position = position
        self.constants = constants
        self.p = f"p{position}"
        self.s = f"s{position}"
        self.parts = [self.p]

    def constant(self, stem: str, key: Any, make: Callable[[], Any]) -> str:
        """The name of the generated code's constant ``make()`` (one per field, ``stem`` and ``key``)."""
        name = f"{stem}_{self.position}_{key}"
        if name not in self.constants:
            self.constants[name] = make()
        return name

    def symbols(self, enum: Mapping[str, Any], prefix: bytes = b"") -> str:
        """A {symbol: prefix + its encoded index} constant (``list.index``: a repeated symbol takes its first)."""
        symbols = list(enum["symbols"])
        return self.constant("SYMBOLS", prefix.hex(), lambda: {s: prefix + _long(symbols.index(s)) for s in symbols})

    def length_prefixed(self, data: str, prefix: bytes = b"") -> list[str]:
        """``p`` = ``prefix`` and the varint length of ``data`` (bytes), ``s`` = the data."""
        if self.s not in self.parts:
            self.parts.append(self.s)
        table = "LENGTHS"
        if prefix:
            table = self.constant("LENGTHS", prefix.hex(), lambda: tuple(prefix + n for n in _LENGTHS))
        longer = f"{prefix!r} + long_(n)" if prefix else "long_(n)"
        return [f"n = len({data})", f"{self.p} = {table}[n] if n < 64 else {longer}", f"{self.s} = {data}"]

    def plain(self, kind: Any) -> list[str]:
        """A field of a non-union type.

        (For a float or double field fastavro calls ``float()`` on the value
        first; an exact ``float`` or ``int`` encodes the same with or without it.)
        """
        p = self.p
        if isinstance(kind, dict):  # enum
            return ["if type(v) is not str: raise GiveUp", f"{p} = {self.symbols(kind)}[v]"]
        if kind == "null":
            return ["if v is not None: raise GiveUp", f"{p} = b''"]
        if kind == "boolean":
            return ["if type(v) is not bool: raise GiveUp", f"{p} = b'\\x01' if v else b'\\x00'"]
        if kind in ("int", "long"):
            # fastavro writes an "int" field as a long: no 32-bit range check outside a union.
            return ["if type(v) is not int: raise GiveUp", f"{p} = SMALL[v + 64] if -64 <= v < 64 else long_(v)"]
        if kind in _FLOATS:
            pack = "pack_d" if kind == "double" else "pack_f"
            return ["if type(v) is not float and type(v) is not int: raise GiveUp", f"{p} = {pack}(v)"]
        if kind == "string":
            return ["if type(v) is not str: raise GiveUp", "b = v.encode()", *self.length_prefixed("b")]
        if kind == "bytes":
            return ["if type(v) is not bytes: raise GiveUp", *self.length_prefixed("v")]
        raise _Unsupported(str(kind))  # pragma: no cover - _kind returns nothing else

    def union(self, branches: list[Any]) -> list[str]:
        """A union field: one test per Python type, its branch chosen here.

        fastavro validates the value against each branch in turn; which
        branches accept a value depends only on its exact type (and for an
        integer on its range, for a string on the enums' symbols), so the
        choice can be made once. The type tests are disjoint, so their order
        only matters for speed: the types the branches are usually given come
        first.
        """
        tags = [_long(index) for index in range(len(branches))]
        has_data = any(kind in ("string", "bytes") for kind in branches)
        p = self.p

        def done(code: list[str]) -> list[str]:
            """A branch's code, setting ``s`` too when another branch has data after its length."""
            if has_data and not any(line.startswith(f"{self.s} =") for line in code):
                code = [*code, f"{self.s} = b''"]
            return code

        def number(index: int | None) -> list[str]:
            """Write the int or float in ``v`` as branch ``index``."""
            if index is None:
                return [_GIVE_UP]
            kind, tag = branches[index], tags[index]
            if kind in ("int", "long"):
                small = self.constant("SMALL", index, lambda: tuple(tag + byte for byte in _SMALL))
                return done([f"{p} = {small}[v + 64] if -64 <= v < 64 else {tag!r} + long_(v)"])
            if len(tag) == 1:  # the tag and the value in one struct call
                pack = self.constant("PACK", index, lambda: struct.Struct("<Bd" if kind == "double" else "<Bf").pack)
                return done([f"{p} = {pack}({tag[0]}, v)"])
            return done([f"{p} = {tag!r} + {'pack_d' if kind == 'double' else 'pack_f'}(v)"])

        tests: dict[str, tuple[str, list[str]]] = {}
        null = _first(branches, lambda k: k == "null")
        if null is not None:
            tests["none"] = ("v is None", done([f"{p} = {tags[null]!r}"]))
        boolean = _first(branches, lambda k: k == "boolean")
        if boolean is not None:
            true, false = tags[boolean] + b"\x01", tags[boolean] + b"\x00"
            tests["bool"] = ("type(v) is bool", done([f"{p} = {true!r} if v else {false!r}"]))
        # Integers: the ranges are nested, so a range that picks what the next wider one picks merges into it.
        ranges: list[tuple[str | None, int | None]] = []
        for test, index in (
            (f"{INT_MIN} <= v <= {INT_MAX}", _first(branches, lambda k: k in ("int", "long", *_FLOATS))),
            (f"{LONG_MIN} <= v <= {LONG_MAX}", _first(branches, lambda k: k in ("long", *_FLOATS))),
            (None, _first(branches, lambda k: k in _FLOATS)),
        ):
            if ranges and ranges[-1][1] == index:
                ranges.pop()
            ranges.append((test, index))
        if ranges != [(None, None)]:
            tests["int"] = ("type(v) is int", _chain([(test, number(index)) for test, index in ranges]))
        real = _first(branches, lambda k: k in _FLOATS)
        if real is not None:
            tests["float"] = ("type(v) is float", number(real))
        text = self._text(branches, tags, done)
        if text:
            tests["str"] = ("type(v) is str", text)
        binary = _first(branches, lambda k: k == "bytes")
        if binary is not None:
            tests["bytes"] = ("type(v) is bytes", self.length_prefixed("v", tags[binary]))
        order = [_NATURAL[k] if isinstance(k, str) else "str" for k in branches if k != "null"]
        order += ["none", "bool", "int", "float", "str", "bytes"]
        return _chain([tests[name] for name in dict.fromkeys(order) if name in tests] + [(None, [_GIVE_UP])])

    def _text(self, branches: list[Any], tags: list[bytes], done: Callable[[list[str]], list[str]]) -> list[str]:
        """Write the str in ``v``: in branch order, an enum takes its symbols, the first string branch any str."""
        cases: list[tuple[str | None, list[str]]] = []
        for index, kind in enumerate(branches):
            if isinstance(kind, dict):
                table = self.symbols(kind, tags[index])
                cases.append((f"v in {table}", done([f"{self.p} = {table}[v]"])))
            elif kind == "string":
                cases.append((None, ["b = v.encode()", *self.length_prefixed("b", tags[index])]))
                break
        if not cases:
            return []
        if cases[-1][0] is not None:
            cases.append((None, [_GIVE_UP]))
        return _chain(cases)


def _chain(cases: list[tuple[str | None, list[str]]]) -> list[str]:
    """An if/elif chain over ``(test, code)`` cases; the last one's test is ``None``: the ``else``."""
    if len(cases) == 1:
        return cases[0][1]
    code: list[str] = []
    for number, (test, lines) in enumerate(cases):
        code.append("else:" if test is None else f"{'if' if number == 0 else 'elif'} {test}:")
        code += _indent(lines, 1)
        if test is None:
            break
    return code


def _indent(code: list[str], depth: int) -> list[str]:
    return [("    " * depth) + line for line in code]
