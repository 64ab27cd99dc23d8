"""The learn loop: features in, progressive validation, model versions out.

Offsets and versions move together. The learner's position is part of what it
publishes (``input_offsets`` in every envelope), and consumer offsets are
stored only for events the *published* model has learned. After a crash the
loop resumes from the newest published version (its model, its counters) and
seeks each partition to that version's ``input_offsets`` (or the group's
committed offset when that is further, which only happens for unlabeled or
skipped events nothing was learned from). So every labeled event is learned
exactly once by the chain of published versions, and events learned after
the last publish are replayed rather than lost.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from model_publisher.catalog import FLAVOR, build, describe, matches
from model_publisher.learner import OnlineLearner, partition_key
from model_publisher.policy import PublishPolicy
from model_publisher.publisher import ModelPublisher
from streamml.config import Settings
from streamml.envelope import ModelEnvelope
from streamml.errors import KafkaClientError
from streamml.kafka import describe_error, format_record, make_consumer
from streamml.reader import partitions_of
from streamml.serde import AvroSerde, DecodeError, bundled_schema
from streamml.topics import Groups, Topics

__all__ = ["LearningLoop", "LearnReport"]

logger = logging.getLogger(__name__)

_BATCH = 500


@dataclass
class LearnReport:
    """What one run of the loop did."""

    consumed: int = 0
    learned: int = 0
    skipped: int = 0
    published: int = 0
    resumed_from: int | None = None
    last_version: int | None = None


class LearningLoop:
    """Consume features, learn online, publish versions by policy.

    ``stop`` is set from elsewhere (a signal handler, a test) to end the loop
    cleanly; ``max_events`` ends it after that many consumed records. A final
    version is published on the way out if anything new was learned.
    ``on_publish`` is called with each published envelope (the CLI prints it).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        max_events: int | None = None,
        stop: threading.Event | None = None,
        on_publish: Callable[[ModelEnvelope], None] | None = None,
        resume: bool = True,
        policy: PublishPolicy | None = None,
    ) -> None:
        self.settings = settings
        self.topic = Topics.from_settings(settings).features
        self.max_events = max_events
        self.stop = stop or threading.Event()
        self.on_publish = on_publish
        self.resume = resume
        self.policy = policy or PublishPolicy.from_settings(settings)
        self.report = LearnReport()
        self._serde = AvroSerde(bundled_schema("feature_vector.avsc"))
        self._publisher = ModelPublisher(settings, flavor=FLAVOR)
        self._learner: OnlineLearner | None = None

    def _initial_learner(self) -> OnlineLearner:
        spec = self.settings.model_spec
        fresh = build(spec)
        newest = self._publisher.newest_model() if self.resume else None
        if newest is not None:
            model, envelope = newest
            if matches(model, spec):
                self.report.resumed_from = envelope.version
                logger.info("resuming %s from v%d (n_learned=%d)", envelope.model_name, envelope.version, envelope.n_learned)
                return OnlineLearner.resume(model, envelope)
            logger.warning(
                "newest version v%d is a %s, not a %s (%s): starting a fresh model",
                envelope.version, describe(model), spec, describe(fresh),
            )
        return OnlineLearner(fresh)

    def _committed(self, consumer: Consumer) -> dict[int, int]:
        parts = partitions_of(self.settings, self.topic)
        try:
            committed = consumer.committed([TopicPartition(self.topic, p) for p in parts], timeout=10)
        except KafkaException as exc:
            raise KafkaClientError(f"cannot read committed offsets of {self.topic}: {describe_error(exc)}") from exc
        return {tp.partition: tp.offset for tp in committed if tp.offset >= 0}

    def _position(self, learner: OnlineLearner, partition: int, committed: dict[int, int]) -> int | None:
        """Where to read ``partition`` from: what the in-memory model has consumed.

        That is the resumed version's ``input_offsets`` at start (and further
        on after a re-assignment, so nothing is learned twice), or the group's
        committed offset where it is further: it only gets ahead for
        unlabeled or skipped records, which taught the model nothing.
        """
        learned = learner.input_offsets.get(partition_key(self.topic, partition))
        stored = committed.get(partition)
        known = [o for o in (learned, stored) if o is not None]
        return max(known) if known else None

    def run(self) -> LearnReport:
        """Run until ``stop`` is set or ``max_events`` records were consumed."""
        build(self.settings.model_spec)  # an unknown spec fails before any broker work
        consumer: Consumer | None = None
        try:
            self._publisher.start()
            learner = self._learner = self._initial_learner()
            consumer = make_consumer(self.settings, Groups.from_settings(self.settings).learner)
            committed = self._committed(consumer)

            def on_assign(c: Consumer, assigned: list[TopicPartition]) -> None:
                for tp in assigned:
                    position = self._position(learner, tp.partition, committed)
                    if position is not None:
                        tp.offset = position
                c.assign(assigned)

            consumer.subscribe([self.topic], on_assign=on_assign)
            while not self.stop.is_set() and not self._enough():
                budget = _BATCH if self.max_events is None else min(_BATCH, self.max_events - self.report.consumed)
                for message in consumer.consume(budget, timeout=0.2):
                    self._handle(learner, message)
                    # Checked per event, so "every N learned events" is exact.
                    if self.policy.due():
                        self._publish(consumer, learner)
                if self.policy.due():  # the time rule, when the stream is idle
                    self._publish(consumer, learner)
            if self.policy.pending:
                self._publish(consumer, learner)  # final version: nothing learned is left unpublished
            else:
                self._store(consumer, learner)  # only unlabeled/skipped events since the last publish
        finally:
            if consumer is not None:
                consumer.close()  # commits the offsets stored after the last publish
            self._publisher.close()
        return self.report

    def _enough(self) -> bool:
        return self.max_events is not None and self.report.consumed >= self.max_events

    def _handle(self, learner: OnlineLearner, message: Message) -> None:
        error = message.error()
        if error is not None:
            logger.warning("consumer error on %s: %s", self.topic, error)
            return
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        self.report.consumed += 1
        try:
            record = self._serde.decode(message.value(), message.headers())
        except DecodeError as exc:
            # The processor only writes valid records, so this is a bug or a
            # foreign writer: log where, skip it, keep learning.
            self.report.skipped += 1
            logger.error("skipping undecodable feature record %s: %s", format_record(topic, partition, offset), exc)
            learner.advance(topic, partition, offset)
            return
        label = record.get("label")
        learner.process(record["features"], label, topic=topic, partition=partition, offset=offset)
        if label is not None:
            self.report.learned += 1
            self.policy.learned()

    def _publish(self, consumer: Consumer, learner: OnlineLearner) -> None:
        started = time.monotonic()
        envelope = self._publisher.publish(
            learner.model, metrics=learner.metrics(), n_learned=learner.n_learned, input_offsets=learner.input_offsets
        )
        self.policy.published()
        self.report.published += 1
        self.report.last_version = envelope.version
        logger.info("published %s v%d in %.0f ms", envelope.model_name, envelope.version, (time.monotonic() - started) * 1000)
        # Offsets are stored only now: the published model has learned everything before them.
        self._store(consumer, learner, envelope.input_offsets)
        if self.on_publish is not None:
            self.on_publish(envelope)

    def _store(self, consumer: Consumer, learner: OnlineLearner, offsets: dict[str, int] | None = None) -> None:
        offsets = learner.input_offsets if offsets is None else offsets
        prefix = f"{self.topic}["
        tps = [
            TopicPartition(self.topic, int(key[len(prefix):-1]), offset)
            for key, offset in offsets.items()
            if key.startswith(prefix)
        ]
        if not tps:
            return
        try:
            consumer.store_offsets(offsets=tps)
        except KafkaException as exc:
            # Partitions revoked meanwhile: the next owner replays, which is safe.
            logger.warning("cannot store offsets %s: %s", tps, exc.args[0])
