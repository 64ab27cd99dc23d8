"""Fault 8: bad input at volume: random bytes and mutated records among valid events.

A seeded mutator writes :data:`BAD` bad records (random bytes, truncated or
bit-flipped valid encodings, empty values, missing or unknown schema headers,
values breaking the data contract) among :data:`GOOD` valid events into the
raw topic, then ``streamml process`` reads the backlog. Guarantees: it does not
crash, lost == 0, every dead letter names its rule, every valid event is
featurized and every record that cannot be valid is quarantined (a random or
bit-flipped record may happen to decode into a valid event: either outcome is
counted). Good-event throughput against a clean run of the same valid events
is a benchmark figure: printed, not asserted.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from streamml.cluster import Cluster
from streamml.config import Settings
from streamml.kafka import make_producer
from streamml.serde import SCHEMA_HEADER
from streamml.topics import Topics
from tests.conftest import eventually
from tests.faults.checker import Ledger, Report, check
from tests.faults.conftest import Component
from tests.faults.workload import event, serde

GOOD = 2000
BAD = 1000
SEED = 8


def _mutations(settings: Settings, rng: random.Random) -> list[tuple[str, bytes, list[tuple[str, bytes]], bool]]:
    """``(kind, value, headers, certainly_invalid)`` for each bad record."""
    codec = serde(settings)
    out: list[tuple[str, bytes, list[tuple[str, bytes]], bool]] = []
    for i in range(BAD):
        valid = codec.encode(event(100_000 + i))
        kind = rng.choice(["random", "truncated", "bitflip", "empty", "no_header", "unknown_schema",
                           "contract", "trailing"])
        headers = list(codec.headers)
        certain = True
        if kind == "random":
            value, certain = rng.randbytes(rng.randrange(1, 300)), False
        elif kind == "truncated":
            value = valid[: rng.randrange(1, len(valid) // 2)]
        elif kind == "bitflip":
            raw = bytearray(valid)
            for _ in range(rng.randrange(1, 6)):
                raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
            value, certain = bytes(raw), False
        elif kind == "empty":
            value = b""
        elif kind == "no_header":
            value, headers = valid, []
        elif kind == "unknown_schema":
            value, headers = valid, [(SCHEMA_HEADER, rng.randbytes(8).hex().encode())]
        elif kind == "trailing":
            value = valid + rng.randbytes(rng.randrange(1, 20))
        else:  # breaks the contract: a value out of range, not allowed, or missing
            field, bad = rng.choice([("age", 5), ("elevel", 9), ("salary", float("nan")), ("salary", None),
                                     ("hyears", -3)])
            value = codec.encode(event(100_000 + i, **{field: bad}))
        out.append((kind, value, headers, certain))
    return out


def _run(settings: Settings, topics: Topics, spawn: Callable[..., Component], records: list,
         name: str) -> tuple[Ledger, Report, float, Component]:
    """Produce ``records`` ``(event_id, kind, value, headers)``, then process the backlog; return the counts."""
    ledger = Ledger(settings, topics)
    kinds: dict[str | None, str] = {}
    producer = make_producer(settings)
    for event_id, kind, key, value, headers in records:
        kinds[event_id] = kind
        producer.produce(topics.raw_events, key=key, value=value, headers=headers,
                         on_delivery=ledger.on_delivery(event_id))
        producer.poll(0)
    assert producer.flush(30) == 0 and not ledger.failed, ledger.failed[:5]
    processor = spawn("process", "--report-every", "0", name=name, settings_=settings)

    def all_out() -> bool:
        processor.assert_alive()
        return not check(ledger.read_outputs()).lost

    eventually(all_out, timeout=90, interval=0.5, what=f"{name}: every record out")
    report = check(ledger)
    good = sorted(o.timestamp_ms for o in ledger.outputs if o.kind == "feature")
    all_stamps = sorted(o.timestamp_ms for o in ledger.outputs)
    seconds = max((all_stamps[-1] - all_stamps[0]) / 1000, 1e-3)
    return ledger, report, len(good) / seconds, processor


def test_fuzzed_stream_is_quarantined_and_valid_events_featurized(
    settings: Settings, topics: Topics, spawn: Callable[..., Component], tmp_path: Path
) -> None:
    rng = random.Random(SEED)
    codec = serde(settings)
    good = [(f"e{i}", "valid", event(i)["customer_id"].encode(), codec.encode(event(i)), list(codec.headers))
            for i in range(GOOD)]
    bad = [(f"bad{i}-{kind}", kind, f"c{i % 30}".encode(), value, headers)
           for i, (kind, value, headers, _) in enumerate(_mutations(settings, rng))]
    certain = {f"bad{i}-{kind}" for i, (kind, _, _, c) in enumerate(_mutations(settings, random.Random(SEED))) if c}
    mixed = good + bad
    rng.shuffle(mixed)

    # The clean run: the same valid events alone, in a namespace of their own.
    clean_settings = settings.with_overrides(namespace=settings.namespace + "clean.", home=tmp_path / "clean-home")
    clean_topics = Topics.from_settings(clean_settings)
    Cluster(clean_settings).create_topics(clean_topics.specs(clean_settings))
    _, clean, clean_rate, clean_processor = _run(clean_settings, clean_topics, spawn, good, "clean")
    clean_code = clean_processor.stop()

    ledger, report, fuzzed_rate, processor = _run(settings, topics, spawn, mixed, "fuzzed")
    code = processor.stop()
    outcome = {}
    for o in ledger.outputs:
        outcome.setdefault(ledger.produced[o.source], o.kind)
    rules = Counter(o.rule for o in ledger.outputs if o.kind == "dead_letter")
    valid_quarantined = [e for e, kind, *_ in good if outcome.get(e) != "feature"]
    invalid_featurized = [e for e in certain if outcome.get(e) == "feature"]
    lucky = sum(1 for e, *_ in bad if e not in certain and outcome.get(e) == "feature")
    print(report.format(
        f"fuzz x{BAD} bad among {GOOD} valid (seed {SEED})",
        good_throughput=f"{fuzzed_rate:.0f}/s vs clean {clean_rate:.0f}/s ({100 * fuzzed_rate / clean_rate:.0f}%)",
        random_or_bitflipped_that_decoded_valid=lucky, rules=dict(rules.most_common(8)),
    ))

    assert report.lost == 0 and clean.lost == 0, (report.lost_sample, clean.lost_sample)
    assert report.unexpected == 0, report.unexpected_sample
    assert report.without_rule == 0
    assert valid_quarantined == [], valid_quarantined[:10]
    assert invalid_featurized == [], invalid_featurized[:10]
    assert report.quarantined >= len(certain)
    assert code == 0 and clean_code == 0, processor.tail()
