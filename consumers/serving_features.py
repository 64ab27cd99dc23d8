"""The features the stream would build for a raw event, computed where the app serves.

An app has a raw event (what a user just did), not a feature vector. Making
it re-implement the featurization invites training/serving skew, so
:class:`ServingFeatures` runs the processor's own steps on it, from the same
contract and the same kernel functions:

1. the data contract (:func:`streamml.validation.validate` and the event-time
   bounds): an event the stream would quarantine raises
   :class:`~streamml.errors.EventRejectedError` listing every broken rule;
2. an Avro round trip through the event schema, so the values have exactly
   the types the stream decodes (an ``int`` sent for a ``double`` is a float,
   unknown fields are dropped, defaults are filled);
3. the stateless features (:func:`streamml.featurization.featurize`);
4. the windowed per-key features (:func:`streamml.windows.window_features`),
   from the processor's window state read by a :class:`~consumers.window_view.WindowView`,
   counting the event itself, as the stream does for an event it has not seen.

The windowed features are never filled with zero: before the window state has
been read (or with ``windows=False``) :meth:`ServingFeatures.vector` raises
:class:`~streamml.errors.FeaturesUnavailableError` naming them.

::

    with ModelSubscriber(settings) as models, ServingFeatures(settings) as features:
        features.wait_ready(10)
        y = models.predict_one(features.vector(event))

Serving-time fill-ins, both documented in ``docs/serving.md``: an event
without its time field is taken to happen now, and one without an event id
gets a fresh one (neither is a feature).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from consumers.window_view import WindowView
from streamml.cluster import Cluster
from streamml.config import Settings
from streamml.errors import EventRejectedError, FeaturesUnavailableError, SerializationError
from streamml.featurization import EVENT_ID_FIELD, FeatureSpec, featurize, roles
from streamml.serde import AvroSchema, AvroSerde, load_event_schema
from streamml.validation import check_event_time, validate
from streamml.windows import WindowSpec, window_features

__all__ = ["ServingFeatures"]

_JSON_TYPES = {
    "double": "number", "float": "number", "int": "integer", "long": "integer",
    "string": "string", "boolean": "boolean",
}


class ServingFeatures:
    """Turn raw events into the feature vectors the stream processor would emit for them.

    ``cluster`` is a :class:`~streamml.cluster.Cluster` or the settings to
    make one from (the key, time and label fields, the window and the event-time
    bounds come from its settings); ``event_schema`` defaults to the
    settings' schema. With ``windows=False`` no window state is read and an
    event's windowed features are unavailable. ``window_view`` replaces the
    view it would make (one view can serve several featurizers).
    """

    def __init__(
        self,
        cluster: Cluster | Settings,
        *,
        event_schema: AvroSchema | None = None,
        windows: bool = True,
        window_view: WindowView | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cluster = Cluster.of(cluster)
        settings = self.cluster.settings
        self.schema = event_schema or load_event_schema(settings)
        self._serde = AvroSerde(self.schema)
        self._headers = self._serde.headers
        self.key_field, self.time_field = settings.key_field, settings.time_field
        self.spec = FeatureSpec.from_schema(
            self.schema, exclude=roles(settings.key_field, settings.label_field, settings.time_field)
        )
        self.window = WindowSpec(settings.window_seconds, tuple(settings.window_field_list))
        self.windowed = [self.window.count_feature, *(self.window.mean_feature(f) for f in self.window.fields)]
        self._max_future_ms = int(settings.max_event_future_seconds * 1000)
        self._max_age_ms = int(settings.max_event_age_seconds * 1000)
        self._clock = clock
        self.view = window_view if window_view is not None else (WindowView(self.cluster, self.window) if windows
                                                                 else None)
        self._owns_view = window_view is None

    # -- lifecycle -------------------------------------------------------
    def start(self) -> ServingFeatures:
        """Start reading the window state (returns ``self``)."""
        if self.view is not None:
            self.view.start()
        return self

    def stop(self) -> None:
        """Stop reading the window state (a view given by the caller is left running)."""
        if self.view is not None and self._owns_view:
            self.view.stop()

    def __enter__(self) -> ServingFeatures:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def ready(self) -> bool:
        """``True`` when every feature can be computed (the window state, if used, was read)."""
        return self.view is not None and self.view.ready

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block until :attr:`ready`; ``False`` on timeout (and always without a window view)."""
        return self.view is not None and self.view.wait_ready(timeout)

    # -- featurizing -----------------------------------------------------
    def decoded(self, event: Mapping[str, Any]) -> dict[str, Any]:
        """``event`` checked against the contract and as the stream would decode it.

        Raises :class:`EventRejectedError` with every broken rule.
        """
        if not isinstance(event, Mapping):
            raise EventRejectedError([{"field": "", "rule": "wrong_type", "message": "an event must be an object"}])
        event = dict(event)
        now_ms = int(self._clock() * 1000)
        if event.get(self.time_field) is None:
            event[self.time_field] = now_ms
        if event.get(EVENT_ID_FIELD) is None and any(r.name == EVENT_ID_FIELD for r in self.schema.rules):
            event[EVENT_ID_FIELD] = f"serving-{uuid.uuid4().hex}"
        violations = validate(event, self.schema)
        if not violations:
            late = check_event_time(
                self.time_field, int(event[self.time_field]), now_ms,
                max_future_ms=self._max_future_ms, max_age_ms=self._max_age_ms,
            )
            violations = [late] if late is not None else []
        if violations:
            raise EventRejectedError([v.as_dict() for v in violations])
        try:
            return self._serde.decode(self._serde.encode(event), self._headers)
        except SerializationError as exc:
            field = getattr(exc, "field", None) or ""
            raise EventRejectedError([{"field": field, "rule": "wrong_type", "message": str(exc)}]) from exc

    def vector(self, event: Mapping[str, Any]) -> dict[str, float]:
        """The features of ``event``: stateless and windowed, as the stream would compute them now.

        Raises :class:`EventRejectedError` for an event the stream would
        quarantine, :class:`FeaturesUnavailableError` when the windowed
        features cannot be computed (``retryable`` while the window state is
        still being read).
        """
        record = self.decoded(event)
        features = featurize(record, self.spec)
        if self.view is None:
            raise FeaturesUnavailableError(
                self.windowed, "this featurizer reads no window state (windows=False)", retryable=False
            )
        if not self.view.ready:
            raise FeaturesUnavailableError(self.windowed, self.view.problem or "the window state is being read",
                                           retryable=True)
        key = str(record[self.key_field]).encode()
        try:
            state = self.view.state(key)
        except ValueError as exc:
            raise FeaturesUnavailableError(self.windowed, f"unreadable window state of key {key!r}: {exc}") from exc
        values = {name: None if record.get(name) is None else float(record[name]) for name in self.window.fields}
        features.update(window_features(state, int(record[self.time_field]), values, self.window))
        return features

    def json_schema(self) -> dict[str, Any]:
        """A JSON schema of one event, from the contract (for an API's OpenAPI document).

        The time field and the event id are optional here (filled in when
        absent); every other field is required as the contract says.
        """
        properties: dict[str, Any] = {}
        required: list[str] = []
        for rule in self.schema.rules:
            prop: dict[str, Any] = {}
            json_type = _JSON_TYPES.get(rule.avro_type)
            if json_type is not None:
                prop["type"] = [json_type, "null"] if rule.nullable else json_type
            if rule.minimum is not None:
                prop["minimum"] = rule.minimum
            if rule.maximum is not None:
                prop["maximum"] = rule.maximum
            if rule.allowed is not None:
                prop["enum"] = list(rule.allowed)
            properties[rule.name] = prop
            optional = rule.name in (self.time_field, EVENT_ID_FIELD)
            if not optional and (rule.required or not rule.nullable):
                required.append(rule.name)
        return {"title": self.schema.name, "type": "object", "properties": properties, "required": required}
