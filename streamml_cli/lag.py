"""``streamml lag``: consumer lag per group, topic and partition."""

from __future__ import annotations

import json

import click
from rich.table import Table

from streamml.cluster import Cluster
from streamml.lag import pipeline_lag
from streamml_cli.options import connection_options, settings_from
from streamml_cli.options import console as options_console

__all__ = ["COMMANDS"]


@click.command("lag")
@connection_options
@click.option("--group", "-g", default=None, help="Only this consumer group.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def lag(bootstrap_servers: str | None, namespace: str | None, group: str | None, as_json: bool) -> None:
    """Print committed offset, log-end offset and lag per group and partition."""
    settings = settings_from(bootstrap_servers=bootstrap_servers, namespace=namespace)
    cluster = Cluster(settings)
    cluster.wait_ready(timeout=10)
    report = pipeline_lag(cluster, group)
    if as_json:
        payload = {"groups": [g.as_dict() for g in report], "total_lag": sum(g.total for g in report)}
        click.echo(json.dumps(payload, indent=2))
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
    options_console().print(table)


COMMANDS = [lag]
