"""Deterministic inputs for the benchmarks, built with the project's own code.

Events come from :class:`producers.synthetic.SyntheticSource` with a fixed
seed and a fake clock (10 ms per event), so two runs see the same bytes.
Feature rows are what :class:`stream_processors.pipeline.BatchProcessor`
actually emits for those events, and the model is the catalog's default
``StandardScaler | LogisticRegression`` trained on such rows.
"""

from __future__ import annotations

import itertools
import zlib
from collections.abc import Callable
from typing import Any

from model_publisher import catalog
from producers.events import RawPayload
from producers.synthetic import SyntheticSource
from stream_processors.batches import SourceRecord
from stream_processors.pipeline import BatchProcessor
from streamml.config import DEMO_SCHEMA_PATH, Settings, load_settings
from streamml.serde import AvroSchema, AvroSerde

__all__ = [
    "EVENTS_TOPIC",
    "demo_schema",
    "demo_settings",
    "fake_clock",
    "demo_events",
    "source_records",
    "feature_rows",
    "trained_model",
]

EVENTS_TOPIC = "events.raw.v1"
#: Epoch seconds of the first synthetic event (2024-01-01T00:00:00Z).
_START_S = 1_704_067_200.0


def demo_schema() -> AvroSchema:
    """The demo event schema, read from ``streamml.config.DEMO_SCHEMA_PATH``."""
    return AvroSchema.from_file(DEMO_SCHEMA_PATH)


def demo_settings() -> Settings:
    """Default settings, ignoring the environment (a benchmark must not depend on it)."""
    return load_settings({})


def fake_clock(step_s: float = 0.01) -> Callable[[], float]:
    """A clock that advances ``step_s`` per call from a fixed start."""
    ticks = itertools.count()
    return lambda: _START_S + next(ticks) * step_s


def demo_events(n: int, *, seed: int = 7, bad_fraction: float = 0.0) -> list[Any]:
    """``n`` synthetic items: record dicts, or :class:`RawPayload` for corrupt bytes."""
    source = SyntheticSource(length=n, seed=seed, bad_fraction=bad_fraction, clock=fake_clock())
    return list(source)


def source_records(
    n: int, *, seed: int = 7, bad_fraction: float = 0.02, partitions: int = 3
) -> list[SourceRecord]:
    """Encode ``n`` synthetic events as the processor would consume them.

    Records are keyed by customer, spread over ``partitions`` by a CRC of the
    key, and numbered with consecutive offsets per partition.
    """
    serde = AvroSerde(demo_schema())
    schema_headers = tuple(serde.headers)
    offsets = [0] * partitions
    records = []
    for item in demo_events(n, seed=seed, bad_fraction=bad_fraction):
        if isinstance(item, RawPayload):
            value, key = item.value, item.key
            headers = schema_headers if item.headers is None else tuple(item.headers)
        else:
            value, key, headers = serde.encode(item), item["customer_id"], schema_headers
        key_bytes = None if key is None else key.encode()
        partition = zlib.crc32(key_bytes or b"") % partitions
        records.append(
            SourceRecord(
                value=value,
                key=key_bytes,
                headers=headers,
                topic=EVENTS_TOPIC,
                partition=partition,
                offset=offsets[partition],
                timestamp_ms=None,
            )
        )
        offsets[partition] += 1
    return records


def feature_rows(n: int, *, seed: int = 11, batch_size: int = 500) -> list[tuple[dict[str, float], Any]]:
    """``(features, label)`` pairs as the processor writes them to the features topic."""
    processor = BatchProcessor.from_settings(demo_settings())
    records = source_records(n, seed=seed, bad_fraction=0.0)
    windows: dict[bytes, Any] = {}
    rows = []
    for start in range(0, len(records), batch_size):
        result = processor.process_batch(records[start : start + batch_size], windows)
        for key, update in result.window_updates.items():
            windows[key] = update.state
        for out in result.features:
            vector = processor.feature_codec.decode(out.value, out.headers)
            rows.append((vector.features, vector.label))
    return rows


def trained_model(rows: list[tuple[dict[str, float], Any]]) -> Any:
    """The catalog's default model after learning every row once."""
    model = catalog.build(catalog.DEFAULT_SPEC)
    for x, y in rows:
        model.learn_one(x, y)
    return model
