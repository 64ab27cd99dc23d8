"""``streamml learn`` and ``streamml models list``: the online learner and its versions."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from streamml.cluster import Cluster
from streamml.registry import VersionRecord, read_versions
from streamml_cli.options import connection_options, settings_from, stop_on_signals

__all__ = ["COMMANDS", "stop_on_signals"]


@click.command("learn")
@connection_options
@click.option(
    "--model-spec",
    default=None,
    help="Model to train: logistic, hoeffding, naive_bayes, perceptron [env STREAMML_MODEL_SPEC].",
)
@click.option(
    "--publish-every-events",
    type=int,
    default=None,
    help="Publish after this many learned events [env STREAMML_PUBLISH_EVERY_EVENTS].",
)
@click.option(
    "--publish-every-seconds",
    type=float,
    default=None,
    help="... or after this many seconds [env STREAMML_PUBLISH_EVERY_SECONDS].",
)
@click.option("--max-events", type=int, default=None, help="Stop after consuming this many feature records.")
def learn(
    bootstrap_servers: str | None,
    namespace: str | None,
    model_spec: str | None,
    publish_every_events: int | None,
    publish_every_seconds: float | None,
    max_events: int | None,
) -> None:
    """Learn online from the features topic and publish model versions."""
    settings = settings_from(
        bootstrap_servers=bootstrap_servers,
        namespace=namespace,
        model_spec=model_spec,
        publish_every_events=publish_every_events,
        publish_every_seconds=publish_every_seconds,
    )
    from model_publisher.learning_loop import LearningLoop  # deferred: imports river

    def published(envelope: Any) -> None:
        m = envelope.metrics
        click.echo(
            f"published {envelope.model_name} v{envelope.version} "
            f"(n_learned={envelope.n_learned}, accuracy={m.get('accuracy', 0):.3f}, "
            f"rolling_accuracy={m.get('rolling_accuracy', 0):.3f}, {len(envelope.payload)} bytes)"
        )

    with stop_on_signals() as stop:
        click.echo(f"learning {settings.model_name} ({settings.model_spec}); Ctrl-C to stop")
        loop = LearningLoop(settings, max_events=max_events, stop=stop, on_publish=published)
        report = loop.run()
    resumed = f", resumed from v{report.resumed_from}" if report.resumed_from else ""
    click.echo(
        f"consumed {report.consumed}, learned {report.learned}, skipped {report.skipped}, "
        f"published {report.published} version(s){resumed}"
    )


@click.group("models")
def models_group() -> None:
    """Inspect the model versions on the models topic."""


def _row(record: VersionRecord) -> list[str]:
    s = record.summary or {}
    metrics = s.get("metrics", {})
    created = (
        datetime.fromtimestamp(s["created_at"] / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        if "created_at" in s else "-"
    )

    def num(key: str) -> str:
        return f"{metrics[key]:.3f}" if key in metrics else "-"

    status = "ok" if record.reason is None else f"refused @{record.offset}"
    return [
        "-" if record.version is None else str(record.version),
        created,
        str(s.get("n_learned", "-")),
        num("accuracy"),
        num("rolling_accuracy"),
        str(s.get("payload_bytes", "-")),
        s.get("sha256", "-")[:8],
        "yes" if s.get("signed") else "no",
        status,
    ]


@models_group.command("list")
@connection_options
@click.option("--model-name", default=None, help="Only this model [env STREAMML_MODEL_NAME]; default: every model.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def list_(bootstrap_servers: str | None, namespace: str | None, model_name: str | None, as_json: bool) -> None:
    """List every version on the models topic, and whether subscribers would accept it."""
    settings = settings_from(bootstrap_servers=bootstrap_servers, namespace=namespace)
    cluster = Cluster(settings)
    cluster.wait_ready(timeout=10)
    records = read_versions(cluster, model_name=model_name)
    if as_json:
        click.echo(json.dumps([r.as_dict() for r in records], indent=2))
        return
    names = sorted({r.model_name or "?" for r in records})
    # One model (the usual case) goes in the title, so the table fits 80 columns.
    several = len(names) > 1
    title = f"models on {cluster.topics.models}" + ("" if several else f": {', '.join(names)}")
    table = Table(title=title)
    columns = ["version", "created (UTC)", "learned", "accuracy", "rolling", "bytes", "sha256", "signed", "status"]
    for column in (["model"] if several else []) + columns:
        table.add_column(
            column,
            justify="right" if column in ("version", "learned", "accuracy", "rolling", "bytes") else "left",
            no_wrap=column != "model",
        )
    for record in records:
        table.add_row(*([record.model_name or "?"] if several else []), *_row(record))
    console = Console()
    console.print(table)
    # Reasons are long: printed whole under the table rather than squeezed into a cell.
    for record in records:
        if record.reason is not None:
            console.print(f"refused @{record.offset}: {record.reason}", markup=False, soft_wrap=True)
    if not records:
        click.echo("no model versions yet; run 'streamml learn'")


COMMANDS = [learn, models_group]
