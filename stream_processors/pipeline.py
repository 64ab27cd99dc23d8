"""One batch of raw records in, features and dead letters out (pure, no Kafka).

:meth:`BatchProcessor.process_batch` decodes, validates and featurizes every
record of a batch with plain functions and returns exactly one output per
input: a FeatureVector for the features topic or the untouched original for
the dead-letter topic. Nothing a record contains can make it raise: any error
while handling one record quarantines that record (stage ``featurize`` when
it is not a decode or contract problem). Every valid event it emits also
feeds the distribution monitor (:mod:`stream_processors.drift`), whose
records for the monitoring topic come back in ``BatchResult.monitoring``.
The faust wiring in :mod:`stream_processors.app` only moves bytes and window state.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from stream_processors.batches import BatchResult, OutputRecord, SourceRecord, WindowUpdate
from stream_processors.dead_letters import Rejection, dead_letter
from stream_processors.drift import DistributionMonitor
from stream_processors.profiles import Reference
from streamml.config import Settings
from streamml.errors import DecodeError
from streamml.featurization import EVENT_ID_FIELD, FeatureSpec, featurize, roles
from streamml.monitoring import encode_record
from streamml.records import FeatureVector, RecordCodec
from streamml.serde import AvroSchema, AvroSerde
from streamml.validation import check_event_time, validate
from streamml.windows import WindowSpec, WindowState, window_features

__all__ = ["BatchProcessor", "FEATURIZE_ERROR"]

#: Rule of a record quarantined because featurizing or encoding it failed.
FEATURIZE_ERROR = "featurize_error"

logger = logging.getLogger(__name__)

@dataclass(frozen=True, slots=True)
class _Parsed:
    """A decoded, valid event and what its window needs."""

    event: dict[str, Any]
    window_key: bytes
    time_ms: int
    values: dict[str, float | None]
    #: ``(partition, offset)`` of its source record.
    source: tuple[int, int]


@dataclass
class _BatchContext:
    """What featurizing one batch shares between its records."""

    parsed: Sequence[_Parsed | Rejection | Exception]
    #: Indexes of each key's parsed records, in order.
    by_key: Mapping[bytes, list[int]]
    #: The stored window state (a faust table's store or a dict); live states in it are updated in place.
    windows: Mapping[bytes, Any]
    result: BatchResult
    #: Window state of the keys seen so far in this batch.
    states: dict[bytes, WindowState] = field(default_factory=dict)
    #: Keys whose state changed -> their source partition.
    touched: dict[bytes, int] = field(default_factory=dict)


class BatchProcessor:
    """Decode, validate and featurize batches of raw event records.

    ``event_schema`` is the reader schema (and its contract); ``writer_schemas``
    are further schemas producers may write with. ``features_partitions`` is
    the partition count of the features topic: a feature vector goes to the
    partition its source record came from, so per-key order and co-location
    survive whichever partitioner the producer used.
    """

    def __init__(
        self,
        *,
        event_schema: AvroSchema,
        writer_schemas: Iterable[AvroSchema] = (),
        key_field: str,
        label_field: str,
        time_field: str,
        window: WindowSpec,
        features_partitions: int,
        clock: Callable[[], float] = time.time,
        max_event_future_seconds: float = 60.0,
        max_event_age_seconds: float = 20 * 365.25 * 24 * 3600,
        dead_letter_max_bytes: int = 900_000,
        monitor: DistributionMonitor | None = None,
        delayed_labels: bool = False,
        journal_limit: int = 1000,
    ) -> None:
        self.event_serde = AvroSerde(event_schema, writer_schemas)
        self.feature_codec = RecordCodec(FeatureVector)
        self.schema = event_schema
        self.key_field = key_field
        self.label_field = label_field
        self.time_field = time_field
        self.window = window
        self.features_partitions = features_partitions
        self.feature_spec = FeatureSpec.from_schema(event_schema, exclude=roles(key_field, label_field, time_field))
        self._feature_headers = self.feature_codec.headers
        self._clock = clock
        self.max_event_future_ms = int(max_event_future_seconds * 1000)
        self.max_event_age_ms = int(max_event_age_seconds * 1000)
        self.dead_letter_max_bytes = dead_letter_max_bytes
        self.monitor = monitor
        self.delayed_labels = delayed_labels
        #: Most journalled records a key's state keeps for exact replays
        #: (streamml.windows): bounds its changelog record when commits lag.
        self.journal_limit = journal_limit

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        event_schema: AvroSchema | None = None,
        writer_schemas: Iterable[AvroSchema] = (),
        monitor_source: str = "",
        reference: Reference | None = None,
    ) -> BatchProcessor:
        """Build from settings; the event schema defaults to ``settings.schema_path``.

        With ``drift_window_events`` above 0 the processor monitors the
        distribution of its valid events (:mod:`stream_processors.drift`),
        named ``monitor_source`` in its records; ``reference`` is one an earlier
        run froze (the schema's own profile comes first).
        """
        schema = event_schema or AvroSchema.from_file(settings.schema_path)
        processor = cls(
            event_schema=schema,
            writer_schemas=writer_schemas,
            key_field=settings.key_field,
            label_field=settings.label_field,
            time_field=settings.time_field,
            window=WindowSpec(settings.window_seconds, tuple(settings.window_field_list)),
            features_partitions=settings.partitions,
            max_event_future_seconds=settings.max_event_future_seconds,
            max_event_age_seconds=settings.max_event_age_seconds,
            dead_letter_max_bytes=settings.dead_letter_max_bytes,
            delayed_labels=settings.label_mode == "delayed",
        )
        if settings.drift_window_events > 0:
            numeric, categorical = processor.monitored_fields()
            processor.monitor = DistributionMonitor(
                stream=schema.name,
                source=monitor_source or schema.name,
                numeric=numeric,
                categorical=categorical,
                rules=schema.rules,
                reference=Reference.from_schema_profile(schema.parsed, (*numeric, *categorical)) or reference,
                reference_events=settings.drift_reference_events,
                window_events=settings.drift_window_events,
                psi_threshold=settings.drift_psi_threshold,
            )
        return processor

    def monitored_fields(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """The fields the distribution monitor watches: ``(numeric, categorical)``.

        Numeric: the continuous features. Categorical: the one-hot and boolean
        features, the label (a shift in it is prior drift) and every other
        string field except the key and the event id.
        """
        spec = self.feature_spec
        names = set(self.schema.field_names)
        taken = {*spec.continuous, *spec.categorical, *spec.boolean, self.key_field, self.time_field, EVENT_ID_FIELD}
        label = (self.label_field,) if self.label_field in names else ()
        strings = tuple(
            r.name for r in self.schema.rules
            if r.avro_type == "string" and r.name not in taken and r.name != self.label_field
        )
        return spec.continuous, (*spec.categorical, *spec.boolean, *label, *strings)

    def process_batch(
        self,
        records: Sequence[SourceRecord],
        windows: Mapping[bytes, Any] | None = None,
        committed: Mapping[int, int] | None = None,
    ) -> BatchResult:
        """Handle a batch in order; ``windows`` maps keys to stored window state.

        ``windows`` (a faust table's store or a dict) may hold
        :class:`WindowState` objects, which are updated in place, or their dumps
        (as recovered from a changelog), which are not changed; the new state
        of every key the batch touched is returned in ``window_updates``. Events
        of one key in one batch see each other, in input order.

        A record the stored state already counts (a replay after a crash that
        came between the changelog write and the offset commit, see
        :mod:`streamml.windows`) leaves the state alone and gets the window
        features it got the first time, kept in the state's journal, however
        the replay is cut into batches. ``committed`` maps each source
        partition to its committed offset: journalled records before it can
        never be replayed and are pruned (the journal also keeps at most
        ``journal_limit`` records per key; a replay of a record pruned by that
        bound gets features rebuilt from the state, which may count records of
        its key that came after it).
        """
        windows = {} if windows is None else windows
        result = BatchResult()
        now_ms = int(self._clock() * 1000)
        parsed: list[_Parsed | Rejection | Exception] = []
        by_key: dict[bytes, list[int]] = {}  # indexes of each key's parsed records, in order
        item: _Parsed | Rejection | Exception
        for index, record in enumerate(records):
            try:
                item = self._parse(record, now_ms)
            except Exception as exc:  # noqa: BLE001 - quarantined below
                item = exc
            parsed.append(item)
            if isinstance(item, _Parsed):
                by_key.setdefault(item.window_key, []).append(index)
        context = _BatchContext(parsed, by_key, windows, result)
        for index, (record, item) in enumerate(zip(records, parsed, strict=True)):
            if isinstance(item, _Parsed):
                try:
                    self._featurize(index, record, item, context)
                    continue
                except Exception as exc:
                    item = exc
            if isinstance(item, Exception):  # a bug or a record no rule foresaw: quarantine, never crash
                logger.warning("cannot featurize %s: %r", record.position, item)
                item = Rejection("featurize", FEATURIZE_ERROR, "", f"featurization failed: {item!r}")
            result.dead_letters.append(self._dead_letter(record, item, now_ms))
            result.quarantined[item.rule] += 1
            if self.monitor is not None:
                self.monitor.count_quarantined()
        for key, partition in context.touched.items():  # dumped once per key and batch
            state = context.states[key]
            state.prune(committed or {}, self.journal_limit)
            result.window_updates[key] = WindowUpdate(partition, state, state.encode(self.window))
        if self.monitor is not None and records:
            self._monitoring(records[-1], result)
        return result

    def _observe(self, event: dict[str, Any], time_ms: int, record: SourceRecord) -> None:
        assert self.monitor is not None
        try:
            self.monitor.observe(event, time_ms)
        except Exception:  # monitoring must never quarantine or stop the data
            logger.exception("distribution monitor failed on %s; the event goes on unprofiled", record.position)

    def _monitoring(self, last: SourceRecord, result: BatchResult) -> None:
        assert self.monitor is not None
        try:
            for report in self.monitor.take_records():
                key, value = encode_record(report)
                result.monitoring.append(OutputRecord(key, value, list(_JSON_HEADERS), None, last))
        except Exception:  # monitoring must never stop the data: log it and go on
            logger.exception("distribution monitor failed; its records of this batch are dropped")

    def _parse(self, record: SourceRecord, now_ms: int) -> _Parsed | Rejection:
        try:
            event = self.event_serde.decode(record.value, record.headers)
        except DecodeError as exc:
            return Rejection("decode", exc.rule, "", str(exc))
        violations = validate(event, self.schema)
        if violations:
            return Rejection.from_violations(violations)
        window_key = record.key if record.key is not None else str(event[self.key_field]).encode()
        time_ms = int(event[self.time_field])
        late = check_event_time(
            self.time_field, time_ms, now_ms, max_future_ms=self.max_event_future_ms, max_age_ms=self.max_event_age_ms
        )
        if late is not None:
            return Rejection("validate", late.rule, late.field, late.message)
        values = {name: _as_float(event.get(name)) for name in self.window.fields}
        return _Parsed(event, window_key, time_ms, values, (record.partition, record.offset))

    def _featurize(self, index: int, record: SourceRecord, item: _Parsed, context: _BatchContext) -> None:
        event, window_key, time_ms, values = item.event, item.window_key, item.time_ms, item.values
        state = context.states.get(window_key)
        if state is None:
            state = context.states[window_key] = self._load_state(context.windows.get(window_key), record)
        replayed = state.contains(record.partition, record.offset)
        first = state.first_features(record.partition, record.offset, self.window) if replayed else None
        features = featurize(event, self.feature_spec)
        if first is not None:  # a replay gets exactly what it got the first time (streamml.windows)
            window = first
        elif replayed:  # journal pruned past its bound: the state as it was, as well as it can be rebuilt
            window = window_features(state.before(*item.source, self.window), time_ms, values, self.window)
        else:
            window = window_features(state, time_ms, values, self.window)
        features.update(window)
        key_value = event.get(self.key_field)
        vector = FeatureVector(
            key=None if key_value is None else str(key_value),
            event_id=str(event.get(EVENT_ID_FIELD) or f"{record.topic}-{record.partition}-{record.offset}"),
            event_time=time_ms,
            features=features,
            label=event.get(self.label_field),
            source_topic=record.topic,
            source_partition=record.partition,
            source_offset=record.offset,
        )
        value = self.feature_codec.encode(vector)  # may raise: quarantined by the caller
        # Only an event that made it out is counted in its key's window; a replay is counted already.
        if not replayed and state.add(time_ms, values, self.window, item.source, window):
            context.touched[window_key] = record.partition
        if self.monitor is not None and not replayed:  # a replay was profiled the first time
            self._observe(event, time_ms, record)
        partition = record.partition if record.partition < self.features_partitions else None
        context.result.features.append(OutputRecord(record.key, value, list(self._feature_headers), partition, record))
        if self.delayed_labels and vector.label is None:
            key = vector.event_id.encode()
            context.result.awaiting_label.append(OutputRecord(key, value, list(self._feature_headers), None, record))

    def _load_state(self, raw: Any, record: SourceRecord) -> WindowState:
        try:
            return WindowState.load(raw, self.window)
        except ValueError as exc:
            # Our own state should never be malformed; restart the key's window
            # rather than quarantine every later event of that key.
            logger.warning("resetting unreadable window state at %s: %s", record.position, exc)
            return WindowState()

    def _dead_letter(self, record: SourceRecord, rejection: Rejection, now_ms: int) -> OutputRecord:
        logger.info(
            "quarantined %s: %s/%s %s", record.position, rejection.stage, rejection.rule, rejection.message
        )
        key, value, headers = dead_letter(
            record.value, record.key, record.headers, rejection,
            topic=record.topic, partition=record.partition, offset=record.offset,
            source_timestamp_ms=record.timestamp_ms, now_ms=now_ms, max_bytes=self.dead_letter_max_bytes,
        )
        return OutputRecord(key, value, headers, None, record)


_JSON_HEADERS = (("content-type", b"application/json"),)


def _as_float(value: Any) -> float | None:
    return None if value is None else float(value)
