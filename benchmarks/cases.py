"""The benchmarks: each builds a candidate and its baseline over the same inputs.

Every case calls the project's real public functions for the candidate and
the nearest bare equivalent for the baseline, so the ratio isolates one cost:

``serde_encode`` / ``serde_decode``
    :class:`streamml.serde.AvroSerde` against bare ``fastavro`` schemaless
    calls on the same parsed schema: the cost of header lookup, error mapping
    and the trailing-bytes check.
``processor_batch``
    :meth:`BatchProcessor.process_batch` over 500-record batches against the
    same records one per call (window state carried between calls as the
    faust wiring does): what batching buys in the pure path.
``processor_monitor``
    the same batches with the distribution monitor on (defaults: reference
    of 1,000 events, windows of 500) against it off
    (``STREAMML_DRIFT_WINDOW_EVENTS=0``): the cost of profiling and drift scores.
``subscriber_predict``
    ``ModelSlot.current().predict_one`` against ``predict_one`` on the very
    model object the slot serves: the cost of serving through the swap slot.
``learner_step``
    ``OnlineLearner.process`` (``predict_proba_one``, ``predict_one``, metrics,
    ``learn_one``) against a bare ``predict_one`` + ``learn_one`` loop: the cost
    of progressive-validation bookkeeping.
"""

from __future__ import annotations

import copy
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import fastavro

from benchmarks import workloads
from benchmarks.harness import Pair
from consumers.swap import ModelSlot
from model_publisher import catalog
from model_publisher.learner import OnlineLearner
from stream_processors.batches import SourceRecord
from stream_processors.pipeline import BatchProcessor
from streamml.envelope import seal
from streamml.serde import AvroSerde
from streamml.signing import Keyring, SigningKey
from streamml.trust import TrustPolicy

__all__ = ["Scale", "FULL", "QUICK", "Case", "CASES"]

#: Records per batch in the batched side of ``processor_batch``.
BATCH_SIZE = 500
_SIGNER = SigningKey.generate()


@dataclass(frozen=True)
class Scale:
    """How much work one run does."""

    #: Events encoded or decoded per call in the serde cases.
    serde_events: int
    #: Records per call in ``processor_batch`` (a multiple of the batch size).
    processor_records: int
    #: Rows the model is trained on before it is measured.
    model_rows: int
    #: Rows predicted (or learned) per call in the model cases.
    rows_per_call: int
    rounds: int
    sample_seconds: float


FULL = Scale(
    serde_events=1000, processor_records=2000, model_rows=3000, rows_per_call=1000, rounds=15, sample_seconds=0.2
)
QUICK = Scale(
    serde_events=100, processor_records=1000, model_rows=300, rows_per_call=100, rounds=3, sample_seconds=0.01
)


@dataclass(frozen=True)
class Case:
    """A named benchmark: ``build(scale)`` returns the pair to measure."""

    name: str
    summary: str
    build: Callable[[Scale], Pair]


def _serde_encode(scale: Scale) -> Pair:
    serde = AvroSerde(workloads.demo_schema())
    parsed = serde.reader.parsed
    events = workloads.demo_events(scale.serde_events)

    def bare() -> int:
        writer = fastavro.schemaless_writer
        for event in events:
            buffer = io.BytesIO()
            writer(buffer, parsed, event)
            buffer.getvalue()
        return len(events)

    def ours() -> int:
        encode = serde.encode
        for event in events:
            encode(event)
        return len(events)

    return Pair(bare, ours, "fastavro.schemaless_writer", "AvroSerde.encode", "event")


def _serde_decode(scale: Scale) -> Pair:
    serde = AvroSerde(workloads.demo_schema())
    parsed = serde.reader.parsed
    headers = serde.headers
    values = [serde.encode(event) for event in workloads.demo_events(scale.serde_events)]

    def bare() -> int:
        reader = fastavro.schemaless_reader
        for value in values:
            reader(io.BytesIO(value), parsed, None)
        return len(values)

    def ours() -> int:
        decode = serde.decode
        for value in values:
            decode(value, headers)
        return len(values)

    return Pair(bare, ours, "fastavro.schemaless_reader", "AvroSerde.decode", "event")


