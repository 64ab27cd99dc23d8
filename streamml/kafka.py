"""Kafka client setup: one source of connection settings, several client formats.

confluent-kafka (librdkafka) serves the producer, the learner, the scorer, the
model subscriber and the admin tools; faust runs on aiokafka. Both are
configured from the same :class:`~streamml.config.Settings` here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol, TypeVar, cast

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from streamml.client_errors import CLIENT_ERRORS, librdkafka_log_level
from streamml.config import Settings
from streamml.errors import DecodeError, KafkaClientError
from streamml.security import faust_credentials, librdkafka_security

__all__ = [
    "connection_config",
    "make_producer",
    "make_consumer",
    "make_admin",
    "faust_broker_url",
    "faust_broker_credentials",
    "format_record",
    "describe_error",
    "kafka_error",
    "produce",
    "Deliveries",
    "decoded",
    "store_offsets",
    "record_headers",
]

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)

#: How long one wait for queue space lasts when librdkafka's local queue is full.
QUEUE_FULL_WAIT = 0.5

logger = logging.getLogger(__name__)


def connection_config(settings: Settings) -> dict[str, Any]:
    """Return the librdkafka connection properties (servers, security protocol, SASL, TLS).

    Holds secrets in clear (SASL and key passwords): never log the result.
    """
    config: dict[str, Any] = {
        "bootstrap.servers": settings.bootstrap_servers,
        # librdkafka writes its log to stderr itself: a line per failed
        # connection attempt floods a terminal when the broker is away. Off
        # unless debug logging is asked for; errors come through error_cb.
        # (A Python logger callback is avoided: it can deadlock on client close.)
        "log_level": librdkafka_log_level(settings.log_level),
        "error_cb": CLIENT_ERRORS,
        # Never let a metadata request create a topic: the embedded broker
        # (and a Kafka with auto.create.topics.enable) would make it with the
        # broker's default partitions and configs, not the pipeline's
        # (docs/embedded-broker.md#auto-create). Topics come from `streamml topics create`.
        "allow.auto.create.topics": False,
    }
    # Protocol, SASL and TLS material: the same settings faust gets (streamml.security).
    config.update(librdkafka_security(settings))
    return config


def make_producer(settings: Settings, **overrides: Any) -> Producer:
    """Return an idempotent producer (acks=all, ordered retries per partition).

    The murmur2 partitioner matches the Java client and aiokafka, so a key lands
    on the same partition whichever client wrote it; per-key state in the faust
    processor depends on that.
    """
    config = connection_config(settings)
    config.update(
        {
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "partitioner": "murmur2_random",
            "message.max.bytes": max(settings.max_model_bytes + 64 * 1024, 1_000_000),
        }
    )
    config.update(overrides)
    try:
        return Producer(config)
    except KafkaException as exc:
        raise KafkaClientError(f"cannot create producer: {describe_error(exc)}") from exc


def make_consumer(settings: Settings, group_id: str, **overrides: Any) -> Consumer:
    """Return a consumer set up for at-least-once processing.

    Offsets are stored explicitly (``store_offsets``) after the work for a
    record is done and committed in the background, so a crash replays rather
    than loses records.
    """
    config = connection_config(settings)
    config.update(
        {
            "group.id": group_id,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": True,
            "enable.auto.offset.store": False,
            "session.timeout.ms": settings.session_timeout_ms,
            "heartbeat.interval.ms": max(settings.session_timeout_ms // 6, 500),
            "fetch.wait.max.ms": settings.fetch_wait_max_ms,
            "enable.partition.eof": False,
            # librdkafka's default, stated because readers depend on it: records of
            # an aborted transaction (a version whose publish failed) are not
            # delivered where the broker filters them (Apache Kafka; not Tansu,
            # docs/embedded-broker.md#transactions), and a fetch stops at the
            # last stable offset, before a transaction still open.
            "isolation.level": "read_committed",
        }
    )
    config.update(overrides)
    try:
        return Consumer(config)
    except KafkaException as exc:
        raise KafkaClientError(f"cannot create consumer: {describe_error(exc)}") from exc


def make_admin(settings: Settings) -> AdminClient:
    """Return an admin client for topic and group operations."""
    try:
        return AdminClient(connection_config(settings))
    except KafkaException as exc:
        raise KafkaClientError(f"cannot create admin client: {describe_error(exc)}") from exc


def faust_broker_url(settings: Settings) -> str:
    """Return faust's broker URL, ``kafka://h1:p1;h2:p2``, for the same servers."""
    servers = ";".join(s.strip() for s in settings.bootstrap_servers.split(","))
    return f"kafka://{servers}"


def faust_broker_credentials(settings: Settings) -> Any:
    """Return faust's ``broker_credentials``: ``None`` (plaintext), SSL or SASL credentials with a TLS context.

    The same security as :func:`connection_config` gives librdkafka; raises
    :class:`~streamml.errors.ConfigError` if faust would connect with anything
    weaker than the settings say (:func:`streamml.security.faust_credentials`).
    """
    return faust_credentials(settings)


