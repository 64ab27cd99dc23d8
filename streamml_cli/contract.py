"""``streamml contract infer``: infer an Avro schema with a data contract from a file or a topic."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from streamml.errors import ConfigError, DecodeError
from streamml_cli.options import connection_options, settings_from

if TYPE_CHECKING:
    import pandas

    from streamml.config import Settings
    from streamml.serde import AvroSchema

__all__ = ["COMMANDS", "summary_line"]

DEFAULT_LIMIT = 100_000


@click.group("contract")
def contract_group() -> None:
    """Data contracts: infer one from data, for a person to review."""


@contract_group.command("infer")
@connection_options
@click.option(
    "--from", "source_path", type=click.Path(dir_okay=False, path_type=Path), default=None, metavar="PATH",
    help="Infer from a .csv, .parquet or .jsonl file.",
)
@click.option(
    "--topic", default=None, metavar="TOPIC", help="Infer from the records of a topic (decoded with --schema)."
)
@click.option(
    "--limit", "-n", type=click.IntRange(min=1), default=DEFAULT_LIMIT, show_default=True, metavar="N",
    help="Read at most N rows or records.",
)
@click.option("--name", default=None, help="Record name [default: Event; with --topic, the writer schema's].")
@click.option(
    "--avro-namespace", default=None, metavar="NS",
    help="Avro namespace of the record [default: streamml.user; with --topic, the writer schema's].",
)
@click.option(
    "--key-field", default=None, metavar="F",
    help="Record key column: no range or allowed list [default: STREAMML_KEY_FIELD if the data has it].",
)
@click.option(
    "--time-field", default=None, metavar="F",
    help="Event time column: no max [default: STREAMML_TIME_FIELD if the data has it].",
)
@click.option(
    "--max-categories", type=click.IntRange(min=0), default=20, show_default=True, metavar="K",
    help="A string column with at most K distinct values gets an allowed list (0: never).",
)
@click.option(
    "--margin", type=click.FloatRange(min=0), default=0.0, show_default=True, metavar="X",
    help="Widen each numeric range by X times its width on each side (0.1 = 10%).",
)
@click.option(
    "--out", "out_path", type=click.Path(dir_okay=False, path_type=Path), default=None, metavar="PATH.avsc",
    help="Write the schema here [default: print it].",
)
@click.option(
    "--schema", "schema_path", type=click.Path(dir_okay=False, path_type=Path), default=None, metavar="PATH.avsc",
    help="With --topic: the writer schema the records were written with [env STREAMML_SCHEMA_PATH].",
)
def infer_command(
    bootstrap_servers: str | None,
    namespace: str | None,
    source_path: Path | None,
    topic: str | None,
    limit: int,
    name: str | None,
    avro_namespace: str | None,
    key_field: str | None,
    time_field: str | None,
    max_categories: int,
    margin: float,
    out_path: Path | None,
    schema_path: Path | None,
) -> None:
    """Infer an Avro schema whose data contract the sample satisfies, for you to review and edit.

    Every field becomes ["null", T] with default null; its contract says
    required when the sample has no null, min/max from the observed range and,
    for low-cardinality strings, the allowed values. Null rates and other
    statistics go to the schema's "streamml_profile" attribute.
    """
    from stream_processors.contract_inference import infer_schema
    from stream_processors.samples import frame_from_source

    if (source_path is None) == (topic is None):
        raise click.UsageError("give exactly one of --from PATH and --topic TOPIC")
    if schema_path is not None and topic is None:
        raise click.UsageError("--schema is for --topic (the writer schema of its records)")
    settings = settings_from(bootstrap_servers=bootstrap_servers, namespace=namespace, schema_path=schema_path)
    types: dict[str, Any] | None = None
    if source_path is not None:
        frame = frame_from_source(source_path, limit)
        described = str(source_path)
        default_name, default_namespace = "Event", "streamml.user"
    else:
        assert topic is not None
        from streamml.serde import AvroSchema

        writer = AvroSchema.from_file(settings.schema_path)
        frame, skipped = _frame_from_topic(settings, topic, writer, limit)
        if skipped:
            detail = ", ".join(f"{rule}: {count}" for rule, count in skipped.most_common())
            click.echo(f"skipped {sum(skipped.values())} undecodable records ({detail})", err=True)
        described = f"topic {topic}"
        default_namespace, _, default_name = writer.name.rpartition(".")
        # Keep the writer's types: a reader schema cannot narrow them (long to int) in Avro resolution.
        types = {f["name"]: _non_null(f["type"]) for f in writer.parsed["fields"]}
    columns = [str(c) for c in frame.columns]
    schema = infer_schema(
        frame,
        name=name or default_name,
        namespace=avro_namespace if avro_namespace is not None else default_namespace,
        key_field=key_field or (settings.key_field if settings.key_field in columns else None),
        time_field=time_field or (settings.time_field if settings.time_field in columns else None),
        max_categories=max_categories,
        margin=margin,
        source=described,
        types=types,
    )
    _check(schema)
    text = json.dumps(schema, indent=2) + "\n"
    if out_path is None:
        click.echo(text, nl=False)
    else:
        try:
            out_path.write_text(text)
        except OSError as exc:
            raise ConfigError(f"cannot write {out_path}: {exc.strerror or exc}") from exc
    where = f" to {out_path}" if out_path is not None else ""
    click.echo(summary_line(schema) + where, err=True)


def summary_line(schema: dict[str, Any]) -> str:
    """One line: rows, columns, and how many fields got each kind of rule."""
    contracts = [f.get("contract", {}) for f in schema["fields"]]
    rows = schema.get("streamml_profile", {}).get("rows", "?")
    required = sum(1 for c in contracts if c.get("required"))
    ranged = sum(1 for c in contracts if "min" in c or "max" in c)
    allowed = sum(1 for c in contracts if "allowed" in c)
    return (
        f"inferred {schema['name']} from {rows} rows: {len(contracts)} columns, {required} required, "
        f"{ranged} with ranges, {allowed} with allowed lists; review before use"
    )


def _frame_from_topic(
    settings: Settings, topic: str, writer: AvroSchema, limit: int
) -> tuple[pandas.DataFrame, Counter[str]]:
    from stream_processors.samples import frame_from_records
    from streamml.cluster import Cluster
    from streamml.kafka import record_headers
    from streamml.reader import read_to_end
    from streamml.serde import AvroSerde

    cluster = Cluster(settings)
    cluster.wait_ready()
    if not cluster.partitions(topic):
        raise ConfigError(f"topic {topic} does not exist (namespace {settings.namespace or 'none'})")
    serde = AvroSerde(writer)
    records: list[dict[str, Any]] = []
    skipped: Counter[str] = Counter()
    messages = read_to_end(cluster, topic)
    try:
        for message in messages:
            try:
                records.append(serde.decode(message.value(), record_headers(message)))
            except DecodeError as exc:
                skipped[exc.rule] += 1
            if len(records) >= limit:
                break
    finally:
        messages.close()  # closes the reader's consumer when stopping early
    if not records:
        raise ConfigError(f"no decodable records on {topic} to infer from ({sum(skipped.values())} skipped)")
    return frame_from_records(records), skipped


def _non_null(avro_type: Any) -> Any:
    """The one non-null branch of a field type (the type itself if it is not such a union)."""
    if isinstance(avro_type, list):
        branches = [b for b in avro_type if b != "null"]
        return branches[0] if len(branches) == 1 else avro_type
    return avro_type


def _check(schema: dict[str, Any]) -> None:
    """The inferred schema must load as an event schema; a failure here is a bug, said plainly."""
    from streamml.serde import AvroSchema

    AvroSchema.from_dict(schema)


COMMANDS = [contract_group]
