"""The faust wiring: raw events in, features and dead letters out, windows in a table.

All record handling is done by :class:`~stream_processors.pipeline.BatchProcessor`
on whole batches (faust's per-event cost is high); this module only moves
bytes between Kafka and that function and keeps the window state in a faust
table.

At-least-once: an offset is committed only after every output of its batch
(features, dead letters, changelog records, monitoring records) is delivered,
see :mod:`stream_processors.delivery`.

Window state and partitions: faust's ``Table.__setitem__`` sends the changelog
record to the partition of ``current_event()``; inside a ``take_events`` batch
that is not the event that touched the key. The handler therefore writes the
store and calls ``Table.send_changelog`` itself, with the partition of the
source record, so a key's state is changelogged to (and recovered with) the
partition its events come from.

Delayed labels (``STREAMML_LABEL_MODE=delayed``): the processor also sends
each feature vector without a label to ``features.by-event.v1``, keyed by
event id; a second agent reads that topic and ``labels.v1`` (co-partitioned
by event id) and joins them in the ``label-join`` table
(:mod:`stream_processors.label_join`).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, cast

import faust

from stream_processors.batches import SourceRecord
from stream_processors.delivery import HeldBatches, Output
from stream_processors.label_join import JOIN_AGENT, JOIN_TABLE, JoinHandler
from stream_processors.metrics import ProcessorMetrics, QuarantineBursts
from stream_processors.pipeline import BatchProcessor
from stream_processors.profiles import Reference
from stream_processors.progress import Progress
from stream_processors.recovery import complete_recovery
from streamml.cluster import Cluster
from streamml.config import Settings
from streamml.kafka import faust_broker_credentials, faust_broker_url
from streamml.serde import AvroSchema
from streamml.topics import WINDOW_TABLE, Groups, Topics

__all__ = ["build_app", "BatchHandler", "WINDOW_TABLE", "AGENT_NAME"]

logger = logging.getLogger(__name__)

AGENT_NAME = "process-events"
#: Longest a partial batch waits for more events, seconds.
BATCH_WITHIN = 0.2


class BatchHandler(HeldBatches):
    """Process one ``take_events`` batch and send its outputs (see the module doc)."""

    def __init__(
        self,
        app: faust.App,
        processor: BatchProcessor,
        table: Any,
        topics: Topics,
        *,
        monitoring: bool = False,
        delayed_labels: bool = False,
        progress: Progress | None = None,
        metrics: ProcessorMetrics | None = None,
    ) -> None:
        super().__init__(app)
        self.processor = processor
        self.table = table
        self.topics = topics
        self.monitoring = monitoring
        self.delayed_labels = delayed_labels
        self.progress = Progress() if progress is None else progress
        self.metrics = metrics
        self.bursts = QuarantineBursts()

    async def handle(self, events: Sequence[faust.EventT[Any]]) -> None:
        """Process a batch, hand its outputs to the producer, and return.

        The events stay unacked (held) until every output is delivered; that
        wait runs in the background so the next batch is processed meanwhile.
        """
        started = time.perf_counter()
        self.hold(events)
        records = [_source_record(event) for event in events]
        # The store, not the table: table reads go through sensors per key.
        store = self.table.data
        result = self.processor.process_batch(records, store, _committed(self.app, self.topics.raw_events))
        self.progress.add(records, result)
        changelog = self.table.changelog_topic.get_topic_name()
        topics = self.topics
        outputs: list[Output] = []
        for key, update in result.window_updates.items():
            store[key] = update.state  # live object; recovery restores the dumped form
            # JSON, which the table's codec reads back on recovery.
            outputs.append((changelog, key, update.value, update.partition, None))
        # Output headers may have None values (dead letters keep their source's headers).
        outputs += [(topics.features, o.key, o.value, o.partition, o.headers) for o in result.features]
        if self.delayed_labels:
            # Keyed by event id, partition left to aiokafka's murmur2: where the labels of the same ids go.
            outputs += [(topics.features_by_event, o.key, o.value, None, o.headers) for o in result.awaiting_label]
        outputs += [(topics.dead_letters, o.key, o.value, None, o.headers) for o in result.dead_letters]
        if self.monitoring:
            outputs += [(topics.monitoring, o.key, o.value, None, o.headers) for o in result.monitoring]
        await self.send(events, _span(records), outputs)
        if self.metrics is not None:
            self.metrics.observe_batch(topics.raw_events, records, result, time.perf_counter() - started)
        self.bursts.observe(records, result)
        logger.debug(
            "batch %s: %d features, %d dead letters", _span(records), len(result.features), len(result.dead_letters)
        )


def _committed(app: faust.App, topic: str) -> dict[int, int]:
    """``partition -> committed offset`` of ``topic`` as this worker last committed it (no request).

    faust keeps it in ``Consumer._committed_offset`` (no public accessor); it
    lets the window journal forget records that can no longer be replayed.
    Empty (nothing pruned but by the journal's bound) if faust changes.
    """
    offsets = getattr(app.consumer, "_committed_offset", None) or {}
    return {tp.partition: offset for tp, offset in offsets.items() if tp.topic == topic and offset is not None}


def _span(records: list[SourceRecord]) -> str:
    return f"{records[0].position}..{records[-1].position}" if records else "an empty batch"


def _source_record(event: faust.EventT[Any]) -> SourceRecord:
    message = event.message
    raw_headers = message.headers or ()
    headers = raw_headers.items() if isinstance(raw_headers, Mapping) else raw_headers
    timestamp = message.timestamp
    return SourceRecord(
        value=message.value,
        key=message.key,
        headers=tuple(headers),
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        timestamp_ms=int(timestamp * 1000) if timestamp else None,
    )


def build_app(
    settings: Settings,
    *,
    event_schema: AvroSchema | None = None,
    writer_schemas: Iterable[AvroSchema] = (),
    reference: Reference | None = None,
    progress: Progress | None = None,
    metrics: ProcessorMetrics | None = None,
) -> faust.App:
    """Return the stream processor's faust app (not started).

    The pipeline topics must exist (``streamml topics create``); faust only
    creates its internal window changelog topic. ``event_schema`` defaults to
    ``settings.schema_path``; ``writer_schemas`` are other schemas producers
    may write with; ``reference`` is the drift monitor's reference from an
    earlier run (:func:`stored_reference`). ``progress`` counts what the
    events agent does; ``metrics``, if given, is updated once per batch.
    """
    groups = Groups.from_settings(settings)
    #: Names this worker in its monitoring records.
    worker_name = f"{groups.processor}@{socket.gethostname()}:{os.getpid()}"
    processor = BatchProcessor.from_settings(
        settings,
        event_schema=event_schema,
        writer_schemas=writer_schemas,
        monitor_source=worker_name,
        reference=reference,
    )
    topics = Topics.from_settings(settings)
    session = settings.session_timeout_ms / 1000
    (settings.home / "faust").mkdir(parents=True, exist_ok=True)  # faust makes only the last level
    app = faust.App(
        groups.processor,
        broker=faust_broker_url(settings),
        broker_credentials=faust_broker_credentials(settings),
        store="memory://",
        # Not the working directory (faust's default): tables are in memory, but faust still makes its data dir.
        datadir=str(settings.home / "faust" / "{conf.name}"),
        autodiscover=False,
        web_enabled=False,  # several workers on one host would fight over the port
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        topic_disable_leader=True,  # one fewer internal topic; the leader topic is unused here
        # Short session: the embedded broker makes a first join wait about
        # half of it (docs/embedded-broker.md#first-group-join); the request timeout must not be shorter.
        broker_session_timeout=session,
        broker_heartbeat_interval=max(session / 6, 0.3),
        broker_rebalance_timeout=session,
        broker_request_timeout=max(90.0, session * 2),
        consumer_auto_offset_reset="earliest",
        # Everything processed since the last commit is processed again after a
        # crash: a short interval keeps that under a second of input
        # (docs/delivery-guarantees.md; faust's default is 2.8 s).
        broker_commit_interval=settings.processor_commit_interval_seconds,
        producer_acks=-1,
        producer_linger_ms=5,
        stream_buffer_maxsize=max(4096, 4 * settings.processor_batch_size),
        # On a stop (and a revocation) faust waits, before its final commit,
        # until every message handed to a stream is acked (Consumer.wait_empty,
        # from App._stop_consumer); BatchHandler's holds make that include the
        # batches whose deliveries are still in flight. It is faust's default:
        # pinned because without it a stop could commit before their acks.
        stream_wait_empty=True,
        # faust checks a table's persisted changelog offset against the end
        # ListOffsets reports, which the embedded broker under-reports: a worker
        # given a changelog partition back in a rebalance crashed with
        # ConsistencyError (26 > 24) in the fault tier's rebalance storm.
        # complete_recovery (stream_processors.recovery) rebuilds the store from
        # the changelog read to its real end, so the check guards nothing here.
        recovery_consistency_check=False,
    )
    # internal=False and raw codecs: faust neither declares the pipeline topics
    # nor decodes their records (the pipeline needs the original bytes).
    raw_codecs: dict[str, Any] = {"key_serializer": "raw", "value_serializer": "raw", "internal": False}
    source = app.topic(topics.raw_events, **raw_codecs)
    delayed = settings.label_mode == "delayed"
    windows = app.Table(
        WINDOW_TABLE,
        default=None,
        partitions=settings.partitions,
        key_type=bytes,  # record keys as they come: the "raw" codec, both ways
        # value type unset: JSON, which WindowState.dump produces
    )
    handler = BatchHandler(
        app,
        processor,
        windows,
        topics,
        monitoring=processor.monitor is not None,
        delayed_labels=delayed,
        progress=progress,
        metrics=metrics,
    )
    batch_size = settings.processor_batch_size
    tables = [windows]
    if delayed:
        tables.append(_add_label_join(app, settings, topics, processor, source=worker_name, metrics=metrics))
    cluster = Cluster(settings)

    @app.on_rebalance_complete.connect  # type: ignore[arg-type]  # mode's receiver type wants a signal kwarg
    async def complete_table_recovery(sender: Any, **kwargs: Any) -> None:
        # Before the streams resume: see stream_processors.recovery (the embedded broker's ListOffsets).
        for table in tables:
            await complete_recovery(app, table, cluster)
        assigned = sorted(f"{tp.topic}[{tp.partition}]" for tp in app.consumer.assignment())
        logger.info(
            "rebalance complete, assigned: %s", ", ".join(assigned) or "nothing",
            extra={"event": "rebalance", "assigned": assigned},
        )

    @app.agent(source, name=AGENT_NAME)
    async def process_events(stream: faust.StreamT[Any]) -> None:
        # An agent's stream is a faust.Stream; the StreamT protocol lacks take_events.
        batches = cast("faust.Stream[Any]", stream).take_events(batch_size, within=BATCH_WITHIN)
        async for events in batches:
            await handler.handle(events)

    logger.info(
        "stream processor %s: %s -> %s, dead letters to %s",
        app.conf.id,
        topics.raw_events,
        topics.features,
        topics.dead_letters,
    )
    return app


def _add_label_join(
    app: faust.App, settings: Settings, topics: Topics, processor: BatchProcessor, *, source: str,
    metrics: ProcessorMetrics | None = None,
) -> Any:
    """The delayed-label join: an agent over the by-event features and the labels, a table, a sweep timer.

    Returns the join table.
    """
    table = app.Table(JOIN_TABLE, default=None, partitions=settings.partitions, key_type=bytes)
    handler = JoinHandler(
        app,
        table,
        topics,
        ttl_seconds=settings.label_ttl_seconds,
        stream=processor.schema.name,
        source=source,
        dead_letter_max_bytes=settings.dead_letter_max_bytes,
        report=processor.monitor is not None,  # the monitoring topic exists
    )
    if metrics is not None:
        metrics.watch_label_join(lambda: handler.join.counts.as_dict())
    raw_codecs: dict[str, Any] = {"key_serializer": "raw", "value_serializer": "raw", "internal": False}
    channel = app.topic(topics.features_by_event, topics.labels, **raw_codecs)
    batch_size = settings.processor_batch_size

    @app.agent(channel, name=JOIN_AGENT)
    async def join_labels(stream: faust.StreamT[Any]) -> None:
        batches = cast("faust.Stream[Any]", stream).take_events(batch_size, within=BATCH_WITHIN)
        async for events in batches:
            await handler.handle(events)

    @app.timer(interval=max(0.5, min(settings.label_ttl_seconds / 10, 5.0)))  # type: ignore[untyped-decorator]
    async def sweep_labels() -> None:
        await handler.sweep()

    logger.info(
        "delayed labels: %s + %s -> %s, time-to-live %gs",
        topics.features_by_event, topics.labels, topics.features_labelled, settings.label_ttl_seconds,
    )
    return table
