"""Run the stream processor as a worker: start-up checks, the stored drift reference, progress, exit status.

:func:`run_worker` is what ``streamml process`` runs: it checks the topics the
configured mode needs, loads the drift monitor's reference from the monitoring
topic (:func:`stored_reference`), builds the app (:mod:`stream_processors.app`)
and runs faust's worker until SIGTERM or SIGINT, turning a crash into one
:class:`~streamml.errors.StreamMLError`. It reports a start line, which fields
become features, and the counts (:mod:`stream_processors.progress`)
periodically and when it stops. faust's, mode's and aiokafka's own log lines
are kept to warnings unless ``STREAMML_LOG_LEVEL=DEBUG``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Any, cast

import faust
import uvloop

from stream_processors.app import build_app
from stream_processors.metrics import ProcessorMetrics
from stream_processors.profiles import Reference
from stream_processors.progress import Progress
from streamml.cluster import Cluster
from streamml.config import Settings
from streamml.errors import ConfigError, KafkaClientError, RecordError, StreamMLError
from streamml.featurization import feature_notice, featurizer_check
from streamml.monitoring import REFERENCE, decode_record
from streamml.reader import read_to_end
from streamml.serde import AvroSchema, load_event_schema
from streamml.topics import Groups

__all__ = ["run_worker", "stored_reference"]

logger = logging.getLogger(__name__)

#: Libraries whose INFO lines are internals (85 at start-up): shown only at DEBUG.
_LIBRARY_LOGGERS = ("faust", "mode", "aiokafka", "kafka")


def run_worker(
    settings: Settings,
    *,
    event_schema: AvroSchema | None = None,
    writer_schemas: Iterable[AvroSchema] = (),
    report: Callable[[str], None] | None = None,
    report_every: float = 10.0,
    metrics: ProcessorMetrics | None = None,
) -> None:
    """Run the processor until SIGTERM or SIGINT, then stop cleanly and return.

    ``event_schema`` defaults to ``settings.schema_path``, checked
    (:func:`~streamml.serde.load_event_schema`, with the featurizer's check).
    ``report`` gets the start lines, the counts every ``report_every``
    seconds (0: only at the end) and the final counts. ``metrics`` is
    updated once per batch (serving it is the caller's). Raises
    :class:`~streamml.errors.StreamMLError` (``KafkaClientError`` for a
    Kafka failure) if the worker stopped because it crashed.
    """
    _quiet_libraries(settings)
    if event_schema is None:
        event_schema = load_event_schema(settings, checks=[featurizer_check(settings)])
    # The policy, not only the loop: faust's aiokafka consumer runs in a thread
    # of its own (mode.threads.ServiceThread) on a loop from new_event_loop().
    policy = asyncio.get_event_loop_policy()
    if settings.processor_event_loop == "uvloop":
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    try:
        _run(settings, event_schema, writer_schemas, report, report_every, metrics)
    finally:
        asyncio.set_event_loop_policy(policy)


def _run(
    settings: Settings,
    event_schema: AvroSchema,
    writer_schemas: Iterable[AvroSchema],
    report: Callable[[str], None] | None,
    report_every: float,
    metrics: ProcessorMetrics | None,
) -> None:
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    reference = None
    cluster = Cluster(settings)
    if settings.label_mode == "delayed":
        topics = cluster.topics
        missing = [t for t in (topics.labels, topics.features_by_event, topics.features_labelled)
                   if not cluster.partitions(t)]
        if missing:
            raise ConfigError(
                f"STREAMML_LABEL_MODE=delayed needs topics {', '.join(missing)}: run 'streamml topics create'"
            )
    if settings.drift_window_events > 0:
        if not cluster.partitions(cluster.topics.monitoring):
            # Sending to a missing topic would fail the batch (or make the broker
            # auto-create it): monitoring waits for `streamml topics create`.
            logger.warning(
                "topic %s does not exist: distribution monitoring is off (run 'streamml topics create')",
                cluster.topics.monitoring,
            )
            settings = settings.with_overrides(drift_window_events=0)
        else:
            reference = stored_reference(cluster, event_schema.name)
    progress = Progress()
    app = build_app(
        settings, event_schema=event_schema, writer_schemas=writer_schemas, reference=reference, progress=progress,
        metrics=metrics,
    )
    if report is not None:
        _announce(report, settings, event_schema, report_every)
        if report_every > 0:

            @app.timer(interval=report_every)  # type: ignore[untyped-decorator]
            async def report_progress() -> None:
                report(progress.line(_consumer_lag(app, progress)))
    worker = faust.Worker(
        app,
        loop=loop,
        quiet=True,
        loglevel=settings.log_level.upper(),
        override_logging=False,  # keep the CLI's logging setup
        redirect_stdouts=False,
    )
    # No spinner: it writes terminal escapes even to a pipe and sets the root logger to DEBUG.
    worker.spinner = None
    code: Any = 0
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:  # mode's worker always ends with sys.exit
        code = exc.code
    finally:
        if report is not None:
            report(f"stopped: {progress.line(_consumer_lag(app, progress))}")
    reason = app.crash_reason or worker.crash_reason
    if reason is not None or code not in (0, None):
        if isinstance(reason, StreamMLError):
            raise reason
        error = KafkaClientError if _is_kafka_error(reason) else StreamMLError
        what = f"{type(reason).__name__}: {reason}" if reason is not None else f"the worker exited with code {code}"
        raise error(f"stream processor {app.conf.id} stopped after a failure ({what}); see the log above") from reason
    logger.info("stream processor %s stopped", app.conf.id)


def _announce(report: Callable[[str], None], settings: Settings, schema: AvroSchema, every: float) -> None:
    topics = Cluster(settings).topics
    counts = f"counts every {every:g}s and at the end" if every > 0 else "counts at the end"
    report(
        f"processing {topics.raw_events} -> {topics.features} (dead letters: {topics.dead_letters}); "
        f"schema {schema.name} from {settings.schema_path}; group {Groups.from_settings(settings).processor}; "
        f"{counts}; Ctrl-C to stop"
    )
    report(feature_notice(schema, settings))


def _consumer_lag(app: faust.App, progress: Progress) -> int | None:
    """The lag of the partitions ``progress`` has read, from the consumer's last fetch (no request)."""
    from faust.types import TP

    def highwater(topic: str, partition: int) -> int | None:
        try:
            return cast("int | None", app.consumer.highwater(TP(topic, partition)))
        except Exception:  # noqa: BLE001 - a stopped or unassigned consumer: no lag to tell
            return None

    return progress.lag(highwater)


def _quiet_libraries(settings: Settings) -> None:
    """Keep faust's, mode's and aiokafka's internals at warnings unless debugging is asked for."""
    level = logging.getLevelName(settings.log_level.upper())
    if level > logging.DEBUG:
        for name in _LIBRARY_LOGGERS:
            logging.getLogger(name).setLevel(max(level, logging.WARNING))


def stored_reference(cluster: Cluster, stream: str, timeout: float = 30.0) -> Reference | None:
    """The newest reference of ``stream`` on the monitoring topic, or ``None``.

    So a restarted processor compares with the reference its first run froze,
    not with whatever (perhaps already drifted) events come first after the
    restart. Unreadable records are skipped.
    """
    newest: Reference | None = None
    for message in read_to_end(cluster, cluster.topics.monitoring, timeout=timeout):
        try:
            record = decode_record(message.value())
            if record.kind == REFERENCE and record.stream == stream:
                newest = Reference.from_fields(record.fields, events=record.events, origin=record.origin)
        except (RecordError, ValueError, KeyError, TypeError):
            continue
    if newest is not None:
        logger.info("drift reference of %s: the stored one (%d events, %s)", stream, newest.events, newest.origin)
    return newest


def _is_kafka_error(exc: BaseException | None) -> bool:
    from aiokafka.errors import KafkaError  # deferred like faust: only needed on failure

    return isinstance(exc, KafkaError)
