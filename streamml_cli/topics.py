"""``streamml topics create|list|describe``: the pipeline's topics, as specified and as the cluster has them."""

from __future__ import annotations

import json
from typing import Any

import click
from rich.table import Table

from streamml.cluster import Cluster
from streamml.errors import TopicMismatchError
from streamml.inspection import resolve_topic
from streamml.lag import watermarks
from streamml.topic_state import TopicState, differences
from streamml.topics import TopicSpec
from streamml_cli.options import connection_options, settings_from
from streamml_cli.options import console as options_console

__all__ = ["COMMANDS"]

#: Topic configs every listing shows, whether or not a spec sets them.
SHOWN_CONFIGS = ("cleanup.policy", "retention.ms")

#: Exit code of ``topics create`` when existing topics differ from their spec (a setup error).
MISMATCH_EXIT = TopicMismatchError.exit_code


@click.group("topics")
def topics_group() -> None:
    """Create and inspect the pipeline's topics."""


@topics_group.command("create")
@connection_options
@click.option("--partitions", type=int, default=None, help="Partitions of the event topics [env STREAMML_PARTITIONS].")
@click.pass_context
def create(ctx: click.Context, bootstrap_servers: str | None, namespace: str | None, partitions: int | None) -> None:
    """Create every missing pipeline topic.

    Topics that exist as specified are left as they are. One that exists with
    other partitions or configs is left unchanged too, but is an error: one
    line per topic on stderr, exit 2 (see 'streamml topics describe').
    """
    settings = settings_from(bootstrap_servers=bootstrap_servers, namespace=namespace, partitions=partitions)
    cluster = Cluster(settings)
    cluster.wait_ready()
    specs = cluster.topics.specs(settings)
    try:
        outcome = cluster.create_topics(specs)
        mismatches: list[str] = []
    except TopicMismatchError as exc:
        outcome, mismatches = exc.outcome, exc.mismatches
    for spec in specs:
        click.echo(f"{outcome[spec.name]:8} {spec.name} (partitions={spec.partitions})")
    if mismatches:
        # One line per topic, not main()'s single line: every topic to fix is named.
        for line in mismatches:
            click.echo(
                f"streamml: error: {line}; left unchanged (delete and recreate it, or use another STREAMML_NAMESPACE)",
                err=True,
            )
        ctx.exit(MISMATCH_EXIT)


@topics_group.command("list")
@connection_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def list_(bootstrap_servers: str | None, namespace: str | None, as_json: bool) -> None:
    """Show each pipeline topic: partitions, retention configs, end offsets and records."""
    settings = settings_from(bootstrap_servers=bootstrap_servers, namespace=namespace)
    cluster = Cluster(settings)
    cluster.wait_ready()
    names = cluster.topics.all()
    # Existence from metadata of all topics first: nothing here asks for a missing
    # topic by name, which would auto-create it (docs/embedded-broker.md#auto-create).
    states = cluster.topic_states(names)
    # Ends from fetch responses, not ListOffsets (docs/embedded-broker.md#list-offsets).
    marks = watermarks(cluster, [(name, p) for name, state in states.items() for p in range(state.partitions)])
    rows = [_listing(name, states.get(name), marks) for name in names]
    if as_json:
        click.echo(json.dumps({"namespace": settings.namespace, "topics": rows}, indent=2))
        return
    table = Table(title=f"topics of namespace {settings.namespace or '(none)'}")
    for column in ("topic", "partitions", *SHOWN_CONFIGS, "end offset", "records"):
        table.add_column(column, justify="left" if column in ("topic", "cleanup.policy") else "right")
    for row in rows:
        if not row["exists"]:
            table.add_row(row["name"], "missing", "", "", "", "")
            continue
        config = row["config"]
        table.add_row(
            row["name"], str(row["partitions"]), *(config.get(key) or "-" for key in SHOWN_CONFIGS),
            str(row["end_offset"]), str(row["records"]),
        )
    options_console().print(table)


def _listing(name: str, state: TopicState | None, marks: dict[tuple[str, int], tuple[int, int]]) -> dict[str, Any]:
    if state is None:
        return {"name": name, "exists": False}
    ends = [marks[(name, p)] for p in range(state.partitions)]
    return {
        "name": name, "exists": True, "partitions": state.partitions,
        "config": {key: state.config.get(key) for key in SHOWN_CONFIGS},
        "end_offsets": [end for _, end in ends],
        "end_offset": sum(end for _, end in ends),
        "records": sum(end - start for start, end in ends),
    }


@topics_group.command("describe")
@connection_options
@click.argument("topic", required=False)
@click.option("--partitions", type=int, default=None, help="Partitions of the event topics [env STREAMML_PARTITIONS].")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def describe(
    bootstrap_servers: str | None, namespace: str | None, topic: str | None, partitions: int | None, as_json: bool
) -> None:
    """Show each pipeline topic's spec beside what the cluster has, marking every difference.

    TOPIC (short, e.g. events.raw.v1, or namespaced) limits it to one topic.
    """
    settings = settings_from(bootstrap_servers=bootstrap_servers, namespace=namespace, partitions=partitions)
    cluster = Cluster(settings)
    specs = cluster.topics.specs(settings)
    if topic is not None:
        wanted = resolve_topic(cluster.topics, settings.namespace, topic)
        specs = [s for s in specs if s.name == wanted]
    cluster.wait_ready()
    states = cluster.topic_states([s.name for s in specs])
    rows = [_comparison(spec, states.get(spec.name)) for spec in specs]
    if as_json:
        click.echo(json.dumps({"namespace": settings.namespace, "topics": rows}, indent=2))
        return
    table = Table(title="topic specs and the cluster")
    for column in ("topic", "setting", "expected", "cluster", "status"):
        table.add_column(column)
    for row in rows:
        name = row["name"]
        if row["actual"] is None:
            table.add_row(name, "partitions", str(row["expected"]["partitions"]), "-", "MISSING", end_section=True)
            continue
        differing = {d["field"] for d in row["differences"]}
        settings_shown = ["partitions", *dict.fromkeys([*row["expected"]["config"], *SHOWN_CONFIGS])]
        for i, key in enumerate(settings_shown):
            expected, actual = _pair(row, key)
            status = "DIFFERS" if key in differing else "ok" if key in row["checked"] else ""
            table.add_row(name if i == 0 else "", key, expected, actual, status,
                          end_section=i == len(settings_shown) - 1)
    options_console().print(table)


def _comparison(spec: TopicSpec, state: TopicState | None) -> dict[str, Any]:
    expected = {"partitions": spec.partitions, "config": dict(spec.config)}
    if state is None:
        return {"name": spec.name, "expected": expected, "actual": None, "checked": [], "differences": []}
    return {
        "name": spec.name, "expected": expected,
        "actual": {"partitions": state.partitions, "config": dict(state.config)},
        # What is compared: the partition count and the configs the spec sets.
        "checked": ["partitions", *spec.config],
        "differences": [d.as_dict() for d in differences(spec, state)],
    }


def _pair(row: dict[str, Any], key: str) -> tuple[str, str]:
    """The expected and the cluster's value of ``key`` as table cells; "-" for not set or not specified."""
    if key == "partitions":
        return str(row["expected"]["partitions"]), str(row["actual"]["partitions"])
    return row["expected"]["config"].get(key, "-"), row["actual"]["config"].get(key, "-")


COMMANDS = [topics_group]