def describe_error(exc: BaseException) -> str:
    """Return librdkafka's own message for a KafkaException, without the repr around it."""
    error = exc.args[0] if exc.args else exc
    return error.str() if isinstance(error, KafkaError) else str(error)



def kafka_error(exc: BaseException | None) -> KafkaError | None:
    """The librdkafka error behind ``exc`` (a KafkaException, or one translated ``from`` it), if any."""
    while exc is not None:
        error = exc.args[0] if exc.args else None
        if isinstance(error, KafkaError):
            return error
        exc = exc.__cause__
    return None


def format_record(topic: str, partition: int, offset: int) -> str:
    """Format a record position the way every log line names it."""
    return f"{topic}[{partition}]@{offset}"


DeliveryCallback = Callable[[KafkaError | None, Message], None]


def produce(
    producer: Producer,
    topic: str,
    value: bytes | None,
    *,
    key: bytes | None = None,
    headers: Sequence[tuple[str, bytes | None]] | None = None,
    partition: int | None = None,
    on_delivery: DeliveryCallback | None = None,
    poll: bool = True,
) -> None:
    """Queue one record, waiting for queue space when the local queue is full.

    Back-pressure: on ``BufferError`` it serves delivery reports to make
    room and retries (librdkafka expires stuck records after
    ``message.timeout.ms``, so this cannot wait forever); afterwards, with
    ``poll``, it serves pending reports without waiting (a caller sending
    many records may pass ``False`` and poll every so often itself). Raises
    :class:`KafkaClientError` when the client refuses the record.
    """
    # The client takes a list (or a dict) of headers.
    listed: Any = headers if headers is None or isinstance(headers, list) else list(headers)
    # No kwargs dict per record: this is the producer's per-event path (-1: the partitioner picks).
    where = -1 if partition is None else partition
    while True:
        try:
            producer.produce(topic, value, key, partition=where, on_delivery=on_delivery, headers=listed)
            break
        except BufferError:
            logger.debug("producer queue full; waiting for deliveries")
            producer.poll(QUEUE_FULL_WAIT)
        except KafkaException as exc:
            raise KafkaClientError(f"cannot produce to {topic}: {describe_error(exc)}") from exc
    if poll:
        producer.poll(0)


class Deliveries:
    """Delivery reports of the records produced with it as ``on_delivery``.

    ``wait()`` flushes the producer and raises unless every record was
    acknowledged, so a caller stores input offsets only after its output is
    safe.
    """

    def __init__(self) -> None:
        self.delivered = 0
        self.failures: list[str] = []
        #: The first delivery error, for callers that act on its code.
        self.first_error: KafkaError | None = None

    def __call__(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            self.delivered += 1
        else:
            self.first_error = self.first_error or err
            self.failures.append(f"{msg.topic()}[{msg.partition()}]: {err.str()}")

    def wait(self, producer: Producer, timeout: float, what: str) -> None:
        """Flush; raise :class:`KafkaClientError` if ``what`` was not all acknowledged in ``timeout``."""
        remaining = producer.flush(timeout)
        if self.failures:
            raise KafkaClientError(f"{what} not delivered to {self.failures[0]}")
        if remaining:
            raise KafkaClientError(f"{what}: {remaining} record(s) not acknowledged within {timeout:g}s")


class _Decoder(Protocol[T_co]):
    def decode(self, value: bytes | None, headers: Any = None) -> T_co: ...


def decoded(
    messages: Iterable[Message],
    decoder: _Decoder[T],
    *,
    on_skip: Callable[[Message, DecodeError], None],
) -> Iterator[tuple[Message, T]]:
    """Yield ``(message, record)`` for each message of a batch that decodes.

    Consumer errors (messages that carry no record) are logged and dropped;
    an undecodable record is handed to ``on_skip`` (which counts it, advances
    past it, logs its position) and never stops the loop.
    """
    for message in messages:
        error = message.error()
        if error is not None:
            logger.warning("consumer error on %s: %s", message.topic(), error)
            continue
        try:
            record = decoder.decode(message.value(), message.headers())
        except DecodeError as exc:
            on_skip(message, exc)
            continue
        yield message, record


def store_offsets(consumer: Consumer, topic: str, offsets: Mapping[int, int]) -> None:
    """Store ``{partition: next offset}`` of ``topic`` for the consumer's next commit.

    Offsets of partitions revoked meanwhile cannot be stored: their next
    owner replays from the last commit, which at-least-once allows.
    """
    if not offsets:
        return
    try:
        consumer.store_offsets(offsets=[TopicPartition(topic, p, o) for p, o in offsets.items()])
    except KafkaException as exc:
        logger.warning("cannot store offsets of %s %s: %s", topic, dict(offsets), describe_error(exc))


def record_headers(message: Message) -> Sequence[tuple[str, bytes | None]] | None:
    """A consumed record's headers as ``(name, value)`` pairs.

    librdkafka hands consumed headers back as a list of ``(str, bytes | None)``
    (or ``None``); the client's type hints also allow the forms a producer
    may pass in, which a consumed record never has.
    """
    return cast("Sequence[tuple[str, bytes | None]] | None", message.headers())
