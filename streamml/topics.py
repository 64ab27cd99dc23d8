"""The pipeline's topics and consumer groups: names, partitions and config.

All names come from here, prefixed with the settings' namespace, so a test or a
second pipeline on the same cluster never collides with another.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from streamml.config import Settings

__all__ = [
    "TopicSpec",
    "Topics",
    "Groups",
    "RAW_EVENTS",
    "DEAD_LETTERS",
    "FEATURES",
    "MODELS",
    "PREDICTIONS",
]

RAW_EVENTS = "events.raw.v1"
DEAD_LETTERS = "events.raw.v1.dlq"
FEATURES = "features.v1"
MODELS = "models.v1"
PREDICTIONS = "predictions.v1"


@dataclass(frozen=True)
class TopicSpec:
    """A topic the pipeline owns: its name, partition count and topic config."""

    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Topics:
    """The five pipeline topics, namespaced for one pipeline."""

    raw_events: str
    dead_letters: str
    features: str
    models: str
    predictions: str

    @classmethod
    def from_settings(cls, settings: Settings) -> Topics:
        return cls(
            raw_events=settings.topic(RAW_EVENTS),
            dead_letters=settings.topic(DEAD_LETTERS),
            features=settings.topic(FEATURES),
            models=settings.topic(MODELS),
            predictions=settings.topic(PREDICTIONS),
        )

    def specs(self, settings: Settings) -> list[TopicSpec]:
        """Return what ``streamml topics create`` creates, in creation order."""
        n = settings.partitions
        return [
            TopicSpec(self.raw_events, n),
            # Quarantined events are evidence: keep them longer than the data.
            TopicSpec(self.dead_letters, 1, {"retention.ms": str(30 * 24 * 3600 * 1000)}),
            # Features keep the raw topic's partitioning, so per-key order holds.
            TopicSpec(self.features, n),
            # One partition: versions of a model are totally ordered. Compacted on
            # real Kafka so the newest version per model survives; readers still
            # treat it as an append log (compaction is unverified on the
            # embedded broker, BROKER-NOTES quirk 5).
            TopicSpec(
                self.models,
                1,
                {"cleanup.policy": "compact", "min.compaction.lag.ms": str(24 * 3600 * 1000)},
            ),
            TopicSpec(self.predictions, n),
        ]

    def all(self) -> list[str]:
        return [self.raw_events, self.dead_letters, self.features, self.models, self.predictions]


@dataclass(frozen=True)
class Groups:
    """Consumer group ids of the pipeline's components."""

    processor: str
    learner: str
    scorer: str

    @classmethod
    def from_settings(cls, settings: Settings) -> Groups:
        return cls(
            processor=settings.topic("streamml.processor"),
            learner=settings.topic("streamml.learner"),
            scorer=settings.topic("streamml.scorer"),
        )

    def all(self) -> list[str]:
        return [self.processor, self.learner, self.scorer]
