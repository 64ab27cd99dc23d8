"""Dead-letter reasons of the processor (pure, no Kafka).

A quarantined record keeps its original key, value and headers; the reason is
appended as machine-readable headers, so the record can be inspected, fixed
and replayed byte for byte. The header contract (names, encoding, reading
them back) is the kernel's :class:`streamml.records.DeadLetterReason`; this
module decides what a processor rejection says.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from streamml.records import DEAD_LETTER_STAGES, DLQ_PREFIX, DeadLetterReason
from streamml.validation import Violation

__all__ = [
    "STAGES",
    "DLQ_PREFIX",
    "Rejection",
    "dead_letter_headers",
    "dead_letter",
    "read_rejection",
]

logger = logging.getLogger(__name__)

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


def dead_letter(
    value: bytes | None,
    key: bytes | None,
    original: Headers,
    rejection: Rejection,
    *,
    topic: str,
    partition: int,
    offset: int,
    source_timestamp_ms: int | None,
    now_ms: int,
    max_bytes: int,
) -> tuple[bytes | None, bytes | None, list[tuple[str, bytes | None]]]:
    """The ``(key, value, headers)`` of the dead letter of a record read at ``topic[partition]@offset``.

    A record over ``max_bytes`` would not fit one produce request: its dead
    letter keeps a prefix of the value (64 KiB) and of the key, drops the
    original headers and says how large it was and its digest; the source
    position says where the whole record is, so it is never lost silently.
    """
    size = _record_size(value, key, original)
    truncated: dict[str, Any] = {}
    if size > max_bytes:
        truncated = {"original_size": size, "original_sha256": hashlib.sha256(value or b"").hexdigest()}
        value = (value or b"")[:_TRUNCATED_VALUE_BYTES]
        key = None if key is None else key[:_TRUNCATED_KEY_BYTES]
        original = ()
        logger.warning(
            "quarantined %s[%d]@%d is %d bytes: its dead letter keeps the first %d bytes of the value",
            topic, partition, offset, size, len(value),
        )
    headers = dead_letter_headers(
        original, rejection, topic=topic, partition=partition, offset=offset,
        source_timestamp_ms=source_timestamp_ms, now_ms=now_ms, **truncated,
    )
    return key, value, headers


#: What a truncated dead letter keeps of an oversized record.
_TRUNCATED_VALUE_BYTES = 64 * 1024
_TRUNCATED_KEY_BYTES = 1024


def _record_size(value: bytes | None, key: bytes | None, headers: Headers) -> int:
    """Bytes of a record as a produce request carries them (value, key, header names and values)."""
    size = len(value or b"") + len(key or b"")
    for name, header in headers:
        size += len(name) + len(header or b"")
    return size


read_rejection = DeadLetterReason.read
