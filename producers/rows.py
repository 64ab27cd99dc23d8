"""A source read row by row, so that one bad row need not end the run.

Iterating a file source coerces each row and raises :class:`RecordError` at
the first one that does not fit, which ends the iteration for good (it is a
generator). :func:`numbered_rows` reads a file source's rows before coercion
and coerces each one itself, so a bad row is a :class:`Row` with an ``error``
and the rows after it still come. Other sources (synthetic, an application's
own) yield records or raw payloads that are already typed.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

from producers.events import EventSource, RawPayload, SourceItem
from producers.files import FileSource
from streamml.errors import RecordError

__all__ = ["Row", "numbered_rows", "row_id", "at_row"]


class Row(NamedTuple):
    """One row of a source: its 1-based number, what was read, and the item or why there is none.

    (A named tuple, not a frozen dataclass: one is made per row sent, and a
    frozen dataclass's ``__init__`` cost more than the rest of the row's handling.)
    """

    number: int
    #: The row as read (file cells before coercion, or the source's own
    #: record); ``None`` for a raw payload. A dead letter carries it.
    raw: Mapping[str, Any] | None
    #: The record (or raw payload) to send; ``None`` when ``error`` is set.
    item: SourceItem | None
    #: Why the row could not be coerced to the schema's types.
    error: RecordError | None = None


def numbered_rows(source: EventSource) -> Iterator[Row]:
    """Yield every row of ``source``; a file row that does not coerce comes with its error.

    :class:`SourceError` (an unreadable or malformed file) still ends the
    iteration: the rows after it cannot be read.
    """
    if isinstance(source, FileSource):
        for number, raw in source.rows():
            try:
                yield Row(number, raw, source.coerce(raw, number))
            except RecordError as exc:
                yield Row(number, raw, None, exc)
        return
    for number, item in enumerate(source, start=1):
        yield Row(number, None if isinstance(item, RawPayload) else item, item)


def row_id(item: SourceItem | None, id_column: str) -> str | None:
    """The id of a record as text (how ids are compared with those on a topic); ``None`` if it has none."""
    if item is None or isinstance(item, RawPayload):
        return None
    value = item.get(id_column)
    return None if value is None else str(value)


def at_row(error: RecordError, number: int) -> RecordError:
    """``error`` naming row ``number`` (the encoder knows the field, not the row)."""
    if error.row is not None:
        return error
    located = RecordError(error.reason, row=number, field=error.field)
    located.__cause__ = error
    return located
