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

The committed offsets belong to the newest version. When that version does
not load here and the loop falls back to an older one, it replays from the
older version's ``input_offsets`` (ignoring the committed offsets), and when
no version can be resumed at all it trains a fresh model from the beginning
of the features topic; both are logged as warnings.

A record the model cannot learn (e.g. a string label a linear model cannot
take) is logged with its position, counted as skipped and stepped over, like
an undecodable one: one poison record must not crash the learner into a
replay loop.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Message, TopicPartition

from model_publisher.catalog import FLAVOR, build, describe, matches
from model_publisher.learner import OnlineLearner, partition_key
from model_publisher.policy import PublishPolicy
from model_publisher.publisher import ModelPublisher
from streamml.cluster import Cluster
from streamml.config import Settings
from streamml.envelope import GOLDEN_EXAMPLES, ModelEnvelope
from streamml.errors import DecodeError, KafkaClientError, ModelTooLargeError
from streamml.kafka import decoded, describe_error, format_record, store_offsets
from streamml.records import FeatureVector, RecordCodec

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
        settings: Settings | Cluster,
        *,
        max_events: int | None = None,
        stop: threading.Event | None = None,
        on_publish: Callable[[ModelEnvelope], None] | None = None,
        resume: bool = True,
        policy: PublishPolicy | None = None,
    ) -> None:
        self.cluster = Cluster.of(settings)
        self.settings = self.cluster.settings
        self.topic = self.cluster.topics.features
        #: Delayed labels: the joined records are read too (see OnlineLearner.predict_ahead).
        self.delayed = self.settings.label_mode == "delayed"
        self.labelled = self.cluster.topics.features_labelled
        self.inputs = [self.topic, self.labelled] if self.delayed else [self.topic]
        self.max_events = max_events
        self.stop = stop or threading.Event()
        self.on_publish = on_publish
        self.resume = resume
        self.policy = policy or PublishPolicy.from_settings(self.settings)
        self.report = LearnReport()
        self._codec = RecordCodec(FeatureVector)
        #: The latest input rows: each published version records the model's
        #: answers for them (golden examples a consumer replays before serving).
        self._recent_inputs: deque[dict[str, float]] = deque(maxlen=GOLDEN_EXAMPLES)
        #: Every feature name the model has seen, published as the envelope's
        #: ``feature_names`` so a model API can refuse names it never learned.
        self._feature_names: set[str] = set()
        self._publisher = ModelPublisher(self.cluster, flavor=FLAVOR)
        self._learner: OnlineLearner | None = None
        #: Whether the group's committed offsets belong to the model being
        #: trained (only when it resumed the newest published version).
        self._trust_committed = False

    def _initial_learner(self, committed: dict[tuple[str, int], int]) -> OnlineLearner:
        """Pick the model to continue and decide whether ``committed`` applies to it."""
        spec = self.settings.model_spec
        fresh = build(spec)
        newest_version = self._publisher.newest_version
        newest = self._publisher.newest_model() if self.resume else None
        if newest is not None:
            model, envelope = newest
            if matches(model, spec):
                self.report.resumed_from = envelope.version
                # The committed offsets were stored for the newest version; an
                # older one has not learned the events between the two.
                self._trust_committed = envelope.version == newest_version
                if self._trust_committed:
                    logger.info(
                        "resuming %s from v%d (n_learned=%d)", envelope.model_name, envelope.version, envelope.n_learned
                    )
                else:
                    logger.warning(
                        "resuming %s from v%d, not from the newest version v%s, which cannot be loaded here: "
                        "replaying %s from v%d's input offsets %s and ignoring the group's committed offsets %s "
                        "(they are v%s's), so the events v%d had not learned are learned again, not lost",
                        envelope.model_name, envelope.version, newest_version, self.topic, envelope.version,
                        envelope.input_offsets, committed, newest_version, envelope.version,
                    )
                self._feature_names.update(envelope.feature_names)
                return OnlineLearner.resume(model, envelope)
            logger.warning(
                "newest version v%d is a %s, not a %s (%s): starting a fresh model",
                envelope.version, describe(model), spec, describe(fresh),
            )
        # A fresh model starts from the beginning of the features topic, not
        # from the committed offsets. From the committed offsets it would learn
        # only events that arrive from now on, and its first version (due after
        # publish_every_events/seconds) would be an almost untrained model
        # published as the newest version, which subscribers swap to and serve
        # for as long as live traffic takes to train it. From the beginning it
        # retrains on every retained feature record, at consume speed, and
        # converges to what the chain it replaces knew (up to the topic's
        # retention). The cost is the replay time and a first few versions
        # trained on a prefix of the history, as on a first start.
        self._trust_committed = False
        if committed or newest_version is not None:
            logger.warning(
                "no version of %s can be resumed (newest published: %s): starting a fresh %s from the beginning of %s, "
                "retraining on every retained record; the group's committed offsets %s are ignored so the fresh "
                "model's first versions are not trained on new events only",
                self.settings.model_name, f"v{newest_version}" if newest_version else "none", spec, self.topic,
                committed,
            )
        return OnlineLearner(fresh)

    def _committed(self, consumer: Consumer) -> dict[tuple[str, int], int]:
        wanted = [TopicPartition(topic, p) for topic in self.inputs for p in self.cluster.partitions(topic)]
        try:
            committed = consumer.committed(wanted, timeout=10)
        except KafkaException as exc:
            names = ", ".join(self.inputs)
            raise KafkaClientError(f"cannot read committed offsets of {names}: {describe_error(exc)}") from exc
        return {(tp.topic, tp.partition): tp.offset for tp in committed if tp.offset >= 0}

    def _position(
        self, learner: OnlineLearner, topic: str, partition: int, committed: dict[tuple[str, int], int]
    ) -> int:
        """Where to read ``partition`` from: what the in-memory model has consumed.

        That is the resumed version's ``input_offsets`` at start (and further
        on after a re-assignment, so nothing is learned twice), or the group's
        committed offset where it is further: it only gets ahead for
        unlabeled or skipped records, which taught the model nothing. The
        committed offset counts only when the resumed version is the newest
        (see :meth:`_initial_learner`); a partition the model has read
        nothing of is read from the beginning.
        """
        learned = learner.input_offsets.get(partition_key(topic, partition))
        stored = committed.get((topic, partition)) if self._trust_committed else None
        known = [o for o in (learned, stored) if o is not None]
        return max(known) if known else OFFSET_BEGINNING

    def run(self) -> LearnReport:
        """Run until ``stop`` is set or ``max_events`` records were consumed."""
        build(self.settings.model_spec)  # an unknown spec fails before any broker work
        # Missing topics are an error, not a wait: a subscribe to them would idle silently.
        self.cluster.require_topics([*self.inputs, self._publisher.topic])
        consumer: Consumer | None = None
        try:
            self._publisher.start()
            consumer = self.cluster.group_consumer(self.cluster.groups.learner)
            committed = self._committed(consumer)
            learner = self._learner = self._initial_learner(committed)

            def on_assign(c: Consumer, assigned: list[TopicPartition]) -> None:
                for tp in assigned:
                    tp.offset = self._position(learner, tp.topic, tp.partition, committed)
                c.assign(assigned)

            consumer.subscribe(self.inputs, on_assign=on_assign)

            def skip(message: Message, exc: DecodeError) -> None:
                self._skip_undecodable(learner, message, exc)

            while not self.stop.is_set() and not self._enough():
                budget = _BATCH if self.max_events is None else min(_BATCH, self.max_events - self.report.consumed)
                for message, record in decoded(consumer.consume(budget, timeout=0.2), self._codec, on_skip=skip):
                    self._handle(learner, message, record)
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

    def _skip_undecodable(self, learner: OnlineLearner, message: Message, exc: DecodeError) -> None:
        # The processor only writes valid records, so this is a bug or a
        # foreign writer: log where, skip it, keep learning.
        topic, partition, offset = _position(message)
        self.report.consumed += 1
        self.report.skipped += 1
        logger.error("skipping undecodable feature record %s: %s", format_record(topic, partition, offset), exc)
        learner.advance(topic, partition, offset)

    def _handle(self, learner: OnlineLearner, message: Message, record: FeatureVector) -> None:
        topic, partition, offset = _position(message)
        self.report.consumed += 1
        label = record.label
        self._recent_inputs.append(record.features)
        self._feature_names.update(record.features)
        try:
            if topic == self.labelled:
                learner.process_label(
                    record.event_id, record.features, label, topic=topic, partition=partition, offset=offset
                )
            elif label is None and self.delayed:
                learner.predict_ahead(record.event_id, record.features, topic=topic, partition=partition, offset=offset)
            else:
                learner.process(record.features, label, topic=topic, partition=partition, offset=offset)
        except Exception as exc:  # noqa: BLE001 - any model error on one record: skip it, do not crash-loop
            self.report.skipped += 1
            logger.error(
                "skipping feature record %s: the %s model cannot learn it (label %.80r): %s: %s",
                format_record(topic, partition, offset), self.settings.model_spec, label, type(exc).__name__, exc,
            )
            learner.advance(topic, partition, offset)
            return
        if label is not None:
            self.report.learned += 1
            self.policy.learned()

    def _publish(self, consumer: Consumer, learner: OnlineLearner) -> None:
        started = time.monotonic()
        try:
            envelope = self._publisher.publish(
                learner.model,
                metrics=learner.metrics(),
                n_learned=learner.n_learned,
                input_offsets=learner.input_offsets,
                feature_names=sorted(self._feature_names),
            )
        except ModelTooLargeError as exc:
            # Fatal on purpose: skipping the publish would leave subscribers on
            # an ever older version while the learner runs on. No offset past
            # the last published version is stored, so nothing is lost, but a
            # restart replays to the same size: say what to change.
            since = f"v{self.report.last_version} was published" if self.report.last_version else "the learner started"
            raise ModelTooLargeError(
                model_name=exc.model_name,
                version=exc.version,
                size=exc.size,
                limit=exc.limit,
                setting="STREAMML_MAX_MODEL_TOTAL_BYTES",
                advice=(
                    f"learner stopped: the {self.settings.model_spec} model had learned {learner.n_learned} events. "
                    f"It was not published and no offsets were stored since {since}, so a restart replays the same "
                    "events and reaches the same size again. Raise STREAMML_MAX_MODEL_TOTAL_BYTES "
                    "(larger models travel in chunks, each within STREAMML_MAX_MODEL_BYTES) or learn a model that "
                    "stays small (STREAMML_MODEL_SPEC / --model-spec, e.g. logistic)"
                ),
            ) from exc
        self.policy.published()
        self.report.published += 1
        self.report.last_version = envelope.version
        logger.info(
            "published %s v%d in %.0f ms", envelope.model_name, envelope.version, (time.monotonic() - started) * 1000
        )
        # Offsets are stored only now: the published model has learned everything before them.
        self._store(consumer, learner, envelope.input_offsets)
        if self.on_publish is not None:
            self.on_publish(envelope)

    def _store(self, consumer: Consumer, learner: OnlineLearner, offsets: dict[str, int] | None = None) -> None:
        offsets = learner.input_offsets if offsets is None else offsets
        for topic in self.inputs:
            prefix = f"{topic}["
            store_offsets(
                consumer,
                topic,
                {int(key[len(prefix):-1]): offset for key, offset in offsets.items() if key.startswith(prefix)},
            )


def _position(message: Message) -> tuple[str, int, int]:
    """``(topic, partition, offset)`` of a consumed record (never ``None`` for a record)."""
    topic, partition, offset = message.topic(), message.partition(), message.offset()
    assert topic is not None and partition is not None and offset is not None
    return topic, partition, offset
