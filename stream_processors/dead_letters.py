"""Dead-letter reasons and the headers that carry them (pure, no Kafka).

A quarantined record keeps its original key, value and headers; the reason is
appended as machine-readable headers, so the record can be inspected, fixed
and replayed byte for byte::

    streamml.dlq.stage             decode | validate | featurize
    streamml.dlq.rule              first rule broken (e.g. undecodable, below_min)
    streamml.dlq.field             field of that rule, empty when none
    streamml.dlq.message           human-readable explanation
    streamml.dlq.violations        JSON list of every violation [{field, rule, message}]
    streamml.dlq.source.topic      where the record was read
    streamml.dlq.source.partition
    streamml.dlq.source.offset
    streamml.dlq.source.timestamp  the record's own timestamp, epoch ms (empty if none)
    streamml.dlq.timestamp         when it was quarantined, epoch ms

The reason headers come after the original ones; a record quarantined twice
(after a replay) carries both reasons and :func:`streamml.serde.header_value`
returns the newest.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from streamml.dead_letters import DLQ_PREFIX, read_rejection

from stream_processors.validation import Violation

__all__ = [
    "STAGES",
    "DLQ_PREFIX",
    "Rejection",
    "dead_letter_headers",
    "read_rejection",
]

STAGES = ("decode", "validate", "featurize")

Headers = Sequence[tuple[str, bytes | None]]


@dataclass(frozen=True)
class Rejection:
    """Why a record was quarantined: the stage, the first rule broken, and all of them."""

    stage: str
    rule: str
    field: str
    message: str
    violations: tuple[Violation, ...] = ()

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"unknown dead-letter stage {self.stage!r}; expected one of {STAGES}")

    @classmethod
    def from_violations(cls, violations: Sequence[Violation]) -> Rejection:
        """Reject at the validate stage; the first violation names the rule and field."""
        if not violations:
            raise ValueError("a validation rejection needs at least one violation")
        first = violations[0]
        message = "; ".join(v.message for v in violations)
        return cls("validate", first.rule, first.field, message, tuple(violations))

    def all_violations(self) -> list[dict[str, str]]:
        """Every violation as dicts; a decode or featurize rejection is its own single one."""
        if self.violations:
            return [v.as_dict() for v in self.violations]
        return [{"field": self.field, "rule": self.rule, "message": self.message}]


def dead_letter_headers(
    original: Headers | None,
    rejection: Rejection,
    *,
    topic: str,
    partition: int,
    offset: int,
    source_timestamp_ms: int | None,
    now_ms: int,
) -> list[tuple[str, bytes | None]]:
    """Return ``original`` headers followed by the reason headers of ``rejection``."""
    headers = list(original or ())
    reason = {
        "stage": rejection.stage,
        "rule": rejection.rule,
        "field": rejection.field,
        "message": rejection.message,
        "violations": json.dumps(rejection.all_violations(), separators=(",", ":")),
        "source.topic": topic,
        "source.partition": str(partition),
        "source.offset": str(offset),
        "source.timestamp": "" if source_timestamp_ms is None else str(source_timestamp_ms),
        "timestamp": str(now_ms),
    }
    headers.extend((DLQ_PREFIX + name, value.encode("utf-8", errors="replace")) for name, value in reason.items())
    return headers
