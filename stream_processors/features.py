"""Stateless featurization of one validated event (pure, no Kafka).

Which fields become which features is decided once per schema, by
:meth:`FeatureSpec.from_schema`, from the field types and the data contract:

* numeric fields (``int``, ``long``, ``float``, ``double``) without
  ``allowed`` values are continuous: ``{field: float(value)}``;
* ``int``/``long`` fields whose contract lists ``allowed`` values are
  categorical and one-hot encoded: ``{"field=value": 1.0}``;
* ``boolean`` fields become ``0.0`` / ``1.0``;
* the key, event-time, label and event-id fields and every string or complex
  field are not features.

A ``None`` value (an optional field left empty) yields no feature, so a
missing value stays missing for the learner instead of becoming zero.
The stateful windowed features are added by :mod:`stream_processors.windows`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from streamml.serde import AvroSchema

__all__ = ["FeatureSpec", "featurize", "EVENT_ID_FIELD"]

#: Field holding the event's unique id; never a feature.
EVENT_ID_FIELD = "event_id"

_CATEGORICAL_TYPES = ("int", "long")


@dataclass(frozen=True)
class FeatureSpec:
    """Which fields of an event become which stateless features."""

    continuous: tuple[str, ...]
    categorical: tuple[str, ...]
    boolean: tuple[str, ...] = ()

    @classmethod
    def from_schema(cls, schema: AvroSchema, *, exclude: Iterable[str]) -> FeatureSpec:
        """Derive the spec from a schema's field types and contract.

        ``exclude`` names fields that are never features (the key, time and
        label fields); the event-id field is always excluded.
        """
        skipped = set(exclude) | {EVENT_ID_FIELD}
        continuous, categorical, boolean = [], [], []
        for rule in schema.rules:
            if rule.name in skipped:
                continue
            if rule.avro_type in _CATEGORICAL_TYPES and rule.allowed is not None:
                categorical.append(rule.name)
            elif rule.numeric:
                continuous.append(rule.name)
            elif rule.avro_type == "boolean":
                boolean.append(rule.name)
        return cls(continuous=tuple(continuous), categorical=tuple(categorical), boolean=tuple(boolean))


def featurize(record: Mapping[str, Any], spec: FeatureSpec) -> dict[str, float]:
    """Return the stateless features of one validated record.

    Raises ``TypeError`` or ``ValueError`` if a value cannot be turned into a
    number; the pipeline quarantines such a record at the ``featurize`` stage.
    """
    features: dict[str, float] = {}
    for name in spec.continuous:
        value = record.get(name)
        if value is not None:
            features[name] = float(value)
    for name in spec.categorical:
        value = record.get(name)
        if value is not None:
            features[f"{name}={value}"] = 1.0
    for name in spec.boolean:
        value = record.get(name)
        if value is not None:
            features[name] = 1.0 if value else 0.0
    return features
