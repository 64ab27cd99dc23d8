"""Options shared by every command, and the one place settings are loaded."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import click
from rich.console import Console

from streamml.config import Settings, load_settings
from streamml_cli.log_format import TEXT_FORMAT, JsonFormatter

__all__ = [
    "connection_options", "metrics_port_option", "metrics_endpoint", "settings_from", "setup_logging",
    "stop_on_signals", "LOG_FORMAT_KEY",
]

#: Where the group's ``--log-format`` option leaves its value in ``click.Context.meta``.
LOG_FORMAT_KEY = "streamml.log_format"
#: Marks the stderr handler :func:`setup_logging` installed.
_OURS = "_streamml_handler"

F = TypeVar("F", bound=Callable[..., Any])


def connection_options(func: F) -> F:
    """Add ``--bootstrap-servers`` and ``--namespace`` to a command."""
    func = click.option(
        "--namespace",
        default=None,
        metavar="PREFIX",
        help="Prefix for topic and group names [env STREAMML_NAMESPACE].",
    )(func)
    func = click.option(
        "--bootstrap-servers",
        "-b",
        default=None,
        metavar="HOST:PORT[,...]",
        help="Kafka to use instead of the embedded broker's 127.0.0.1:9092 [env STREAMML_BOOTSTRAP_SERVERS].",
    )(func)
    return func


def metrics_port_option(func: F) -> F:
    """Add ``--metrics-port`` (Prometheus ``/metrics``; overrides ``STREAMML_METRICS_PORT``) to a command."""
    return click.option(
        "--metrics-port",
        type=click.IntRange(0, 65535),
        default=None,
        metavar="PORT",
        help="Serve Prometheus metrics at http://STREAMML_METRICS_HOST:PORT/metrics (0: any free port; a taken "
        "port exits 2) [env STREAMML_METRICS_PORT; default: no metrics endpoint].",
    )(func)


@contextmanager
def metrics_endpoint(settings: Settings, registry: Any, port: int | None) -> Iterator[str | None]:
    """Serve ``registry`` as the settings (and ``--metrics-port``) ask, print its URL; yield it, or ``None`` if off.

    A taken port raises :class:`~streamml.errors.PortInUseError` (exit 2) before the command starts its work.
    """
    from streamml.metrics_http import exporter_for

    exporter = exporter_for(settings, registry, port=port)
    if exporter is None:
        yield None
        return
    with exporter:
        click.echo(f"metrics at {exporter.url}")
        yield exporter.url


def settings_from(**overrides: Any) -> Settings:
    """Load settings from the environment with CLI flags on top, and set up logging.

    The global ``streamml --log-format`` option counts as a flag of every command.
    """
    context = click.get_current_context(silent=True)
    chosen = context.meta.get(LOG_FORMAT_KEY) if context is not None else None
    if chosen is not None and overrides.get("log_format") is None:
        overrides["log_format"] = chosen
    settings = load_settings(**{k: v for k, v in overrides.items() if v is not None})
    setup_logging(settings)
    return settings


def setup_logging(settings: Settings) -> None:
    """Log to stderr at ``log_level``, as text lines or JSON objects (``log_format``).

    The first call installs the handler (and the root level, as
    ``logging.basicConfig`` does); later calls in the same process only
    switch its format. A root logger someone else configured is left alone.
    """
    level = settings.log_level.upper()
    formatter = JsonFormatter() if settings.log_format == "json" else logging.Formatter(TEXT_FORMAT)
    root = logging.getLogger()
    ours = [handler for handler in root.handlers if getattr(handler, _OURS, False)]
    if ours:
        for handler in ours:
            handler.setFormatter(formatter)
    elif not root.handlers:
        handler = logging.StreamHandler()
        setattr(handler, _OURS, True)
        handler.setFormatter(formatter)
        root.addHandler(handler)
        root.setLevel(level)
    logging.getLogger("streamml").setLevel(level)


@contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """Yield an event that SIGTERM or SIGINT sets, so a loop can finish its batch and exit cleanly."""
    stop = threading.Event()
    previous = {}

    def handler(signum: int, _frame: Any) -> None:
        click.echo(f"{signal.Signals(signum).name}: stopping after the current batch", err=True)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        previous[signum] = signal.signal(signum, handler)
    try:
        yield stop
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


#: Width of output written to a pipe or a file: rich would use 80 and cut columns.
#: Tables do not expand to the console width, so a large bound means "never cut"
#: without padding anything.
PIPE_WIDTH = 10_000


def console(*, stderr: bool = False) -> Console:
    """A rich console for a command's output: fits a terminal; never cut when the output is not one.

    ``COLUMNS`` still wins when set (rich reads it).
    """
    import os
    import sys

    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() or os.environ.get("COLUMNS") else PIPE_WIDTH
    return Console(stderr=stderr, width=width)
