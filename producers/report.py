"""What a :func:`~producers.runner.produce` run did: :class:`ProduceReport` and how it is made."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from producers.app import ProducerStats
from producers.events import EventSource
from producers.labels import LabelProducer

__all__ = ["ProduceReport", "RowCounts", "make_report"]


@dataclass(frozen=True)
class ProduceReport:
    """What one :func:`produce` run did (also passed, partial, to ``on_progress``)."""

    source: str
    topic: str
    sent: int
    delivered: int
    failed: int
    #: Events made bad on purpose by the source (fault injection), of ``sent``.
    injected_bad: int
    elapsed: float
    #: Achieved rate, events sent per second (the wait for the last delayed
    #: labels after the events were flushed is not counted).
    rate: float
    bytes: int = 0
    injected: Mapping[str, int] = field(default_factory=dict)
    #: The first few delivery failure reasons (events first, then labels).
    failures: tuple[str, ...] = ()
    #: Delayed-label mode: the labels topic, the label records sent to it
    #: (duplicates included), delivered and failed, and the duplicates sent.
    labels_topic: str = ""
    labels_sent: int = 0
    labels_delivered: int = 0
    labels_failed: int = 0
    label_duplicates: int = 0
    #: Rows: read from the source, left out because their id is already on
    #: the topic (resume), skipped as bad, and sent to ``dead_letter_topic``
    #: as bad (of which ``dead_letters_delivered`` were acknowledged).
    rows: int = 0
    already_on_topic: int = 0
    skipped: int = 0
    dead_letter_topic: str = ""
    dead_lettered: int = 0
    dead_letters_delivered: int = 0

    @property
    def ok(self) -> bool:
        """True when every sent event, and every sent label, was delivered."""
        return (
            self.failed == 0
            and self.delivered == self.sent
            and self.labels_failed == 0
            and self.labels_delivered == self.labels_sent
            and self.dead_letters_delivered == self.dead_lettered
        )

    def summary(self) -> str:
        """One line for a terminal or log."""
        bad = f", {self.injected_bad} deliberately bad" if self.injected_bad else ""
        failed = f", {self.failed} FAILED" if self.failed else ""
        line = (
            f"{self.sent} events sent to {self.topic}, {self.delivered} delivered{failed}{bad} "
            f"in {self.elapsed:.1f}s ({self.rate:,.0f} events/s, {self.bytes / 1e6:.1f} MB)"
        )
        if self.labels_sent:
            duplicates = f" ({self.label_duplicates} duplicates)" if self.label_duplicates else ""
            labels_failed = f", {self.labels_failed} FAILED" if self.labels_failed else ""
            line += (
                f"; {self.labels_sent} labels sent to {self.labels_topic}{duplicates}, "
                f"{self.labels_delivered} delivered{labels_failed}"
            )
        if self.already_on_topic:
            line += f"; {self.already_on_topic} rows already on the topic, not sent again"
        if self.skipped:
            line += f"; {self.skipped} bad rows skipped"
        if self.dead_lettered:
            line += (
                f"; {self.dead_lettered} bad rows sent to {self.dead_letter_topic}, "
                f"{self.dead_letters_delivered} delivered"
            )
        return line


@dataclass
class RowCounts:
    """What became of the rows read so far, besides being sent (updated by the run)."""

    rows: int = 0
    already_on_topic: int = 0
    skipped: int = 0
    dead_lettered: int = 0


def make_report(
    source: EventSource,
    topic: str,
    stats: ProducerStats,
    elapsed: float,
    *,
    labels: LabelProducer | None = None,
    events_elapsed: float | None = None,
    counts: RowCounts | None = None,
    dead_letters: tuple[str, ProducerStats] | None = None,
) -> ProduceReport:
    """The report of a run so far; ``dead_letters`` is the dead-letter topic and its producer's stats."""
    counts = counts or RowCounts()
    injected = dict(source.injected)
    rate_elapsed = elapsed if events_elapsed is None else events_elapsed
    label_stats = labels.stats if labels is not None else None
    return ProduceReport(
        source=source.name,
        topic=topic,
        sent=stats.sent,
        delivered=stats.delivered,
        failed=stats.failed,
        injected_bad=sum(injected.values()),
        elapsed=elapsed,
        rate=stats.sent / rate_elapsed if rate_elapsed > 0 else 0.0,
        bytes=stats.bytes,
        injected=injected,
        failures=stats.failures + (label_stats.failures if label_stats is not None else ()),
        labels_topic=labels.topic if labels is not None else "",
        labels_sent=label_stats.sent if label_stats is not None else 0,
        labels_delivered=label_stats.delivered if label_stats is not None else 0,
        labels_failed=label_stats.failed if label_stats is not None else 0,
        label_duplicates=labels.duplicates_sent if labels is not None else 0,
        rows=counts.rows,
        already_on_topic=counts.already_on_topic,
        skipped=counts.skipped,
        dead_letter_topic=dead_letters[0] if dead_letters is not None else "",
        dead_lettered=dead_letters[1].sent if dead_letters is not None else 0,
        dead_letters_delivered=dead_letters[1].delivered if dead_letters is not None else 0,
    )


