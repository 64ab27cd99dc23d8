"""Seal models into envelopes and publish them as numbered versions.

Versions of one model name are numbered 1, 2, 3, ... without reuse: at start
the publisher reads the models topic (``streamml.registry``) and continues
after the highest authentic version, so a restarted learner never publishes a
number subscribers already hold (they refuse anything not newer than what
they serve). One publisher per model name is assumed; two at once would race
for the same numbers.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from confluent_kafka import Producer

from streamml.cluster import Cluster
from streamml.config import Settings
from streamml.envelope import ModelEnvelope, TrustPolicy, encode_envelope, envelope_headers, load_model, seal
from streamml.errors import EnvelopeError
from streamml.kafka import Deliveries, produce
from streamml.registry import VersionRecord, newest_authentic, next_version, read_versions

__all__ = ["ModelPublisher"]

logger = logging.getLogger(__name__)


class ModelPublisher:
    """Publish versions of ``settings.model_name`` to the models topic.

    Call :meth:`start` first (it reads the topic to find the next version);
    :meth:`publish` then blocks until the broker has acknowledged the record.
    """

    def __init__(self, cluster: Cluster | Settings, *, flavor: str = "river", delivery_timeout: float = 30.0) -> None:
        self.cluster = Cluster.of(cluster)
        self.settings = self.cluster.settings
        self.model_name = self.settings.model_name
        self.topic = self.cluster.topics.models
        self.flavor = flavor
        self.delivery_timeout = delivery_timeout
        self._policy = TrustPolicy.from_settings(self.settings)
        self._producer: Producer | None = None
        self._next: int | None = None
        self._history: list[VersionRecord] = []

    def start(self) -> int:
        """Read the models topic; return the version the next publish will use."""
        self._history = read_versions(self.cluster, model_name=self.model_name, policy=self._policy)
        self._next = next_version(self._history, self.model_name)
        self._producer = self.cluster.producer(**{"linger.ms": 0})
        logger.info(
            "publisher for %s starts at v%d (%d records on %s)",
            self.model_name,
            self._next,
            len(self._history),
            self.topic,
        )
        return self._next

    @property
    def next_version(self) -> int:
        """The version number :meth:`publish` will use next."""
        if self._next is None:
            raise RuntimeError("ModelPublisher.start() has not been called")
        return self._next

    @property
    def newest_version(self) -> int | None:
        """The highest authentic version on the topic (``None`` if there is none).

        That is the last version a publisher of this name produced, whether
        or not this process can load it (another runtime may have written it).
        """
        return self.next_version - 1 or None

    def newest_model(self) -> tuple[Any, ModelEnvelope] | None:
        """Return ``(model, envelope)`` of the newest published version that loads, or ``None``.

        Falls back to older versions when the newest does not open, the way a
        subscriber would. Used to resume learning after a restart; compare the
        returned version with :attr:`newest_version` to tell a fallback.
        """
        acceptable = newest_authentic(self._history, self.model_name)
        newest_ok = (acceptable[0].version or 0) if acceptable else 0
        for record in self._history:
            # Authentic versions this runtime refuses (e.g. another river or
            # Python minor) are not candidates at all; say which and why.
            refused_here = record.authentic and record.reason is not None and record.model_name == self.model_name
            if refused_here and (record.version or 0) > newest_ok:
                logger.warning("cannot resume from %s v%s: %s", self.model_name, record.version, record.reason)
        for record in acceptable:
            assert record.verdict is not None  # newest_authentic keeps assessed records only
            try:
                model = load_model(record.verdict)
            except EnvelopeError as exc:
                logger.warning("cannot resume from %s v%s: %s", self.model_name, record.version, exc)
                continue
            return model, record.verdict.envelope
        return None

    def publish(
        self,
        model: Any,
        *,
        metrics: Mapping[str, float],
        n_learned: int,
        input_offsets: Mapping[str, int],
    ) -> ModelEnvelope:
        """Seal ``model`` as the next version, produce it and wait for the acknowledgement.

        Raises :class:`~streamml.errors.ModelTooLargeError` (nothing sent, the
        version number is not used) when the envelope exceeds
        ``settings.max_model_bytes``; the error carries ``model_name``,
        ``version``, ``size`` and ``limit``. Raises :class:`KafkaClientError`
        when the broker does not acknowledge it.
        """
        version = self.next_version
        producer = self._producer
        assert producer is not None
        envelope = seal(
            model,
            model_name=self.model_name,
            version=version,
            flavor=self.flavor,
            metrics=metrics,
            n_learned=n_learned,
            input_offsets=input_offsets,
            signing_key=self._policy.signing_key,
        )
        value = encode_envelope(envelope, max_bytes=self.settings.max_model_bytes)
        deliveries = Deliveries()
        produce(
            producer,
            self.topic,
            value,
            key=self.model_name.encode(),
            headers=envelope_headers(),
            on_delivery=deliveries,
        )
        deliveries.wait(producer, self.delivery_timeout, f"{self.model_name} v{version}")
        self._next = version + 1
        return envelope

    def close(self) -> None:
        """Release the producer (everything published was already flushed)."""
        if self._producer is not None:
            self._producer.flush(self.delivery_timeout)
            self._producer = None
