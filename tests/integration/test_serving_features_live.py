"""The same raw events through the stream and through the serving featurizer: identical vectors and predictions.

A real ``streamml process`` builds the features and the window state; a
:class:`ServingFeatures` in this process reads that state from the
processor's changelog and featurizes the same raw events itself. The probe
events are featurized at serving time *before* the stream sees them (one per
key, so they do not count in each other's windows), which is exactly the
state the stream featurizes them with.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from consumers.http_service import ModelServer
from consumers.serving_features import ServingFeatures
from consumers.subscriber import ModelSubscriber
from model_publisher import catalog
from streamml.cluster import Cluster
from streamml.config import Settings
from streamml.errors import FeaturesUnavailableError
from streamml.kafka import make_producer
from streamml.reader import read_to_end
from streamml.records import FeatureVector, RecordCodec
from streamml.serde import AvroSchema, AvroSerde
from streamml.topics import Topics
from tests.conftest import eventually

pytestmark = pytest.mark.integration

STREAMML = Path(sys.executable).with_name("streamml")
CUSTOMERS = [f"c{i}" for i in range(6)]


def _event(i: int, customer: str, t_ms: int) -> dict[str, Any]:
    return {"event_id": f"e{i}", "customer_id": customer, "event_time": t_ms, "salary": 40000.0 + 997.0 * i,
            "commission": 13.0 * i, "age": 20 + i % 50, "elevel": i % 5, "car": 1 + i % 20, "zipcode": i % 9,
            "hvalue": 1e5 + 1234.5 * i, "hyears": 1 + i % 30, "loan": 1000.0 + 317.3 * i, "label": i % 2}


def _produce(settings: Settings, topic: str, events: list[dict[str, Any]]) -> None:
    serde = AvroSerde(AvroSchema.from_file(settings.schema_path))
    producer = make_producer(settings)
    for e in events:
        producer.produce(topic, serde.encode(e), key=e["customer_id"].encode(), headers=serde.headers)
    assert producer.flush(10) == 0


def _vectors(settings: Settings, topic: str) -> dict[str, FeatureVector]:
    codec = RecordCodec(FeatureVector)
    out = {}
    for message in read_to_end(Cluster(settings), topic):
        vector = codec.decode(message.value(), message.headers())
        out[vector.event_id] = vector
    return out


def _wait_vectors(settings: Settings, topic: str, n: int) -> dict[str, FeatureVector]:
    def enough() -> dict[str, FeatureVector] | None:
        vectors = _vectors(settings, topic)
        return vectors if len(vectors) >= n else None

    return eventually(enough, timeout=90, interval=0.3, what=f"{n} events featurized")


@pytest.fixture
def processor(settings: Settings, topics: Topics) -> Any:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMML_")}
    env["STREAMML_SESSION_TIMEOUT_MS"] = str(settings.session_timeout_ms)
    process = subprocess.Popen(
        [str(STREAMML), "process", "--bootstrap-servers", settings.bootstrap_servers,
         "--namespace", settings.namespace],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    yield process
    process.send_signal(signal.SIGTERM)
    try:
        process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()


def test_stream_and_serving_featurize_the_same_events_identically(
    settings: Settings, topics: Topics, processor: Any, publisher: Any
) -> None:
    t0 = int(time.time() * 1000) - 50_000  # inside the processor's event-time bounds
    warm = [_event(i, CUSTOMERS[i % len(CUSTOMERS)], t0 + 1_000 * i) for i in range(36)]
    _produce(settings, topics.raw_events, warm)
    stream = _wait_vectors(settings, topics.features, 36)

    features = ServingFeatures(settings)
    with features:
        assert features.wait_ready(30), features.view.problem if features.view else "no view"
        # The changelog trails the features by up to a batch: wait until every key counts its warm-up events.
        per_key = {c: sum(1 for e in warm if e["customer_id"] == c) for c in CUSTOMERS}
        assert features.view is not None
        eventually(
            lambda: all(sum(s[0] for s in features.view.state(c.encode()).buckets.values()) == n  # type: ignore[union-attr]
                        for c, n in per_key.items()),
            timeout=30, what="the window view caught up with the processor",
        )

        # A model that learned from the stream's vectors (windowed features included).
        model = catalog.build("logistic")
        for vector in stream.values():
            model.learn_one(vector.features, vector.label)
        names = sorted({n for v in stream.values() for n in v.features})
        envelope = publisher.publish(model, metrics={"accuracy": 0.5}, n_learned=len(stream), input_offsets={},
                                     feature_names=names)

        probes = [_event(100 + i, c, t0 + 40_000 + 500 * i) for i, c in enumerate(CUSTOMERS)]
        with ModelSubscriber(settings) as models, ModelServer(models, port=0, featurizer=features) as server:
            assert models.wait_for_version(envelope.version, timeout=30)
            serving = models.current()
            at_serving = {p["event_id"]: features.vector(p) for p in probes}
            answers = {eid: serving.predict_proba_one(x) for eid, x in at_serving.items()}
            # The model API, given the raw events, answers with the same version on the same vectors.
            api = httpx.post(f"{server.url}/predict", json={"events": probes}, timeout=10)
            assert api.status_code == 200, api.text
            assert api.json()["model_version"] == envelope.version
            from_api = [row["probabilities"] for row in api.json()["predictions"]]
            assert from_api == [{str(k): v for k, v in answers[p["event_id"]].items()} for p in probes]
            one = httpx.post(f"{server.url}/predict", json={"event": probes[0]}, timeout=10).json()
            assert one["prediction"] == serving.predict_one(at_serving[probes[0]["event_id"]])
            bad = httpx.post(f"{server.url}/predict", json={"event": {**probes[0], "age": 7}}, timeout=10)
            assert bad.status_code == 422 and "age" in bad.text and "below_min" in bad.text

        _produce(settings, topics.raw_events, probes)
        stream = _wait_vectors(settings, topics.features, 42)
        # The view follows the changelog: each probe's key now counts it too.
        eventually(
            lambda: all(sum(s[0] for s in features.view.state(c.encode()).buckets.values()) == n + 1  # type: ignore[union-attr]
                        for c, n in per_key.items()),
            timeout=30, what="the window view followed the processor",
        )

    assert all(at_serving[eid]["key_events_60s"] == per_key[p["customer_id"]] + 1
               for eid, p in ((p["event_id"], p) for p in probes))
    for eid, vector in at_serving.items():
        assert stream[eid].features == vector, eid  # the same floats, windowed ones included
        assert serving.predict_proba_one(stream[eid].features) == answers[eid]


def test_windowed_features_are_unavailable_until_the_processor_has_state(
    settings: Settings, topics: Topics
) -> None:
    features = ServingFeatures(settings)
    with features:
        assert features.view is not None
        eventually(lambda: "does not exist yet" in (features.view.problem or ""), timeout=15,  # type: ignore[union-attr]
                   what="the view to find no changelog")
        with pytest.raises(FeaturesUnavailableError) as caught:
            features.vector(_event(1, "x", int(time.time() * 1000)))
    assert caught.value.retryable and "does not exist yet" in caught.value.reason
    assert not features.ready
