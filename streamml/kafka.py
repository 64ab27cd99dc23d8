"""Kafka client setup: one source of connection settings, several client formats.

confluent-kafka (librdkafka) serves the producer, the learner, the scorer, the
model subscriber and the admin tools; faust runs on aiokafka. Both are
configured from the same :class:`~streamml.config.Settings` here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from streamml.config import Settings
from streamml.errors import BrokerError, KafkaClientError
from streamml.topics import TopicSpec

__all__ = [
    "connection_config",
    "make_producer",
    "make_consumer",
    "make_admin",
    "faust_broker_url",
    "faust_broker_credentials",
    "wait_for_broker",
    "create_topics",
    "describe_topics",
    "format_record",
    "describe_error",
]

logger = logging.getLogger(__name__)


def connection_config(settings: Settings) -> dict[str, Any]:
    """Return the librdkafka connection properties (servers, security, SASL)."""
    config: dict[str, Any] = {
        "bootstrap.servers": settings.bootstrap_servers,
        "security.protocol": settings.security_protocol,
        # librdkafka logs to stderr itself; keep its informational lines
        # (e.g. "Purging unserved events" on close) out of the terminal. A
        # Python logger callback is avoided: it can deadlock on client close.
        "log_level": 4,
    }
    if settings.sasl_mechanism:
        config["sasl.mechanism"] = settings.sasl_mechanism
        config["sasl.username"] = settings.sasl_username
        config["sasl.password"] = settings.sasl_password.get() if settings.sasl_password else None
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
    """Return faust credentials for SASL settings, or ``None`` for plaintext."""
    if not settings.sasl_mechanism:
        return None
    import faust  # deferred: the core does not import faust at module level

    return faust.SASLCredentials(
        username=settings.sasl_username,
        password=settings.sasl_password.get() if settings.sasl_password else None,
        mechanism=settings.sasl_mechanism,
    )


def wait_for_broker(settings: Settings, timeout: float = 30.0) -> None:
    """Block until the cluster answers a metadata request, or raise BrokerError."""
    # A probe expects refused connections; librdkafka's log line for each is noise.
    try:
        admin = AdminClient({**connection_config(settings), "log_level": 0})
    except KafkaException as exc:
        raise KafkaClientError(f"cannot create admin client: {describe_error(exc)}") from exc
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            admin.list_topics(timeout=min(2.0, max(0.1, deadline - time.monotonic())))
            return
        except KafkaException as exc:
            last = exc
    raise BrokerError(
        f"no Kafka broker answered at {settings.bootstrap_servers} within {timeout:g}s"
        + (f" ({describe_error(last)})" if last else "")
        + "; start one with 'streamml broker start' or set STREAMML_BOOTSTRAP_SERVERS"
    )


def describe_error(exc: BaseException) -> str:
    """Return librdkafka's own message for a KafkaException, without the repr around it."""
    error = exc.args[0] if exc.args else exc
    return error.str() if isinstance(error, KafkaError) else str(error)


def describe_topics(settings: Settings, names: Iterable[str], timeout: float = 10.0) -> dict[str, int]:
    """Return ``{topic: partition count}`` for those of ``names`` that exist."""
    wanted = set(names)
    try:
        metadata = make_admin(settings).list_topics(timeout=timeout)
    except KafkaException as exc:
        raise KafkaClientError(f"cannot read cluster metadata: {describe_error(exc)}") from exc
    return {
        name: len(meta.partitions)
        for name, meta in metadata.topics.items()
        if name in wanted and meta.error is None
    }


def create_topics(settings: Settings, specs: Iterable[TopicSpec], timeout: float = 30.0) -> dict[str, str]:
    """Create topics idempotently and wait until metadata shows all of them.

    Returns ``{topic: "created" | "exists"}``. An existing topic with a
    different partition count is reported, not changed.
    """
    specs = list(specs)
    admin = make_admin(settings)
    existing = describe_topics(settings, [s.name for s in specs], timeout=timeout)
    outcome: dict[str, str] = {}
    new = []
    for spec in specs:
        if spec.name in existing:
            outcome[spec.name] = "exists"
            if existing[spec.name] != spec.partitions:
                logger.warning(
                    "topic %s exists with %d partitions, expected %d; left unchanged",
                    spec.name,
                    existing[spec.name],
                    spec.partitions,
                )
        else:
            new.append(
                NewTopic(
                    spec.name,
                    num_partitions=spec.partitions,
                    replication_factor=settings.replication_factor,
                    config=dict(spec.config),
                )
            )
    if new:
        futures = admin.create_topics(new, request_timeout=timeout)
        for name, future in futures.items():
            try:
                future.result()
                outcome[name] = "created"
            except KafkaException as exc:
                error = exc.args[0]
                if isinstance(error, KafkaError) and error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                    outcome[name] = "exists"  # created concurrently by another process
                else:
                    raise KafkaClientError(f"cannot create topic {name}: {error}") from exc
    # Creation is asynchronous on the broker; wait until every topic is visible
    # so the first produce does not race the metadata.
    deadline = time.monotonic() + timeout
    names = [s.name for s in specs]
    while True:
        visible = describe_topics(settings, names, timeout=timeout)
        if len(visible) == len(names):
            break
        if time.monotonic() > deadline:
            missing = sorted(set(names) - set(visible))
            raise KafkaClientError(f"topics not visible after {timeout:g}s: {', '.join(missing)}")
        time.sleep(0.05)  # polling metadata; the condition is re-checked each turn
    return {s.name: outcome[s.name] for s in specs}


def format_record(topic: str, partition: int, offset: int) -> str:
    """Format a record position the way every log line names it."""
    return f"{topic}[{partition}]@{offset}"
