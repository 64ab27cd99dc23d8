"""The faust side of the delayed-label join: two topics in, joined feature vectors out, state in a table.

One agent reads ``features.by-event.v1`` (feature vectors waiting for their
label, written by the processor) and ``labels.v1``; both are keyed by event id
and co-partitioned, so an event's features and label meet on one partition.
:class:`JoinHandler` runs :class:`~stream_processors.labels.LabelJoin` on each
batch, writes the ``label-join`` table's store and changelogs each entry to the
partition it was read from (as the window table is, see
:mod:`stream_processors.app`), and sends each joined vector, labelled, to
``features.labelled.v1``. Outputs are delivered before the inputs' offsets
are committed (:mod:`stream_processors.delivery`), so a crash replays inputs;
the state (changelogged, recovered on start) makes a replayed label a counted
duplicate, never a second join.

:meth:`JoinHandler.sweep`, run by a timer, expires entries past the
time-to-live and sends a ``labels`` record with the counts to the monitoring
topic when they changed. A label record that cannot be decoded is quarantined
to the dead-letter topic like a raw event.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import faust

from stream_processors.dead_letters import Rejection, dead_letter
from stream_processors.delivery import HeldBatches, Output
from stream_processors.labels import JoinStep, LabelJoin, apply
from streamml.errors import SerializationError
from streamml.monitoring import LABELS, MonitoringRecord, encode_record
from streamml.records import FeatureVector, LabelRecord, RecordCodec
from streamml.topics import Topics

__all__ = ["JoinHandler", "JOIN_TABLE", "JOIN_AGENT"]

logger = logging.getLogger(__name__)

#: Name of the join table; its changelog topic is ``<app id>-label-join-changelog``.
JOIN_TABLE = "label-join"
JOIN_AGENT = "join-labels"
_JSON_HEADERS = [("content-type", b"application/json")]


class JoinHandler(HeldBatches):
    """Join one batch of feature vectors and labels (see the module doc)."""

    def __init__(
        self,
        app: faust.App,
        table: Any,
        topics: Topics,
        *,
        ttl_seconds: float,
        stream: str,
        source: str,
        dead_letter_max_bytes: int,
        report: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(app)
        self.table = table
        self.topics = topics
        self.join = LabelJoin(int(ttl_seconds * 1000))
        self.stream = stream
        self.source = source
        self.dead_letter_max_bytes = dead_letter_max_bytes
        self.report = report
        self._clock = clock
        self._vectors = RecordCodec(FeatureVector)
        self._labels = RecordCodec(LabelRecord)
        self._reported: dict[str, int] | None = None

    async def handle(self, events: Sequence[faust.EventT[Any]]) -> None:
        """Join a batch; its events stay held until every output is delivered."""
        self.hold(events)
        now_ms = self._now_ms()
        store = self.table.data
        outputs: list[Output] = []
        for event in events:
            message = event.message
            headers = _headers(message.headers)
            try:
                step = self._step(store, message, headers, now_ms)
            except SerializationError as exc:
                outputs.append(self._quarantine(message, headers, exc, now_ms))
                continue
            if step is not None:
                outputs += self._apply(store, step)
        span = f"{len(events)} join inputs" if events else "an empty batch"
        await self.send(events, span, outputs)

    def _step(self, store: Any, message: Any, headers: list[tuple[str, bytes | None]], now_ms: int) -> JoinStep | None:
        partition = message.partition
        if message.topic == self.topics.features_by_event:
            vector = self._vectors.decode(message.value, headers)
            fields = dataclasses.asdict(vector)
            return self.join.on_features(store, vector.event_id.encode(), fields, partition, now_ms)
        label = self._labels.decode(message.value, headers)
        return self.join.on_label(store, label.event_id.encode(), label.label, label.label_time, partition, now_ms)

    def _apply(self, store: Any, step: JoinStep) -> list[Output]:
        apply(store, step)
        changelog = self.table.changelog_topic.get_topic_name()
        value = None if step.entry is None else faust.serializers.codecs.dumps(self.table.value_serializer, step.entry)
        outputs: list[Output] = [(changelog, step.key, value, step.partition, None)]
        if step.joined is not None:
            encoded = self._vectors.encode(FeatureVector(**step.joined))
            outputs.append((self.topics.features_labelled, step.key, encoded, step.partition, self._vectors.headers))
        return outputs

    def _quarantine(
        self, message: Any, headers: list[tuple[str, bytes | None]], exc: SerializationError, now_ms: int
    ) -> Output:
        rule = getattr(exc, "rule", "undecodable")
        logger.warning("quarantined %s[%d]@%d: %s", message.topic, message.partition, message.offset, exc)
        timestamp = message.timestamp
        key, value, dlq_headers = dead_letter(
            message.value, message.key, headers, Rejection("decode", rule, "", str(exc)),
            topic=message.topic, partition=message.partition, offset=message.offset,
            source_timestamp_ms=int(timestamp * 1000) if timestamp else None, now_ms=now_ms,
            max_bytes=self.dead_letter_max_bytes,
        )
        return (self.topics.dead_letters, key, value, None, dlq_headers)

    async def sweep(self) -> None:
        """Expire entries past the time-to-live and report the counts when they changed."""
        now_ms = self._now_ms()
        store = self.table.data
        outputs: list[Output] = []
        for step in self.join.expire(store, now_ms):
            outputs += self._apply(store, step)
        counts = self.join.counts.as_dict()
        pending = self.join.pending(store)
        current = {**counts, **{f"waiting_{kind}": n for kind, n in pending.items()}}
        if self.report and current != self._reported:
            record = MonitoringRecord(
                kind=LABELS, stream=self.stream, source=self.source, created_at=now_ms,
                fields={"counts": counts, "waiting": pending},
            )
            key, value = encode_record(record)
            outputs.append((self.topics.monitoring, key, value, None, _JSON_HEADERS))
            self._reported = current
        if outputs:
            await self.send((), "the label-join sweep", outputs)

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)


def _headers(raw: Any) -> list[tuple[str, bytes | None]]:
    if not raw:
        return []
    return list(raw.items() if isinstance(raw, Mapping) else raw)
