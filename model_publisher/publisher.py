"""Seal models into signed envelopes and publish them as numbered versions.

Every envelope is signed with the publisher's Ed25519 key
(``STREAMML_MODEL_SIGNING_KEY_FILE``, or the default pair under
``<home>/keys``); without one the publisher refuses to start unless
development mode is on. Each envelope carries golden examples: real input
rows and the answers the model gave, which consumers replay before they
activate it.

Versions of one model name are numbered 1, 2, 3, ... without reuse: at start
the publisher reads the models topic (``streamml.registry``) and continues
after the highest version it can *verify* (signed by a key it trusts), so a
forged record cannot push the numbering around, and a restarted learner
never publishes a number subscribers already hold.

One publisher per model name, enforced by the broker where it can be
(``docs/publishing.md``): the producer's ``transactional.id`` is derived from
the models topic and the model name, and :meth:`ModelPublisher.start` calls
``init_transactions`` *before* it reads the version history. So a newer
publisher of the same name fences the older one (whose next publish raises
:class:`~streamml.errors.PublisherFencedError`) and has any transaction the
older one left open aborted before it computes its next number. Each version
(its chunks and manifest, or the inline envelope) is one transaction: readers
in ``read_committed`` see all of it or none of it. ``STREAMML_PUBLISHER_TRANSACTIONS``
decides what happens on a broker without transactions (``auto``: plain
produces, with one warning that fencing is off; two publishers would then
race for the same numbers).

A payload larger than one record (``STREAMML_MAX_MODEL_BYTES``) travels in
chunks followed by a signed manifest (:mod:`streamml.transfer`), up to
``STREAMML_MAX_MODEL_TOTAL_BYTES``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from streamml.cluster import Cluster
from streamml.config import Settings
from streamml.envelope import MAX_VERSION, ModelEnvelope, encode_envelope, envelope_headers, seal, sign
from streamml.errors import ConfigError, EnvelopeError, KafkaClientError, ModelTooLargeError, PublisherFencedError
from streamml.kafka import Deliveries, describe_error, kafka_error, produce
from streamml.registry import VersionRecord, newest_authentic, next_version, read_versions
from streamml.signing import SigningKey, signer_from_settings
from streamml.transfer import chunk_envelope, chunk_serde
from streamml.trust import TrustPolicy, load_model

__all__ = ["ModelPublisher", "transactional_id"]

logger = logging.getLogger(__name__)

#: Bytes of a models-topic record that are not payload (fields, headers, key):
#: a payload over ``max_model_bytes`` minus this travels in chunks of this much less.
_RECORD_HEADROOM = 4096

#: Errors that mean another producer took this transactional id over.
_FENCED = {KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH}
#: ``init_transactions`` errors that mean the broker has no transactions at all
#: (``auto`` then falls back to plain produces).
_UNSUPPORTED = {KafkaError._UNSUPPORTED_FEATURE, KafkaError.UNSUPPORTED_VERSION}


def transactional_id(models_topic: str, model_name: str) -> str:
    """The transactional id of the publisher of ``model_name`` on ``models_topic`` (namespace included)."""
    return f"streamml-publisher.{models_topic}.{model_name}"


class ModelPublisher:
    """Publish versions of ``settings.model_name`` to the models topic.

    Call :meth:`start` first (it fences older publishers of the name, then
    reads the topic to find the next version); :meth:`publish` then blocks
    until the broker has acknowledged (and, in a transaction, committed) the version.
    """

    def __init__(self, cluster: Cluster | Settings, *, flavor: str = "river", delivery_timeout: float = 30.0) -> None:
        self.cluster = Cluster.of(cluster)
        self.settings = self.cluster.settings
        self.model_name = self.settings.model_name
        self.topic = self.cluster.topics.models
        self.flavor = flavor
        self.delivery_timeout = delivery_timeout
        self.signer = require_signer(self.settings)
        policy = TrustPolicy.from_settings(self.settings)
        if self.signer is not None:
            # The publisher verifies its own history: its own key is trusted.
            policy = dataclasses.replace(policy, keyring=policy.keyring.with_key(self.signer.public_key))
        self._policy = policy
        self._producer: Producer | None = None
        self._next: int | None = None
        self._history: list[VersionRecord] = []
        self.transactional_id = transactional_id(self.topic, self.model_name)
        #: Whether versions go out in transactions (known after :meth:`start`).
        self.transactional = False
        self._fenced: PublisherFencedError | None = None

    def start(self) -> int:
        """Read the models topic; return the version the next publish will use.

        Raises :class:`~streamml.errors.MissingTopicError` if the topic does not
        exist (a publish to it would wait for ``message.timeout.ms``, then fail).
        """
        self.cluster.require_topics([self.topic])
        # Fence first, read second: once init_transactions returns, an older
        # publisher of this name can add nothing, so the history read next is
        # final and the number computed from it is ours alone.
        self._producer = self._make_producer()
        self._history = read_versions(self.cluster, model_name=self.model_name, policy=self._policy)
        self._next = next_version(self._history, self.model_name)
        logger.info(
            "publisher for %s starts at v%d (%d records on %s, %s)",
            self.model_name,
            self._next,
            len(self._history),
            self.topic,
            f"transactional id {self.transactional_id}" if self.transactional else "no transactions: fencing off",
        )
        return self._next

    def _make_producer(self) -> Producer:
        """A transactional producer, initialised (fencing older ones), or a plain one per the setting."""
        mode = self.settings.publisher_transactions
        if mode == "off":
            self.transactional = False
            return self.cluster.producer(**{"linger.ms": 0})
        producer = self.cluster.producer(**{"linger.ms": 0, "transactional.id": self.transactional_id})
        try:
            producer.init_transactions(self.delivery_timeout)
        except KafkaException as exc:
            error = kafka_error(exc)
            if error is None or error.code() not in _UNSUPPORTED:
                raise KafkaClientError(
                    f"cannot initialise transactions for {self.model_name} (transactional id {self.transactional_id})"
                    f" on {self.settings.bootstrap_servers}: {describe_error(exc)}; they fence a second publisher "
                    "of the same model (docs/publishing.md). STREAMML_PUBLISHER_TRANSACTIONS=off publishes "
                    "without them"
                ) from exc
            if mode == "on":
                raise ConfigError(
                    f"STREAMML_PUBLISHER_TRANSACTIONS=on, but the broker at {self.settings.bootstrap_servers} does "
                    f"not support transactions ({describe_error(exc)}); use a broker that does, or set it to auto "
                    "or off (no fencing: two learners of one model would race for version numbers)"
                ) from exc
            logger.warning(
                "the broker at %s does not support transactions (%s): publishing %s without them, so fencing is "
                "off: a second learner of the same model would not be stopped and the two would race for version "
                "numbers (STREAMML_PUBLISHER_TRANSACTIONS=on refuses to start instead)",
                self.settings.bootstrap_servers, describe_error(exc), self.model_name,
            )
            self.transactional = False
            return self.cluster.producer(**{"linger.ms": 0})
        self.transactional = True
        return producer

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
        golden_inputs: Sequence[Mapping[str, float]] = (),
        kind: str = "online",
        lineage: Mapping[str, str] | None = None,
        feature_names: Sequence[str] | None = None,
    ) -> ModelEnvelope:
        """Seal ``model`` as the next version, produce it and wait for the acknowledgement.

        ``golden_inputs`` are a few real input rows; the model's answers for
        them go into the envelope. Raises
        :class:`~streamml.errors.ModelTooLargeError` (nothing sent, the
        version number is not used) when the payload exceeds
        ``settings.max_model_total_bytes``; the error carries ``model_name``,
        ``version``, ``size`` and ``limit``. Raises :class:`KafkaClientError`
        when the broker does not acknowledge it (in a transaction, it is
        aborted), and :class:`~streamml.errors.PublisherFencedError` when a
        newer publisher of the same name has started since (this one is then
        done: every later publish raises it too). The version number is used
        only when the publish succeeded.
        """
        version = self.next_version
        if version > MAX_VERSION:
            raise EnvelopeError(
                f"{self.model_name}: version {version} would pass {MAX_VERSION}; start a new model name"
            )
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
            signer=self.signer,
            golden_inputs=golden_inputs,
            kind=kind,
            lineage=lineage,
            feature_names=feature_names,
        )
        limit = self.settings.max_model_bytes
        if envelope.payload_size > self.settings.max_model_total_bytes:
            raise ModelTooLargeError(
                model_name=self.model_name, version=version, size=envelope.payload_size,
                limit=self.settings.max_model_total_bytes, setting="STREAMML_MAX_MODEL_TOTAL_BYTES",
            )
        value = None
        if envelope.payload_size <= limit - _RECORD_HEADROOM:
            # Inline unless the envelope's own fields (golden rows, lineage) push it over.
            try:
                value = encode_envelope(envelope, max_bytes=limit)
            except ModelTooLargeError:
                value = None
        if self.transactional:
            envelope = self._in_transaction(producer, envelope, value)
        else:
            envelope = self._send(producer, envelope, value, Deliveries())
        self._next = version + 1
        return envelope

    def _send(
        self, producer: Producer, envelope: ModelEnvelope, value: bytes | None, deliveries: Deliveries | None
    ) -> ModelEnvelope:
        """Produce one version (inline, or chunks then manifest); with ``deliveries``, wait for every acknowledgement.

        In a transaction there are none: ``commit_transaction`` waits for the
        acknowledgements and fails if one is missing. (A delivery callback run
        after the producer was fenced meets librdkafka's pending fatal error
        and dies with a SystemError instead.)
        """
        key = self.model_name.encode()
        if value is None:  # decided from the payload size: a 5 MB model is never encoded whole
            envelope, value = self._send_chunks(producer, envelope, key, deliveries)
        produce(producer, self.topic, value, key=key, headers=envelope_headers(), on_delivery=deliveries)
        if deliveries is not None:
            deliveries.wait(producer, self.delivery_timeout, f"{self.model_name} v{envelope.version}")
        return envelope

    def _in_transaction(self, producer: Producer, envelope: ModelEnvelope, value: bytes | None) -> ModelEnvelope:
        """:meth:`_send` inside one transaction: committed whole, or aborted (the number stays unused)."""
        what = f"{self.model_name} v{envelope.version}"
        if self._fenced is not None:
            raise self._fenced
        try:
            producer.begin_transaction()
            sent = self._send(producer, envelope, value, None)
            producer.commit_transaction(self.delivery_timeout)
        except (KafkaException, KafkaClientError) as exc:
            error = kafka_error(exc)
            if error is not None and error.code() in _FENCED:
                # Fenced is final: the producer can do nothing more (librdkafka then
                # answers every call with a conflict), so every later publish says this.
                self._fenced = PublisherFencedError(self.model_name, self.transactional_id, error.str())
                raise self._fenced from exc
            self._abort(what)
            if isinstance(exc, KafkaClientError):
                raise
            raise KafkaClientError(f"{what} not published: {describe_error(exc)}") from exc
        return sent

    def _abort(self, what: str) -> None:
        """Abort the open transaction after a failed publish (its records are then never read committed)."""
        assert self._producer is not None
        try:
            self._producer.abort_transaction(self.delivery_timeout)
        except KafkaException as exc:
            logger.warning("aborting the transaction of %s failed: %s", what, describe_error(exc))

    def _send_chunks(
        self, producer: Producer, envelope: ModelEnvelope, key: bytes, deliveries: Deliveries | None
    ) -> tuple[ModelEnvelope, bytes]:
        """Produce the payload's chunks (in order, one partition); return the signed manifest and its bytes."""
        chunks, manifest = chunk_envelope(envelope, max(self.settings.max_model_bytes - _RECORD_HEADROOM, 1024))
        headers = chunk_serde().headers
        for chunk in chunks:
            produce(producer, self.topic, chunk.encode(), key=key, headers=headers, on_delivery=deliveries)
        if self.signer is not None:
            manifest = sign(manifest, self.signer)
        logger.info(
            "%s v%d: %d-byte payload sent in %d chunks (transfer %s)",
            envelope.model_name, envelope.version, envelope.payload_size, len(chunks), manifest.transfer_id,
        )
        return manifest, encode_envelope(manifest, max_bytes=self.settings.max_model_bytes)

    def close(self) -> None:
        """Release the producer (everything published was already flushed)."""
        if self._producer is not None:
            try:
                self._producer.flush(self.delivery_timeout)
            except KafkaException as exc:  # a fenced producer has nothing left to deliver
                logger.debug("closing the publisher of %s: %s", self.model_name, describe_error(exc))
            self._producer = None


def require_signer(settings: Settings) -> SigningKey | None:
    """The signing key; :class:`ConfigError` when there is none, unless development mode is on."""
    signer = signer_from_settings(settings)
    if signer is None and not settings.development_mode:
        raise ConfigError(
            "no model signing key: run 'streamml keys generate' (writes "
            f"{settings.keys_dir}/model-signing.key and .pub) or set STREAMML_MODEL_SIGNING_KEY_FILE; "
            "STREAMML_DEVELOPMENT_MODE=true publishes unsigned models instead"
        )
    return signer
