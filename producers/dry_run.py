"""Check a whole source against its schema without a broker: what ``produce --dry-run`` does.

Every row goes through exactly what :func:`~producers.runner.produce` does to
it before sending: coercion to the schema's types, Avro encoding and the
record key. The data contract (required, min/max, allowed values) is not
checked here: it is the stream processor's, applied when events are consumed,
where a breaking event is quarantined with its reason rather than refused.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from itertools import islice

from producers.app import record_key
from producers.events import EventSource, RawPayload
from producers.rejections import SHOWN_REJECTIONS
from producers.rows import at_row, numbered_rows
from streamml.errors import RecordError, SerializationError
from streamml.serde import AvroSerde

__all__ = ["DryRunReport", "DryRunFailed", "dry_run"]


class DryRunFailed(SerializationError):
    """A dry run found rows that do not fit the schema (exit 2: fix the file before sending it)."""

    exit_code = 2


@dataclass(frozen=True)
class DryRunReport:
    """What a dry run found."""

    source: str
    schema: str
    #: Rows read.
    rows: int
    #: Rows that do not fit, by rule (``coercion``, ``encoding``).
    bad: Counter[str] = field(default_factory=Counter)
    #: The first problems, one line each (``row 202, field 'salary': ...``).
    problems: tuple[str, ...] = ()
    #: Raw payloads (injected faults) sent as they are, not checked.
    raw: int = 0

    @property
    def failed(self) -> int:
        return sum(self.bad.values())

    @property
    def ok(self) -> bool:
        return self.failed == 0

    def summary(self) -> str:
        """One line: rows read, how many fit, and what was checked."""
        rules = ", ".join(f"{n} {rule}" for rule, n in sorted(self.bad.items()))
        bad = f"{self.failed} do not ({rules})" if self.failed else "all fit"
        raw = f", {self.raw} raw payloads not checked" if self.raw else ""
        return (
            f"dry run of {self.source}: {self.rows} rows read, {bad}{raw}; checked: coercion to the types of "
            f"schema {self.schema}, Avro encoding, record key (the data contract is checked by 'streamml process'); "
            "nothing sent"
        )


def dry_run(
    source: EventSource, *, key_field: str, limit: int | None = None, shown: int = SHOWN_REJECTIONS
) -> DryRunReport:
    """Read up to ``limit`` rows of ``source`` and check each one as :func:`produce` would; send nothing."""
    serde = AvroSerde(source.schema)
    rows = raw = 0
    bad: Counter[str] = Counter()
    problems: list[str] = []
    for row in islice(numbered_rows(source), limit):
        rows += 1
        error, rule = row.error, "coercion"
        if error is None:
            if isinstance(row.item, RawPayload):
                raw += 1
                continue
            assert row.item is not None  # a row without an error has its item
            try:
                serde.encode(row.item)
                record_key(row.item, key_field)
            except RecordError as exc:
                error, rule = at_row(exc, row.number), "encoding"
        if error is not None:
            bad[rule] += 1
            if len(problems) < shown:
                problems.append(f"{error} [{rule}]")
    return DryRunReport(source.name, source.schema.name, rows, bad, tuple(problems), raw)
