"""A seeded loan-application stream with one concept drift, and optional faults.

Built on river's ``ConceptDriftStream`` over two ``Agrawal`` generators. The
pair was measured with ``StandardScaler | LogisticRegression`` learning
progressively over 8,000 rows, drift at row 4,000, width 100, three seeds:
function 9 then function 6 gives 99.2% accuracy before the drift, 54.8% in the
500 rows after it, then 90.1% and 93.7% as the model adapts. The drift is
there, visible, and learnable.

At the same point the data drifts too (unless ``feature_drift=False``): an
upstream parser starts keeping only the first digit of the car-make code
(``car`` 1..20 becomes 1..9, and 10..19 all become 1). Neither Agrawal
function used here reads ``car``, so the labels are unchanged: a shift the
distribution monitor must catch, where accuracy would not.

Faults (``bad_fraction``) are drawn from their own seeded generator, so the
same seed gives the same clean events whatever the fraction. Each bad event is
bad in one realistic way, see :data:`FAULT_KINDS`.
"""

from __future__ import annotations

import math
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from producers.events import RawPayload, SourceItem
from streamml.errors import SourceError
from streamml.records import DEMO_EVENTS_SCHEMA, DEMO_EVENTS_SCHEMA_PATH
from streamml.serde import AvroSchema, AvroSerde, bundled_schema

__all__ = ["SyntheticSource", "FAULT_KINDS", "DEFAULT_LENGTH", "CONCEPTS"]

DEFAULT_LENGTH = 10_000
#: Agrawal classification functions before and after the drift (see module doc).
CONCEPTS = (9, 6)
#: Drift width (rows over which the concepts mix) as a fraction of the length:
#: 100 rows at 8,000, sharp enough for a visible dip.
_WIDTH_FRACTION = 1 / 80

#: The ways a bad event is bad: a NaN in a numeric field, a value outside the
#: contract's range, a required field set to None, a category the contract does
#: not allow, and bytes that are not an Avro record (random or truncated).
FAULT_KINDS = ("nan", "out_of_range", "missing_required", "unknown_category", "corrupt_bytes")

_AGRAWAL_FIELDS = ("salary", "commission", "age", "elevel", "car", "zipcode", "hvalue", "hyears", "loan")
_INT_FIELDS = frozenset({"age", "elevel", "car", "zipcode", "hyears"})
_FLOAT_FIELDS = tuple(f for f in _AGRAWAL_FIELDS if f not in _INT_FIELDS)
_FIELDS = ("event_id", "customer_id", "event_time", *_AGRAWAL_FIELDS, "label")
_OUT_OF_RANGE = (("age", -5), ("car", 99), ("hyears", 0), ("loan", -1000.0), ("salary", 9.9e6))
_UNKNOWN_CATEGORY = (("zipcode", 42), ("elevel", 9))


