"""`streamml serve`'s service on a real broker: hot swaps under load fail no request."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from typing import Any

import pytest

from consumers import ModelSubscriber
from consumers.http_service import ModelServer
from model_publisher.learning_loop import LearningLoop
from model_publisher.publisher import ModelPublisher
from streamml.config import Settings
from streamml.topics import Topics
from tests.conftest import eventually
from tests.integration.conftest import small_model
from tests.integration.test_models_learner import produce_features

pytestmark = pytest.mark.integration


def _post(url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        # A stalled request fails here rather than hanging the test.
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        text: str = response.read().decode()
        return text


def test_requests_during_swaps_all_succeed_on_some_version(settings: Settings, publisher: ModelPublisher) -> None:
    with ModelSubscriber(settings) as subscriber, ModelServer(subscriber, port=0) as server:
        url = f"{server.url}/predict"
        assert _post(url, {"features": {"a": 1.0, "b": 2.0}})[0] == 503
        publisher.publish(small_model(5), metrics={}, n_learned=5, input_offsets={})
        assert subscriber.wait_for_version(1, timeout=30)

        failures: list[Any] = []
        versions: list[int] = []
        done = threading.Event()

        def client() -> None:
            while not done.is_set():
                try:
                    status, body = _post(url, {"instances": [{"a": 1.0, "b": 2.0}, {"a": 4.0, "b": 0.0}]})
                except Exception as exc:  # a refused connection or a timeout is a failure too
                    failures.append(exc)
                    continue
                if status != 200:
                    failures.append((status, body))
                else:
                    versions.append(body["model_version"])

        clients = [threading.Thread(target=client) for _ in range(3)]
        for thread in clients:
            thread.start()
        try:
            for n in range(2, 7):
                publisher.publish(small_model(5 * n), metrics={}, n_learned=5 * n, input_offsets={})
                assert subscriber.wait_for_version(n, timeout=30)
                seen = len(versions)
                eventually(
                    lambda seen=seen: len(versions) > seen + 5, timeout=30, what="requests served after the swap"
                )
        finally:
            done.set()
            for thread in clients:
                thread.join(30)
        metrics = _get(f"{server.url}/metrics")
    assert failures == []
    assert set(versions) >= {2, 3, 4, 5, 6}
    # The subscriber's own counts, read at scrape time: six installs, v6 serving.
    assert "streamml_model_swaps_total 6.0" in metrics
    assert f'streamml_model_version{{model="{settings.model_name}"}} 6.0' in metrics


def test_serve_command_answers_and_stops_on_sigterm(
    settings: Settings, publisher: ModelPublisher, unused_port: int
) -> None:
    publisher.publish(small_model(5), metrics={}, n_learned=5, input_offsets={})
    env = {**settings.to_env(), "PATH": ""}
    process = subprocess.Popen(
        [sys.executable, "-m", "streamml_cli", "serve", "--port", str(unused_port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
    )
    try:
        def answered() -> bool:
            try:
                return _post(f"http://127.0.0.1:{unused_port}/predict", {"features": {"a": 1.0, "b": 0.0}})[0] == 200
            except OSError:
                return False  # not listening yet

        eventually(answered, timeout=60, interval=0.2, what="streamml serve to answer with v1")
    finally:
        process.terminate()
        code = process.wait(30)
    output = process.stdout.read() if process.stdout else ""
    assert code == 0, output
    assert f"serving {settings.model_name} v1" in output


def test_a_learned_model_refuses_feature_names_it_never_learned_from(settings: Settings, topics: Topics) -> None:
    """The README's old example body (demo names) against a model learned from other features: 422, not a score."""
    produce_features(settings, topics, 600)
    published: list[Any] = []
    LearningLoop(settings, max_events=600, on_publish=published.append).run()
    assert published and published[-1].feature_names == ("a", "b", "noise")
    with ModelSubscriber(settings) as subscriber, ModelServer(subscriber, port=0) as server:
        assert subscriber.wait_for_version(published[-1].version, timeout=30)
        url = f"{server.url}/predict"
        status, body = _post(url, {"features": {"age": 35, "salary": 52000}})
        assert status == 422, body
        error = body["error"]
        assert error.startswith("features: unknown feature(s) age, salary") and "missing feature(s) a, b" in error
        assert _post(url, {"features": {"a": 1.0, "b": 2.0, "noise": 0.5}})[0] == 200
