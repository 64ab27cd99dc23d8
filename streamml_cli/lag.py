"""``streamml lag``: consumer lag per group, topic and partition."""

from __future__ import annotations

import difflib
import json

import click
from rich.table import Table

from streamml.cluster import Cluster
from streamml.errors import ConfigError
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
    cluster.wait_ready()
    if group is not None:
        _check_group(cluster, group)
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


def _check_group(cluster: Cluster, group: str) -> None:
    """A group the cluster does not know (and none of the pipeline's) is a typo: say so, never report lag 0."""
    known = cluster.list_groups()
    if group in known or group in cluster.groups.all():
        return
    ours = [g for g in known if g.startswith(cluster.groups.prefix) and not cluster.groups.is_ephemeral(g)]
    candidates = sorted(set(ours) | set(cluster.groups.all()))
    close = difflib.get_close_matches(group, candidates, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    raise ConfigError(f"no consumer group {group!r} on {cluster.settings.bootstrap_servers}{hint}; "
                      f"this pipeline's groups: {', '.join(candidates)}")


COMMANDS = [lag]