def _batched(processor: BatchProcessor, records: Sequence[SourceRecord], size: int) -> Callable[[], int]:
    """Process ``records`` in batches of ``size`` from empty window state, saving state between batches."""

    def work() -> int:
        windows: dict[bytes, Any] = {}
        for start in range(0, len(records), size):
            result = processor.process_batch(records[start : start + size], windows)
            for key, update in result.window_updates.items():
                windows[key] = update.state  # what the faust wiring stores in the table
        return len(records)

    return work


def _processor_batch(scale: Scale) -> Pair:
    processor = BatchProcessor.from_settings(workloads.demo_settings())
    records = workloads.source_records(scale.processor_records, bad_fraction=0.02)
    return Pair(
        _batched(processor, records, 1),
        _batched(processor, records, BATCH_SIZE),
        "process_batch x1",
        f"process_batch x{BATCH_SIZE}",
        "record",
    )


def _processor_monitor(scale: Scale) -> Pair:
    settings = workloads.demo_settings()
    records = workloads.source_records(scale.processor_records, bad_fraction=0.02)

    def run(processor_settings: Any) -> Callable[[], int]:
        def work() -> int:
            # A fresh processor per call: the monitor freezes its reference again, as after a start.
            return _batched(BatchProcessor.from_settings(processor_settings), records, BATCH_SIZE)()

        return work

    return Pair(
        run(settings.with_overrides(drift_window_events=0)),
        run(settings),
        "monitor off",
        "monitor on",
        "record",
    )


def _subscriber_predict(scale: Scale) -> Pair:
    rows = workloads.feature_rows(scale.model_rows)
    envelope = seal(
        workloads.trained_model(rows),
        model_name="bench",
        version=1,
        flavor=catalog.FLAVOR,
        signer=_SIGNER,
        golden_inputs=[x for x, _ in rows[:8]],
    )
    slot = ModelSlot("bench", TrustPolicy(keyring=Keyring().with_key(_SIGNER.public_key)))
    if not slot.offer(envelope):
        raise RuntimeError(f"the benchmark model was refused: {slot.refused}")
    model = slot.current().model  # the same object: only the indirection differs
    xs = [x for x, _ in rows[: scale.rows_per_call]]

    def bare() -> int:
        predict = model.predict_one
        for x in xs:
            predict(x)
        return len(xs)

    def served() -> int:
        current = slot.current
        for x in xs:
            current().predict_one(x)
        return len(xs)

    return Pair(bare, served, "model.predict_one", "slot.current().predict_one", "prediction")


def _learner_step(scale: Scale) -> Pair:
    rows = workloads.feature_rows(scale.model_rows)
    trained = workloads.trained_model(rows)
    bare_model = copy.deepcopy(trained)
    learner = OnlineLearner(copy.deepcopy(trained))
    topic = "features.v1"
    rows = rows[: scale.rows_per_call]  # learned again on every call: the models keep moving

    def bare() -> int:
        for x, y in rows:
            bare_model.predict_one(x)
            bare_model.learn_one(x, y)
        return len(rows)

    def progressive() -> int:
        process = learner.process
        for offset, (x, y) in enumerate(rows):
            process(x, y, topic=topic, partition=0, offset=offset)
        return len(rows)

    return Pair(bare, progressive, "predict_one+learn_one", "OnlineLearner.process", "event")


CASES: dict[str, Case] = {
    case.name: case
    for case in (
        Case("serde_encode", "AvroSerde.encode vs bare fastavro writer", _serde_encode),
        Case("serde_decode", "AvroSerde.decode vs bare fastavro reader", _serde_decode),
        Case("processor_batch", f"BatchProcessor in batches of {BATCH_SIZE} vs of 1", _processor_batch),
        Case("processor_monitor", "BatchProcessor with the distribution monitor vs without", _processor_monitor),
        Case("subscriber_predict", "predict through ModelSlot vs on the bare model", _subscriber_predict),
        Case("learner_step", "OnlineLearner.process vs bare predict+learn", _learner_step),
    )
}
