"""``GET /metrics``: Prometheus text with request counts and the serving model's state (no broker)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from consumers.http_service import ModelServer
from consumers.swap import ModelSlot
from streamml.envelope import seal
from tests.unit.test_http_service import POLICY, Threshold, sealed


def scrape(client: httpx.Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of ``/metrics`` as ``{(name, sorted labels): value}``."""
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


@pytest.fixture
def slot() -> ModelSlot:
    return ModelSlot("m", POLICY)


@pytest.fixture
def client(slot: ModelSlot) -> Iterator[httpx.Client]:
    with ModelServer(slot, port=0) as server, httpx.Client(base_url=server.url, timeout=10) as running:
        yield running


def test_requests_are_counted_by_endpoint_and_status(client: httpx.Client, slot: ModelSlot) -> None:
    assert client.post("/predict", json={"features": {"x": 1.0}}).status_code == 503
    assert slot.offer(sealed(0.5, 1))
    for _ in range(3):
        assert client.post("/predict", json={"instances": [{"x": 1.0}, {"x": 0.0}]}).status_code == 200
    assert client.post("/predict", content=b"{").status_code == 422
    assert client.get("/no/such/thing").status_code == 404
    metrics = scrape(client)
    requests = "streamml_serve_requests_total"
    assert metrics[(requests, (("endpoint", "/predict"), ("status", "200")))] == 3
    assert metrics[(requests, (("endpoint", "/predict"), ("status", "503")))] == 1
    assert metrics[(requests, (("endpoint", "/predict"), ("status", "422")))] == 1
    # Unknown paths share one label: probing random URLs cannot grow the label set.
    assert metrics[(requests, (("endpoint", "other"), ("status", "404")))] == 1
    assert metrics[("streamml_serve_request_seconds_count", (("endpoint", "/predict"),))] == 5
    assert metrics[("streamml_serve_predictions_total", ())] == 6  # a batch of 2 counts 2


def test_the_model_state_is_read_at_scrape_time(client: httpx.Client, slot: ModelSlot) -> None:
    before = scrape(client)
    assert before[("streamml_model_ready", ())] == 0
    assert not any(name == "streamml_model_version" for name, _ in before)
    assert not slot.offer(seal(Threshold(0.5), model_name="m", version=1, flavor="river"))  # unsigned: refused
    assert slot.offer(sealed(0.5, 2))
    assert slot.offer(sealed(0.6, 3))
    metrics = scrape(client)
    assert metrics[("streamml_model_ready", ())] == 1
    assert metrics[("streamml_model_version", (("model", "m"),))] == 3
    assert metrics[("streamml_model_swaps_total", ())] == 2
    assert metrics[("streamml_model_refused_total", (("reason", "unsigned"),))] == 1
    created = slot.current().envelope["created_at"] / 1000
    age = metrics[("streamml_model_age_seconds", (("model", "m"),))]
    assert 0 <= age <= time.time() - created + 1


def test_two_servers_in_one_process_count_apart(slot: ModelSlot) -> None:
    assert slot.offer(sealed(0.5, 1))
    with ModelServer(slot, port=0) as a, ModelServer(slot, port=0) as b:
        with httpx.Client(base_url=a.url, timeout=10) as first, httpx.Client(base_url=b.url, timeout=10) as second:
            assert first.post("/predict", json={"features": {"x": 1.0}}).status_code == 200
            key = ("streamml_serve_requests_total", (("endpoint", "/predict"), ("status", "200")))
            assert scrape(first)[key] == 1
            assert key not in scrape(second)


def test_the_subscriber_position_on_the_models_topic_is_reported_and_its_lag_never_negative(slot: ModelSlot) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from consumers.serving_metrics import ModelCollector

    class Following:
        """A source like ModelSubscriber: the slot's state plus where it stands on the models topic."""

        models_topic_position: tuple[int, int] | None = None

        def current(self) -> object:
            return slot.current()

    source = Following()
    registry = CollectorRegistry()
    registry.register(ModelCollector(source))
    assert "streamml_model_topic_lag" not in generate_latest(registry).decode()  # not polled yet: absent, not 0
    source.models_topic_position = (7, 10)
    text = generate_latest(registry).decode()
    assert "streamml_model_topic_position 7.0" in text and "streamml_model_topic_lag 3.0" in text
    source.models_topic_position = (12, 10)  # a stale end from an older fetch
    assert "streamml_model_topic_lag 0.0" in generate_latest(registry).decode()
