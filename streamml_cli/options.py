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

__all__ = ["connection_options", "settings_from", "setup_logging", "stop_on_signals"]

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


def settings_from(**overrides: Any) -> Settings:
    """Load settings from the environment with CLI flags on top, and set up logging."""
    settings = load_settings(**{k: v for k, v in overrides.items() if v is not None})
    setup_logging(settings)
    return settings


def setup_logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("streamml").setLevel(settings.log_level.upper())


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
