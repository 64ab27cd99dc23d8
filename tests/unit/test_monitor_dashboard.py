"""``streamml monitor``'s web side: the page, its data, /metrics and /healthz over real HTTP (no broker)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from streamml.errors import PortInUseError
from streamml_cli.orchestration.dashboard import DashboardServer, build_app
from streamml_cli.orchestration.monitor_series import Sample, SampleRing
from streamml_cli.orchestration.monitor_service import MonitorCollector
from tests.unit.test_monitor_series import TOPICS, samples_over, snapshot

HEALTH: dict[str, Any] = {"ok": True}


@pytest.fixture
def ring() -> SampleRing:
    ring = SampleRing(TOPICS, namespace="t.", model="demo-classifier", interval=2.0, psi_threshold=0.2)
    for sample in samples_over([100, 250, 400], [3, 2, 0]):
        ring.add(sample)
    return ring


@pytest.fixture
def url(ring: SampleRing) -> Iterator[str]:
    registry = CollectorRegistry()
    registry.register(MonitorCollector(ring, "demo-classifier"))
    app = build_app(ring, registry, lambda: (HEALTH["ok"], {"sampler": HEALTH["ok"]}))
    with DashboardServer(app, port=0) as server:
        yield server.url


def test_the_page_is_one_static_html_page_whose_script_polls_the_snapshot(url: str) -> None:
    page = httpx.get(url + "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for chart in ("chart-lag", "chart-throughput", "chart-accuracy", "chart-dead-letters", "chart-drift"):
        assert f'id="{chart}"' in page.text
    assert '<script src="/dashboard.js">' in page.text
    assert "http://" not in page.text.replace("http://www.w3.org", "")  # nothing from elsewhere: no internet here
    script = httpx.get(url + "/dashboard.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert 'fetch("/api/snapshot"' in script.text
    assert "https://" not in script.text and "http://" not in script.text.replace("http://www.w3.org/2000/svg", "")


def test_the_snapshot_is_the_rings_series_as_json(url: str, ring: SampleRing) -> None:
    answer = httpx.get(url + "/api/snapshot")
    assert answer.status_code == 200 and answer.headers["cache-control"] == "no-store"
    data = answer.json()
    assert data == httpx.get(url + "/api/snapshot").json() == _json_round_trip(ring.series())
    assert data["namespace"] == "t." and data["samples"]["kept"] == 3


def _json_round_trip(value: Any) -> Any:
    import json

    return json.loads(json.dumps(value))


def test_a_value_json_cannot_carry_is_null_not_an_error(url: str, ring: SampleRing) -> None:
    ring.add(Sample(2000.0, [], [], snapshot(500, scorer_rolling=float("nan"))))
    data = httpx.get(url + "/api/snapshot").json()
    assert data["totals"]["scorer_rolling"] is None


def test_metrics_are_prometheus_text(url: str) -> None:
    answer = httpx.get(url + "/metrics")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    assert 'streamml_monitor_group_status{group="streamml.scorer",status="OK"} 1.0' in answer.text


def test_healthz_says_whether_the_sampler_runs(url: str) -> None:
    HEALTH["ok"] = True
    assert httpx.get(url + "/healthz").json() == {"ok": True, "sampler": True}
    HEALTH["ok"] = False
    try:
        answer = httpx.get(url + "/healthz")
        assert answer.status_code == 503 and answer.json()["ok"] is False
    finally:
        HEALTH["ok"] = True


def test_a_taken_port_is_one_port_in_use_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(PortInUseError, match=f"port {port} on 127.0.0.1 is already in use"):
            DashboardServer(object(), port=port)


def test_the_command_exits_2_with_one_line_when_its_port_is_taken(capsys: pytest.CaptureFixture[str]) -> None:
    from streamml_cli import main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(SystemExit) as exited:
            main(["monitor", "--port", str(port), "--bootstrap-servers", "127.0.0.1:1"])
    assert exited.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"streamml: error: port {port} on 127.0.0.1 is already in use; choose another with --port"]
