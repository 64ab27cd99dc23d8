"""``streamml produce``: send synthetic or file events to the raw events topic (optionally labels later)."""

from __future__ import annotations

from collections.abc import Sized
from pathlib import Path
from typing import cast

import click
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from streamml.cluster import Cluster
from streamml.errors import KafkaClientError
from streamml_cli.options import connection_options, settings_from
from streamml_cli.options import console as options_console

__all__ = ["COMMANDS"]


@click.command("produce")
@connection_options
@click.option(
    "--source", "-s", "source_spec", default="synthetic", show_default=True, metavar="synthetic|PATH",
    help="'synthetic' (drifting loan applications) or a .csv, .jsonl or .parquet file.",
)
@click.option(
    "--limit", "-n", type=click.IntRange(min=1), default=None, metavar="N",
    help="Send at most N events. Synthetic: the stream's length, drift at N/2 [default: 10000].",
)
@click.option(
    "--rate", type=click.FloatRange(min=0, min_open=True), default=None, metavar="EVENTS_PER_S",
    help="Send at most this many events per second [default: as fast as possible].",
)
@click.option("--topic", default=None, help="Topic to write to [default: the namespace's events.raw.v1].")
@click.option(
    "--bad-fraction", type=click.FloatRange(0, 1), default=0.0, show_default=True, metavar="F",
    help=(
        "Synthetic only: fraction of events made bad on purpose "
        "(NaN, out of range, null, unknown category, corrupt bytes)."
    ),
)
@click.option("--seed", type=int, default=42, show_default=True, help="Synthetic only: random seed.")
@click.option(
    "--schema", "schema_path", type=click.Path(dir_okay=False, path_type=Path), default=None, metavar="PATH.avsc",
    help="Avro schema of the events [env STREAMML_SCHEMA_PATH; default: the bundled demo schema].",
)
@click.option(
    "--label-delay", type=float, default=None, metavar="MAX_SECONDS",
    help=(
        "Delayed labels: send events without their label and each label to the labels topic "
        "after a random delay of 0..MAX_SECONDS (0: right after its event) [default: labels stay in the events]."
    ),
)
@click.option(
    "--label-duplicates", type=float, default=0.0, show_default=True, metavar="FRACTION",
    help="With --label-delay: fraction of labels sent twice, each copy with its own delay.",
)
@click.option(
    "--label-seed", type=int, default=0, show_default=True, help="With --label-delay: seed of the label delays."
)
def produce_command(
    bootstrap_servers: str | None,
    namespace: str | None,
    source_spec: str,
    limit: int | None,
    rate: float | None,
    topic: str | None,
    bad_fraction: float,
    seed: int,
    schema_path: Path | None,
    label_delay: float | None,
    label_duplicates: float,
    label_seed: int,
) -> None:
    """Send events to Kafka, with a progress bar and a one-line summary.

    Exits non-zero if any event (or delayed label) could not be delivered, or
    if a file row does not fit the schema (the error names the row and the
    field). With --label-delay the labels topic must exist, and the run ends
    once the last label is sent, at most MAX_SECONDS after the last event.
    """
    # deferred: keeps `streamml --help` fast
    from producers import open_source, produce
    from producers.labels import check_label_options

    # Bad label options fail before any file is opened or connection made.
    check_label_options(label_delay, label_duplicates)
    settings = settings_from(bootstrap_servers=bootstrap_servers, namespace=namespace, schema_path=schema_path)
    # Open the source first: a bad path or a missing column fails before any connection.
    source = open_source(source_spec, settings, length=limit, seed=seed, bad_fraction=bad_fraction)
    cluster = Cluster(settings)
    target = topic or cluster.topics.raw_events
    cluster.wait_ready(timeout=15)
    if target not in cluster.partition_counts([target]):
        raise KafkaClientError(f"topic {target} does not exist; create it with 'streamml topics create'")

    total = limit if limit is not None else (len(cast(Sized, source)) if hasattr(source, "__len__") else None)
    console = options_console(stderr=True)
    # Without a terminal (CI, pipes) rich would print the final bar on stderr;
    # the summary line on stdout says the same, and stderr stays for errors.
    progress = Progress(
        TextColumn("[bold]producing[/bold]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("delivered {task.fields[delivered]}"),
        TextColumn("{task.fields[rate]:,.0f} events/s"),
        TimeElapsedColumn(),
        console=console,
        disable=not console.is_terminal,
    )
    with progress:
        task: TaskID = progress.add_task("produce", total=total, delivered=0, rate=0.0)
        report = produce(
            settings,
            source,
            limit=limit,
            rate=rate,
            topic=target,
            on_progress=lambda r: progress.update(task, completed=r.sent, delivered=r.delivered, rate=r.rate),
            # produce() checks that the labels topic exists before sending anything.
            label_delay=label_delay,
            label_duplicates=label_duplicates,
            label_seed=label_seed,
        )
    click.echo(report.summary())
    if not report.ok:
        first = f"; first: {report.failures[0]}" if report.failures else ""
        undelivered = []
        if report.delivered != report.sent:
            undelivered.append(f"{report.sent - report.delivered} of {report.sent} events")
        if report.labels_delivered != report.labels_sent:
            undelivered.append(f"{report.labels_sent - report.labels_delivered} of {report.labels_sent} labels")
        raise KafkaClientError(f"{' and '.join(undelivered)} were not delivered{first}")


COMMANDS = [produce_command]
