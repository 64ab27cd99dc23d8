"""The delayed-label join: features waiting for their label, labels waiting for their features (pure, no Kafka).

In delayed-label mode the processor sends every feature vector that has no
label yet to ``features.by-event.v1``, keyed by event id; labels arrive on
``labels.v1``, keyed by event id too, with the same partitioner (murmur2) and
partition count, so both sides of one event meet on one partition. The
state is a mapping ``event id -> entry`` (a faust table's store in the
processor, a dict in tests); each entry is a JSON-ready dict and is one of:

* ``{"s": "features", "v": <feature vector fields>, "t": ms, "p": partition}``:
  features waiting for their label;
* ``{"s": "label", "y": label, "lt": label time, "t": ms, "p": partition}``: a
  label that came first, waiting for its features (out of order);
* ``{"s": "joined", "t": ms, "p": partition}``: the join happened; kept for the
  time-to-live so a duplicate label (or a replayed feature vector) is counted
  and dropped instead of joined twice.

``t`` is when the entry was written (processing time). :meth:`LabelJoin.expire`
removes entries older than the time-to-live: features that expired unlabelled
and labels that never met their features are counted. Each method returns the
entry to write (or ``None`` to delete) without touching the store; the caller
applies it (:func:`apply`) and changelogs it to the entry's partition.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["JoinCounts", "JoinStep", "LabelJoin", "apply", "FEATURES", "LABEL", "JOINED"]

FEATURES = "features"
LABEL = "label"
JOINED = "joined"


@dataclass
class JoinCounts:
    """What the join did since the processor started."""

    joined: int = 0
    #: Joins where the label came before its features.
    joined_label_first: int = 0
    duplicate_labels: int = 0
    duplicate_features: int = 0
    expired_unlabelled: int = 0
    unmatched_labels: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class JoinStep:
    """One input's effect: the entry to store (``None``: delete) and the joined vector, if any."""

    key: bytes
    partition: int
    entry: dict[str, Any] | None
    #: The feature vector's fields with the label set, when this input completed a join.
    joined: dict[str, Any] | None = None


@dataclass
class LabelJoin:
    """Join feature vectors with labels by event id within ``ttl_ms`` (see the module doc)."""

    ttl_ms: int
    counts: JoinCounts = field(default_factory=JoinCounts)

    def on_features(
        self, store: Mapping[bytes, Any], key: bytes, vector: Mapping[str, Any], partition: int, now_ms: int
    ) -> JoinStep | None:
        """Features of event ``key`` (no label yet). Returns ``None`` when nothing changes (a duplicate)."""
        entry = _entry(store.get(key))
        if entry is None:
            return JoinStep(key, partition, {"s": FEATURES, "v": dict(vector), "t": now_ms, "p": partition})
        if entry["s"] == LABEL:
            self.counts.joined += 1
            self.counts.joined_label_first += 1
            joined = {**vector, "label": entry["y"]}
            return JoinStep(key, partition, {"s": JOINED, "t": now_ms, "p": partition}, joined)
        self.counts.duplicate_features += 1  # a replay after a restart: the first copy stands
        return None

    def on_label(
        self, store: Mapping[bytes, Any], key: bytes, label: Any, label_time: int, partition: int, now_ms: int
    ) -> JoinStep | None:
        """The label of event ``key``. Returns ``None`` when nothing changes (a duplicate)."""
        entry = _entry(store.get(key))
        if entry is None:
            return JoinStep(key, partition, {"s": LABEL, "y": label, "lt": label_time, "t": now_ms, "p": partition})
        if entry["s"] == FEATURES:
            self.counts.joined += 1
            joined = {**entry["v"], "label": label}
            return JoinStep(key, partition, {"s": JOINED, "t": now_ms, "p": partition}, joined)
        self.counts.duplicate_labels += 1  # a second label for a labelled or joined event: the first stands
        return None

    def expire(self, store: Mapping[bytes, Any], now_ms: int) -> list[JoinStep]:
        """The deletions of every entry older than the time-to-live (for the caller to apply and changelog)."""
        deadline = now_ms - self.ttl_ms
        steps = []
        for key, raw in list(store.items()):
            entry = _entry(raw)
            if entry is None:
                steps.append(JoinStep(key, 0, None))  # unreadable: ours, so never expected; drop it
                continue
            if entry["t"] >= deadline:  # older than the time-to-live: now - t > ttl
                continue
            if entry["s"] == FEATURES:
                self.counts.expired_unlabelled += 1
            elif entry["s"] == LABEL:
                self.counts.unmatched_labels += 1
            steps.append(JoinStep(key, int(entry["p"]), None))
        return steps

    def pending(self, store: Mapping[bytes, Any]) -> dict[str, int]:
        """Entries waiting, by kind."""
        waiting = {FEATURES: 0, LABEL: 0}
        for raw in store.values():
            entry = _entry(raw)
            if entry is not None and entry["s"] in waiting:
                waiting[entry["s"]] += 1
        return waiting


def apply(store: MutableMapping[bytes, Any], step: JoinStep) -> None:
    """Write (or delete) a step's entry in ``store``."""
    if step.entry is None:
        store.pop(step.key, None)
    else:
        store[step.key] = step.entry


def _entry(raw: Any) -> dict[str, Any] | None:
    if isinstance(raw, dict) and raw.get("s") in (FEATURES, LABEL, JOINED) and isinstance(raw.get("t"), int):
        return raw
    return None
