"""``streamml tail``: the real executable decodes a pipeline topic like kcat shows records."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import queue
import re
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from streamml.config import load_settings
from streamml.envelope import ModelEnvelope, encode_envelope, envelope_headers
from streamml.kafka import make_producer
from streamml.model_control import ControlRecord, control_serde
from streamml.monitoring import MonitoringRecord, encode_record
from streamml.records import DeadLetterReason, FeatureVector, LabelRecord, Prediction, RecordCodec
from streamml.serde import SCHEMA_HEADER
from streamml.transfer import ModelChunk, chunk_serde
from tests.cli.conftest import STREAMML, Runner

EVENTS = "events.raw.v1"


@pytest.fixture
def produced(run: Runner) -> Runner:
    """The test's namespace with its topics and 30 good synthetic events on the raw topic."""
    created = run("topics", "create")
    assert created.returncode == 0, created
    sent = run("produce", "--source", "synthetic", "--limit", "30", "--bad-fraction", "0")
    assert sent.returncode == 0, sent
    return run


def _records(done: Any) -> list[dict[str, Any]]:
    assert done.returncode == 0, done
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def _send(
    cli_env: dict[str, str], short_topic: str, value: bytes | None, headers: list[tuple[str, bytes | None]],
    key: bytes = b"intruder",
) -> None:
    settings = load_settings(cli_env)
    producer = make_producer(settings)
    producer.produce(settings.topic(short_topic), value, key=key, headers=headers)
    assert producer.flush(30) == 0


def test_every_kind_of_pipeline_record_is_decoded(produced: Runner, cli_env: dict[str, str]) -> None:
    """Features, predictions, labels, dead letters, monitoring, the ledger, chunks and directives."""
    event = _records(produced("tail", EVENTS, "-n", "1", "--json"))[0]
    vector = FeatureVector("k1", "e1", 10, {"salary": 2.5}, True, event["topic"], event["partition"], event["offset"])
    codec = RecordCodec(FeatureVector)
    _send(cli_env, "features.v1", codec.encode(vector), list(codec.headers), key=b"k1")
    pcodec = RecordCodec(Prediction)
    _send(cli_env, "predictions.v1", pcodec.encode(Prediction("k1", "e1", 10, "m", 4, True, {}, None, 11)),
          list(pcodec.headers), key=b"k1")
    lcodec = RecordCodec(LabelRecord)
    _send(cli_env, "labels.v1", lcodec.encode(LabelRecord("e1", False, 12)), list(lcodec.headers), key=b"e1")
    reason = DeadLetterReason("validate", "below_min", "salary", "salary -1 < 0", source_topic=event["topic"],
                              source_partition=event["partition"], source_offset=event["offset"])
    original = [(k, v.encode()) for k, v in event["headers"]]
    _send(cli_env, "events.raw.v1.dlq", b"\x00broken", reason.headers(original), key=b"k1")
    _send(cli_env, "events.raw.v1.dlq.replayed", None, [], key=b"0:41")
    key, value = encode_record(MonitoringRecord("labels", "loan", "p1", 13, {"counts": {"joined": 3}}))
    _send(cli_env, "monitoring.v1", value, [], key=key)
    _send(cli_env, "models.v1", ModelChunk("m", 4, "t1", 1, 2, b"\x80abc").encode(), list(chunk_serde().headers))
    _send(cli_env, "models.v1", ControlRecord("m", "pin", 4, 1).encode(), list(control_serde().headers))

    def only(topic: str) -> list[dict[str, Any]]:
        return _records(produced("tail", topic, "--json"))

    [features] = only("features.v1")
    assert (features["kind"], features["key"]) == ("features", "k1")
    assert features["value"]["features"] == {"salary": 2.5} and features["value"]["source_offset"] == event["offset"]
    [prediction] = only("predictions.v1")
    assert prediction["kind"] == "prediction" and prediction["value"]["model_version"] == 4
    [label] = only("labels.v1")
    assert label["kind"] == "label" and label["value"]["label"] is False
    [dead] = only("events.raw.v1.dlq")
    assert dead["kind"] == "dead letter"
    assert (dead["value"]["reason"]["rule"], dead["value"]["reason"]["source.offset"]) == ("below_min", event["offset"])
    assert dead["value"]["original"]["undecodable"]["length"] == len(b"\x00broken")
    assert dict(dead["headers"])["streamml.dlq.rule"] == "below_min"
    [replay] = only("events.raw.v1.dlq.replayed")
    assert (replay["kind"], replay["key"], replay["value"]) == ("replay", "0:41", None)
    [monitoring] = only("monitoring.v1")
    assert monitoring["kind"] == "monitoring" and monitoring["value"]["fields"] == {"counts": {"joined": 3}}
    chunk, directive = only("models.v1")
    assert chunk["kind"] == "model chunk" and (chunk["value"]["index"], chunk["value"]["data_bytes"]) == (1, 4)
    assert directive["kind"] == "model directive" and directive["value"]["action"] == "pin"


