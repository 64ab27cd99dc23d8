"""``streamml lag``: consumer lag per group, topic and partition."""

from __future__ import annotations

import json

import click
from rich.console import Console
from rich.table import Table

from streamml.cli.options import connection_options, settings_from
from streamml.config import Settings
from streamml.kafka import wait_for_broker
from streamml.lag import GroupLag, consumer_lag, list_groups
from streamml.topics import Groups, Topics

__all__ = ["COMMANDS", "pipeline_lag"]


def pipeline_lag(settings: Settings, only: str | None = None, timeout: float = 10.0) -> list[GroupLag]:
    """Lag of the pipeline's groups (or only ``only``), each over the topics it reads."""
    topics = Topics.from_settings(settings)
    groups = Groups.from_settings(settings)
    reads = {
        groups.processor: [topics.raw_events],
        groups.learner: [topics.features],
        groups.scorer: [topics.features],
    }
    if only:
        names = [only]
    else:
        prefix = settings.topic("streamml.")
        extra = [g for g in list_groups(settings, timeout) if g.startswith(prefix) and ".lag-probe." not in g]
        names = sorted(set(groups.all()) | set(extra))
    return consumer_lag(settings, names, topics={g: reads.get(g, []) for g in names}, timeout=timeout)


@click.command("lag")
@connection_options
@click.option("--group", "-g", default=None, help="Only this consumer group.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def lag(bootstrap_servers: str | None, namespace: str | None, group: str | None, as_json: bool) -> None:
    """Print committed offset, log-end offset and lag per group and partition."""
    settings = settings_from(bootstrap_servers=bootstrap_servers, namespace=namespace)
    wait_for_broker(settings, timeout=10)
    report = pipeline_lag(settings, group)
    if as_json:
        click.echo(json.dumps({"groups": [g.as_dict() for g in report], "total_lag": sum(g.total for g in report)}, indent=2))
        return
    table = Table(title="consumer lag", show_lines=False)
    for column in ("group", "topic", "partition", "committed", "log end", "lag"):
        table.add_column(column, justify="right" if column in ("partition", "committed", "log end", "lag") else "left")
    for group_lag in report:
        for row in group_lag.partitions:
            table.add_row(
                row.group, row.topic, str(row.partition),
                "-" if row.committed is None else str(row.committed), str(row.log_end), str(row.lag),
            )
        table.add_row(group_lag.group, "[b]total[/b]", "", "", "", f"[b]{group_lag.total}[/b]", end_section=True)
    Console().print(table)


COMMANDS = [lag]
