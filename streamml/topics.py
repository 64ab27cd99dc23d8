"""The pipeline's topics and consumer groups: names, partitions and config.

All names come from here, prefixed with the settings' namespace, so a test or a
second pipeline on the same cluster never collides with another.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only for annotations: records (imported by config) import this module
    from streamml.config import Settings

__all__ = [
    "WINDOW_TABLE",
    "window_changelog",
    "TopicSpec",
    "Topics",
    "Groups",
    "EPHEMERAL_PURPOSES",
    "RAW_EVENTS",
    "DEAD_LETTERS",
    "REPLAYED",
    "FEATURES",
    "MODELS",
    "PREDICTIONS",
    "MONITORING",
    "LABELS",
    "FEATURES_BY_EVENT",
    "FEATURES_LABELLED",
]

RAW_EVENTS = "events.raw.v1"
DEAD_LETTERS = "events.raw.v1.dlq"
#: The replay ledger: one record per dead letter replayed, keyed by its position.
REPLAYED = "events.raw.v1.dlq.replayed"
FEATURES = "features.v1"
MODELS = "models.v1"
PREDICTIONS = "predictions.v1"
#: Distribution profiles, drift scores and references (:mod:`streamml.monitoring`).
MONITORING = "monitoring.v1"
#: Delayed labels, keyed by event id (see the README's "delayed labels").
LABELS = "labels.v1"
#: Feature vectors still waiting for their label, keyed by event id: the join's
#: repartition topic, co-partitioned with the labels topic.
FEATURES_BY_EVENT = "features.by-event.v1"
#: Feature vectors joined with their delayed label: what the learner learns from.
FEATURES_LABELLED = "features.labelled.v1"


@dataclass(frozen=True)
class TopicSpec:
    """A topic the pipeline owns: its name, partition count and topic config."""

    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Topics:
    """The pipeline's topics, namespaced for one pipeline."""

    raw_events: str
    dead_letters: str
    features: str
    models: str
    predictions: str
    replayed: str
    monitoring: str
    labels: str
    features_by_event: str
    features_labelled: str

    @classmethod
    def from_settings(cls, settings: Settings) -> Topics:
        return cls(
            raw_events=settings.topic(RAW_EVENTS),
            dead_letters=settings.topic(DEAD_LETTERS),
            replayed=settings.topic(REPLAYED),
            features=settings.topic(FEATURES),
            models=settings.topic(MODELS),
            predictions=settings.topic(PREDICTIONS),
            monitoring=settings.topic(MONITORING),
            labels=settings.topic(LABELS),
            features_by_event=settings.topic(FEATURES_BY_EVENT),
            features_labelled=settings.topic(FEATURES_LABELLED),
        )

    def specs(self, settings: Settings) -> list[TopicSpec]:
        """Return what ``streamml topics create`` creates, in creation order.

        With ``min_insync_replicas`` above 1 every topic carries it, so an
        acknowledged record is on that many replicas whatever the broker's default.
        """
        specs = self._specs(settings)
        if settings.min_insync_replicas > 1:
            isr = {"min.insync.replicas": str(settings.min_insync_replicas)}
            specs = [TopicSpec(s.name, s.partitions, {**s.config, **isr}) for s in specs]
        return specs

    def _specs(self, settings: Settings) -> list[TopicSpec]:
        n = settings.partitions
        return [
            TopicSpec(self.raw_events, n),
            # Quarantined events are evidence: keep them longer than the data.
            TopicSpec(self.dead_letters, 1, {"retention.ms": str(30 * 24 * 3600 * 1000)}),
            # Which dead letters were replayed: kept as long as the dead letters are.
            TopicSpec(self.replayed, 1, {"retention.ms": str(30 * 24 * 3600 * 1000)}),
            # Features keep the raw topic's partitioning, so per-key order holds.
            TopicSpec(self.features, n),
            # One partition: versions of a model (and the directives about them)
            # are totally ordered. History is kept: delete policy, no time or
            # size limit, so every version stays available for rollback and
            # audit (a compacted topic keyed by model name would keep only the
            # newest record per model). See the README's "model registry".
            TopicSpec(
                self.models,
                1,
                {"cleanup.policy": "delete", "retention.ms": "-1", "retention.bytes": "-1"},
            ),
            TopicSpec(self.predictions, n),
            # One partition: reports in the order they were made. A week of them;
            # the references they point to are sent again with every restart.
            TopicSpec(self.monitoring, 1, {"retention.ms": str(7 * 24 * 3600 * 1000)}),
            # Delayed labels: the labels and the features waiting for them are
            # co-partitioned by event id (same count, murmur2 on both sides).
            TopicSpec(self.labels, n),
            TopicSpec(self.features_by_event, n),
            TopicSpec(self.features_labelled, n),
        ]

    def all(self) -> list[str]:
        return [
            self.raw_events, self.dead_letters, self.features, self.models, self.predictions, self.replayed,
            self.monitoring, self.labels, self.features_by_event, self.features_labelled,
        ]


