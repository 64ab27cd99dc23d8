"""``streamml learn``: the online learner."""

from __future__ import annotations

from typing import Any

import click

from streamml_cli.options import (
    connection_options,
    metrics_endpoint,
    metrics_port_option,
    settings_from,
    stop_on_signals,
)

__all__ = ["COMMANDS", "stop_on_signals"]


@click.command("learn")
@connection_options
@click.option(
    "--model-spec",
    default=None,
    help=(
        "Model to train: classifiers logistic, perceptron, naive_bayes, hoeffding, hoeffding_adaptive, "
        "adaptive_forest; regressors linear_regression, hoeffding_regressor, adaptive_forest_regressor; "
        "or package.module:factory, a function returning a river model [env STREAMML_MODEL_SPEC]."
    ),
)
@click.option(
    "--publish-every-events",
    type=int,
    default=None,
    help="Publish after this many learned events [env STREAMML_PUBLISH_EVERY_EVENTS].",
)
@click.option(
    "--publish-every-seconds",
    type=float,
    default=None,
    help="... or after this many seconds [env STREAMML_PUBLISH_EVERY_SECONDS].",
)
@click.option("--max-events", type=int, default=None, help="Stop after consuming this many feature records.")
@click.option(
    "--topic",
    default=None,
    metavar="TOPIC",
    help=(
        "Topic of feature vectors to learn from [default: the features topic]. The predictions topic, or a "
        "topic whose records carry a model version, is refused (exit 2) unless "
        "STREAMML_LEARNER_ALLOW_PREDICTION_SOURCE=true."
    ),
)
@metrics_port_option
def learn(
    bootstrap_servers: str | None,
    namespace: str | None,
    model_spec: str | None,
    publish_every_events: int | None,
    publish_every_seconds: float | None,
    max_events: int | None,
    topic: str | None,
    metrics_port: int | None,
) -> None:
    """Learn online from the features topic and publish model versions.

    With --metrics-port it serves Prometheus metrics (docs/metrics.md).
    """
    settings = settings_from(
        bootstrap_servers=bootstrap_servers,
        namespace=namespace,
        model_spec=model_spec,
        publish_every_events=publish_every_events,
        publish_every_seconds=publish_every_seconds,
    )
    from model_publisher.catalog import build  # deferred: imports river
    from model_publisher.learning_loop import LearningLoop
    from model_publisher.metrics import LearnerMetrics

    build(settings.model_spec)  # an unknown spec is a usage error, before any broker work

    def published(envelope: Any) -> None:
        m = envelope.metrics
        if "mae" in m:  # a regressor
            quality = f"mae={m['mae']:.4g}, rmse={m.get('rmse', 0):.4g}, rolling_mae={m.get('rolling_mae', 0):.4g}"
        else:
            quality = f"accuracy={m.get('accuracy', 0):.3f}, rolling_accuracy={m.get('rolling_accuracy', 0):.3f}"
        click.echo(
            f"published {envelope.model_name} v{envelope.version} "
            f"(n_learned={envelope.n_learned}, {quality}, {envelope.payload_size} bytes)"
        )

    metrics = LearnerMetrics()
    # The metrics port is bound before the broker is asked: a taken port is exit 2 at once.
    with stop_on_signals() as stop, metrics_endpoint(settings, metrics.registry, metrics_port):
        # Built first: a missing signing key is one error line, not a start line and then an error.
        loop = LearningLoop(
            settings, max_events=max_events, stop=stop, on_publish=published, topic=topic, metrics=metrics
        )
        # Bounded start-up: no broker is exit 3 within STREAMML_CONNECT_TIMEOUT_SECONDS, missing topics exit 2.
        loop.cluster.require_topics([*loop.inputs, loop.cluster.topics.models])
        loop.check_sources()  # a feedback loop is exit 2 before the start line
        click.echo(f"learning {settings.model_name} ({settings.model_spec}); Ctrl-C to stop")
        report = loop.run()
    resumed = f", resumed from v{report.resumed_from}" if report.resumed_from else ""
    refused = f", refused {report.refused} carrying a model version" if report.refused else ""
    click.echo(
        f"consumed {report.consumed}, learned {report.learned}, skipped {report.skipped}{refused}, "
        f"published {report.published} version(s){resumed}"
    )


COMMANDS = [learn]
