"""Score the features stream with the live model and publish predictions.

Each feature record becomes a :class:`~streamml.records.Prediction` keyed like
its input, stamped with the model version that made it and carrying the label
when there is one, so accuracy per version can be computed downstream. The
scorer consumes nothing until a model is loaded: there are no default
predictions. Delivery is at-least-once: input offsets are stored only after
the batch's predictions were acknowledged. A record the model cannot score
(it raises on it) is logged with its position, counted as skipped and
stepped over: it gets no prediction, and it does not crash the scorer into a
replay loop.

Scale-out: several scorers in the one group ``Groups.scorer`` split the
features partitions; each follows the models topic on its own (its own
:class:`ModelSubscriber`) and hot-swaps by itself. The offsets a scorer has
stored are committed when its partitions are revoked, so a rebalance among
live scorers replays nothing; a scorer that dies replays, on its partitions'
next owner, what it scored after its last commit (auto-commit interval plus
the batch in flight). Each prediction names its input's ``event_id``, so
those duplicates can be counted downstream.

Time to the first prediction: the subscriber imports the model library
ahead of the first load (:data:`consumers.subscriber.WARM_UP_MODULES`) while
the scorer waits for the model and for its group join
(``docs/embedded-broker.md#first-group-join``); the wait loop checks for the
model every :data:`_WAIT_SECONDS`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition

from consumers.scorer_metrics import ScorerMetrics
from consumers.subscriber import ModelSubscriber
from streamml.cluster import Cluster
from streamml.config import Settings
from streamml.errors import DecodeError
from streamml.kafka import Deliveries, decoded, describe_error, format_record, produce, store_offsets
from streamml.records import FeatureVector, Prediction, RecordCodec, avro_label

__all__ = ["StreamScorer", "ScoreReport", "rewind_points"]

logger = logging.getLogger(__name__)

_BATCH = 500
#: Longest one consume waits while no model is loaded: bounds how late a newly
#: loaded first model is noticed (the partitions are paused, so it returns nothing).
_WAIT_SECONDS = 0.05
#: Longest one consume waits for a batch once scoring (a partial batch is scored then).
_POLL_SECONDS = 0.1



@dataclass
class ScoreReport:
    """What one run of the scorer did."""

    scored: int = 0
    skipped: int = 0
    #: Predictions made per model version.
    versions: dict[int, int] = field(default_factory=dict)


def rewind_points(messages: Iterable[Message]) -> dict[tuple[str, int], int]:
    """Return the smallest offset of each ``(topic, partition)`` among ``messages``.

    Errors (``message.error()``) carry no record and are ignored. Seeking each
    partition there, once, puts every one of the messages back in the queue.
    """
    earliest: dict[tuple[str, int], int] = {}
    for message in messages:
        if message.error() is not None:
            continue
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        assert topic is not None and partition is not None and offset is not None  # set on every consumed record
        where = (topic, partition)
        if where not in earliest or offset < earliest[where]:
            earliest[where] = offset
    return earliest


class StreamScorer:
    """Consume features (group ``Groups.scorer``), predict, produce predictions.

    Uses ``subscriber`` if given (already started or not), else its own
    :class:`ModelSubscriber`. Stops when ``stop`` is set or after
    ``max_events`` scored records. ``metrics``, if given, exports its counts,
    batch latency and the subscriber's model state.
    """

    def __init__(
        self,
        settings: Settings | Cluster,
        *,
        subscriber: ModelSubscriber | None = None,
        max_events: int | None = None,
        stop: threading.Event | None = None,
        metrics: ScorerMetrics | None = None,
    ) -> None:
        self.cluster = Cluster.of(settings)
        self.settings = self.cluster.settings
        self.features = self.cluster.topics.features
        self.predictions = self.cluster.topics.predictions
        self.max_events = max_events
        self.stop = stop or threading.Event()
        self.subscriber = subscriber or ModelSubscriber(self.cluster)
        self._owns_subscriber = subscriber is None
        self.report = ScoreReport()
        self.metrics = metrics
        if metrics is not None:
            metrics.watch(self.report, self.subscriber)  # before the subscriber starts: the first swap counts
        self._in = RecordCodec(FeatureVector)
        self._out = RecordCodec(Prediction)

    def run(self) -> ScoreReport:
        """Wait for a model, then score until stopped; return what was done.

        The consumer joins its group right away, with its partitions paused
        until the first model is loaded: a first group join can take seconds
        (half the session timeout on the embedded broker), and doing it while
        waiting for the model means scoring starts the moment one is there.
        """
        # Missing topics are an error, not a wait: the subscribe would idle silently.
        self.cluster.require_topics([self.features, self.predictions])
        self.subscriber.start()
        consumer = self.cluster.group_consumer(self.cluster.groups.scorer)
        producer = self.cluster.producer()
        try:
            consumer.subscribe([self.features], on_assign=self._on_assign, on_revoke=self._on_revoke)
            while not self.subscriber.ready:
                if self.stop.is_set():
                    return self.report
                self._hold_back(consumer, consumer.consume(_BATCH, timeout=_WAIT_SECONDS))
            consumer.resume(consumer.assignment())
            logger.info("scoring %s with %s v%s", self.features, self.subscriber.model_name, self.subscriber.version)
            while not self.stop.is_set() and not self._enough():
                budget = _BATCH if self.max_events is None else min(_BATCH, self.max_events - self.report.scored)
                batch = consumer.consume(budget, timeout=_POLL_SECONDS)
                if batch:
                    started = time.perf_counter()
                    self._score_batch(consumer, producer, batch)
                    if self.metrics is not None:
                        self.metrics.observe_batch(len(batch), time.perf_counter() - started)
        finally:
            consumer.close()  # commits the offsets stored so far
            producer.flush(10)
            if self._owns_subscriber:
                self.subscriber.stop()
        return self.report

    @staticmethod
    def _hold_back(consumer: Any, messages: list[Message]) -> None:
        """Put records consumed before a model was loaded back, and pause their partitions.

        Paused partitions return nothing; should records slip through a
        rebalance race, each partition is rewound once, to the first of them,
        so all of them are scored later (rewinding per record would leave the
        position at the last one, and the earlier ones would never be scored).
        """
        for (topic, partition), offset in rewind_points(messages).items():
            consumer.seek(TopicPartition(topic, partition, offset))
            consumer.pause([TopicPartition(topic, partition)])

    def _on_assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        where = sorted(tp.partition for tp in partitions)
        logger.info(
            "assigned %s %s", self.features, where,
            extra={"event": "rebalance", "topic": self.features, "assigned": where},
        )
        consumer.assign(partitions)
        if not self.subscriber.ready:
            consumer.pause(partitions)

    def _on_revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        """Commit what was stored before the partitions go: their next owner then starts after it.

        Offsets are stored only after a batch's predictions were acknowledged
        (and no batch is in flight inside a rebalance callback), so this commit
        never skips a record; without it the next owner would replay up to an
        auto-commit interval of predictions.
        """
        where = sorted(tp.partition for tp in partitions)
        logger.info(
            "revoked %s %s", self.features, where,
            extra={"event": "rebalance", "topic": self.features, "revoked": where},
        )
        try:
            consumer.commit(asynchronous=False)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if isinstance(error, KafkaError) and error.code() == KafkaError._NO_OFFSET:
                return  # nothing stored since the last commit
            # At-least-once still holds: the next owner replays from the last commit.
            logger.warning("cannot commit %s before a rebalance: %s", self.features, describe_error(exc))

    def _enough(self) -> bool:
        return self.max_events is not None and self.report.scored >= self.max_events

    def _score_batch(self, consumer: Any, producer: Any, batch: list[Message]) -> None:
        deliveries = Deliveries()
        done: dict[int, int] = {}

        def skip(message: Message, exc: DecodeError) -> None:
            done[message.partition() or 0] = (message.offset() or 0) + 1
            self.report.skipped += 1
            logger.error(
                "skipping undecodable feature record %s: %s",
                format_record(self.features, message.partition() or 0, message.offset() or 0), exc,
            )

        for message, record in decoded(batch, self._in, on_skip=skip):
            partition, offset = message.partition() or 0, message.offset() or 0
            done[partition] = offset + 1
            serving = self.subscriber.current()  # one snapshot: the version reported is the one that predicted
            try:
                prediction = serving.predict_one(record.features)
                proba = serving.predict_proba_one(record.features)  # {} for a regressor
                value = self._out.encode(
                    Prediction(
                        key=record.key,
                        event_id=record.event_id,
                        event_time=record.event_time,
                        model_name=self.subscriber.model_name,
                        model_version=serving.version,
                        prediction=avro_label(prediction),
                        probabilities={str(k): float(v) for k, v in proba.items()},
                        label=record.label,
                        scored_at=int(time.time() * 1000),
                    )
                )
            except Exception as exc:  # noqa: BLE001 - one record the model cannot score: skip it, no default prediction
                self.report.skipped += 1
                logger.error(
                    "skipping feature record %s: %s v%s cannot score it: %s: %s",
                    format_record(self.features, partition, offset), self.subscriber.model_name, serving.version,
                    type(exc).__name__, exc,
                )
                continue
            produce(
                producer, self.predictions, value, key=message.key(), headers=self._out.headers, on_delivery=deliveries
            )
            self.report.scored += 1
            self.report.versions[serving.version] = self.report.versions.get(serving.version, 0) + 1
        # Offsets of this batch are stored only once its predictions are
        # acknowledged; if they are not, wait() raises and a restart scores it again.
        deliveries.wait(producer, 30, f"predictions to {self.predictions}")
        store_offsets(consumer, self.features, done)
