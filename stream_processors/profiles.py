"""Distribution profiles of event fields: a window's sample and the reference it is compared with.

Pure code (numpy), no Kafka. A numeric field's reference is 101 quantiles
(0 %, 1 %, ..., 100 %, each one a value of the sample: numpy's
``inverted_cdf`` method, so a discrete field keeps its plateaus), which is
enough to compute its distribution function to within 1 % and compact
enough to travel in a schema file or a monitoring record. A categorical
field's reference is its categories' shares; a field with more than
:data:`MAX_CATEGORIES` distinct values in the reference is high-cardinality
(an id, free text) and gets no shares-based score.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "PROFILE_ATTRIBUTE",
    "QUANTILE_POINTS",
    "MAX_CATEGORIES",
    "NumericReference",
    "CategoricalReference",
    "FieldReference",
    "Reference",
    "WindowSample",
    "category_of",
    "numeric_reference",
    "categorical_reference",
    "numeric_summary",
]

#: Top-level schema attribute where ``streamml contract infer`` writes a sample's statistics.
PROFILE_ATTRIBUTE = "streamml_profile"
#: Quantiles kept per numeric field: every percent, both ends included.
QUANTILE_POINTS = 101
#: Categories a categorical reference keeps; more make the field high-cardinality.
MAX_CATEGORIES = 50


def category_of(value: Any) -> str:
    """The category a value counts as: JSON's spelling for booleans, ``str`` otherwise."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@dataclass(frozen=True)
class NumericReference:
    """A numeric field's reference distribution."""

    quantiles: tuple[float, ...]
    count: int
    null_rate: float
    mean: float
    std: float

    def cdf(self, x: np.ndarray) -> np.ndarray:
        """Share of the reference at or below each ``x`` (right-continuous, to within 1 %)."""
        points = np.asarray(self.quantiles)
        found = np.searchsorted(points, x, side="right")
        return np.clip((found - 1) / (len(points) - 1), 0.0, 1.0)

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": "numeric", "count": self.count, "null_rate": self.null_rate,
            "mean": self.mean, "std": self.std, "quantiles": list(self.quantiles),
        }


@dataclass(frozen=True)
class CategoricalReference:
    """A categorical field's reference: category shares (the top :data:`MAX_CATEGORIES`)."""

    shares: dict[str, float]
    count: int
    null_rate: float
    #: More distinct values than the shares hold: no shares-based score.
    high_cardinality: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": "categorical", "count": self.count, "null_rate": self.null_rate,
            "shares": dict(self.shares), "high_cardinality": self.high_cardinality,
        }


FieldReference = NumericReference | CategoricalReference


def numeric_reference(values: Sequence[float], nulls: int) -> NumericReference | None:
    """The reference of a numeric sample, or ``None`` when it holds no value."""
    if not values:
        return None
    array = np.asarray(values, dtype=float)
    quantiles = np.quantile(array, np.linspace(0.0, 1.0, QUANTILE_POINTS), method="inverted_cdf")
    return NumericReference(
        quantiles=tuple(float(q) for q in quantiles),
        count=len(array),
        null_rate=nulls / (len(array) + nulls),
        mean=float(array.mean()),
        std=float(array.std(ddof=1)) if len(array) > 1 else 0.0,
    )


def categorical_reference(counts: Counter[str], nulls: int) -> CategoricalReference | None:
    """The reference of a categorical sample, or ``None`` when it holds no value."""
    total = sum(counts.values())
    if total == 0:
        return None
    top = counts.most_common(MAX_CATEGORIES)
    return CategoricalReference(
        shares={category: n / total for category, n in sorted(top)},
        count=total,
        null_rate=nulls / (total + nulls),
        high_cardinality=len(counts) > MAX_CATEGORIES,
    )


