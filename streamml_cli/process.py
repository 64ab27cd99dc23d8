"""``streamml process``: run the stream processor (validate, quarantine, featurize)."""

from __future__ import annotations

from pathlib import Path

import click

from streamml.cluster import Cluster
from streamml_cli.options import connection_options, metrics_endpoint, metrics_port_option, settings_from

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
@click.option(
    "--report-every",
    "report_every",
    type=click.FloatRange(min=0),
    default=10.0,
    show_default=True,
    metavar="SECONDS",
    help="Print the counts (consumed, featurized, quarantined by rule, lag) this often; 0: only when it stops.",
)
@metrics_port_option
def process(
    bootstrap_servers: str | None,
    namespace: str | None,
    schema_path: Path | None,
    writer_schemas: tuple[Path, ...],
    report_every: float,
    metrics_port: int | None,
) -> None:
    """Validate raw events, quarantine bad ones and publish feature vectors.

    The schema and its contract are checked first (every problem on its own
    line, exit 2); then it prints what it reads and writes, which fields
    become features, and the counts every --report-every seconds and when it
    stops. Runs until interrupted (Ctrl-C or SIGTERM), then stops cleanly.
    With --metrics-port it serves Prometheus metrics (docs/metrics.md).
    """
    # Pure parts only: faust is imported below, after the checks.
    from stream_processors.metrics import ProcessorMetrics  # no faust: prometheus_client and plain records
    from streamml.featurization import featurizer_check
    from streamml.serde import AvroSchema, load_event_schema

    settings = settings_from(bootstrap_servers=bootstrap_servers, namespace=namespace, schema_path=schema_path)
    event_schema = load_event_schema(settings, checks=[featurizer_check(settings)])
    writers = [AvroSchema.from_file(path) for path in writer_schemas]
    metrics = ProcessorMetrics()
    # Bound before the broker is asked: a taken port is exit 2 at once.
    with metrics_endpoint(settings, metrics.registry, metrics_port):
        cluster = Cluster(settings)
        cluster.require_topics(cluster.topics.all())  # it reads and writes most of them
        # Deferred, and after the checks: faust is heavy, and a missing broker must fail fast.
        from stream_processors.worker import run_worker

        run_worker(
            settings, event_schema=event_schema, writer_schemas=writers, report=_echo, report_every=report_every,
            metrics=metrics,
        )


def _echo(line: str) -> None:
    click.echo(line)  # flushed by click: a pipe sees each line when it is printed


COMMANDS = [process]