class SyntheticSource:
    """Endless-looking but finite stream of ``length`` loan-application events.

    The concept drift and the feature drift (see the module doc) sit at
    ``length // 2``. Events are deterministic for a ``seed`` except
    ``event_time``, which is the wall clock in epoch ms (pass ``clock`` to
    fix it). Customer ids are ``c0000`` .. ``c{customers-1}``, drawn from the
    seeded generator so per-customer windows see repeats. Each iteration starts
    the stream again from the seed. ``schema`` defaults to the bundled demo
    schema; it must hold the fields this source writes.
    """

    def __init__(
        self,
        length: int = DEFAULT_LENGTH,
        *,
        seed: int = 42,
        bad_fraction: float = 0.0,
        customers: int = 1000,
        schema: AvroSchema | None = None,
        concepts: tuple[int, int] = CONCEPTS,
        feature_drift: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if length < 1:
            raise SourceError(f"synthetic source: length must be at least 1, got {length}")
        if not 0.0 <= bad_fraction <= 1.0:
            raise SourceError(f"synthetic source: bad_fraction must be between 0 and 1, got {bad_fraction}")
        if not 1 <= customers <= 10_000:
            raise SourceError(f"synthetic source: customers must be between 1 and 10000, got {customers}")
        self.schema = schema or bundled_schema(DEMO_EVENTS_SCHEMA)
        _check_schema(self.schema)
        self.length = length
        self.seed = seed
        self.bad_fraction = bad_fraction
        self.customers = customers
        self.concepts = concepts
        self.feature_drift = feature_drift
        self.drift_position = length // 2
        self.name = f"synthetic(length={length}, seed={seed}, bad_fraction={bad_fraction:g})"
        self._clock = clock
        self._serde = AvroSerde(self.schema)
        self._injected: Counter[str] = Counter()
        # Imported here, not at module level, so `import producers` stays light;
        # and not in __iter__, so the ~1 s import does not eat into a paced run.
        from river.datasets import synth

        self._synth = synth

    @property
    def injected(self) -> Mapping[str, int]:
        """Faults injected in the current (or last) iteration, by kind."""
        return dict(self._injected)

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[SourceItem]:
        synth = self._synth
        before, after = self.concepts
        stream = synth.ConceptDriftStream(
            stream=synth.Agrawal(classification_function=before, seed=self.seed),
            drift_stream=synth.Agrawal(classification_function=after, seed=self.seed + 1),
            position=self.drift_position,
            width=max(1, int(self.length * _WIDTH_FRACTION)),
            seed=self.seed + 2,
        )
        ids = random.Random(self.seed)
        faults = random.Random(self.seed + 3)
        self._injected = Counter()
        for index, (x, y) in enumerate(stream.take(self.length)):
            record = self._record(ids, x, y)
            if self.feature_drift and index >= self.drift_position:
                record["car"] = int(str(record["car"])[0])
            if self.bad_fraction and faults.random() < self.bad_fraction:
                kind = faults.choice(FAULT_KINDS)
                self._injected[kind] += 1
                yield self._spoil(record, kind, faults)
            else:
                yield record

    def _record(self, ids: random.Random, x: Mapping[str, Any], y: Any) -> dict[str, Any]:
        record: dict[str, Any] = {
            "event_id": str(uuid.UUID(int=ids.getrandbits(128), version=4)),
            "customer_id": f"c{ids.randrange(self.customers):04d}",
            "event_time": int(self._clock() * 1000),
        }
        # Agrawal yields commission as int 0 for high salaries: cast to the schema's types.
        for name in _AGRAWAL_FIELDS:
            record[name] = int(x[name]) if name in _INT_FIELDS else float(x[name])
        record["label"] = int(y)
        return record

    def _spoil(self, record: dict[str, Any], kind: str, rng: random.Random) -> SourceItem:
        if kind == "nan":
            record[rng.choice(_FLOAT_FIELDS)] = math.nan
        elif kind == "out_of_range":
            field, value = rng.choice(_OUT_OF_RANGE)
            record[field] = value
        elif kind == "missing_required":
            record[rng.choice(_AGRAWAL_FIELDS)] = None
        elif kind == "unknown_category":
            field, value = rng.choice(_UNKNOWN_CATEGORY)
            record[field] = value
        else:  # corrupt_bytes: half random noise, half a valid record cut short
            if rng.random() < 0.5:
                payload = rng.randbytes(rng.randint(8, 40))
            else:
                encoded = self._serde.encode(record)
                payload = encoded[: rng.randrange(1, len(encoded))]
            return RawPayload(payload, key=record["customer_id"], fault=kind)
        return record


def _check_schema(schema: AvroSchema) -> None:
    """Fail early if records of this source could never fit ``schema``."""
    names = set(schema.field_names)
    missing = [f for f in _FIELDS if f not in names]
    unfilled = [r.name for r in schema.rules if r.name not in _FIELDS and not r.nullable]
    if missing or unfilled:
        problems = []
        if missing:
            problems.append(f"lacks {', '.join(missing)}")
        if unfilled:
            problems.append(f"requires {', '.join(unfilled)}, which it does not generate")
        raise SourceError(
            f"the synthetic source writes the demo loan-application fields, but schema "
            f"{schema.name} {' and '.join(problems)}; use the bundled demo schema, {DEMO_EVENTS_SCHEMA_PATH}"
        )
