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

A fresh model retrains on the history of the features topic before it
publishes: the end of every input partition is taken at start, and no version
is published until the loop has read that far (one is published then, "caught
up on N records of history"; the cadence goes on from there). Versions that
have seen only a prefix of the history are never offered as current. Stopped
before it caught up, the loop publishes nothing and stores no offsets, so the
next start retrains from the beginning again. A resumed version continues at
once: its chain already knew the history.

A record the model cannot learn (e.g. a string label a linear model cannot
take) is logged with its position, counted as skipped and stepped over, like
an undecodable one: one poison record must not crash the learner into a
replay loop. A model that fails on every record is another matter: after
``STREAMML_LEARNER_MAX_CONSECUTIVE_ERRORS`` failures in a row the loop stops
with :class:`~streamml.errors.UnlearnableRecordsError`, naming the first of
them, and (as always) no offset past the last published version is stored.

Versions are gated (:mod:`model_publisher.champion`, ``docs/quality-gate.md``):
when one is due and a champion is being served, the learner freezes a copy
of its model, keeps learning, scores the copy and the champion on the next
``STREAMML_GATE_EVENTS`` labelled events, and publishes the copy with the
gate's decision; a refused one is withheld from consumers. The offsets
stored are the frozen copy's, so the gate window is learned again after a
crash. On the way out a waiting candidate is judged on the events it has.

Feedback guard: predictions never flow back into training unless
``STREAMML_LEARNER_ALLOW_PREDICTION_SOURCE`` says so. At start the loop
refuses (:class:`~streamml.errors.ConfigError`, exit 2) a source that is the
predictions topic, or whose first records (:data:`PEEK_RECORDS` per
partition, within :data:`PEEK_SECONDS`) carry a model version
(:func:`model_version_marker`: a Prediction record, a model-version header,
a ``model_version`` feature). At run time such a record is stepped over and
counted in ``LearnReport.refused``, never learned.

Another learner of the same model name fences this one's publisher
(:mod:`model_publisher.publisher`): its next publish raises
:class:`~streamml.errors.PublisherFencedError`, which ends the loop the same
way, with nothing stored past its last published version.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Message, TopicPartition

from model_publisher.catalog import FLAVOR, build, describe, matches, task
from model_publisher.champion import Candidate, GatedPublishing
from model_publisher.gate import QualityGate
from model_publisher.learner import OnlineLearner, partition_key
from model_publisher.metrics import LearnerMetrics
from model_publisher.policy import PublishPolicy
from model_publisher.publisher import ModelPublisher
from streamml.cluster import Cluster
from streamml.config import Settings
from streamml.envelope import GOLDEN_EXAMPLES, ModelEnvelope
from streamml.errors import ConfigError, DecodeError, KafkaClientError, ModelTooLargeError, UnlearnableRecordsError
from streamml.kafka import decoded, describe_error, format_record, record_headers, store_offsets
from streamml.lag import watermarks
from streamml.positions import from_beginning
from streamml.records import FeatureVector, Prediction, RecordCodec
from streamml.registry import read_history
from streamml.serde import SCHEMA_HEADER, Headers, header_value
from streamml.trust import load_model

__all__ = [
    "LearningLoop", "LearnReport", "RecentIds", "model_version_marker", "MODEL_VERSION_FIELD",
    "PEEK_RECORDS", "PEEK_SECONDS",
]

logger = logging.getLogger(__name__)

_BATCH = 500

#: The field a :class:`~streamml.records.Prediction` names the version that made it in.
MODEL_VERSION_FIELD = "model_version"
#: The setting that lets the learner train on model outputs, as its variable is spelled.
ALLOW_SETTING = "STREAMML_LEARNER_ALLOW_PREDICTION_SOURCE"
#: Records per partition the start-up check reads from each source's start.
PEEK_RECORDS = 20
#: Longest the start-up check reads, seconds, over all of a source's partitions.
PEEK_SECONDS = 5.0
_PREDICTION_FINGERPRINT = dict(RecordCodec(Prediction).headers)[SCHEMA_HEADER]
_PREDICTIONS = RecordCodec(Prediction)
#: Header names that mark a record as made by a model (compared lowercased, ``-`` and ``.`` as ``_``).
_VERSION_HEADERS = (MODEL_VERSION_FIELD,)


def model_version_marker(value: bytes | None, headers: Headers) -> str | None:
    """Say how a record shows it carries a model version (it is a model's output), else ``None``.

    Looked at, without decoding the record as a feature vector: a header
    named like ``model_version`` (``streamml.model.version`` too), and the
    writer-schema header of a :class:`~streamml.records.Prediction` (what
    the stream scorer writes). A feature named ``model_version`` is checked
    on the decoded record (:meth:`LearningLoop._handle`).
    """
    for name, raw in headers or ():
        normal = name.lower().replace("-", "_").replace(".", "_")
        if normal.endswith(_VERSION_HEADERS):
            shown = raw.decode("utf-8", errors="replace")[:40] if raw is not None else ""
            return f"header {name}={shown}"
    if header_value(headers, SCHEMA_HEADER) == _PREDICTION_FINGERPRINT:
        try:
            version: object = _PREDICTIONS.decode(value, headers).model_version
        except DecodeError:
            version = "unreadable"
        return f"a Prediction record ({MODEL_VERSION_FIELD} {version})"
    return None


@dataclass
class LearnReport:
    """What one run of the loop did."""

    consumed: int = 0
    learned: int = 0
    skipped: int = 0
    published: int = 0
    resumed_from: int | None = None
    last_version: int | None = None
    #: Versions the quality gate refused (published, withheld from consumers).
    withheld: int = 0
    #: Records of history a fresh model read before its first version (0: none to catch up on).
    history: int = 0
    #: The version published once a fresh model had caught up on the history.
    caught_up_version: int | None = None
    #: Records refused because they carry a model version (predictions fed back), never learned.
    refused: int = 0
    #: Records not learned because their event id was learned recently (a
    #: feature vector the processor emitted again after a crash).
    duplicates: int = 0


class RecentIds:
    """The last ``capacity`` event ids seen, oldest forgotten first (bounded memory).

    >>> ids = RecentIds(2)
    >>> [ids.seen_before(i) for i in ("a", "b", "a", "c", "b")]
    [False, False, True, False, True]
    >>> ids.seen_before("a")  # forgotten: "b" and "c" are the last two
    False
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self._order: deque[str] = deque()
        self._ids: set[str] = set()

    def seen_before(self, event_id: str) -> bool:
        """Whether ``event_id`` is remembered; remember it if not."""
        if event_id in self._ids:
            return True
        self._ids.add(event_id)
        self._order.append(event_id)
        if len(self._order) > self.capacity:
            self._ids.discard(self._order.popleft())
        return False

    def __len__(self) -> int:
        return len(self._order)


class LearningLoop:
    """Consume features, learn online, publish versions by policy.

    ``stop`` is set from elsewhere (a signal handler, a test) to end the loop
    cleanly; ``max_events`` ends it after that many consumed records. A final
    version is published on the way out if anything new was learned.
    ``on_publish`` is called with each published envelope (the CLI prints it).
    ``metrics``, if given, exports the loop's counts and each publish.
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
        topic: str | None = None,
        metrics: LearnerMetrics | None = None,
    ) -> None:
        self.cluster = Cluster.of(settings)
        self.settings = self.cluster.settings
        #: The training source: the features topic unless ``topic`` names another.
        self.topic = topic or self.cluster.topics.features
        self._allow_predictions = self.settings.learner_allow_prediction_source
        #: :meth:`check_sources` passed (the CLI calls it before its start line; run() then does not again).
        self._sources_checked = False
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
        self.metrics = metrics
        if metrics is not None:
            metrics.watch(self.report)
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
        #: ``(topic, partition) -> end offset`` a fresh model must read before it
        #: publishes; empty once caught up (or when there was nothing to catch up on).
        self._history_ends: dict[tuple[str, int], int] = {}
        #: Set once the loop publishes on its cadence: at start when there is no
        #: history to catch up on, else when it was read (tests wait on it).
        self.caught_up = threading.Event()
        self._consecutive_errors = 0
        self._first_error: tuple[str, str] | None = None
        gate_on = self.settings.gate_events > 0
        self._gating = GatedPublishing(None, window=self.settings.gate_events)
        self._gate_on = gate_on
        #: The waiting candidate's gate window is full: publish it after this record.
        self._window_full = False
        #: Event ids learned recently: a replayed feature vector is not learned twice.
        dedup = self.settings.learner_dedup_events
        self._learned_ids: RecentIds | None = RecentIds(dedup) if dedup > 0 else None

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
            # Subscribed first: librdkafka joins the group in its own threads
            # while the reads below run (about 3 s of join on the embedded
            # broker, docs/embedded-broker.md#first-group-join, overlapping
            # about as much of reading). The assignment is handed over, and
            # on_assign run, only by the first consume() below, once
            # everything it reads is known.
            consumer = self.cluster.group_consumer(self.cluster.groups.learner)
            # Read before subscribing: during the join librdkafka holds this request until it ends.
            committed = self._committed(consumer)
            state: dict[str, Any] = {"committed": committed}

            def on_assign(c: Consumer, assigned: list[TopicPartition]) -> None:
                for tp in assigned:
                    tp.offset = self._position(state["learner"], tp.topic, tp.partition, state["committed"])
                assigned = from_beginning(c, assigned)
                c.assign(assigned)
                # The position each partition is read from; OFFSET_BEGINNING (negative) as "beginning".
                where = sorted(
                    format_record(tp.topic, tp.partition, tp.offset) if tp.offset >= 0
                    else f"{tp.topic}[{tp.partition}]@beginning"
                    for tp in assigned
                )
                logger.info(
                    "rebalance: assigned %s", ", ".join(where) or "nothing",
                    extra={"event": "rebalance", "assigned": where},
                )

            consumer.subscribe(self.inputs, on_assign=on_assign)
            self.check_sources()
            self._publisher.start()
            learner = self._learner = state["learner"] = self._initial_learner(committed)
            if self._gate_on:
                self._gating.gate = QualityGate(margin=self.settings.gate_margin, task=task(learner.model))
                self._crown_served()
            if self.report.resumed_from is None:
                self._history_ends = self._history()
            if not self._history_ends:
                self.caught_up.set()

            def skip(message: Message, exc: DecodeError) -> None:
                self._skip_undecodable(learner, message, exc)

            while not self.stop.is_set() and not self._enough():
                budget = _BATCH if self.max_events is None else min(_BATCH, self.max_events - self.report.consumed)
                batch = self._refuse_model_outputs(learner, consumer.consume(budget, timeout=0.2))
                for message, record in decoded(batch, self._codec, on_skip=skip):
                    self._handle(learner, message, record)
                    if self._window_full:
                        self._publish_window(consumer)
                    # Checked per event, so "every N learned events" is exact.
                    if self.caught_up.is_set() and self.policy.due():
                        self._publish(consumer, learner)
                if not self.caught_up.is_set():
                    self._check_caught_up(consumer, learner)
                elif self.policy.due():  # the time rule, when the stream is idle
                    self._publish(consumer, learner)
            if not self.caught_up.is_set():
                self._stopped_catching_up(consumer)
            elif self.policy.pending or self._gating.pending is not None:
                self._publish(consumer, learner, final=True)  # final version: nothing learned is left unpublished
            else:
                self._store(consumer, learner.input_offsets)  # only unlabeled/skipped events since the last publish
        finally:
            if consumer is not None:
                consumer.close()  # commits the offsets stored after the last publish
            self._publisher.close()
        return self.report

    def check_sources(self) -> None:
        """Refuse a training source that holds model outputs, unless the setting allows it.

        Raises :class:`~streamml.errors.ConfigError` (exit 2) naming the
        source, why, and :data:`ALLOW_SETTING`. Reads at most
        :data:`PEEK_RECORDS` records per partition, for at most :data:`PEEK_SECONDS`.
        """
        if self._sources_checked:
            return
        for topic in self.inputs:
            problem: str | None = None
            if topic == self.cluster.topics.predictions:
                problem = "it is the predictions topic"
            else:
                found = self._peek(topic)
                problem = None if found is None else f"its record {found[0]} carries a model version: {found[1]}"
            if problem is None:
                continue
            if self._allow_predictions:
                logger.warning(
                    "learning from %s although %s: allowed by %s=true (a feedback loop)", topic, problem, ALLOW_SETTING
                )
                continue
            raise ConfigError(
                f"refusing to learn from {topic}: {problem}; predictions must not flow back into training "
                f"(set {ALLOW_SETTING}=true to allow it)"
            )
        self._sources_checked = True

    def _peek(self, topic: str) -> tuple[str, str] | None:
        """The first record among the first few of each partition that carries a model version: ``(where, how)``."""
        marks = watermarks(self.cluster, [(topic, p) for p in self.cluster.partitions(topic)])
        left = {p: min(high - low, PEEK_RECORDS) for (_, p), (low, high) in marks.items() if high > low}
        if not left:
            return None
        consumer = self.cluster.consumer("reader")
        try:
            consumer.assign(from_beginning(consumer, [TopicPartition(topic, p, OFFSET_BEGINNING) for p in left]))
            deadline = time.monotonic() + PEEK_SECONDS
            while any(n > 0 for n in left.values()) and time.monotonic() < deadline:
                for message in consumer.consume(100, timeout=0.1):
                    if message.error() is not None:
                        continue
                    where_topic, partition, offset = _position(message)
                    if left.get(partition, 0) <= 0:
                        continue
                    left[partition] -= 1
                    how = model_version_marker(message.value(), record_headers(message))
                    if how is None:
                        how = self._marked_feature(message)
                    if how is not None:
                        return format_record(where_topic, partition, offset), how
        finally:
            consumer.close()
        return None

    def _marked_feature(self, message: Message) -> str | None:
        try:
            record = self._codec.decode(message.value(), record_headers(message))
        except DecodeError:
            return None
        if MODEL_VERSION_FIELD in record.features:
            return f"feature {MODEL_VERSION_FIELD}={record.features[MODEL_VERSION_FIELD]:g}"
        return None

    def _refuse_model_outputs(self, learner: OnlineLearner, batch: list[Message]) -> list[Message]:
        """Step over (and count) records that carry a model version; return the others.

        They are advanced past, so the published offsets move on and they
        are never replayed. Allowed by the setting, they pass (a Prediction
        record is then skipped as undecodable: it is no feature vector).
        """
        if self._allow_predictions:
            return batch
        kept: list[Message] = []
        for message in batch:
            how = None if message.error() is not None else model_version_marker(
                message.value(), record_headers(message)
            )
            if how is None:
                kept.append(message)
                continue
            self._refuse(learner, message, how)
        return kept

    def _refuse(self, learner: OnlineLearner, message: Message, how: str) -> None:
        topic, partition, offset = _position(message)
        self.report.consumed += 1
        self.report.refused += 1
        learner.advance(topic, partition, offset)
        n = self.report.refused
        if n == 1 or math.log10(n).is_integer():  # 1, 10, 100...: visible, never a flood
            where = format_record(topic, partition, offset)
            logger.error(
                "refusing %s: it carries a model version (%s); predictions are not learned (%d refused so far; "
                "%s=true allows it)",
                where, how, n, ALLOW_SETTING,
                extra={"event": "record_refused", "record": where, "reason": "model_output", "refused": n},
            )

    def _history(self) -> dict[tuple[str, int], int]:
        """The end of every input partition that holds records: what a fresh model reads before it publishes.

        Ends come from fetch responses (:func:`streamml.lag.watermarks`), right
        on every broker (``docs/embedded-broker.md#list-offsets``).
        """
        wanted = [(topic, p) for topic in self.inputs for p in self.cluster.partitions(topic)]
        marks = watermarks(self.cluster, wanted)
        ends = {tp: high for tp, (low, high) in marks.items() if high > low}
        self.report.history = sum(high - low for low, high in marks.values() if high > low)
        if ends:
            logger.info(
                "fresh %s model: reading %d records of history on %s before publishing a version",
                self.settings.model_spec, self.report.history, ", ".join(self.inputs),
            )
        return ends

    def _check_caught_up(self, consumer: Consumer, learner: OnlineLearner) -> None:
        """Publish once every assigned partition's position reached its history end (then the cadence applies).

        The consumer's position moves past records that are never delivered
        (a transaction's markers), so it, not the last offset + 1, says where
        the loop stands. Partitions assigned to another group member are theirs.
        """
        assigned = [tp for tp in consumer.assignment() if (tp.topic, tp.partition) in self._history_ends]
        if not assigned and not consumer.assignment():
            return  # no assignment yet
        behind = [
            tp for tp in consumer.position(assigned)
            if tp.offset < self._history_ends[(tp.topic, tp.partition)]
        ]
        if behind:
            return
        self._history_ends = {}
        self.caught_up.set()
        if not self.policy.pending:
            logger.info("caught up on %d records of history; nothing learned, nothing to publish", self.report.history)
            return
        logger.info(
            "caught up on %d records of history, publishing v%d", self.report.history, self._publisher.next_version
        )
        self._publish(consumer, learner)
        self.report.caught_up_version = self.report.last_version

    def _stopped_catching_up(self, consumer: Consumer) -> None:
        """Stopped before the history was read: no version (it would be one trained on a prefix), no offsets."""
        positions = {
            (tp.topic, tp.partition): tp.offset for tp in consumer.position(consumer.assignment()) if tp.offset >= 0
        }
        read = sum(min(positions.get(tp, 0), end) for tp, end in self._history_ends.items())
        logger.warning(
            "stopped while a fresh %s model was catching up on the history (at %d of %d records): no version "
            "published and no offsets stored, so the next start retrains from the beginning",
            self.settings.model_spec, read, self.report.history,
        )

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
        if not self._allow_predictions and MODEL_VERSION_FIELD in record.features:
            # A prediction featurized and fed back: its model's output, not an event.
            self._refuse(learner, message, f"feature {MODEL_VERSION_FIELD}={record.features[MODEL_VERSION_FIELD]:g}")
            return
        topic, partition, offset = _position(message)
        self.report.consumed += 1
        label = record.label
        if self._is_duplicate(record, topic, label):
            # Handled (its offset moves on, so resume stays exact) but not learned again.
            self.report.duplicates += 1
            if self.report.duplicates == 1 or self.report.duplicates % 1000 == 0:
                logger.info(
                    "not learning %s again: event %s was learned already (%d duplicates so far)",
                    format_record(topic, partition, offset), record.event_id, self.report.duplicates,
                )
            learner.advance(topic, partition, offset)
            return
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
            where = format_record(topic, partition, offset)
            logger.error(
                "skipping feature record %s: the %s model cannot learn it (label %.80r): %s: %s",
                where, self.settings.model_spec, label, type(exc).__name__, exc,
            )
            learner.advance(topic, partition, offset)
            self._failed(where, exc)
            return
        self._consecutive_errors = 0
        self._first_error = None
        if label is not None:
            self.report.learned += 1
            self.policy.learned()
            if self._gating.observe(record.features, label):
                self._window_full = True

    def _is_duplicate(self, record: FeatureVector, topic: str, label: Any) -> bool:
        """Whether this record would teach the model an event it has learned already.

        Only records that are learned count: a labelled feature vector, or a
        joined label. A delayed record without its label only waits for it,
        so it neither counts as learned nor is a duplicate.
        """
        if self._learned_ids is None:
            return False
        learns = topic == self.labelled or label is not None
        if not learns:
            return False
        # A joined label and the event's inline features are different records of one event: keyed apart.
        key = f"label:{record.event_id}" if topic == self.labelled else record.event_id
        return self._learned_ids.seen_before(key)

    def _failed(self, where: str, exc: Exception) -> None:
        """Count a record the model could not learn; stop after too many in a row."""
        self._consecutive_errors += 1
        if self._first_error is None:
            self._first_error = (where, f"{type(exc).__name__}: {exc}")
        if self._consecutive_errors < self.settings.learner_max_consecutive_errors:
            return
        first, error = self._first_error
        last = self.report.last_version or self.report.resumed_from
        raise UnlearnableRecordsError(
            model_spec=self.settings.model_spec,
            count=self._consecutive_errors,
            first=first,
            error=error,
            since=f"v{last} was published" if last else "the learner started",
        ) from exc

    def _crown_served(self) -> None:
        """Make the version consumers are served now the champion candidates must beat."""
        name = self.settings.model_name
        history = read_history(self.cluster, model_name=name)
        served = history.served(name)
        if served is None:
            return
        record = next(r for r in reversed(history.versions) if r.version == served and r.verdict is not None)
        assert record.verdict is not None
        try:
            self._gating.crown(load_model(record.verdict), name, served)
        except Exception as exc:  # noqa: BLE001 - a champion that does not load here: the next version is first
            logger.warning(
                "the served %s v%d does not load here (%s): the next version is not gated", name, served, exc
            )

    def _publish(self, consumer: Consumer, learner: OnlineLearner, *, final: bool = False) -> None:
        """A version is due: publish it now, or hold it for its gate window (see the module doc)."""
        gating = self._gating
        if gating.pending is not None:
            if not final:
                return  # the waiting candidate's window is not full yet
            self._publish_window(consumer)
            if not self.policy.pending:
                return
        candidate = gating.freeze(
            learner.model,
            metrics=learner.metrics(),
            n_learned=learner.n_learned,
            input_offsets=learner.input_offsets,
            feature_names=sorted(self._feature_names),
        ) if self._gate_on else Candidate(
            learner.model, learner.metrics(), learner.n_learned, dict(learner.input_offsets),
            sorted(self._feature_names),
        )
        if gating.needs_window() and not final:
            gating.hold(candidate)
            self.policy.published()  # the cadence counts from the freeze
            logger.info(
                "%s candidate (n_learned=%d) waits for %d held-back events before the gate",
                self.settings.model_name, candidate.n_learned, gating.window,
            )
            return
        self._publish_candidate(consumer, candidate)

    def _publish_window(self, consumer: Consumer) -> None:
        self._window_full = False
        candidate = self._gating.take_pending()
        if candidate is not None:
            self._publish_candidate(consumer, candidate, held=True)

    def _publish_candidate(self, consumer: Consumer, candidate: Candidate, *, held: bool = False) -> None:
        decision = self._gating.decide(candidate)
        if decision is not None:
            logger.info(
                "gate for %s: %s", self.settings.model_name, decision.reason,
                extra={"event": "gate_decision", "model": self.settings.model_name, "promoted": decision.promoted},
            )
        started = time.monotonic()
        try:
            envelope = self._publisher.publish(
                candidate.model,
                metrics=candidate.metrics,
                n_learned=candidate.n_learned,
                input_offsets=candidate.input_offsets,
                feature_names=candidate.feature_names,
                lineage=None if decision is None else decision.lineage(),
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
                    f"learner stopped: the {self.settings.model_spec} model had learned {candidate.n_learned} events. "
                    f"It was not published and no offsets were stored since {since}, so a restart replays the same "
                    "events and reaches the same size again. Raise STREAMML_MAX_MODEL_TOTAL_BYTES "
                    "(larger models travel in chunks, each within STREAMML_MAX_MODEL_BYTES) or learn a model that "
                    "stays small (STREAMML_MODEL_SPEC / --model-spec, e.g. logistic)"
                ),
            ) from exc
        if not held:
            self.policy.published()
        if decision is None or decision.promoted:
            self._gating.crown(candidate.model, envelope.model_name, envelope.version)
        else:
            self.report.withheld += 1
        self.report.published += 1
        self.report.last_version = envelope.version
        seconds = time.monotonic() - started
        promoted = None if decision is None else decision.promoted
        if self.metrics is not None:
            self.metrics.published(envelope, seconds, promoted=promoted)
        logger.info(
            "published %s v%d in %.0f ms", envelope.model_name, envelope.version, seconds * 1000,
            extra={
                "event": "model_published", "model": envelope.model_name, "version": envelope.version,
                "promoted": promoted, "bytes": envelope.payload_size, "n_learned": envelope.n_learned,
            },
        )
        # Offsets are stored only now: the published model has learned everything before them.
        self._store(consumer, envelope.input_offsets)
        if self.on_publish is not None:
            self.on_publish(envelope)

    def _store(self, consumer: Consumer, offsets: Mapping[str, int]) -> None:
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
