"""Stateless featurization of one validated event (pure, no Kafka).

Which fields become which features is decided once per schema, by
:meth:`FeatureSpec.from_schema`, from the field types and the data contract:

* numeric fields (``int``, ``long``, ``float``, ``double``) without
  ``allowed`` values are continuous: ``{field: float(value)}``;
* ``int``/``long`` fields whose contract lists ``allowed`` values are
  categorical and one-hot encoded: ``{"field=value": 1.0}``;
* ``boolean`` fields become ``0.0`` / ``1.0``;
* the key, event-time, label and event-id fields and every string or complex
  field are not features: :attr:`FeatureSpec.skipped` says which and why, and
  ``streamml process`` prints it at start-up (:meth:`FeatureSpec.notice`).

A ``None`` value (an optional field left empty) yields no feature, so a
missing value stays missing for the learner instead of becoming zero.
The stateful windowed features are added by :mod:`streamml.windows`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from streamml.config import Settings
from streamml.serde import AvroSchema
from streamml.windows import WindowSpec

__all__ = [
    "FeatureSpec",
    "featurize",
    "feature_notice",
    "feature_problems",
    "featurizer_check",
    "roles",
    "EVENT_ID_FIELD",
    "NOT_FEATURIZED",
]

#: Field holding the event's unique id; never a feature.
EVENT_ID_FIELD = "event_id"

_CATEGORICAL_TYPES = ("int", "long")

#: Why a field of a type the featurizer has no encoding for is not a feature.
NOT_FEATURIZED = {
    "string": "string: text is not turned into numbers (encode it as an int with 'allowed' codes to one-hot it)",
    "bytes": "bytes: not turned into numbers",
}


@dataclass(frozen=True)
class FeatureSpec:
    """Which fields of an event become which stateless features."""

    continuous: tuple[str, ...]
    categorical: tuple[str, ...]
    boolean: tuple[str, ...] = ()
    #: Fields that are not features, with why: ``(field, reason)`` in schema order.
    skipped: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_schema(cls, schema: AvroSchema, *, exclude: Iterable[str] | Mapping[str, str]) -> FeatureSpec:
        """Derive the spec from a schema's field types and contract.

        ``exclude`` names fields that are never features (the key, time and
        label fields), or maps them to their role for :attr:`skipped`; the
        event-id field is always excluded.
        """
        roles = dict(exclude) if isinstance(exclude, Mapping) else {name: "excluded" for name in exclude}
        roles.setdefault(EVENT_ID_FIELD, "event id")
        continuous, categorical, boolean, skipped = [], [], [], []
        for rule in schema.rules:
            if rule.name in roles:
                skipped.append((rule.name, roles[rule.name]))
            elif rule.avro_type in _CATEGORICAL_TYPES and rule.allowed is not None:
                categorical.append(rule.name)
            elif rule.numeric:
                continuous.append(rule.name)
            elif rule.avro_type == "boolean":
                boolean.append(rule.name)
            else:
                skipped.append((rule.name, NOT_FEATURIZED.get(rule.avro_type, f"{rule.avro_type}: not featurized")))
        return cls(
            continuous=tuple(continuous), categorical=tuple(categorical), boolean=tuple(boolean), skipped=tuple(skipped)
        )

    @property
    def fields(self) -> tuple[str, ...]:
        """Every field that yields a feature."""
        return (*self.continuous, *self.categorical, *self.boolean)

    def notice(self, windowed: Iterable[str] = ()) -> str:
        """One line saying which fields become features and which do not, and why.

        ``windowed`` names the windowed features added to them.
        """
        parts = [
            f"{', '.join(names)} ({kind})"
            for names, kind in (
                (self.continuous, "numeric"), (self.categorical, "one-hot"), (self.boolean, "0/1"),
                (tuple(windowed), "windowed"),
            )
            if names
        ]
        line = "features: " + ("; ".join(parts) if parts else "none")
        if self.skipped:
            line += " | not features: " + "; ".join(f"{name} ({why})" for name, why in self.skipped)
        return line


def feature_problems(schema: AvroSchema, *, exclude: Iterable[str] | Mapping[str, str]) -> list[str]:
    """Start-up problems of the featurizer with ``schema``: one line when no field becomes a feature."""
    spec = FeatureSpec.from_schema(schema, exclude=exclude)
    if spec.fields:
        return []
    why = "; ".join(f"{name} ({reason})" for name, reason in spec.skipped)
    return [f"no field becomes a feature, so nothing could be learned: {why}"]


def roles(key_field: str, label_field: str, time_field: str) -> dict[str, str]:
    """The fields that are never features, mapped to the role that says why (see :class:`FeatureSpec`)."""
    return {label_field: "label", time_field: "event time", key_field: "key"}


def feature_notice(schema: AvroSchema, settings: Settings) -> str:
    """One line: the fields that become features, the windowed ones, and what is not a feature and why."""
    spec = FeatureSpec.from_schema(schema, exclude=roles(settings.key_field, settings.label_field, settings.time_field))
    window = WindowSpec(settings.window_seconds, tuple(settings.window_field_list))
    return spec.notice([window.count_feature, *(window.mean_feature(name) for name in window.fields)])


def featurizer_check(settings: Settings) -> Callable[[AvroSchema], list[str]]:
    """A check for :func:`streamml.serde.load_event_schema`: the featurizer must get a feature out of the schema."""
    exclude = roles(settings.key_field, settings.label_field, settings.time_field)
    return lambda schema: feature_problems(schema, exclude=exclude)


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
