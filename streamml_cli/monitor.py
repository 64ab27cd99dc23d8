"""``streamml monitor``: pipeline-wide Prometheus metrics and a live web dashboard (``docs/monitor.md``)."""

from __future__ import annotations

import time
from typing import Any

import click

from streamml.cluster import Cluster
from streamml_cli.options import connection_options, settings_from, stop_on_signals

__all__ = ["COMMANDS"]

#: The most one read of the broker (a lag probe, a read of the topics) may take before a sample gives up on it.
CALL_TIMEOUT_SECONDS = 15.0
#: The lag probe's own timeout per admin or fetch request.
LAG_TIMEOUT_SECONDS = 5.0


@click.command("monitor")
@connection_options
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0 for all).")
@click.option("--port", type=click.IntRange(0, 65535), default=9308, show_default=True,
              help="Port of the page, /api/snapshot, /metrics and /healthz (0: any free port; a taken port exits 2).")
@click.option("--interval", type=click.FloatRange(min=0.1), default=2.0, show_default=True,
              help="Seconds between two samples of lag and topics.")
def monitor(bootstrap_servers: str | None, namespace: str | None, host: str, port: int, interval: float) -> None:
    """Watch the whole pipeline: lag with a verdict, throughput, models, dead letters, drift.

    Every INTERVAL seconds it reads every consumer group's lag (rated OK,
    WARNING, STALLED, STOPPED or ERROR) and the pipeline's topics (with
    assign(): watching adds no group and no lag). It serves a live page at /,
    its data at /api/snapshot, Prometheus metrics at /metrics and its own
    health at /healthz. A broker that does not answer shows as status ERROR
    (lag unknown, never 0); the monitor keeps running and retries.
    """
    from prometheus_client import CollectorRegistry  # deferred: keeps 'streamml --help' light

    from streamml.lag import commit_intervals
    from streamml.lag_status import LagEvaluator
    from streamml_cli.orchestration.dashboard import DashboardServer, build_app
    from streamml_cli.orchestration.monitor_readers import broker_readers
    from streamml_cli.orchestration.monitor_series import TOPIC_ROLES, SampleRing
    from streamml_cli.orchestration.monitor_service import MonitorCollector, Sampler

    settings = settings_from(bootstrap_servers=bootstrap_servers, namespace=namespace)
    cluster = Cluster(settings)
    ring = SampleRing(
        {role: getattr(cluster.topics, role) for role in TOPIC_ROLES},
        namespace=settings.namespace, model=settings.model_name, bootstrap_servers=settings.bootstrap_servers,
        interval=interval, psi_threshold=settings.drift_psi_threshold, groups=cluster.groups.all(),
    )
    registry = CollectorRegistry()
    registry.register(MonitorCollector(ring, settings.model_name))
    readers = broker_readers(cluster, call_timeout=CALL_TIMEOUT_SECONDS, lag_timeout=LAG_TIMEOUT_SECONDS)
    sampler = Sampler(
        ring, read_lag=readers.read_lag, read_topics=readers.read_topics, unknown=cluster.groups.all(),
        evaluator=LagEvaluator(commit_intervals=commit_intervals(cluster)), interval=interval,
    )
    # A sample can take two bounded reads; older than that (plus slack) means the sampler is stuck.
    stale_after = max(3 * interval, interval + 2 * CALL_TIMEOUT_SECONDS + 5.0)

    def health() -> tuple[bool, dict[str, Any]]:
        latest = ring.latest
        age = None if latest is None else time.time() - latest.at
        # Before the first sample the monitor is starting, not failing.
        fresh = age is None or age <= stale_after
        return sampler.alive and fresh, {
            "sampler": sampler.alive, "last_sample_age_seconds": age,
            "broker_errors": list(latest.errors) if latest else [],
        }

    # Bound before the sampler starts: a taken port is one line (exit 2) with nothing left running.
    server = DashboardServer(build_app(ring, registry, health), host=host, port=port)
    try:
        with stop_on_signals() as stop, server, sampler:
            click.echo(f"monitoring {settings.namespace or '(no namespace)'} on {settings.bootstrap_servers}: "
                       f"dashboard at {server.url}/ (also /api/snapshot, /metrics, /healthz)")
            while not stop.wait(0.5):  # a timed wait keeps the main thread responsive to signals
                pass
    finally:
        readers.close()


COMMANDS = [monitor]
