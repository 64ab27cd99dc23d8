"""Quarantine you can read and replay: summaries of the dead-letter topic, and replays to the raw topic.

A dead letter keeps the original record (value, key, headers) and the reason
headers of :class:`~streamml.records.DeadLetterReason`. :func:`summarize`
groups them by stage and rule with examples; :func:`replay` re-sends the
originals to the raw events topic once the contract or the producer is
fixed:

- the reason headers are stripped and a ``streamml.replay.of`` header names
  the dead letter (``<dlq topic>[partition]@offset``), so the processor sees
  the record as it first arrived and everyone can tell a replay from a new
  event;
- every replay is written to the replay ledger topic (key: that position)
  after its record is acknowledged, and a dead letter already on the ledger
  is never replayed again, so a replay run can be repeated safely;
- a truncated dead letter (its record was too large to quarantine whole) is
  not replayed: its original is only at its source position, which is reported.

Conservation with replays: every record of the raw topic, replays included,
ends featurized or quarantined, and a replayed dead letter stays as
evidence. So ``raw records = featurized + quarantined`` still holds, and each
event is counted once as ``distinct events = featurized + quarantined - replayed``.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Message

from streamml.cluster import Cluster
from streamml.kafka import Deliveries, format_record, produce, record_headers
from streamml.reader import read_to_end
from streamml.records import DLQ_PREFIX, DeadLetterReason

__all__ = [
    "REPLAY_HEADER", "DeadLetter", "QuarantineSummary", "read_dead_letters", "summarize", "replay", "ReplayReport",
]

logger = logging.getLogger(__name__)

#: Header a replayed record carries: the position of the dead letter it came from.
REPLAY_HEADER = "streamml.replay.of"


@dataclass(frozen=True)
class DeadLetter:
    """One record of the dead-letter topic: where it is, why it is there, and the original."""

    position: str
    timestamp_ms: int | None
    reason: dict[str, Any]
    key: bytes | None
    value: bytes | None = field(repr=False)
    #: The original record's headers, without the reason headers.
    original_headers: tuple[tuple[str, bytes | None], ...] = field(repr=False, default=())

    @property
    def stage(self) -> str:
        return str(self.reason.get("stage", "unknown"))

    @property
    def rule(self) -> str:
        return str(self.reason.get("rule", "unknown"))

    @property
    def truncated(self) -> bool:
        return bool(self.reason.get("original.size"))

    @property
    def replay_of(self) -> str | None:
        """The dead letter this record is itself a replay of (quarantined again), if any."""
        for name, value in self.original_headers:
            if name == REPLAY_HEADER and value is not None:
                return value.decode("utf-8", errors="replace")
        return None

    def example(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "source": f"{self.reason.get('source.topic')}[{self.reason.get('source.partition')}]"
            f"@{self.reason.get('source.offset')}",
            "field": self.reason.get("field", ""),
            "message": self.reason.get("message", ""),
            "key": None if self.key is None else self.key.decode("utf-8", errors="replace"),
            "truncated": self.truncated,
        }


def _dead_letter(message: Message) -> DeadLetter:
    headers = record_headers(message) or ()
    _, timestamp = message.timestamp()
    return DeadLetter(
        position=format_record(message.topic() or "", message.partition() or 0, message.offset() or 0),
        timestamp_ms=timestamp if timestamp > 0 else None,
        reason=DeadLetterReason.read(headers),
        key=message.key(),
        value=message.value(),
        original_headers=tuple((n, v) for n, v in headers if not n.startswith(DLQ_PREFIX)),
    )


def read_dead_letters(
    cluster: Cluster, *, rule: str | None = None, since_ms: int | None = None, timeout: float = 60.0
) -> list[DeadLetter]:
    """Every dead letter (or those of ``rule``, quarantined at or after ``since_ms``), in topic order."""
    out = []
    for message in read_to_end(cluster, cluster.topics.dead_letters, timeout=timeout):
        letter = _dead_letter(message)
        if rule is not None and letter.rule != rule:
            continue
        quarantined_at = str(letter.reason.get("timestamp") or "")
        when = int(quarantined_at) if quarantined_at.isdigit() else letter.timestamp_ms
        if since_ms is not None and (when is None or when < since_ms):
            continue
        out.append(letter)
    return out


@dataclass
class QuarantineSummary:
    """Dead letters by stage and rule, with a few examples of each."""

    total: int = 0
    by_rule: Counter[tuple[str, str]] = field(default_factory=Counter)
    examples: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)
    truncated: int = 0
    #: Dead letters that are replays quarantined again.
    requarantined: int = 0
    replayed: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "truncated": self.truncated,
            "replayed": self.replayed,
            "requarantined_replays": self.requarantined,
            "rules": [
                {"stage": stage, "rule": rule, "count": count, "examples": self.examples.get((stage, rule), [])}
                for (stage, rule), count in self.by_rule.most_common()
            ],
        }


def summarize(
    letters: Iterable[DeadLetter], *, replayed: set[str] | None = None, examples: int = 3
) -> QuarantineSummary:
    """Group dead letters by ``(stage, rule)``; ``replayed`` are the positions on the replay ledger."""
    summary = QuarantineSummary()
    for letter in letters:
        summary.total += 1
        where = (letter.stage, letter.rule)
        summary.by_rule[where] += 1
        shown = summary.examples.setdefault(where, [])
        if len(shown) < examples:
            shown.append(letter.example())
        summary.truncated += letter.truncated
        summary.requarantined += letter.replay_of is not None
        summary.replayed += letter.position in (replayed or set())
    return summary


def replayed_positions(cluster: Cluster, timeout: float = 60.0) -> set[str]:
    """Positions of the dead letters already replayed (the ledger's keys)."""
    return {
        m.key().decode("utf-8", errors="replace")  # type: ignore[union-attr]
        for m in read_to_end(cluster, cluster.topics.replayed, timeout=timeout)
        if m.key() is not None
    }


@dataclass
class ReplayReport:
    """What a replay run did (or, with ``dry_run``, would do)."""

    replayed: list[str] = field(default_factory=list)
    already_replayed: list[str] = field(default_factory=list)
    #: Truncated dead letters: ``(dead letter position, source position)``.
    not_replayable: list[tuple[str, str]] = field(default_factory=list)
    dry_run: bool = False


def replay(
    cluster: Cluster, letters: Iterable[DeadLetter], *, dry_run: bool = False, timeout: float = 60.0
) -> ReplayReport:
    """Re-send ``letters`` to the raw events topic, each at most once ever (see the module docstring)."""
    report = ReplayReport(dry_run=dry_run)
    done = replayed_positions(cluster, timeout)
    todo = []
    for letter in letters:
        if letter.position in done:
            report.already_replayed.append(letter.position)
        elif letter.truncated:
            report.not_replayable.append((letter.position, letter.example()["source"]))
        else:
            todo.append(letter)
    if dry_run or not todo:
        report.replayed = [letter.position for letter in todo]
        return report
    producer = cluster.producer()
    deliveries = Deliveries()
    for letter in todo:
        headers = [*letter.original_headers, (REPLAY_HEADER, letter.position.encode())]
        produce(producer, cluster.topics.raw_events, letter.value, key=letter.key, headers=headers,
                on_delivery=deliveries)
    # The ledger is written only once the replays are acknowledged: a crash in
    # between replays them again next time (at least once), never loses one.
    deliveries.wait(producer, timeout, f"replays to {cluster.topics.raw_events}")
    ledger = Deliveries()
    for letter in todo:
        produce(producer, cluster.topics.replayed, b"", key=letter.position.encode(), on_delivery=ledger)
    ledger.wait(producer, timeout, f"the replay ledger {cluster.topics.replayed}")
    report.replayed = [letter.position for letter in todo]
    logger.info("replayed %d dead letters to %s", len(todo), cluster.topics.raw_events)
    return report
