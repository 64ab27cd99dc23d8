"""Scrape ``streamml process``, ``learn`` and ``score`` over HTTP during a real run and check the counts.

One small pipeline on the session broker: 300 valid events and 5 bad ones are
produced, the three components run as child processes with ``--metrics-port``,
and each ``/metrics`` is polled until it shows what the run did: every event
consumed, the dead letters by rule, the events learned, a published version,
a prediction per feature vector. The learner logs with ``--log-format json``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from streamml.broker import free_port
from streamml.config import Settings
from streamml.kafka import make_producer
from streamml.serde import AvroSchema, AvroSerde
from streamml.topics import Topics
from tests.conftest import eventually

pytestmark = pytest.mark.integration

STREAMML = Path(sys.executable).with_name("streamml")
GOOD = 300
T0 = 1_700_000_000_000


def _event(i: int, **overrides: object) -> dict:
    event = {
        "event_id": f"e{i}", "customer_id": f"c{i % 7}", "event_time": T0 + i * 1000, "salary": 40000.0 + 97 * i,
        "commission": 1000.0, "age": 20 + i % 50, "elevel": i % 5, "car": 1 + i % 20, "zipcode": i % 9,
        "hvalue": 200000.0, "hyears": 1 + i % 30, "loan": float(1000 * (i % 40 + 1)), "label": i % 2,
    }
    event.update(overrides)
    return event


def _produce(settings: Settings, topics: Topics) -> None:
    serde = AvroSerde(AvroSchema.from_file(settings.schema_path))
    producer = make_producer(settings)
    for i in range(GOOD):
        producer.produce(topics.raw_events, serde.encode(_event(i)), key=f"c{i % 7}".encode(), headers=serde.headers)
    valid = serde.encode(_event(GOOD))
    for _ in range(3):  # no schema header: rule missing_schema_header
        producer.produce(topics.raw_events, valid, key=b"c1")
    for i in range(2):  # NaN salary: rule not_finite
        producer.produce(
            topics.raw_events, serde.encode(_event(GOOD + 1 + i, salary=float("nan"))), key=b"c2",
            headers=serde.headers,
        )
    assert producer.flush(10) == 0


def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    except httpx.HTTPError:
        return None  # not listening yet
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@pytest.fixture
def pipeline(settings: Settings, topics: Topics, tmp_path: Path) -> Iterator[dict[str, tuple[int, Path]]]:
    """The three components running with metrics: ``name -> (metrics port, stderr log)``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMML_")}
    env.update(settings.to_env())
    env.update({
        "STREAMML_LOG_LEVEL": "INFO", "STREAMML_PUBLISH_EVERY_EVENTS": "100", "STREAMML_GATE_EVENTS": "0",
        "STREAMML_DRIFT_REFERENCE_EVENTS": "100", "STREAMML_DRIFT_WINDOW_EVENTS": "100",
    })
    commands = {"process": ["process", "--report-every", "0"], "learn": ["--log-format", "json", "learn"],
                "score": ["score"]}
    running: dict[str, tuple[subprocess.Popen, int, Path]] = {}
    try:
        for name, args in commands.items():
            port = free_port()
            log = tmp_path / f"{name}.log"
            with log.open("w") as err, (tmp_path / f"{name}.out").open("w") as out:
                process = subprocess.Popen(
                    [str(STREAMML), *args, "--metrics-port", str(port)], env=env, stdout=out, stderr=err, text=True
                )
            running[name] = (process, port, log)
        yield {name: (port, log) for name, (_, port, log) in running.items()}
    finally:
        for process, _, _ in running.values():
            process.send_signal(signal.SIGTERM)
        for process, _, _ in running.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def test_every_component_exports_what_the_run_did(
    settings: Settings, topics: Topics, pipeline: dict[str, tuple[int, Path]]
) -> None:
    _produce(settings, topics)

    def scraped(name: str, ready: str, at_least: float) -> dict:
        def check() -> dict | None:
            got = _scrape(pipeline[name][0])
            return got if got is not None and got.get((ready, ()), 0) >= at_least else None

        log = pipeline[name][1]
        try:
            return eventually(check, timeout=60, interval=0.3, what=f"{name}'s {ready} to reach {at_least}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{name} log:\n{log.read_text()[-3000:]}") from None

    # Counted per batch: the events may arrive in several; the total must be every one produced.
    processed = scraped("process", "streamml_processor_batch_size_sum", GOOD + 5)
    assert processed[("streamml_processor_events_consumed_total", (("topic", topics.raw_events),))] == GOOD + 5
    assert processed[("streamml_processor_events_featurized_total", ())] == GOOD
    dead = {labels[0][1]: v for (n, labels), v in processed.items() if n == "streamml_processor_dead_letters_total"}
    assert dead == {"missing_schema_header": 3, "not_finite": 2}
    assert processed[("streamml_processor_drift_windows_total", ())] >= 1  # 300 valid: reference 100, then windows
    assert any(n == "streamml_processor_drift_psi" for n, _ in processed)

    learned = scraped("learn", "streamml_learner_events_learned_total", GOOD)
    assert learned[("streamml_learner_events_consumed_total", ())] == GOOD
    versions = learned[("streamml_learner_model_version", (("model", settings.model_name),))]
    published = learned[("streamml_learner_versions_published_total", (("decision", "ungated"),
                                                                       ("model", settings.model_name)))]
    assert versions >= 1 and published == versions  # every 100 learned events, from v1
    accuracy = ("streamml_learner_model_metric", (("metric", "accuracy"), ("model", settings.model_name)))
    assert 0 <= learned[accuracy] <= 1 and learned[("streamml_learner_model_bytes", (("model", settings.model_name),))]

    scored = scraped("score", "streamml_scorer_predictions_total", GOOD)
    assert scored[("streamml_scorer_predictions_total", ())] == GOOD  # one prediction per feature vector
    assert scored[("streamml_model_ready", ())] == 1 and scored[("streamml_model_swaps_total", ())] >= 1
    assert scored[("streamml_model_version", (("model", settings.model_name),))] >= 1
    assert scored[("streamml_scorer_swap_seconds_count", ())] >= 1

    # The learner logged in JSON: its publish line is an object with the event's fields.
    def publishes() -> list[dict]:
        text = pipeline["learn"][1].read_text()
        lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
        return [line for line in lines if line.get("event") == "model_published"]

    first = eventually(publishes, timeout=10, what="the learner's JSON publish line")[0]
    assert first["version"] == 1 and first["model"] == settings.model_name and first["level"] == "INFO"
