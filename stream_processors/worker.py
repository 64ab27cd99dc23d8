"""Run the stream processor as a worker: start-up checks, the stored drift reference, exit status.

:func:`run_worker` is what ``streamml process`` runs: it checks the topics the
configured mode needs, loads the drift monitor's reference from the monitoring
topic (:func:`stored_reference`), builds the app (:mod:`stream_processors.app`)
and runs faust's worker until SIGTERM or SIGINT, turning a crash into one
:class:`~streamml.errors.StreamMLError`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

import faust

from stream_processors.app import build_app
from stream_processors.profiles import Reference
from streamml.cluster import Cluster
from streamml.config import Settings
from streamml.errors import ConfigError, KafkaClientError, RecordError, StreamMLError
from streamml.monitoring import REFERENCE, decode_record
from streamml.reader import read_to_end
from streamml.serde import AvroSchema

__all__ = ["run_worker", "stored_reference"]

logger = logging.getLogger(__name__)


def run_worker(
    settings: Settings,
    *,
    event_schema: AvroSchema | None = None,
    writer_schemas: Iterable[AvroSchema] = (),
) -> None:
    """Run the processor until SIGTERM or SIGINT, then stop cleanly and return.

    Raises :class:`~streamml.errors.StreamMLError` (``KafkaClientError`` for a
    Kafka failure) if the worker stopped because it crashed.
    """
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
            schema = event_schema or AvroSchema.from_file(settings.schema_path)
            reference = stored_reference(cluster, schema.name)
    app = build_app(settings, event_schema=event_schema, writer_schemas=writer_schemas, reference=reference)
    worker = faust.Worker(
        app,
        loop=loop,
        quiet=True,
        loglevel=settings.log_level.upper(),
        override_logging=False,  # keep the CLI's logging setup
        redirect_stdouts=False,
    )
    code: Any = 0
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:  # mode's worker always ends with sys.exit
        code = exc.code
    reason = app.crash_reason or worker.crash_reason
    if reason is not None or code not in (0, None):
        if isinstance(reason, StreamMLError):
            raise reason
        error = KafkaClientError if _is_kafka_error(reason) else StreamMLError
        what = f"{type(reason).__name__}: {reason}" if reason is not None else f"the worker exited with code {code}"
        raise error(f"stream processor {app.conf.id} stopped after a failure ({what}); see the log above") from reason
    logger.info("stream processor %s stopped", app.conf.id)


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
