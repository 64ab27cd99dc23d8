"""Distribution monitoring in ``streamml process`` on the real broker.

The synthetic stream shifts at its midpoint (``car`` keeps only its first
digit). Everything goes to one partition, so the raw offset is the event's
position and the monitor's windows follow it exactly: the test knows how many
valid events came before the shift, and checks that no window before it
alarms, that the first window wholly after it does, that ``streamml drift``
reports it (and exits 4 with ``--fail-on-drift``), that a restarted processor
compares with the reference of its first run instead of freezing the drifted
data as normal, and that a batch-level contract rule warns without
quarantining. Conservation in every test: produced = featurized + quarantined.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterable
from pathlib import Path

import pytest

from producers.events import RawPayload
from producers.synthetic import SyntheticSource
from streamml.cluster import Cluster
from streamml.config import Settings
from streamml.kafka import make_producer, record_headers
from streamml.monitoring import PROFILE, REFERENCE, MonitoringRecord, decode_record
from streamml.reader import read_to_end
from streamml.records import FeatureVector, RecordCodec
from streamml.serde import AvroSchema, AvroSerde
from streamml.topics import Topics
from tests.conftest import eventually
from tests.integration.test_processor import STREAMML, _event, _stop

pytestmark = pytest.mark.integration

REFERENCE_EVENTS = 400
WINDOW = 200


def _start(settings: Settings, **env_settings: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMML_")}
    env.update(
        STREAMML_LOG_LEVEL="INFO",
        STREAMML_SESSION_TIMEOUT_MS=str(settings.session_timeout_ms),
        STREAMML_DRIFT_REFERENCE_EVENTS=str(REFERENCE_EVENTS),
        STREAMML_DRIFT_WINDOW_EVENTS=str(WINDOW),
    )
    env.update(env_settings)
    return subprocess.Popen(
        [str(STREAMML), "process", "-b", settings.bootstrap_servers, "--namespace", settings.namespace],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def _produce(settings: Settings, topics: Topics, values: Iterable[tuple[bytes, bytes]], headers: list) -> int:
    producer = make_producer(settings)
    count = 0
    for key, value in values:
        producer.produce(topics.raw_events, key=key, value=value, headers=headers, partition=0)
        count += 1
        if count % 500 == 0:
            producer.poll(0)
    assert producer.flush(30) == 0
    return count


def _synthetic(source: SyntheticSource, serde: AvroSerde, start: int = 0) -> list[tuple[bytes, bytes]]:
    out = []
    for index, item in enumerate(source):
        if index < start:
            continue
        if isinstance(item, RawPayload):
            out.append((item.key.encode() if isinstance(item.key, str) else item.key or b"", item.value))
        else:
            out.append((item["customer_id"].encode(), serde.encode(item)))
    return out


def _monitoring(cluster: Cluster, topics: Topics) -> list[MonitoringRecord]:
    return [decode_record(m.value()) for m in read_to_end(cluster, topics.monitoring)]


def _accounted(cluster: Cluster, topics: Topics, expected: int, process: subprocess.Popen) -> tuple[list, list]:
    def outputs() -> tuple[list, list] | None:
        assert process.poll() is None, "the processor stopped"
        features = list(read_to_end(cluster, topics.features))
        dead = list(read_to_end(cluster, topics.dead_letters))
        return (features, dead) if len(features) + len(dead) >= expected else None

    return eventually(outputs, timeout=120, interval=0.5, what=f"{expected} records accounted for")


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMML_")}
    return subprocess.run(
        [str(STREAMML), *args, "-b", settings.bootstrap_servers, "--namespace", settings.namespace],
        env=env, capture_output=True, text=True, timeout=60,
    )


def test_a_feature_shift_is_caught_after_it_starts_never_before_and_survives_a_restart(
    settings: Settings, topics: Topics
) -> None:
    length = 2000
    source = SyntheticSource(length * 2, seed=7, bad_fraction=0.02)  # the shift at index 2000
    serde = AvroSerde(source.schema)
    first_run = _synthetic(source, serde)[:length + 400]  # the shift comes 2,000 events in
    produced = _produce(settings, topics, first_run, serde.headers)
    cluster = Cluster(settings)
    process = _start(settings)
    try:
        features, dead = _accounted(cluster, topics, produced, process)
        expected_windows = (len(features) - REFERENCE_EVENTS) // WINDOW
        records = eventually(
            lambda: (r := _monitoring(cluster, topics)) and len([x for x in r if x.kind == PROFILE]) >= expected_windows
            and r,
            timeout=30, what=f"{expected_windows} monitoring windows",
        )
        report = _cli(settings, "drift", "--json")
        failing = _cli(settings, "drift", "--fail-on-drift")
    finally:
        code, log = _stop(process)
    assert code == 0, log
    assert len(features) + len(dead) == produced  # conservation
    codec = RecordCodec(FeatureVector)
    offsets = [codec.decode(m.value(), record_headers(m)).source_offset for m in features]
    assert len(set(offsets)) == len(offsets)
    valid_before_shift = sum(1 for offset in offsets if offset < length)

    assert records[0].kind == REFERENCE and records[0].origin == "first events"
    assert records[0].events == REFERENCE_EVENTS
    profiles = [r for r in records if r.kind == PROFILE]
    assert [p.window for p in profiles] == list(range(1, len(profiles) + 1))
    assert all(p.events == WINDOW for p in profiles)
    assert sum(p.quarantined for p in profiles) <= len(dead)
    before = [p for p in profiles if p.observed <= valid_before_shift]
    after = [p for p in profiles if p.observed - WINDOW >= valid_before_shift]  # wholly after the shift
    assert len(before) >= 3 and after
    assert not [p.alerts for p in before if p.drifted], "a drift alert before the shift"
    assert "car" in after[0].drifted and after[0].fields["car"]["psi"] > 1.0
    assert all(p.fields["car"]["ks_pvalue"] < 1e-6 for p in after)
    assert all(p.fields["salary"]["psi"] < 0.2 for p in profiles)  # untouched fields stay calm

    assert report.returncode == 0, report.stderr
    shown = json.loads(report.stdout)
    assert shown["alerting"] is True and len(shown["sources"]) == 1
    latest = shown["sources"][0]
    assert latest["latest"]["window"] == profiles[-1].window
    first_car = next(p for p in profiles if "car" in p.drifted)
    assert latest["alerting_since"]["car/psi"]["window"] == first_car.window
    assert failing.returncode == 4, (failing.stdout, failing.stderr)
    assert "car drifted" in failing.stdout
    assert "car drifted: PSI" in log  # one warning line ...
    assert log.count("car drifted: PSI") == 1  # ... while it lasts, not one per window

    # A restart on drifted data: the stored reference, not a new one frozen from the shift.
    second_run = _synthetic(source, serde, start=length + 400)[: 2 * WINDOW + 50]
    produced += _produce(settings, topics, second_run, serde.headers)
    process = _start(settings)
    try:
        features, dead = _accounted(cluster, topics, produced, process)
        restarted = eventually(
            lambda: [r for r in _monitoring(cluster, topics) if r.source != records[0].source and r.kind == PROFILE],
            timeout=30, what="a window of the restarted processor",
        )
    finally:
        code, log = _stop(process)
    assert code == 0, log
    assert len(features) + len(dead) >= produced  # at-least-once: a restart may repeat (issue 9)
    again = [r for r in _monitoring(cluster, topics) if r.source == restarted[0].source and r.kind == REFERENCE]
    assert again and again[0].fields == records[0].fields  # the first run's reference, sent again
    assert "car" in restarted[0].drifted


def test_a_batch_level_rule_warns_without_quarantining(settings: Settings, topics: Topics, tmp_path: Path) -> None:
    raw = json.loads(Path(settings.schema_path).read_text())
    for field in raw["fields"]:
        if field["name"] == "label":
            field["contract"]["max_null_rate"] = 0.3
    schema_path = tmp_path / "events.avsc"
    schema_path.write_text(json.dumps(raw))
    serde = AvroSerde(AvroSchema.from_file(schema_path))
    # 150 labelled events, then 150 of which half have no label yet (valid: the label is optional).
    events = [_event(i, f"c{i % 7}", label=i % 2) for i in range(150)]
    events += [_event(i, f"c{i % 7}", label=None if i % 2 else 1) for i in range(150, 300)]
    produced = _produce(settings, topics, ((e["customer_id"].encode(), serde.encode(e)) for e in events), serde.headers)
    cluster = Cluster(settings)
    process = _start(
        settings, STREAMML_SCHEMA_PATH=str(schema_path),
        STREAMML_DRIFT_REFERENCE_EVENTS="100", STREAMML_DRIFT_WINDOW_EVENTS="100",
    )
    try:
        features, dead = _accounted(cluster, topics, produced, process)
        profiles = eventually(
            lambda: (p := [r for r in _monitoring(cluster, topics) if r.kind == PROFILE]) and len(p) >= 2 and p,
            timeout=30, what="two windows",
        )
    finally:
        code, log = _stop(process)
    assert code == 0, log
    assert len(features) == produced and not dead  # nothing quarantined for a batch-level rule
    first, second = profiles[:2]  # events 100-199 (a quarter unlabelled), 200-299 (half)
    assert not [a for a in first.alerts if a.rule == "max_null_rate"]
    [alert] = [a for a in second.alerts if a.rule == "max_null_rate"]
    assert alert.field == "label" and alert.value == 0.5 and alert.threshold == 0.3
    assert "label: null rate 0.500 is above the contract's max_null_rate 0.3" in log
