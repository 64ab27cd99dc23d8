"""What the stream processor has done so far, as one line a person can read (pure, no Kafka).

``streamml process`` prints :meth:`Progress.line` every few seconds and once
more when it stops, so a user sees at the default log level that events come
in, how many became features and which rules quarantined the others.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from stream_processors.batches import BatchResult, SourceRecord

__all__ = ["Progress"]


@dataclass
class Progress:
    """Running counts of one processor: consumed, featurized, quarantined by rule, read positions."""

    consumed: int = 0
    featurized: int = 0
    quarantined: Counter[str] = field(default_factory=Counter)
    #: The next offset to read, per ``(topic, partition)`` read so far.
    positions: dict[tuple[str, int], int] = field(default_factory=dict)

    def add(self, records: Sequence[SourceRecord], result: BatchResult) -> None:
        """Count one processed batch."""
        self.consumed += len(records)
        self.featurized += len(result.features)
        self.quarantined.update(result.quarantined)
        for record in records:
            self.positions[(record.topic, record.partition)] = record.offset + 1

    def lag(self, highwater: Callable[[str, int], int | None]) -> int | None:
        """Records not read yet in the partitions read so far, from ``highwater(topic, partition)``.

        ``None`` when nothing was read yet or a high watermark is unknown.
        """
        if not self.positions:
            return None
        total = 0
        for (topic, partition), position in self.positions.items():
            end = highwater(topic, partition)
            if end is None or end < 0:
                return None
            total += max(0, end - position)
        return total

    def line(self, lag: int | None = None) -> str:
        """``consumed 200, featurized 177, quarantined 23 (below_min 12, not_allowed 11), lag 0``."""
        text = f"consumed {self.consumed}, featurized {self.featurized}, quarantined {sum(self.quarantined.values())}"
        if self.quarantined:
            text += f" ({_by_rule(self.quarantined)})"
        return text if lag is None else f"{text}, lag {lag}"


def _by_rule(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{rule} {n}" for rule, n in sorted(counts.items(), key=lambda item: (-item[1], item[0])))