def test_tail_shows_the_last_records_of_each_partition_decoded(produced: Runner, cli_env: dict[str, str]) -> None:
    records = _records(produced("tail", EVENTS, "--json"))
    namespace = cli_env["STREAMML_NAMESPACE"]
    partitions = {r["partition"] for r in records}
    assert len(records) == sum(min(10, n) for n in _counts(produced, cli_env).values())
    for record in records:
        assert record["topic"] == namespace + EVENTS
        assert record["kind"] == "event"
        # The key is the event's customer id, and the value the decoded Avro event.
        assert record["key"] == record["value"]["customer_id"]
        assert isinstance(record["value"]["salary"], float)
        assert isinstance(record["timestamp"], int)
        schema = dict(record["headers"])[SCHEMA_HEADER]
        assert len(schema) == 16 and int(schema, 16) >= 0
    for p in partitions:
        offsets = [r["offset"] for r in records if r["partition"] == p]
        assert offsets == sorted(offsets) and offsets == list(range(offsets[0], offsets[0] + len(offsets)))
    # Text: one line per record, kcat's topic[partition]@offset first.
    text = produced("tail", EVENTS)
    assert text.returncode == 0, text
    lines = text.stdout.splitlines()
    assert len(lines) == len(records)
    assert all(line.startswith(f"{namespace}{EVENTS}[") and " event: {" in line for line in lines)
    # Piped, a line is never cut: the whole decoded value is on it.
    by_position = {f"{namespace}{EVENTS}[{r['partition']}]@{r['offset']} ": r for r in records}
    for line in lines:
        record = by_position[line.split(" ", 1)[0] + " "]
        assert json.dumps(record["value"], separators=(",", ":"), ensure_ascii=False) in line


def _counts(run: Runner, cli_env: dict[str, str]) -> dict[int, int]:
    everything = _records(run("tail", EVENTS, "--from-beginning", "--json"))
    counts: dict[int, int] = {}
    for record in everything:
        counts[record["partition"]] = counts.get(record["partition"], 0) + 1
    return counts


def test_from_beginning_n_partition_and_offset(produced: Runner, cli_env: dict[str, str]) -> None:
    everything = _records(produced("tail", EVENTS, "--from-beginning", "--json"))
    assert len(everything) == 30
    assert len({r["value"]["event_id"] for r in everything}) == 30
    busiest = max({r["partition"] for r in everything}, key=lambda p: sum(r["partition"] == p for r in everything))
    mine = sorted(r["offset"] for r in everything if r["partition"] == busiest)
    assert mine[0] == 0

    last3 = _records(produced("tail", EVENTS, "--partition", str(busiest), "-n", "3", "--json"))
    assert [(r["partition"], r["offset"]) for r in last3] == [(busiest, o) for o in mine[-3:]]

    from_one = _records(produced("tail", EVENTS, "--partition", str(busiest), "--offset", "1", "--json"))
    assert [r["offset"] for r in from_one] == mine[1:]

    first2 = _records(produced("tail", EVENTS, "--partition", str(busiest), "--from-beginning", "-n", "2", "--json"))
    assert [r["offset"] for r in first2] == mine[:2]

    # The namespaced name works as well as the short one.
    full = _records(produced("tail", cli_env["STREAMML_NAMESPACE"] + EVENTS, "--partition", str(busiest), "--json"))
    assert [r["offset"] for r in full] == mine[-10:]

    # An offset past the end shows nothing (not the partition from its start).
    past = produced("tail", EVENTS, "--partition", str(busiest), "--offset", "1000", "--json")
    assert past.returncode == 0 and past.stdout == "", past

    missing = produced("tail", EVENTS, "--partition", "99")
    assert missing.returncode == 2, missing
    assert len(missing.stderr_lines) == 1 and "no partition 99" in missing.stderr


def test_unknown_topic_is_one_line_with_did_you_mean(run: Runner) -> None:
    done = run("tail", "events.raw.v2")
    assert done.returncode == 2, done
    assert done.stderr_lines == [line for line in done.stderr_lines if line.startswith("streamml: error:")]
    assert len(done.stderr_lines) == 1
    assert "did you mean events.raw.v1?" in done.stderr


