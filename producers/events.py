"""What an event source yields, and the interface every source implements.

A source yields plain record mappings, which the producer encodes with the
schema, or :class:`RawPayload` values, which it sends byte for byte. Raw
payloads exist for fault injection: corrupt bytes cannot be produced through an
Avro encoder, yet the stream processor must be shown to quarantine them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from streamml.serde import AvroSchema

__all__ = ["Record", "RawPayload", "SourceItem", "EventSource"]

#: One event as field name -> value, encoded with the source's schema.
Record = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class RawPayload:
    """Bytes to send as they are, bypassing the Avro encoder.

    ``headers=None`` sends the producer's schema headers, so the payload claims
    to be a valid record (what a corrupted record looks like on the wire); pass
    ``()`` to send no headers at all. ``fault`` names why the payload is bad.
    """

    value: bytes
    key: str | None = None
    headers: Sequence[tuple[str, bytes]] | None = None
    fault: str = "corrupt_bytes"


#: What iterating a source gives: a record to encode or raw bytes to send.
SourceItem = Record | RawPayload


@runtime_checkable
class EventSource(Protocol):
    """A finite or endless iterable of events written against one schema.

    ``injected`` counts the faults the source made on purpose, by kind (empty
    for sources that inject none), so a run can report how many bad events it
    sent deliberately.
    """

    #: Short description for progress and logs, e.g. ``synthetic(seed=7)``.
    name: str
    #: The schema the source's records are written against.
    schema: AvroSchema

    @property
    def injected(self) -> Mapping[str, int]:
        """Faults injected so far, by kind."""
        ...

    def __iter__(self) -> Iterator[SourceItem]:
        ...
