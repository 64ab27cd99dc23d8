"""``streamml score``: score the features stream with the live model."""

from __future__ import annotations

from typing import Any

import click

from streamml.cluster import Cluster
from streamml_cli.options import (
    connection_options,
    metrics_endpoint,
    metrics_port_option,
    settings_from,
    stop_on_signals,
)

__all__ = ["COMMANDS"]


@click.command("score")
@connection_options
@click.option("--max-events", type=int, default=None, help="Stop after scoring this many feature records.")
@click.option("--model-name", default=None, help="Model to serve [env STREAMML_MODEL_NAME].")
@metrics_port_option
def score(
    bootstrap_servers: str | None, namespace: str | None, max_events: int | None, model_name: str | None,
    metrics_port: int | None,
) -> None:
    """Predict every feature record with the newest model and write predictions.

    With --metrics-port it serves Prometheus metrics (docs/metrics.md).
    """
    settings = settings_from(bootstrap_servers=bootstrap_servers, namespace=namespace, model_name=model_name)
    from consumers.scorer import StreamScorer  # deferred: keeps 'streamml --help' light
    from consumers.scorer_metrics import ScorerMetrics

    metrics = ScorerMetrics()
    # The metrics port is bound before the broker is asked: a taken port is exit 2 at once.
    with stop_on_signals() as stop, metrics_endpoint(settings, metrics.registry, metrics_port):
        cluster = Cluster(settings)
        # Bounded start-up: no broker is exit 3 within STREAMML_CONNECT_TIMEOUT_SECONDS, missing topics exit 2.
        cluster.require_topics([cluster.topics.features, cluster.topics.models, cluster.topics.predictions])
        scorer = StreamScorer(settings, max_events=max_events, stop=stop, metrics=metrics)

        def swapped(old: int | None, new: int, env: dict[str, Any]) -> None:
            was = "" if old is None else f"was v{old}, "
            accuracy = env["metrics"].get("accuracy", 0.0)
            click.echo(
                f"serving {env['model_name']} v{new} ({was}n_learned={env['n_learned']}, accuracy={accuracy:.3f})"
            )

        scorer.subscriber.on_swap(swapped)
        click.echo(f"waiting for a version of {settings.model_name} on {scorer.subscriber.topic}; Ctrl-C to stop")
        report = scorer.run()
    per_version = ", ".join(f"v{v}: {n}" for v, n in sorted(report.versions.items())) or "none"
    click.echo(f"scored {report.scored} records ({per_version}), skipped {report.skipped}")


COMMANDS = [score]
