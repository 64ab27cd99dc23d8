"""A pipeline topic as the cluster holds it, compared with its spec.

:class:`~streamml.topics.TopicSpec` says what ``streamml topics create``
makes; :class:`TopicState` is what the cluster reports for an existing topic
(``Cluster.topic_states``). :func:`differences` lists where they disagree:
the partition count, and each config the spec sets (a config the spec does
not mention is the broker's business and never a difference).

An existing topic is never changed: fewer partitions cannot be restored and
more would move keys between partitions, so a difference is the operator's
to resolve (recreate the topic, or use another ``STREAMML_NAMESPACE``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from streamml.topics import TopicSpec

__all__ = ["TopicState", "Difference", "differences", "describe_differences"]


@dataclass(frozen=True)
class TopicState:
    """An existing topic: its partition count and the configs the broker reports for it.

    ``config`` holds what ``DescribeConfigs`` answers: every config with its
    default on Apache Kafka, only those set at creation on the embedded broker
    (``docs/embedded-broker.md#describe-configs``).
    """

    name: str
    partitions: int
    config: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Difference:
    """One way an existing topic differs from its spec; ``actual`` is None for a config not set."""

    field: str
    expected: str
    actual: str | None

    def __str__(self) -> str:
        found = "unset" if self.actual is None else self.actual
        return f"{self.field} {found} (expected {self.expected})"

    def as_dict(self) -> dict[str, str | None]:
        return {"field": self.field, "expected": self.expected, "actual": self.actual}


def differences(spec: TopicSpec, state: TopicState) -> list[Difference]:
    """Where ``state`` disagrees with ``spec``: partitions first, then the spec's configs in order."""
    found: list[Difference] = []
    if state.partitions != spec.partitions:
        found.append(Difference("partitions", str(spec.partitions), str(state.partitions)))
    for key, expected in spec.config.items():
        actual = state.config.get(key)
        if actual != expected:
            found.append(Difference(key, expected, actual))
    return found


def describe_differences(name: str, found: list[Difference]) -> str:
    """One line naming topic ``name`` and every difference, e.g. for an error message."""
    return f"topic {name} differs from its spec: " + "; ".join(str(d) for d in found)
