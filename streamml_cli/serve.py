"""``streamml serve``: an HTTP scoring service that hot-swaps models from the models topic."""

from __future__ import annotations

import click

from streamml.topics import Topics
from streamml_cli.options import connection_options, settings_from, stop_on_signals

__all__ = ["COMMANDS"]


@click.command("serve")
@connection_options
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0 for all).")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True)
@click.option("--model-name", default=None, help="Model to serve [env STREAMML_MODEL_NAME].")
def serve(bootstrap_servers: str | None, namespace: str | None, host: str, port: int, model_name: str | None) -> None:
    """Serve predictions over HTTP: POST /predict, GET /model, /healthz, /readyz.

    Subscribes to the models topic and swaps each newer verified version in
    without failing or holding a request; answers 503 until the first model
    is loaded.
    """
    from consumers.http_service import ModelServer  # deferred: keeps 'streamml --help' light
    from consumers.subscriber import ModelSubscriber

    settings = settings_from(bootstrap_servers=bootstrap_servers, namespace=namespace, model_name=model_name)
    subscriber = ModelSubscriber(settings)
    subscriber.on_swap(lambda old, new, envelope: click.echo(f"serving {settings.model_name} v{new} (was v{old})"))
    with stop_on_signals() as stop, subscriber, ModelServer(subscriber, host=host, port=port) as server:
        click.echo(f"listening on {server.url} for {settings.model_name} from {Topics.from_settings(settings).models}")
        while not stop.wait(0.5):  # a timed wait keeps the main thread responsive to signals
            pass


COMMANDS = [serve]
