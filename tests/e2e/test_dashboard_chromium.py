"""``streamml monitor``'s page in headless Chromium, against a real pipeline on the session broker.

The monitor runs as the real command (a subprocess) while the demo's
orchestration runs producer -> processor -> learner -> scorer with injected
bad events. Then Chromium loads the page: the DOM it renders must show this
run's data (its groups, its topics' throughput, its model versions, the
reasons of the events it quarantined), and its screenshot is saved as an
artifact (``artifacts/dashboard.png``, or ``$STREAMML_TEST_ARTIFACTS``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from streamml.broker import free_port
from streamml.cluster import Cluster
from streamml.config import Settings, load_settings
from streamml.kafka import record_headers
from streamml.reader import read_to_end
from streamml.records import DeadLetterReason
from tests.conftest import eventually

pytestmark = pytest.mark.integration

STREAMML = str(Path(sys.executable).with_name("streamml"))
EVENTS = 3000
#: Chromium flags for a machine without a display, a sandbox, or internet.
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars", "--virtual-time-budget=6000",
]


class DrawnElements(HTMLParser):
    """Every element of a dumped DOM that carries ``data-*`` attributes, with the chart it is drawn in."""

    def __init__(self, dom: str) -> None:
        super().__init__()
        self.chart: str | None = None
        self.charts: dict[str, dict[str, str]] = {}
        self.elements: list[tuple[str | None, str, dict[str, str]]] = []
        self.feed(dom)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag == "svg" and "data-chart" in values:
            self.chart = values["data-chart"]
            self.charts[self.chart] = values
        if any(k.startswith("data-") for k in values):
            self.elements.append((self.chart, tag, values))

    def handle_endtag(self, tag: str) -> None:
        if tag == "svg":
            self.chart = None

    def drawn(self, chart: str | None, attribute: str) -> list[dict[str, str]]:
        """Attributes of the elements of ``chart`` (``None``: outside every chart) that carry ``attribute``."""
        return [a for c, _, a in self.elements if c == chart and attribute in a]


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as answer:  # noqa: S310 (a loopback URL of this test)
        return json.load(answer)


@pytest.fixture(scope="module")
def settings(bootstrap_servers: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return load_settings(
        env={}, bootstrap_servers=bootstrap_servers, namespace=f"dash{uuid.uuid4().hex[:8]}.",
        home=tmp_path_factory.mktemp("dashboard-home"), publish_every_events=500, publish_every_seconds=3.0,
    )


@pytest.fixture(scope="module")
def monitor_url(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``streamml monitor`` on a free port, started before the pipeline (it waits for the topics)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMML_")}
    env.update(settings.to_env(), PYTHONUNBUFFERED="1")
    logs = tmp_path_factory.mktemp("monitor")
    with open(logs / "stdout", "w") as out, open(logs / "stderr", "w") as err:
        process = subprocess.Popen([STREAMML, "monitor", "--port", str(port), "--interval", "0.5"],
                                   env=env, stdout=out, stderr=err)
    url = f"http://127.0.0.1:{port}"
    try:
        eventually(lambda: _answers(url + "/healthz") or process.poll() is not None, timeout=30,
                   what="the monitor to answer /healthz")
        assert process.poll() is None, (logs / "stderr").read_text()
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
        assert code == 0, f"the monitor exited {code}: {(logs / 'stderr').read_text()[-2000:]}"


def _answers(url: str) -> bool:
    try:
        return bool(get_json(url)["ok"])
    except OSError:
        return False


@pytest.fixture(scope="module")
def pipeline(settings: Settings, monitor_url: str) -> dict[str, Any]:
    """Run the pipeline while the monitor samples it; return what the dead-letter topic holds."""
    from streamml_cli.orchestration.demo import DemoOptions, run_demo

    result = run_demo(settings, DemoOptions(events=EVENTS, rate=400, bad_fraction=0.05, seed=11, timeout=240,
                                            embedded=False))
    # The demo's own checks are its tests' business (tests/integration/test_pipeline_e2e.py); here the run
    # only has to have happened, so that the monitor has something true to show.
    assert result.snapshot.produced == EVENTS and result.snapshot.quarantined > 0, result.checks
    cluster = Cluster(settings)
    reasons = Counter(
        DeadLetterReason.rule_of(record_headers(m)) or "unknown"
        for m in read_to_end(cluster, cluster.topics.dead_letters)
    )
    versions = {v.version for v in result.snapshot.versions}
    # The monitor has read everything the run wrote once its dead letters and predictions are all counted.
    eventually(
        lambda: _caught_up(get_json(monitor_url + "/api/snapshot"), sum(reasons.values())),
        timeout=30, what="the monitor to read the whole run",
    )
    return {"reasons": reasons, "versions": versions, "groups": set(cluster.groups.all()),
            "raw_topic": cluster.topics.raw_events}


def _caught_up(data: dict[str, Any], dead_letters: int) -> bool:
    counted = sum(r["count"] for r in data["dead_letters"]["reasons"])
    labelled = [v for v in data["accuracy"]["versions"] if v["accuracy"] is not None]
    return counted == dead_letters and bool(labelled) and data["totals"]["predictions"] == data["totals"]["features"]


def run_chromium(chromium: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}", *args],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_the_dashboard_shows_this_runs_data_in_chromium(
    chromium: str, monitor_url: str, pipeline: dict[str, Any], tmp_path: Path, artifacts_dir: Path,
) -> None:
    page = DrawnElements(run_chromium(chromium, tmp_path, "--window-size=1400,1000", "--dump-dom",
                                      monitor_url + "/").stdout)
    assert {c: a["data-state"] for c, a in page.charts.items()} == {
        c: "ready" for c in ("lag", "throughput", "accuracy", "dead-letters", "drift")
    }

    # Lag: one line per consumer group of this pipeline, and a verdict badge for each.
    lines = {a["data-series"] for a in page.drawn("lag", "data-series")}
    assert lines == pipeline["groups"]
    badges = {a["data-group"]: a["data-status"] for a in page.drawn(None, "data-status") if a.get("class") == "badge"}
    assert set(badges) == pipeline["groups"]
    assert set(badges.values()) <= {"OK", "WARNING", "STALLED", "STOPPED", "ERROR"}

    # Throughput: the raw events topic was written at a real rate.
    throughput = {a["data-series"]: a for a in page.drawn("throughput", "data-series")}
    raw = throughput[next(name for name in throughput if name.endswith("events.raw.v1"))]
    assert int(raw["data-points"]) >= 2 and float(raw["data-max"]) > 0

    # Accuracy: versions this run published, each with its accuracy, and the swaps marked.
    drawn_versions = {int(a["data-version"]): float(a["data-accuracy"]) for a in page.drawn("accuracy", "data-version")}
    assert drawn_versions and set(drawn_versions) <= pipeline["versions"]
    assert all(0.0 < acc <= 1.0 for acc in drawn_versions.values())
    swaps = {int(a["data-swap"]) for a in page.drawn("accuracy", "data-swap")}
    assert set(drawn_versions) <= swaps

    # Dead letters: one bar per reason the processor quarantined for, of the size the topic holds.
    bars = {a["data-bar"]: int(float(a["data-value"])) for a in page.drawn("dead-letters", "data-bar")}
    assert int(page.charts["dead-letters"]["data-bars"]) == len(pipeline["reasons"])
    assert bars == {r: n for r, n in pipeline["reasons"].items() if r in bars} and len(bars) >= 3

    # Drift: the PSI of the fields the processor's monitor scored.
    assert page.drawn("drift", "data-bar"), "no field's PSI was drawn"

    screenshot = tmp_path / "dashboard.png"
    run_chromium(chromium, tmp_path, "--window-size=1400,1000", f"--screenshot={screenshot}", monitor_url + "/")
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and screenshot.stat().st_size > 20_000
    shutil.copy(screenshot, artifacts_dir / "dashboard.png")


def test_the_monitor_exports_the_runs_lag_and_counts_to_prometheus(
    monitor_url: str, pipeline: dict[str, Any],
) -> None:
    with urllib.request.urlopen(monitor_url + "/metrics", timeout=5) as answer:  # noqa: S310
        text = answer.read().decode()
    for group in pipeline["groups"]:
        assert f'streamml_monitor_group_status{{group="{group}",status="OK"}}' in text
    for reason, count in pipeline["reasons"].items():
        assert f'streamml_monitor_dead_letters_total{{reason="{reason}"}} {float(count)}' in text
    assert f'streamml_monitor_topic_records_total{{topic="{pipeline["raw_topic"]}"}} {float(EVENTS)}' in text
