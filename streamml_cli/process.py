"""``streamml process``: run the stream processor (validate, quarantine, featurize)."""

from __future__ import annotations

from pathlib import Path

import click

from streamml.cluster import Cluster
from streamml_cli.options import connection_options, settings_from

__all__ = ["COMMANDS"]


@click.command("process")
@connection_options
@click.option(
    "--schema",
    "schema_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Avro event schema with its data contract [env STREAMML_SCHEMA_PATH].",
)
@click.option(
    "--writer-schema",
    "writer_schemas",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    multiple=True,
    help="Another schema producers may write with (older or newer version); repeatable.",
)
def process(
    bootstrap_servers: str | None, namespace: str | None, schema_path: Path | None, writer_schemas: tuple[Path, ...]
) -> None:
    """Validate raw events, quarantine bad ones and publish feature vectors.

    Runs until interrupted (Ctrl-C or SIGTERM), then stops cleanly.
    """
    # Deferred: faust is heavy, and 'streamml --help' must stay fast.
    from stream_processors.worker import run_worker
    from streamml.serde import AvroSchema

    settings = settings_from(bootstrap_servers=bootstrap_servers, namespace=namespace, schema_path=schema_path)
    event_schema = AvroSchema.from_file(settings.schema_path)
    writers = [AvroSchema.from_file(path) for path in writer_schemas]
    Cluster(settings).wait_ready(timeout=15)
    run_worker(settings, event_schema=event_schema, writer_schemas=writers)


COMMANDS = [process]
