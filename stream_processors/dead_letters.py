"""Dead-letter reasons of the processor (pure, no Kafka).

A quarantined record keeps its original key, value and headers; the reason is
appended as machine-readable headers, so the record can be inspected, fixed
and replayed byte for byte. The header contract (names, encoding, reading
them back) is the kernel's :class:`streamml.records.DeadLetterReason`; this
module decides what a processor rejection says.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from stream_processors.validation import Violation
from streamml.records import DEAD_LETTER_STAGES, DLQ_PREFIX, DeadLetterReason

__all__ = [
    "STAGES",
    "DLQ_PREFIX",
    "Rejection",
    "dead_letter_headers",
    "read_rejection",
]

STAGES = DEAD_LETTER_STAGES

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
    original_size: int | None = None,
    original_sha256: str = "",
) -> list[tuple[str, bytes | None]]:
    """Return ``original`` headers followed by the reason headers of ``rejection``.

    ``original_size``/``original_sha256`` are set when the dead letter keeps
    only a truncated copy of a record too large to quarantine whole.
    """
    reason = DeadLetterReason(
        stage=rejection.stage,
        rule=rejection.rule,
        field=rejection.field,
        message=rejection.message,
        violations=rejection.all_violations(),
        source_topic=topic,
        source_partition=partition,
        source_offset=offset,
        source_timestamp=source_timestamp_ms,
        timestamp=now_ms,
        original_size=original_size,
        original_sha256=original_sha256,
    )
    return reason.headers(original)


read_rejection = DeadLetterReason.read