@dataclass(frozen=True)
class Reference:
    """What a stream's windows are compared with, per monitored field."""

    fields: dict[str, FieldReference]
    events: int
    #: ``schema profile`` (from ``streamml contract infer``) or ``first events``.
    origin: str

    def as_fields(self) -> dict[str, dict[str, Any]]:
        return {name: ref.as_dict() for name, ref in self.fields.items()}

    @classmethod
    def from_fields(cls, raw: Mapping[str, Any], *, events: int, origin: str) -> Reference:
        """Rebuild from :meth:`as_fields` output (a monitoring record or a schema profile).

        Raises ``ValueError`` (or ``KeyError``/``TypeError``) when ``raw`` is malformed.
        """
        fields: dict[str, FieldReference] = {}
        for name, entry in raw.items():
            kind = entry["kind"]
            if kind == "numeric":
                quantiles = tuple(float(q) for q in entry["quantiles"])
                if len(quantiles) != QUANTILE_POINTS or list(quantiles) != sorted(quantiles):
                    raise ValueError(f"{name}: expected {QUANTILE_POINTS} quantiles in order")
                fields[name] = NumericReference(
                    quantiles, int(entry["count"]), float(entry["null_rate"]),
                    float(entry["mean"]), float(entry["std"]),
                )
            elif kind == "categorical":
                shares = {str(k): float(v) for k, v in dict(entry["shares"]).items()}
                fields[name] = CategoricalReference(
                    shares, int(entry["count"]), float(entry["null_rate"]), bool(entry.get("high_cardinality")),
                )
            else:
                raise ValueError(f"{name}: unknown kind {kind!r}")
        return cls(fields, events, origin)

    @classmethod
    def from_schema_profile(cls, parsed_schema: Mapping[str, Any], names: Iterable[str]) -> Reference | None:
        """The reference ``streamml contract infer`` wrote into a schema, if it covers every field in ``names``.

        It sits at ``streamml_profile.columns.<field>.reference``; a schema
        without one (or with a malformed one) gives ``None``.
        """
        profile = parsed_schema.get(PROFILE_ATTRIBUTE)
        if not isinstance(profile, Mapping) or not isinstance(profile.get("columns"), Mapping):
            return None
        columns = profile["columns"]
        raw = {}
        for name in names:
            entry = columns.get(name)
            if not isinstance(entry, Mapping) or not isinstance(entry.get("reference"), Mapping):
                return None
            raw[name] = entry["reference"]
        try:
            return cls.from_fields(raw, events=int(profile.get("rows", 0)), origin="schema profile")
        except (ValueError, KeyError, TypeError):
            return None


@dataclass
class WindowSample:
    """The valid events of one window, per monitored field; :meth:`add` one event at a time."""

    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    #: Every field a batch-level rule watches for nulls.
    null_checked: tuple[str, ...] = ()
    values: dict[str, list[float]] = field(default_factory=dict)
    counts: dict[str, Counter[str]] = field(default_factory=dict)
    nulls: Counter[str] = field(default_factory=Counter)
    events: int = 0
    quarantined: int = 0
    first_event_time: int | None = None
    last_event_time: int | None = None

    def __post_init__(self) -> None:
        self.values = {name: [] for name in self.numeric}
        self.counts = {name: Counter() for name in self.categorical}
        self._null_only = tuple(n for n in self.null_checked if n not in self.values and n not in self.counts)

    def add(self, event: Mapping[str, Any], time_ms: int) -> None:
        """Count one valid event."""
        self.events += 1
        if self.first_event_time is None:
            self.first_event_time = time_ms
        self.last_event_time = time_ms
        for name, values in self.values.items():
            value = event.get(name)
            if value is None:
                self.nulls[name] += 1
            else:
                values.append(float(value))
        for name, counts in self.counts.items():
            value = event.get(name)
            if value is None:
                self.nulls[name] += 1
            else:
                counts[category_of(value)] += 1
        for name in self._null_only:
            if event.get(name) is None:
                self.nulls[name] += 1

    def null_rate(self, name: str) -> float:
        return self.nulls[name] / self.events if self.events else 0.0

    def reference(self, origin: str = "first events") -> Reference:
        """This sample as a reference (fields with no value are left out)."""
        fields: dict[str, FieldReference] = {}
        for name, values in self.values.items():
            numeric = numeric_reference(values, self.nulls[name])
            if numeric is not None:
                fields[name] = numeric
        for name, counts in self.counts.items():
            categorical = categorical_reference(counts, self.nulls[name])
            if categorical is not None:
                fields[name] = categorical
        return Reference(fields, self.events, origin)


def numeric_summary(values: Iterable[float]) -> dict[str, float | None]:
    """Count, mean, std, min, max and skewness of a numeric sample (``None`` where undefined)."""
    array = np.asarray(list(values), dtype=float)
    n = len(array)
    if n == 0:
        return {"count": 0, "mean": None, "std": None, "min": None, "max": None, "skewness": None}
    mean = float(array.mean())
    std = float(array.std(ddof=1)) if n > 1 else 0.0
    centred = array - mean
    m2 = float(np.mean(centred**2))
    # Fisher-Pearson coefficient, bias-adjusted (as pandas' and scipy's bias=False).
    skewness = None
    if n > 2 and m2 > 0:
        g1 = float(np.mean(centred**3)) / m2**1.5
        skewness = g1 * math.sqrt(n * (n - 1)) / (n - 2)
    return {"count": n, "mean": mean, "std": std, "min": float(array.min()), "max": float(array.max()),
            "skewness": skewness}
