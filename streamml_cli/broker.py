"""``streamml broker start|stop|status``: the embedded Tansu broker.

``start`` records each broker it starts in a state file under
``STREAMML_HOME`` (one per port), so ``stop`` and ``status`` without
``--port`` find every broker it started, whatever the port.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from streamml.broker import MEMORY_STORAGE, BrokerStatus, EmbeddedBroker, parse_storage
from streamml_cli.options import settings_from

__all__ = ["COMMANDS"]


@click.group("broker")
def broker_group() -> None:
    """Run the embedded Kafka-protocol broker (Tansu; in memory, or durable with --storage) on 127.0.0.1."""


_port = click.option(
    "--port", type=click.IntRange(1, 65535), default=None,
    help="Port of the broker [start: env STREAMML_BROKER_PORT, default 9092; stop/status: every broker started].",
)


def _brokers(port: int | None) -> tuple[list[EmbeddedBroker], str]:
    """The broker on ``port``, or, without one, every broker recorded under the streamml home; and what was searched."""
    settings = settings_from()
    if port is not None:
        return [EmbeddedBroker(port=port, home=settings.home)], f"on port {port}"
    return EmbeddedBroker.recorded(settings.home), f"(none recorded under {settings.home})"


@broker_group.command("start")
@_port
@click.option("--timeout", type=float, default=30.0, show_default=True, help="Seconds to wait until it answers.")
@click.option(
    "--storage", default=MEMORY_STORAGE, show_default=True, metavar="URL",
    help="Where it keeps topics, records and committed offsets: memory:// (lost when it stops) or s3://BUCKET/ "
    "(kept across restarts; endpoint and credentials from AWS_ENDPOINT, AWS_ACCESS_KEY_ID, "
    "AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION, AWS_ALLOW_HTTP; the bucket must exist).",
)
@click.option(
    "--cert", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
    help="Serve TLS only, with this PEM certificate chain (needs --key; docs/security.md#embedded-broker).",
)
@click.option(
    "--key", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
    help="The unencrypted PEM private key of --cert.",
)
def start(port: int | None, timeout: float, storage: str, cert: Path | None, key: Path | None) -> None:
    """Start the broker in the background and wait until it answers.

    With --cert and --key it accepts TLS connections only (clients need
    STREAMML_SECURITY_PROTOCOL=SSL and STREAMML_SSL_CA_FILE). A port already
    in use, a storage URL it cannot use (postgres:// among them: this Tansu
    build has no PostgreSQL engine), or --cert without --key is an error (exit 2).
    """
    storage = parse_storage(storage)  # before anything starts: a bad URL is one line, exit 2
    settings = settings_from(broker_port=port)
    broker = EmbeddedBroker(port=settings.broker_port, home=settings.home, storage=storage, cert=cert, key=key)
    broker.start(timeout=timeout)
    status = broker.status()
    default = broker.port == 9092
    stop_cmd = "streamml broker stop" + ("" if default else f" --port {broker.port}")
    servers = broker.bootstrap_servers
    use = "" if default else f"; point the other commands at it: export STREAMML_BOOTSTRAP_SERVERS={servers}"
    kept = "" if storage == MEMORY_STORAGE else f", storage {storage}"
    tls = (
        "; TLS only: clients need STREAMML_SECURITY_PROTOCOL=SSL and STREAMML_SSL_CA_FILE=<the CA that signed --cert>"
        if status.tls else ""
    )
    click.echo(
        f"broker running at {broker.bootstrap_servers} (pid {status.pid}{kept}); stop it with '{stop_cmd}'{use}{tls}"
    )


@broker_group.command("stop")
@_port
def stop(port: int | None) -> None:
    """Stop the broker(s) that 'streamml broker start' started (and nothing else).

    Without --port, every broker recorded under STREAMML_HOME is stopped.
    """
    brokers, where = _brokers(port)
    stopped = [broker for broker in brokers if broker.stop()]
    for broker in stopped:
        click.echo(f"broker on port {broker.port} stopped")
    if not stopped:
        click.echo(f"no embedded broker of ours runs {where}")


def _as_json(state: BrokerStatus) -> dict[str, object]:
    return {
        "running": state.running, "pid": state.pid, "port": state.port, "bootstrap_servers": state.bootstrap_servers,
        "storage": state.storage, "tls": state.tls,
    }


@broker_group.command("status")
@_port
@click.option("--json", "as_json", is_flag=True, help="One JSON object per broker, one per line.")
def status(port: int | None, as_json: bool) -> None:
    """Say which embedded brokers run; exit 1 if none does."""
    brokers, where = _brokers(port)
    states = [(broker, broker.status()) for broker in brokers]
    running = [(broker, state) for broker, state in states if state.running]
    if as_json:
        for _, state in states if port is not None else running:
            click.echo(json.dumps(_as_json(state)))
    else:
        for broker, state in running:
            tls = ", TLS only" if state.tls else ""
            where = f"{state.bootstrap_servers} (pid {state.pid}, storage {state.storage}{tls})"
            click.echo(f"running at {where}, log {broker.log_file}")
        if not running:
            click.echo(f"no embedded broker of ours runs {where}")
    if not running:
        raise click.exceptions.Exit(1)


COMMANDS = [broker_group]
