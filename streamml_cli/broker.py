"""``streamml broker start|stop|status``: the embedded Tansu broker."""

from __future__ import annotations

import click

from streamml.broker import EmbeddedBroker
from streamml_cli.options import settings_from

__all__ = ["COMMANDS"]


@click.group("broker")
def broker_group() -> None:
    """Run the embedded Kafka-protocol broker (Tansu, in memory) on 127.0.0.1."""


def _broker(port: int | None) -> EmbeddedBroker:
    settings = settings_from(broker_port=port)
    return EmbeddedBroker(port=settings.broker_port, home=settings.home)


_port = click.option(
    "--port", type=int, default=None, help="Port to listen on [env STREAMML_BROKER_PORT, default 9092]."
)


@broker_group.command("start")
@_port
@click.option("--timeout", type=float, default=30.0, show_default=True, help="Seconds to wait until it answers.")
def start(port: int | None, timeout: float) -> None:
    """Start the broker in the background and wait until it answers."""
    broker = _broker(port)
    broker.start(timeout=timeout)
    status = broker.status()
    default = broker.port == 9092
    stop_cmd = "streamml broker stop" + ("" if default else f" --port {broker.port}")
    servers = broker.bootstrap_servers
    use = "" if default else f"; point the other commands at it: export STREAMML_BOOTSTRAP_SERVERS={servers}"
    click.echo(f"broker running at {broker.bootstrap_servers} (pid {status.pid}); stop it with '{stop_cmd}'{use}")


@broker_group.command("stop")
@_port
def stop(port: int | None) -> None:
    """Stop the broker that 'streamml broker start' started (and nothing else)."""
    broker = _broker(port)
    if broker.stop():
        click.echo(f"broker on port {broker.port} stopped")
    else:
        click.echo(f"no embedded broker of ours runs on port {broker.port}")


@broker_group.command("status")
@_port
def status(port: int | None) -> None:
    """Say whether the embedded broker runs; exit 1 if it does not."""
    broker = _broker(port)
    state = broker.status()
    if state.running:
        click.echo(f"running at {state.bootstrap_servers} (pid {state.pid}), log {broker.log_file}")
    else:
        click.echo(f"not running on port {state.port}")
        raise click.exceptions.Exit(1)


COMMANDS = [broker_group]
