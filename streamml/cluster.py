"""One handle on the Kafka cluster: settings, names, one admin client, short-lived consumers.

Readers of the cluster (lag, the topic reader, the registry, the monitor, the
model subscriber) take a :class:`Cluster` instead of :class:`Settings`, so one
process asks metadata through one admin client instead of building a client
per call, and every short-lived consumer gets a namespaced group id from
:class:`~streamml.topics.Groups`. Build one per process at the entry point::

    cluster = Cluster(load_settings())
    cluster.wait_ready()                      # STREAMML_CONNECT_TIMEOUT_SECONDS, then exit 3
    cluster.create_topics(cluster.topics.specs(cluster.settings))
    cluster.require_topics([cluster.topics.models])   # before reading or writing one
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # public, re-exported without __all__
    AdminClient,
    ConfigResource,
    NewTopic,
    ResourceType,
)

from streamml.config import Settings
from streamml.errors import BrokerError, ConfigError, KafkaClientError, MissingTopicError, TopicMismatchError
from streamml.kafka import connection_config, describe_error, make_admin, make_consumer, make_producer
from streamml.security import refusal
from streamml.topic_state import TopicState, describe_differences, differences
from streamml.topics import Groups, Topics, TopicSpec

__all__ = ["Cluster", "ADMIN_GRACE"]

#: Seconds an admin future may take past its request timeout before the caller
#: gives up (librdkafka normally fails it at the request timeout).
ADMIN_GRACE = 5.0

logger = logging.getLogger(__name__)

#: How often topic creation re-reads metadata while it waits for new topics to show.
_CREATE_POLL_SECONDS = 0.05


class Cluster:
    """The cluster one pipeline (one namespace) runs on.

    Thread-safe: the admin client is created once, lazily, under a lock, and
    librdkafka's admin client may be shared between threads. Consumers made
    here are the caller's to close.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topics = Topics.from_settings(settings)
        self.groups = Groups.from_settings(settings)
        self._admin: AdminClient | None = None
        self._lock = threading.Lock()

    @classmethod
    def of(cls, target: Settings | Cluster) -> Cluster:
        """Return ``target`` if it is a cluster, else a new cluster for those settings."""
        return target if isinstance(target, Cluster) else cls(target)

    def __repr__(self) -> str:
        return f"Cluster({self.settings.bootstrap_servers!r}, namespace={self.settings.namespace!r})"

    # -- clients -----------------------------------------------------------
    @property
    def admin(self) -> AdminClient:
        """The cluster's one admin client, created on first use."""
        with self._lock:
            if self._admin is None:
                self._admin = make_admin(self.settings)
            return self._admin

    def consumer(self, purpose: str, **overrides: Any) -> Consumer:
        """A short-lived consumer that commits nothing, in a fresh group named for ``purpose``.

        Use it with ``assign()``: such readers need no group coordination
        (and ``subscribe()`` would wait for a first group join, see
        ``docs/embedded-broker.md#first-group-join``).
        """
        config: dict[str, Any] = {"enable.auto.commit": False, "fetch.wait.max.ms": 10}
        config.update(overrides)
        return make_consumer(self.settings, self.groups.ephemeral(purpose), **config)

    def group_consumer(self, group_id: str, **overrides: Any) -> Consumer:
        """A consumer in a component's own group (at-least-once set-up, see :func:`make_consumer`)."""
        return make_consumer(self.settings, group_id, **overrides)

    def producer(self, **overrides: Any) -> Producer:
        """An idempotent producer (see :func:`streamml.kafka.make_producer`)."""
        return make_producer(self.settings, **overrides)

    # -- metadata ----------------------------------------------------------
    def partition_counts(self, names: Iterable[str], timeout: float = 10.0) -> dict[str, int]:
        """Return ``{topic: partition count}`` for those of ``names`` that exist.

        One metadata request for all of them; a topic the broker reports with
        an error (e.g. unknown) is absent from the answer.
        """
        wanted = set(names)
        if not wanted:
            return {}
        try:
            metadata = self.admin.list_topics(timeout=timeout)
        except KafkaException as exc:
            raise KafkaClientError(f"cannot read cluster metadata: {describe_error(exc)}") from exc
        return {
            name: len(meta.partitions)
            for name, meta in metadata.topics.items()
            if name in wanted and meta.error is None
        }

    def partitions(self, topic: str, timeout: float = 10.0) -> list[int]:
        """Return the partition ids of ``topic`` (empty if it does not exist)."""
        return list(range(self.partition_counts([topic], timeout).get(topic, 0)))

    def topic_configs(self, names: Iterable[str], timeout: float = 10.0) -> dict[str, dict[str, str]]:
        """Return ``{topic: {config: value}}`` as the broker reports them (``DescribeConfigs``).

        Ask only for topics that exist (:meth:`partition_counts`). Configs
        without a value (sensitive ones) are left out.
        """
        resources = [ConfigResource(ResourceType.TOPIC, name) for name in dict.fromkeys(names)]
        if not resources:
            return {}
        configs: dict[str, dict[str, str]] = {}
        for resource, future in self.admin.describe_configs(resources, request_timeout=timeout).items():
            try:
                entries = future.result(timeout=timeout + ADMIN_GRACE)
            except KafkaException as exc:
                raise KafkaClientError(f"cannot describe topic {resource.name}: {describe_error(exc)}") from exc
            except FutureTimeout as exc:
                raise KafkaClientError(
                    f"cannot describe topic {resource.name}: no answer within {timeout + ADMIN_GRACE:g}s"
                ) from exc
            configs[resource.name] = {k: e.value for k, e in entries.items() if e.value is not None}
        return configs

    def topic_states(self, names: Iterable[str], timeout: float = 10.0) -> dict[str, TopicState]:
        """Return the partition count and configs of those of ``names`` that exist."""
        counts = self.partition_counts(names, timeout=timeout)
        configs = self.topic_configs(counts, timeout=timeout)
        return {name: TopicState(name, n, configs.get(name, {})) for name, n in counts.items()}

    def list_groups(self, timeout: float = 10.0) -> list[str]:
        """Return the ids of all consumer groups the cluster knows."""
        try:
            # Bounded here too: an admin future that librdkafka never completes must not hang a caller.
            result = self.admin.list_consumer_groups(request_timeout=timeout).result(timeout=timeout + ADMIN_GRACE)
        except KafkaException as exc:
            raise KafkaClientError(f"cannot list consumer groups: {describe_error(exc)}") from exc
        except FutureTimeout as exc:
            raise KafkaClientError(f"cannot list consumer groups: no answer within {timeout + ADMIN_GRACE:g}s") from exc
        return sorted(g.group_id for g in result.valid)

    def wait_ready(self, timeout: float | None = None) -> None:
        """Block until the cluster answers a metadata request, or raise :class:`BrokerError`.

        ``timeout`` defaults to ``STREAMML_CONNECT_TIMEOUT_SECONDS``. A broker
        that refuses this client's TLS (CA, host name) or SASL credentials is a
        :class:`ConfigError` at once: waiting cannot heal it.
        """
        timeout = self.settings.connect_timeout_seconds if timeout is None else timeout
        # A probe expects refused connections; librdkafka's log line for each is noise.
        # Its errors are kept: a TLS or SASL refusal ends the wait at once (docs/security.md).
        errors: list[KafkaError] = []
        try:
            config: dict[str, Any] = {**connection_config(self.settings), "log_level": 0, "error_cb": errors.append}
            probe = AdminClient(config)
        except KafkaException as exc:
            raise KafkaClientError(f"cannot create admin client: {describe_error(exc)}") from exc
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                probe.list_topics(timeout=min(2.0, max(0.1, deadline - time.monotonic())))
                return
            except KafkaException as exc:
                last = exc
            probe.poll(0)  # serves error_cb
            refused = next(filter(None, (refusal(error, self.settings) for error in errors)), None)
            if refused:
                raise ConfigError(refused)
        raise BrokerError(
            f"no Kafka broker answered at {self.settings.bootstrap_servers} within {timeout:g}s"
            + (f" ({describe_error(last)})" if last else "")
            + "; start one with 'streamml broker start' or set STREAMML_BOOTSTRAP_SERVERS"
        )

    def require_topics(self, names: Iterable[str], *, timeout: float | None = None) -> None:
        """Wait for the cluster (:meth:`wait_ready`), then raise :class:`MissingTopicError` unless every topic exists.

        Commands check this before they read or write: librdkafka would
        otherwise wait for a missing topic until its own timeouts (a produce
        waits up to ``message.timeout.ms``, five minutes), and a broker that
        auto-creates topics would make them with its defaults.
        """
        names = list(dict.fromkeys(names))
        timeout = self.settings.connect_timeout_seconds if timeout is None else timeout
        self.wait_ready(timeout)
        found = self.partition_counts(names, timeout=timeout)
        missing = [name for name in names if name not in found]
        if missing:
            raise MissingTopicError(missing, self.settings.bootstrap_servers)

    def create_topics(self, specs: Iterable[TopicSpec], timeout: float = 30.0) -> dict[str, str]:
        """Create topics idempotently and wait until metadata shows all of them.

        Returns ``{topic: "created" | "exists"}``. Existing topics whose
        partitions or configs differ from their spec are left unchanged (see
        :mod:`streamml.topic_state`); once the missing topics are created,
        :class:`TopicMismatchError` names every one of them.
        """
        specs = list(specs)
        names = [s.name for s in specs]
        existing = self.topic_states(names, timeout=timeout)
        outcome: dict[str, str] = {}
        mismatches: list[str] = []
        new = []
        for spec in specs:
            if spec.name in existing:
                found = differences(spec, existing[spec.name])
                outcome[spec.name] = "differs" if found else "exists"
                if found:
                    mismatches.append(describe_differences(spec.name, found))
            else:
                new.append(
                    NewTopic(
                        spec.name,
                        num_partitions=spec.partitions,
                        replication_factor=self.settings.replication_factor,
                        config=dict(spec.config),
                    )
                )
        if new:
            for name, future in self.admin.create_topics(new, request_timeout=timeout).items():
                try:
                    future.result(timeout=timeout + ADMIN_GRACE)
                    outcome[name] = "created"
                except KafkaException as exc:
                    error = exc.args[0]
                    if isinstance(error, KafkaError) and error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                        outcome[name] = "exists"  # created concurrently by another process
                    else:
                        raise KafkaClientError(f"cannot create topic {name}: {describe_error(exc)}") from exc
                except FutureTimeout as exc:
                    raise KafkaClientError(
                        f"cannot create topic {name}: no answer within {timeout + ADMIN_GRACE:g}s"
                    ) from exc
        # Creation is asynchronous on the broker; wait until every topic is
        # visible so the first produce does not race the metadata.
        deadline = time.monotonic() + timeout
        while True:
            visible = self.partition_counts(names, timeout=timeout)
            if len(visible) == len(names):
                break
            if time.monotonic() > deadline:
                missing = sorted(set(names) - set(visible))
                raise KafkaClientError(f"topics not visible after {timeout:g}s: {', '.join(missing)}")
            time.sleep(_CREATE_POLL_SECONDS)  # the condition is re-checked each turn
        outcome = {s.name: outcome[s.name] for s in specs}
        if mismatches:
            raise TopicMismatchError(mismatches, outcome)
        return outcome
