"""``streamml lag`` as a script uses it: exact lag in JSON, a verdict, ``--fail-on`` exit codes, ``--watch``."""

from __future__ import annotations

import json
import time

import pytest
from confluent_kafka import TopicPartition

from streamml.config import Settings, load_settings
from streamml.kafka import make_consumer, make_producer
from streamml_cli.lag import FAIL_ON_EXIT
from tests.cli.conftest import Runner

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(run: Runner, cli_env: dict[str, str]) -> Settings:
    """The commands' settings (same broker and namespace), with the pipeline's topics created."""
    assert run("topics", "create").returncode == 0
    return load_settings(env={}, bootstrap_servers=cli_env["STREAMML_BOOTSTRAP_SERVERS"],
                         namespace=cli_env["STREAMML_NAMESPACE"])


def _commit(settings: Settings, group: str, topic: str, offset: int) -> None:
    consumer = make_consumer(settings, group)
    consumer.commit(offsets=[TopicPartition(topic, 0, offset)], asynchronous=False)
    consumer.close()


def _produce(settings: Settings, topic: str, n: int, stamp_ms: int) -> None:
    producer = make_producer(settings)
    for _ in range(n):
        producer.produce(topic, value=b"x", partition=0, timestamp=stamp_ms)
    assert producer.flush(10) == 0


def test_a_stopped_group_reports_exactly_n_then_recovers_to_zero_and_ok(run: Runner, settings: Settings) -> None:
    topic, group = settings.topic("features.v1"), settings.topic("streamml.paused")
    _commit(settings, group, topic, 0)
    _produce(settings, topic, 37, int(time.time() * 1000) - 20_000)
    paused = run("lag", "-g", group, "--json", "--samples", "1")
    assert paused.returncode == 0, paused
    payload = json.loads(paused.stdout)
    assert payload["total_lag"] == 37 and payload["observations"] == 1
    [row] = [p for p in payload["groups"][0]["partitions"] if p["partition"] == 0]
    assert row["lag"] == 37 and 20 <= row["lag_seconds"] < 40, row
    # Resumed: it commits the end; the verdict over two observations is OK with lag 0.
    _commit(settings, group, topic, 37)
    resumed = run("lag", "-g", group, "--json", "--samples", "2", "--interval", "0.2", "--fail-on", "WARNING")
    assert resumed.returncode == 0, resumed
    payload = json.loads(resumed.stdout)
    assert payload["total_lag"] == 0 and payload["status"] == "OK"
    assert payload["groups"][0]["status"] == "OK" and payload["groups"][0]["max_lag_seconds"] == 0.0


def test_fail_on_exits_non_zero_at_or_above_the_status(run: Runner, settings: Settings) -> None:
    topic, group = settings.topic("features.v1"), settings.topic("streamml.paused")
    _commit(settings, group, topic, 0)
    _produce(settings, topic, 5, int(time.time() * 1000))
    args = ("lag", "-g", group, "--samples", "3", "--interval", "0.5", "--stopped-after", "0.8")
    stopped = run(*args, "--fail-on", "STALLED")
    assert stopped.returncode == FAIL_ON_EXIT, stopped
    assert "STOPPED" in stopped.stdout and "has not moved for" in stopped.stdout
    # ERROR is worse than STOPPED: the same group passes.
    assert run(*args, "--fail-on", "ERROR").returncode == 0
    # A component group with records waiting and no commit at all is ERROR, at once.
    learner = run("lag", "-g", settings.topic("streamml.learner"), "--samples", "1", "--fail-on", "ERROR")
    assert learner.returncode == FAIL_ON_EXIT and "no committed offset while 5 records wait" in learner.stdout


def test_watch_refreshes_until_the_fail_on_status(run: Runner, settings: Settings) -> None:
    topic, group = settings.topic("features.v1"), settings.topic("streamml.paused")
    _commit(settings, group, topic, 0)
    _produce(settings, topic, 3, int(time.time() * 1000))
    watched = run("lag", "-g", group, "--watch", "0.2", "--json", "--stopped-after", "1", "--fail-on", "STOPPED",
                  timeout=30)
    assert watched.returncode == FAIL_ON_EXIT, watched
    statuses = [json.loads(line)["status"] for line in watched.stdout.splitlines()]
    assert len(statuses) >= 3 and statuses[0] == "OK" and statuses[-1] == "STOPPED", statuses
    assert "STALLED" in statuses  # the same offset over the window before the stopped time passed


def test_ctrl_c_ends_watch_cleanly(cli_env: dict[str, str], settings: Settings) -> None:
    import select
    import signal
    import subprocess

    from tests.cli.conftest import STREAMML

    watch = subprocess.Popen([STREAMML, "lag", "--watch", "0.2", "--json"], env=cli_env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert watch.stdout is not None
        ready, _, _ = select.select([watch.stdout], [], [], 20)  # the first refresh, within a bound
        assert ready, "no refresh within 20s"
        first = json.loads(watch.stdout.readline())
        assert first["status"] == "OK" and first["observations"] == 1  # topics created, nothing to read
        watch.send_signal(signal.SIGINT)
        assert watch.wait(timeout=15) == 0
        assert watch.stderr is not None and "Traceback" not in watch.stderr.read()
    finally:
        watch.kill()
        watch.wait()