def test_tail_creates_no_topic(run: Runner, cli_env: dict[str, str]) -> None:
    done = run("tail", EVENTS)
    assert done.returncode == 2, done
    assert len(done.stderr_lines) == 1 and "topics create" in done.stderr
    # The broker auto-creates topics asked for by name: tail must not have asked.
    from streamml.cluster import Cluster

    settings = load_settings(cli_env)
    assert Cluster(settings).partition_counts([settings.topic(EVENTS)]) == {}


def test_a_corrupt_record_is_shown_not_crashed_on(produced: Runner, cli_env: dict[str, str]) -> None:
    garbage = b"\xff\xfe not avro at all \x00\x01"
    good = json.loads(produced("tail", EVENTS, "-n", "1", "--json").stdout.splitlines()[0])
    _send(cli_env, EVENTS, garbage, [(SCHEMA_HEADER, good["headers"][0][1].encode())])
    records = _records(produced("tail", EVENTS, "--from-beginning", "--json"))
    bad = [r for r in records if r["kind"] == "undecodable"]
    assert len(bad) == 1 and len(records) == 31
    assert bad[0]["key"] == "intruder"
    assert bad[0]["value"]["length"] == len(garbage)
    assert bad[0]["value"]["hex"] == garbage.hex()
    assert "Avro" in bad[0]["value"]["error"] or "undecodable" in bad[0]["value"]["error"]
    text = produced("tail", EVENTS, "--from-beginning")
    assert text.returncode == 0 and "undecodable: {" in text.stdout, text


class _RunsCode:
    """A pickle that runs a shell command when loaded."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return os.system, (f"touch {self.sentinel}",)


def test_models_topic_shows_envelope_metadata_and_never_loads_the_payload(
    run: Runner, cli_env: dict[str, str], tmp_path: Path
) -> None:
    assert run("topics", "create").returncode == 0
    sentinel = tmp_path / "SENTINEL"
    payload = pickle.dumps(_RunsCode(sentinel))
    envelope = ModelEnvelope(
        model_name="evil", version=7, created_at=1, format="pickle", flavor="river", model_class="x.Y",
        metrics={"accuracy": 0.5}, n_learned=3, input_offsets={}, runtime={}, payload=payload,
        sha256=hashlib.sha256(payload).hexdigest(), payload_size=len(payload),
    )
    _send(cli_env, "models.v1", encode_envelope(envelope), envelope_headers())
    _send(cli_env, "models.v1", payload, [])  # the pickle alone, no envelope at all
    records = _records(run("tail", "models.v1", "--json"))
    assert [r["kind"] for r in records] == ["model envelope", "undecodable"]
    meta = records[0]["value"]
    assert (meta["model_name"], meta["version"], meta["key_id"], meta["signed"]) == ("evil", 7, None, False)
    assert (meta["payload_bytes"], meta["sha256"]) == (len(payload), envelope.sha256)
    assert meta["metrics"] == {"accuracy": 0.5}
    assert "payload" not in meta
    assert records[1]["value"]["length"] == len(payload)
    assert not sentinel.exists()


def test_follow_prints_new_records_and_ctrl_c_exits_0(
    produced: Runner, cli_env: dict[str, str], tmp_path: Path
) -> None:
    follower = subprocess.Popen(
        [STREAMML, "tail", EVENTS, "-n", "0", "--follow", "--json"],
        env=cli_env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        # -n 0: nothing old. Records sent once it follows must show up, then Ctrl-C ends it.
        # It says nothing when it starts following, so send one each turn until a line shows.
        deadline = time.monotonic() + 30
        stdout = follower.stdout
        assert stdout is not None
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [lines.put(line) for line in stdout], daemon=True).start()
        seen: str | None = None
        while seen is None and time.monotonic() < deadline and follower.poll() is None:
            _send(cli_env, EVENTS, b"late", [])
            try:
                seen = lines.get(timeout=0.2)
            except queue.Empty:
                pass
        assert seen is not None, f"no record within 30s; exit {follower.poll()}"
        first = json.loads(seen)
        assert first["key"] == "intruder" and first["kind"] == "undecodable"
        follower.send_signal(signal.SIGINT)
        code = follower.wait(timeout=15)
        err = follower.stderr.read() if follower.stderr else ""
        assert code == 0, err
        # One line says why it stopped, and how much it printed.
        [line] = [line for line in err.splitlines() if line.strip()]
        assert re.fullmatch(r"SIGINT: stopped after \d+ records?", line), line
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
