"""Per-key event-time windows kept as a few buckets (pure, no Kafka).

For each key the state holds, per time bucket, the event count and the sum and
count of each windowed field. The window of an event at time ``t`` is the
``buckets_per_window`` buckets ending with the bucket of ``t``, so a window of
60 s in 12 buckets covers between 55 and 60 s before the event (bucket
granularity); events later than ``t`` that share its bucket are counted too.

Event time, not arrival order, decides: a late event is placed in its own
bucket and its features are computed from the buckets around its own time.
Buckets older than one window plus ``lateness`` before the newest event seen
for the key are dropped, which keeps the state at most about
``2 * buckets_per_window`` buckets however many events a key has. An event
older than that horizon is "too late": it gets features (from whatever is kept
in its window, plus itself) but is not added to the state.

The state serializes to JSON (:meth:`WindowState.encode`; :meth:`WindowState.dump`
gives the same as a dict) so a faust table can changelog it;
:meth:`WindowState.load` reads that back (after a recovery) or takes a live
state object as it is.

Replays: the changelog record of a key and the commit of the input offsets
that produced it are not atomic, so after a crash the input may be replayed
over a state that already counts it. The state therefore remembers, per
source partition, the highest source offset it has counted
(:attr:`WindowState.applied`); :meth:`WindowState.contains` tells a replayed
record, which must not be added again. To give a replayed record the features
it got the first time, the state also keeps a journal of the records it
counted that may still be replayed, with the window features each got
(:attr:`WindowState.recent`: those at or after the committed offset of their
partition, pruned by :meth:`WindowState.prune`). A replayed record gets its
journalled features back (:meth:`WindowState.first_features`), identical
however the replay is cut into batches; one pruned from the journal (only
past its size bound) gets features recomputed from the state with the
journalled records from it on taken back out (:meth:`WindowState.before`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

__all__ = ["WindowSpec", "WindowState", "window_features"]

#: 2: buckets and applied offsets as JSON objects (1: lists of rows; still read).
_FORMAT_VERSION = 2


@dataclass(frozen=True)
class WindowSpec:
    """Window length, bucketing and the fields whose windowed mean is a feature."""

    seconds: float
    fields: tuple[str, ...] = ()
    buckets_per_window: int = 12
    #: How far behind the newest event a late event is still counted exactly,
    #: in seconds; defaults to one window.
    lateness_seconds: float | None = None
    _count_name: str = field(init=False, repr=False, compare=False)
    _mean_names: dict[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.seconds <= 0 or self.buckets_per_window < 1:
            raise ValueError("a window needs a positive length and at least one bucket")
        # Built once: the feature names are looked up for every event (an
        # f-string per call was 2% of the processor's CPU).
        object.__setattr__(self, "_count_name", f"key_events_{self.seconds:g}s")
        object.__setattr__(self, "_mean_names", {name: f"{name}_mean_{self.seconds:g}s" for name in self.fields})

    @property
    def bucket_ms(self) -> int:
        """Width of one bucket in milliseconds."""
        return max(1, math.ceil(self.seconds * 1000 / self.buckets_per_window))

    @property
    def retained_buckets(self) -> int:
        """Buckets kept behind the newest one: one window plus the lateness."""
        lateness = self.seconds if self.lateness_seconds is None else self.lateness_seconds
        return self.buckets_per_window + math.ceil(lateness * 1000 / self.bucket_ms)

    @property
    def count_feature(self) -> str:
        """Name of the per-key event count feature, e.g. ``key_events_60s``."""
        return self._count_name

    def mean_feature(self, name: str) -> str:
        """Name of the windowed mean feature of field ``name``, e.g. ``loan_mean_60s``."""
        found = self._mean_names.get(name)
        return found if found is not None else f"{name}_mean_{self.seconds:g}s"


@dataclass
class WindowState:
    """The buckets of one key: ``{bucket index: [count, sum_1, n_1, sum_2, n_2, ...]}``.

    ``applied`` maps a source partition to the highest offset of it counted
    in the buckets (one entry per partition the key's events came from,
    usually one).
    """

    latest_bucket: int | None = None
    buckets: dict[int, list[float]] = field(default_factory=dict)
    applied: dict[int, int] = field(default_factory=dict)
    #: Journal of counted records that may be replayed, oldest first:
    #: ``[partition, offset, time_ms, value_1, ..., count, mean_1, ...]``: the
    #: windowed values and the window features the record got (None: absent).
    recent: list[list[Any]] = field(default_factory=list)

    def add(
        self,
        time_ms: int,
        values: Mapping[str, float | None],
        spec: WindowSpec,
        source: tuple[int, int] | None = None,
        features: Mapping[str, float] | None = None,
    ) -> bool:
        """Count an event in its bucket and drop expired buckets.

        ``source`` is the event's ``(partition, offset)``; when given, it is
        recorded as applied and journalled with ``features``, the window
        features the event got (:func:`window_features`), so a replay gets
        them again (:meth:`first_features`). Returns ``False`` (and changes nothing) for an
        event older than the retention horizon.
        """
        index = time_ms // spec.bucket_ms
        if self.latest_bucket is not None and index <= self.latest_bucket - spec.retained_buckets:
            return False
        if source is not None:
            partition, offset = source
            if offset > self.applied.get(partition, -1):
                self.applied[partition] = offset
            given = features or {}
            self.recent.append([
                partition, offset, time_ms,
                *(values.get(name) for name in spec.fields),
                given.get(spec.count_feature),
                *(given.get(spec.mean_feature(name)) for name in spec.fields),
            ])
        slot = self.buckets.get(index)
        if slot is None:
            slot = self.buckets[index] = [0.0] * (1 + 2 * len(spec.fields))
        slot[0] += 1
        for i, name in enumerate(spec.fields):
            value = values.get(name)
            if value is not None:
                slot[1 + 2 * i] += value
                slot[2 + 2 * i] += 1
        if self.latest_bucket is None or index > self.latest_bucket:
            self.latest_bucket = index
            horizon = index - spec.retained_buckets
            for old in [b for b in self.buckets if b <= horizon]:
                del self.buckets[old]
        return True

    def contains(self, partition: int, offset: int) -> bool:
        """Whether the source record at ``partition``/``offset`` is already accounted for.

        True for every offset at or below the highest one applied from that
        partition (an earlier record that was too late to be added included:
        replaying it would not add it either).
        """
        return offset <= self.applied.get(partition, -1)

    def remove(self, time_ms: int, values: Mapping[str, float | None], spec: WindowSpec) -> bool:
        """Undo :meth:`add` of an event this state counts; ``False`` if its bucket is gone.

        The bucket of an event that was too late to be added is always older
        than the retention horizon, so it is gone too: an event is taken out
        exactly when it was put in, unless a later event expired its bucket.
        Leaves ``latest_bucket`` and ``applied`` alone. Meant for a scratch
        copy (see the module doc); float sums come back up to rounding.
        """
        index = time_ms // spec.bucket_ms
        slot = self.buckets.get(index)
        if slot is None:
            return False
        slot[0] -= 1
        for i, name in enumerate(spec.fields):
            value = values.get(name)
            if value is not None:
                slot[1 + 2 * i] -= value
                slot[2 + 2 * i] -= 1
        if slot[0] <= 0:
            del self.buckets[index]
        return True

    def first_features(self, partition: int, offset: int, spec: WindowSpec) -> dict[str, float] | None:
        """The window features the journalled record at ``partition``/``offset`` got, or None if not journalled.

        Stored, not recomputed: a replay's features are bit for bit its first
        emission's (recomputing would subtract floats and round differently).
        """
        width = len(spec.fields)
        for entry in reversed(self.recent):  # a replay is of recent records: found near the end
            if entry[0] == partition and entry[1] == offset:
                count = entry[3 + width]
                if count is None:
                    return None  # journalled without its features
                found = {spec.count_feature: float(count)}
                for name, mean in zip(spec.fields, entry[4 + width:], strict=True):
                    if mean is not None:
                        found[spec.mean_feature(name)] = float(mean)
                return found
        return None

    def before(self, partition: int, offset: int, spec: WindowSpec) -> WindowState:
        """A copy without the journalled records of ``partition`` at or after ``offset``.

        The state a replayed record at ``partition``/``offset`` saw the first
        time, if the journal still holds every counted record from it on
        (:meth:`prune` keeps those not yet committed) and no later event
        expired a bucket its window needs.
        """
        scratch = self.copy()
        for entry in self.recent:
            if entry[0] == partition and entry[1] >= offset:
                scratch.remove(entry[2], dict(zip(spec.fields, entry[3:3 + len(spec.fields)], strict=True)), spec)
        return scratch

    def prune(self, committed: Mapping[int, int], keep: int) -> None:
        """Forget journalled records that can no longer be replayed; keep at most ``keep``.

        ``committed`` maps a source partition to its committed offset: a
        replay starts there, so records before it are never seen again.
        Beyond ``keep`` (a bound on the changelog record's size) the oldest
        are forgotten even if uncommitted; a replay of those may then count
        later records of its key.
        """
        recent = [e for e in self.recent if e[1] >= committed.get(e[0], 0)]
        self.recent = recent[-keep:] if keep > 0 else []

    def encode(self, spec: WindowSpec) -> bytes:
        """Return the changelog form: UTF-8 JSON, tagged with the spec it was built with.

        Buckets and applied offsets are JSON objects keyed by bucket index and
        partition (as strings); the journal is a list of entries. Encoded
        straight from the live state by orjson, with no intermediate copy:
        building a JSON-ready copy of every touched key's state per batch was
        the largest share of the processor's own CPU (README "Performance").
        """
        state: dict[str, Any] = {
            "v": _FORMAT_VERSION,
            "bucket_ms": spec.bucket_ms,
            "fields": spec.fields,
            "latest": self.latest_bucket,
            "buckets": self.buckets,
        }
        if self.applied:  # optional: absent from state written before it existed
            state["applied"] = self.applied
        if self.recent:  # optional too: empty once everything counted is committed
            state["recent"] = self.recent
        return orjson.dumps(state, option=orjson.OPT_NON_STR_KEYS)

    def dump(self, spec: WindowSpec) -> dict[str, Any]:
        """Return the JSON-ready form of :meth:`encode` (a copy: later changes to the state do not show)."""
        dumped: dict[str, Any] = orjson.loads(self.encode(spec))
        return dumped

    def copy(self) -> WindowState:
        """Return an independent copy."""
        return WindowState(
            self.latest_bucket,
            {index: list(slot) for index, slot in self.buckets.items()},
            dict(self.applied),
            [list(entry) for entry in self.recent],
        )

    @classmethod
    def load(cls, raw: Any, spec: WindowSpec) -> WindowState:
        """Rebuild a state from :meth:`dump` output (or its JSON), or return a live ``WindowState`` itself.

        A live state is returned as it is, not copied: :meth:`add` then
        changes the object the caller holds (the processor stores it back
        anyway; copying every touched key's state per batch cost 8% of its CPU).
        Buckets and applied offsets may be objects (written by :meth:`encode`)
        or lists of rows (``[index, *slot]``, ``[partition, offset]``: the
        first format, in changelogs written before).

        State written under another bucket width or field list cannot be
        reinterpreted, so it is discarded (a configuration change restarts the
        windows). A dump without ``applied`` (written before it existed) loads
        with no applied offsets: nothing is skipped on a replay over it; one without
        ``recent`` loads with an empty journal. Raises ``ValueError`` if ``raw`` is malformed.
        """
        if raw is None:
            return cls()
        if isinstance(raw, WindowState):
            return raw
        try:
            if raw["bucket_ms"] != spec.bucket_ms or list(raw["fields"]) != list(spec.fields):
                return cls()
            width = 1 + 2 * len(spec.fields)
            rows = raw["buckets"]
            if isinstance(rows, Mapping):
                buckets = {int(index): [float(x) for x in slot] for index, slot in rows.items()}
            else:
                buckets = {int(row[0]): [float(x) for x in row[1:]] for row in rows}
            if any(len(slot) != width for slot in buckets.values()):
                raise ValueError("bucket of the wrong width")
            latest = raw["latest"]
            pairs = raw.get("applied") or ()
            if isinstance(pairs, Mapping):
                pairs = pairs.items()
            applied = {int(partition): int(offset) for partition, offset in pairs}
            recent = [
                [int(e[0]), int(e[1]), int(e[2]), *(None if v is None else float(v) for v in e[3:])]
                for e in raw.get("recent") or ()
            ]
            if any(len(entry) != 4 + 2 * len(spec.fields) for entry in recent):
                raise ValueError("journal entry of the wrong width")
            return cls(
                latest_bucket=None if latest is None else int(latest), buckets=buckets, applied=applied, recent=recent
            )
        except (KeyError, TypeError, IndexError, AttributeError) as exc:
            raise ValueError(f"malformed window state: {exc!r}") from exc


def window_features(
    state: WindowState, time_ms: int, values: Mapping[str, float | None], spec: WindowSpec
) -> dict[str, float]:
    """Return the windowed features of an event at ``time_ms``, counting the event itself.

    Reads ``state`` without changing it; call :meth:`WindowState.add` once the
    event is accepted.
    """
    index = time_ms // spec.bucket_ms
    first = index - spec.buckets_per_window + 1
    count = 1.0
    sums = [0.0] * len(spec.fields)
    ns = [0.0] * len(spec.fields)
    for i, name in enumerate(spec.fields):
        value = values.get(name)
        if value is not None:
            sums[i] += value
            ns[i] += 1
    for bucket, slot in state.buckets.items():
        if first <= bucket <= index:
            count += slot[0]
            for i in range(len(spec.fields)):
                sums[i] += slot[1 + 2 * i]
                ns[i] += slot[2 + 2 * i]
    features = {spec.count_feature: count}
    for i, name in enumerate(spec.fields):
        if ns[i]:
            features[spec.mean_feature(name)] = sums[i] / ns[i]
    return features