#: Purposes of the short-lived, never-committing consumers (``Groups.ephemeral``).
EPHEMERAL_PURPOSES = ("reader", "lag-probe", "subscriber", "monitor", "gate", "window-view")


@dataclass(frozen=True)
class Groups:
    """Consumer group ids: the components' groups and the short-lived readers' ones.

    Every group id the project uses is made here, namespaced like the topics.
    """

    processor: str
    learner: str
    scorer: str
    #: ``<namespace>streamml.``: the prefix of every group id of this pipeline.
    prefix: str = "streamml."

    @classmethod
    def from_settings(cls, settings: Settings) -> Groups:
        return cls(
            processor=settings.topic("streamml.processor"),
            learner=settings.topic("streamml.learner"),
            scorer=settings.topic("streamml.scorer"),
            prefix=settings.topic("streamml."),
        )

    def all(self) -> list[str]:
        """The components' groups (those that commit offsets)."""
        return [self.processor, self.learner, self.scorer]

    def reads(self, topics: Topics, *, delayed_labels: bool = False) -> dict[str, list[str]]:
        """Which topics each component group consumes: what its lag is measured on.

        ``delayed_labels``: the processor also reads the labels and the
        vectors waiting for them, the learner the joined vectors.
        """
        if delayed_labels:
            return {
                self.processor: [topics.raw_events, topics.features_by_event, topics.labels],
                self.learner: [topics.features, topics.features_labelled],
                self.scorer: [topics.features],
            }
        return {
            self.processor: [topics.raw_events],
            self.learner: [topics.features],
            self.scorer: [topics.features],
        }

    def ephemeral(self, purpose: str) -> str:
        """A fresh group id for a short-lived reader that never commits (one of :data:`EPHEMERAL_PURPOSES`)."""
        if purpose not in EPHEMERAL_PURPOSES:
            raise ValueError(f"unknown reader purpose {purpose!r}; expected one of {EPHEMERAL_PURPOSES}")
        return f"{self.prefix}{purpose}.{uuid.uuid4().hex}"

    def is_ephemeral(self, group_id: str) -> bool:
        """Whether ``group_id`` was made by :meth:`ephemeral` (of any namespace)."""
        return any(f"streamml.{purpose}." in group_id for purpose in EPHEMERAL_PURPOSES)


#: Name of the stream processor's window table (a faust table).
WINDOW_TABLE = "windows"


def window_changelog(groups: Groups) -> str:
    """The topic holding the processor's per-key window state: faust's changelog of :data:`WINDOW_TABLE`.

    faust names a table's changelog ``<app id>-<table>-changelog``, and the
    processor's app id is its group. It is compacted; each record is keyed by
    the raw event's key and holds :meth:`streamml.windows.WindowState.dump`
    as JSON. Serving apps read it to compute the windowed features
    (:mod:`consumers.window_view`).
    """
    return f"{groups.processor}-{WINDOW_TABLE}-changelog"
