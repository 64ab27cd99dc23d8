"""The examples run for real against the session broker: the script as a subprocess, the web app in-process."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import threading
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from fastapi.testclient import TestClient

from model_publisher.publisher import ModelPublisher
from streamml.config import Settings
from tests.conftest import eventually
from tests.integration.conftest import small_model

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
X = {"a": 1.0, "b": -2.0}


def publish(publisher: ModelPublisher, n: int) -> int:
    envelope = publisher.publish(
        small_model(n), metrics={"accuracy": 0.9}, n_learned=n, input_offsets={}, feature_names=["a", "b"]
    )
    return envelope.version


def example_env(settings: Settings) -> dict[str, str]:
    """The environment a user sets: broker, namespace, trusted keys (set by the fixtures)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMML_") or "KEY" in k}
    env.update(
        STREAMML_BOOTSTRAP_SERVERS=settings.bootstrap_servers,
        STREAMML_NAMESPACE=settings.namespace,
        STREAMML_HOME=str(settings.home),
        PYTHONPATH=str(ROOT),
    )
    return env


def load_webapp() -> ModuleType:
    spec = importlib.util.spec_from_file_location("example_webapp", ROOT / "examples" / "webapp" / "app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_score_script_prints_the_version_and_the_prediction(
    settings: Settings, publisher: ModelPublisher, tmp_path: Path
) -> None:
    publish(publisher, 10)
    assert publish(publisher, 30) == 2
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "score_script.py")],
        env=example_env(settings), capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"v2: {small_model(30).predict_one(X)!r}"


def test_the_score_script_says_so_when_there_is_no_model(settings: Settings, publisher: ModelPublisher) -> None:
    env = example_env(settings)
    done = subprocess.run(
        [sys.executable, "-c", (ROOT / "examples" / "score_script.py").read_text().replace("30", "1")],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 1 and "no model version could be loaded" in done.stderr


def form(client: TestClient, a: float, b: float) -> Any:
    return client.post("/", content=f"a={a}&b={b}", headers={"content-type": "application/x-www-form-urlencoded"})


def test_the_web_app_answers_the_form_and_json_and_hot_swaps_with_no_failed_request(
    settings: Settings, publisher: ModelPublisher
) -> None:
    publish(publisher, 10)
    app = load_webapp().create_app(settings, ready_timeout=15)
    with TestClient(app) as client:  # runs the lifespan: the subscriber starts, then stops on leaving
        assert client.get("/readyz").json() == {"ready": True, "model_version": 1}  # ready before the first request
        page = client.get("/")
        assert page.status_code == 200 and 'name="a"' in page.text and 'name="b"' in page.text

        answered = form(client, 1.0, -2.0)
        assert answered.status_code == 200
        assert f'<b id="prediction">{small_model(10).predict_one(X)}</b>' in answered.text
        assert '<b id="version">v1</b>' in answered.text
        bad = client.post("/", content="a=x&b=1", headers={"content-type": "application/x-www-form-urlencoded"})
        assert bad.status_code == 400

        assert client.post("/predict", json={"features": X}).json()["model_version"] == 1

        # Requests keep coming while v2 is published: none may fail, and the answer's version moves to 2.
        statuses: list[int] = []
        versions: list[int] = []
        done = threading.Event()

        def keep_asking() -> None:
            while not done.is_set():
                response = client.post("/predict", json={"features": X})
                statuses.append(response.status_code)
                if response.status_code == 200:
                    versions.append(response.json()["model_version"])

        asking = threading.Thread(target=keep_asking)
        asking.start()
        try:
            eventually(lambda: len(versions) >= 5, timeout=15, what="requests answered by v1")
            assert publish(publisher, 40) == 2
            eventually(lambda: versions and versions[-1] == 2, timeout=15, what="an answer by v2")
        finally:
            done.set()
            asking.join()
        assert set(statuses) == {200}
        assert versions[0] == 1 and versions[-1] == 2 and versions == sorted(versions)
        answered = form(client, 1.0, -2.0)
        assert '<b id="version">v2</b>' in answered.text
        assert f'<b id="prediction">{small_model(40).predict_one(X)}</b>' in answered.text
        subscriber = app.state.models
    assert subscriber._thread is None  # stopped (and joined) in the lifespan's shutdown
