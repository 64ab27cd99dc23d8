"""``streamml serve``: an HTTP scoring service that hot-swaps models from the models topic."""

from __future__ import annotations

import contextlib

import click

from streamml.cluster import Cluster
from streamml_cli.options import connection_options, settings_from, stop_on_signals

__all__ = ["COMMANDS"]


@click.command("serve")
@connection_options
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0 for all).")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True)
@click.option("--model-name", default=None, help="Model to serve [env STREAMML_MODEL_NAME].")
@click.option(
    "--raw-events/--no-raw-events",
    default=True,
    show_default=True,
    help="Accept {'event': {...}}: featurize raw events as the stream would, windowed features from the "
    "processor's window state (docs/serving-features.md).",
)
def serve(
    bootstrap_servers: str | None, namespace: str | None, host: str, port: int, model_name: str | None,
    raw_events: bool,
) -> None:
    """Serve predictions over HTTP: POST /predict, GET /model, /healthz, /readyz, /metrics, /docs.

    Subscribes to the models topic and swaps each newer verified version in
    without failing or holding a request; answers 503 until the first model
    is loaded. A request naming features the model never learned from (or
    lacking one every learned row had) gets 422 naming them, unless
    STREAMML_SERVE_ALLOW_EXTRA_FEATURES=true. /metrics is Prometheus text;
    /docs and /openapi.json describe the API. A taken port exits 2.

    With raw events on (the default) the event schema (STREAMML_SCHEMA_PATH)
    is loaded at start and {"event": {...}} is checked against its contract
    (422 naming the fields) and featurized with the stream's own functions;
    its windowed features come from the processor's window changelog, and
    are 503 (retry) until that has been read, never zero.
    """
    from consumers.http_service import ModelServer  # deferred: keeps 'streamml --help' light
    from consumers.serving_features import ServingFeatures
    from consumers.subscriber import ModelSubscriber

    settings = settings_from(bootstrap_servers=bootstrap_servers, namespace=namespace, model_name=model_name)
    cluster = Cluster(settings)
    # Bounded start-up: no broker is exit 3 within STREAMML_CONNECT_TIMEOUT_SECONDS, a missing topic exit 2.
    cluster.require_topics([cluster.topics.models])
    # A broken schema stops serve here, one line, exit 2 (not at the first request).
    features = ServingFeatures(cluster) if raw_events else None
    subscriber = ModelSubscriber(cluster)
    subscriber.on_swap(lambda old, new, envelope: click.echo(f"serving {settings.model_name} v{new} (was v{old})"))
    # The socket is bound before the subscriber starts: a taken port is one line, nothing left running.
    server = ModelServer(
        subscriber, host=host, port=port, allow_extra_features=settings.serve_allow_extra_features,
        featurizer=features,
    )
    with stop_on_signals() as stop, subscriber, server, features or contextlib.nullcontext():
        click.echo(f"listening on {server.url} for {settings.model_name} from {cluster.topics.models}")
        while not stop.wait(0.5):  # a timed wait keeps the main thread responsive to signals
            pass


COMMANDS = [serve]
