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

from producers.events import EventSource
from producers.rejections import ON_ERROR_POLICIES, OnError, RejectedRow, RejectionLog, RowStopped
from producers.resume import DEFAULT_ID_COLUMN
from streamml.cluster import Cluster
from streamml.errors import ConfigError, KafkaClientError, RecordError
from streamml_cli.options import connection_options, settings_from
from streamml_cli.options import console as options_console

__all__ = ["COMMANDS"]

ON_ERROR_CHOICES: list[str] = list(ON_ERROR_POLICIES)


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
@click.option(
    "--on-error", type=click.Choice(ON_ERROR_CHOICES), default="stop", show_default=True,
    help=(
        "A row that does not fit the schema: 'stop' the run (exit 1, saying which rows were sent before it), "
        "'skip' it (one stderr line per row, the first 20, then a total), or send it to the namespace's "
        "dead-letter topic with its reason ('deadletter', stage 'ingest'; see 'streamml deadletters')."
    ),
)
@click.option(
    "--dry-run", is_flag=True,
    help=(
        "Read and check the whole source without connecting to the broker: coercion to the schema's types, "
        "Avro encoding and the record key (not the data contract, which 'streamml process' applies). "
        "Prints counts and the first problems; exit 0 if every row fits, 2 if any does not."
    ),
)
@click.option(
    "--resume", is_flag=True,
    help=(
        "Skip rows whose id (--id-column) is already on the destination topic, read first: rerun a "
        "stopped or failed run without duplicates, from any machine."
    ),
)
@click.option(
    "--id-column", default=None, metavar="COL",
    help="With --resume: the schema field that identifies a row [default: event_id, when the schema has it].",
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
    on_error: OnError,
    dry_run: bool,
    resume: bool,
    id_column: str | None,
) -> None:
    """Send events to Kafka, with a progress bar and a one-line summary.

    With --label-delay the labels topic must exist, and the run ends once the
    last label is sent, at most MAX_SECONDS after the last event.

    Exit codes: 0 every row sent (or, with --on-error skip|deadletter, sent
    or set aside) and delivered; 1 a row does not fit the schema (--on-error
    stop: the error names the row and field, says how many rows before it
    were sent and acknowledged, and how to resume); 2 bad options or schema,
    the events (or dead-letter) topic missing, or --dry-run found rows that
    do not fit; 3 broker unreachable, or events not delivered.
    """
    # deferred: keeps `streamml --help` fast
    from producers import open_source, produce
    from producers.labels import check_label_options
    from producers.resume import resolve_id_column

    # Bad label options fail before any file is opened or connection made.
    check_label_options(label_delay, label_duplicates)
    if id_column is not None and not resume:
        raise ConfigError("--id-column applies to --resume only")
    if dry_run and resume:
        raise ConfigError("--dry-run does not connect to the broker, so it cannot --resume; drop one of them")
    settings = settings_from(bootstrap_servers=bootstrap_servers, namespace=namespace, schema_path=schema_path)
    # Open the source first: a bad path or a missing column fails before any connection.
    source = open_source(source_spec, settings, length=limit, seed=seed, bad_fraction=bad_fraction)
    if dry_run:
        _dry_run(source, settings.key_field, limit)
        return
    resume_by = resolve_id_column(source.schema, id_column) if resume else None
    cluster = Cluster(settings)
    target = topic or cluster.topics.raw_events
    # Missing topics are a setup error (exit 2) found before anything is read or sent.
    cluster.require_topics([target] + ([cluster.topics.dead_letters] if on_error == "deadletter" else []))
    skip_ids = None
    if resume_by is not None:
        from producers.resume import ids_on_topic

        on_topic = ids_on_topic(cluster, target, source.schema, resume_by)
        skip_ids = on_topic.ids
        click.echo(
            f"resuming: {len(on_topic.ids)} distinct {resume_by} values on {target} "
            f"({on_topic.records} records); rows with those ids are not sent again",
            err=True,
        )

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
    log = RejectionLog("dead-lettered" if on_error == "deadletter" else "skipped")

    def on_rejected(rejected: RejectedRow) -> None:
        line = log.add(rejected)
        if line is not None:
            # Through the progress bar's console, so a live bar is not torn; never wrapped.
            console.print(line, markup=False, highlight=False, soft_wrap=True)

    with progress:
        task: TaskID = progress.add_task("produce", total=total, delivered=0, rate=0.0)
        try:
            report = produce(
                settings,
                source,
                limit=limit,
                rate=rate,
                topic=target,
                on_progress=lambda r: progress.update(task, completed=r.rows, delivered=r.delivered, rate=r.rate),
                # produce() checks that the labels topic exists before sending anything.
                label_delay=label_delay,
                label_duplicates=label_duplicates,
                label_seed=label_seed,
                on_error=on_error,
                on_rejected=on_rejected,
                skip_ids=skip_ids,
                id_column=resume_by or DEFAULT_ID_COLUMN,
            )
        except RowStopped as exc:
            named = id_column is not None or DEFAULT_ID_COLUMN in source.schema.field_names
            again = "--resume" if named else "--resume --id-column COL"
            raise RecordError(f"{exc}; fix the row and rerun with {again} (or --on-error skip|deadletter)") from exc
    total_line = log.total()
    if total_line is not None:
        click.echo(total_line, err=True)
    click.echo(report.summary())
    if report.dead_letters_delivered != report.dead_lettered:
        raise KafkaClientError(
            f"{report.dead_lettered - report.dead_letters_delivered} of {report.dead_lettered} bad rows "
            f"sent to {report.dead_letter_topic} were not delivered"
        )
    if not report.ok:
        first = f"; first: {report.failures[0]}" if report.failures else ""
        undelivered = []
        if report.delivered != report.sent:
            undelivered.append(f"{report.sent - report.delivered} of {report.sent} events")
        if report.labels_delivered != report.labels_sent:
            undelivered.append(f"{report.labels_sent - report.labels_delivered} of {report.labels_sent} labels")
        raise KafkaClientError(f"{' and '.join(undelivered)} were not delivered{first}")


def _dry_run(source: EventSource, key_field: str, limit: int | None) -> None:
    """Check every row without a broker; print the counts and first problems; :class:`DryRunFailed` if any."""
    from producers.dry_run import DryRunFailed, dry_run

    report = dry_run(source, key_field=key_field, limit=limit)
    click.echo(report.summary())
    for problem in report.problems:
        click.echo(f"  {problem}")
    if report.failed > len(report.problems):
        click.echo(f"  ... and {report.failed - len(report.problems)} more")
    if not report.ok:
        raise DryRunFailed(
            f"dry run: {report.failed} of {report.rows} rows do not fit schema {report.schema} "
            f"(first: {report.problems[0]}); nothing was sent"
        )


COMMANDS = [produce_command]
