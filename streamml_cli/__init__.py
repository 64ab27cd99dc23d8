"""The ``streamml`` command line.

Every command reads settings once, through :func:`options.settings_from`, and
every :class:`~streamml.errors.StreamMLError` becomes one line on stderr and
the error's exit code. Heavy libraries (faust, river) are imported inside the
commands that need them, so ``streamml --help`` and ``streamml lag`` stay fast.
"""

from __future__ import annotations

import logging
import sys

import click

from streamml.errors import StreamMLError

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="streamml")
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default=None,
    help="Log lines as text or as one JSON object per line [env STREAMML_LOG_FORMAT; default text].",
)
@click.pass_context
def cli(ctx: click.Context, log_format: str | None) -> None:
    """Streaming ML over Kafka: ingest, validate, learn online, publish and hot-swap models."""
    from streamml_cli.options import LOG_FORMAT_KEY

    ctx.meta[LOG_FORMAT_KEY] = log_format  # read by options.settings_from, where logging is set up


def _register() -> None:
    # Imported here so each module can import ``cli`` without a cycle.
    from streamml_cli import (
        broker,
        contract,
        deadletters,
        demo,
        drift,
        keys,
        lag,
        learn,
        model_registry,
        monitor,
        process,
        produce,
        score,
        score_batch,
        serve,
        tail,
        topics,
        train_batch,
    )

    for module in (
        broker, topics, keys, produce, process, deadletters, contract, drift, learn, train_batch, model_registry, score,
        score_batch, serve, lag, monitor, tail, demo,
    ):
        for command in module.COMMANDS:
            cli.add_command(command)


_register()


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the CLI and map errors to one line."""
    debug = logging.getLogger().isEnabledFor(logging.DEBUG)
    try:
        code = cli.main(args=argv, prog_name="streamml", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("streamml: interrupted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        click.echo("streamml: interrupted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except StreamMLError as exc:
        click.echo(f"streamml: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except Exception as exc:  # a bug: still one line, the traceback only on request
        if debug or logging.getLogger("streamml").isEnabledFor(logging.DEBUG):
            raise
        click.echo(
            f"streamml: internal error: {type(exc).__name__}: {exc} "
            "(set STREAMML_LOG_LEVEL=DEBUG for the traceback)",
            err=True,
        )
        sys.exit(70)
    sys.exit(code if isinstance(code, int) else 0)
