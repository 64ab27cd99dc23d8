"""The producer applications use to publish their own events.

Example::

    from producers import EventProducer

    with EventProducer(settings) as producer:
        producer.send({"event_id": "e1", "customer_id": "c0042", ...})
    # leaving the block flushed: every record is delivered or counted as failed

Records are Avro-encoded with the settings' schema and carry the headers that
name the writer schema. The key defaults to the record's ``settings.key_field``
so all events of one key land on one partition, in order.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message

from streamml.config import Settings
from streamml.errors import KafkaClientError, RecordError
from streamml.kafka import describe_error, make_producer, produce
from streamml.serde import AvroSchema, AvroSerde
from streamml.topics import Topics

__all__ = ["EventProducer", "ProducerStats", "record_key"]

logger = logging.getLogger(__name__)

#: Delivery failure reasons kept for reporting; the rest are only counted.
MAX_FAILURE_REASONS = 5

#: Headers as the client takes them.
_Headers = list[tuple[str, bytes | None]]

#: Records sent between two serves of the delivery reports in :meth:`EventProducer.send`
#: (a ``poll(0)`` after every record cost more than the report it served).
POLL_EVERY = 256


@dataclass(frozen=True)
class ProducerStats:
    """Counts of one producer since it was created (a snapshot)."""

    #: Records handed to the client.
    sent: int
    #: Records the broker acknowledged.
    delivered: int
    #: Records whose delivery failed for good (after the client's retries).
    failed: int
    #: Value bytes handed to the client.
    bytes: int
    #: The first few delivery failure reasons, ``topic[partition]: error``.
    failures: tuple[str, ...] = ()

    @property
    def pending(self) -> int:
        """Records neither delivered nor failed yet."""
        return self.sent - self.delivered - self.failed


def record_key(record: Mapping[str, Any], key_field: str) -> str:
    """The key a record is sent with: its ``key_field`` as text; :class:`RecordError` if it has none."""
    value = record.get(key_field)
    if value is None:
        raise RecordError("the record has no key value", field=key_field)
    return str(value)


class EventProducer:
    """Publish schema-checked events to Kafka with delivery accounting.

    ``topic`` defaults to the pipeline's raw events topic and ``schema`` to the
    schema at ``settings.schema_path``. ``client_config`` overrides librdkafka
    properties (e.g. ``linger.ms``). Not thread-safe: use one per thread.
    Delivery reports are served by :meth:`send`, :meth:`poll` and :meth:`flush`.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        topic: str | None = None,
        schema: AvroSchema | None = None,
        client_config: Mapping[str, Any] | None = None,
    ) -> None:
        self.settings = settings
        self.topic = topic or Topics.from_settings(settings).raw_events
        self.serde = AvroSerde(schema or AvroSchema.from_file(settings.schema_path))
        self._headers: _Headers = list(self.serde.headers)
        self._producer = make_producer(settings, **dict(client_config or {}))
        # Looked up once: send() runs per record.
        self._encode = self.serde.encode
        self._key_field = settings.key_field
        self._report = self._on_delivery  # one bound method for every record, not one per send
        self._unpolled = 0
        self._sent = 0
        self._delivered = 0
        self._failed = 0
        self._bytes = 0
        self._failures: list[str] = []

    @property
    def stats(self) -> ProducerStats:
        """Counts so far; call :meth:`poll` or :meth:`flush` to bring them up to date."""
        return ProducerStats(
            sent=self._sent,
            delivered=self._delivered,
            failed=self._failed,
            bytes=self._bytes,
            failures=tuple(self._failures),
        )

    def send(self, record: Mapping[str, Any], *, key: str | None = None) -> None:
        """Encode ``record`` and queue it for delivery.

        ``key`` defaults to ``str(record[settings.key_field])``. Raises
        :class:`RecordError` (with ``field``) if the record does not fit the
        schema or has no key, and :class:`KafkaClientError` if the client
        refuses the record. Delivery itself is asynchronous: see :attr:`stats`.
        """
        value = self._encode(record)  # RecordError names the failing field
        if key is None:
            key = record_key(record, self._key_field)
        self._produce(value, key.encode("utf-8"), self._headers)

    def send_raw(
        self,
        value: bytes,
        *,
        key: str | None = None,
        headers: Sequence[tuple[str, bytes]] | None = None,
    ) -> None:
        """Queue ``value`` as it is, unchecked: for fault injection and replays.

        ``headers=None`` sends the schema headers (the payload claims to be a
        record of this schema); pass ``()`` to send none.
        """
        self._produce(
            value,
            key.encode("utf-8") if key is not None else None,
            self._headers if headers is None else list(headers),
        )

    def connect(self, timeout: float = 2.0) -> bool:
        """Ask the broker for the topic's metadata, twice, within ``timeout`` seconds; ``True`` if it answered.

        Not needed for correctness, only for a quick first delivery: an
        idempotent producer asks for its producer id when a metadata answer
        arrives while a broker connection is up. The first answer comes over
        the bootstrap connection, which librdkafka drops once the answer
        names the brokers, so the id then waits for librdkafka's retry timer
        (500 ms) and with it every record. The second round trip, over a
        named broker, gets the id at once. An unreachable broker only costs
        the wait: records are queued and ``flush`` reports them as before.
        """
        deadline = time.monotonic() + timeout
        for _ in range(2):
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            try:
                self._producer.list_topics(self.topic, timeout=left)
            except KafkaException as exc:
                logger.debug("no metadata for %s within %gs: %s", self.topic, timeout, describe_error(exc))
                return False
        return True

    def poll(self, timeout: float = 0.0) -> None:
        """Serve delivery reports, waiting up to ``timeout`` seconds for one."""
        self._producer.poll(timeout)

    def flush(self, timeout: float = 30.0) -> ProducerStats:
        """Wait until every queued record is delivered or failed; return the stats.

        Raises :class:`KafkaClientError` if records are still undelivered after
        ``timeout`` seconds (the broker is unreachable or too slow). Failed
        deliveries do not raise: they are in ``stats.failed`` and ``failures``.
        """
        remaining = self._producer.flush(timeout)
        if remaining:
            raise KafkaClientError(
                f"{remaining} records to {self.topic} still undelivered after {timeout:g}s "
                f"(is the broker at {self.settings.bootstrap_servers} reachable?)"
            )
        return self.stats

    def close(self, timeout: float = 30.0) -> ProducerStats:
        """Flush; the producer stays usable, but callers should stop here."""
        return self.flush(timeout)

    def __enter__(self) -> EventProducer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.flush()
            return
        # Records sent before the error are still worth delivering, but a flush
        # failure must not hide the error that ended the block.
        try:
            self.flush()
        except KafkaClientError as flush_error:
            logger.warning("while handling %s: %s", type(exc).__name__, flush_error)

    def _produce(self, value: bytes, key: bytes | None, headers: _Headers) -> None:
        """Queue one record; serve the delivery reports every :data:`POLL_EVERY` records."""
        produce(self._producer, self.topic, value, key=key, headers=headers, on_delivery=self._report, poll=False)
        self._sent += 1
        self._bytes += len(value)
        self._unpolled += 1
        if self._unpolled >= POLL_EVERY:
            self._unpolled = 0
            self._producer.poll(0)

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            self._delivered += 1
            return
        self._failed += 1
        where = f"{msg.topic()}[{msg.partition()}]"
        if len(self._failures) < MAX_FAILURE_REASONS:
            self._failures.append(f"{where}: {err.str()}")
        logger.warning("delivery to %s failed: %s", where, err.str())
