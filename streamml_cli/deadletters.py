"""``streamml deadletters [replay]``: read the quarantine, and replay it once the cause is fixed."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

import click
from rich.table import Table

from streamml.cluster import Cluster
from streamml.errors import ConfigError
from streamml_cli.options import connection_options, settings_from
from streamml_cli.options import console as options_console

if TYPE_CHECKING:
    from stream_processors.quarantine import DeadLetter

__all__ = ["COMMANDS", "parse_since", "parse_duration"]

_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float | None:
    """``90s``, ``15m``, ``2h``, ``1d`` -> seconds; ``None`` when ``text`` is not a duration."""
    match = _DURATION.fullmatch(text.strip())
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)] if match else None



def parse_since(text: str | None, now: float | None = None) -> int | None:
    """``--since``: a duration back from now (``90s``, ``15m``, ``2h``, ``1d``) or an ISO 8601 time; epoch ms."""
    if text is None:
        return None
    now = time.time() if now is None else now
    seconds = parse_duration(text)
    if seconds is not None:
        return int((now - seconds) * 1000)
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(
            f"--since {text!r}: expected a duration (15m, 2h, 1d) or an ISO time (2026-12-01T10:00)"
        ) from None
    return int(moment.timestamp() * 1000)


def _letters(
    bootstrap_servers: str | None, namespace: str | None, reason: str | None, since: str | None
) -> tuple[Cluster, list[DeadLetter]]:
    settings = settings_from(bootstrap_servers=bootstrap_servers, namespace=namespace)
    cluster = Cluster(settings)
    cluster.require_topics([cluster.topics.dead_letters])  # before the heavy import: a missing broker fails fast

    from stream_processors.quarantine import read_dead_letters

    return cluster, read_dead_letters(cluster, rule=reason, since_ms=parse_since(since))


F = TypeVar("F", bound=Callable[..., Any])


def _filters(func: F) -> F:
    func = click.option(
        "--since", default=None, metavar="WHEN", help="Only quarantined since: 15m, 2h, 1d or an ISO time."
    )(func)
    func = click.option(
        "--reason", default=None, metavar="RULE", help="Only this rule (e.g. not_finite, undecodable)."
    )(func)
    return connection_options(func)


@click.group("deadletters", invoke_without_command=True)
@_filters
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--examples", type=click.IntRange(0, 100), default=3, show_default=True, help="Examples per rule.")
@click.pass_context
def deadletters_group(
    ctx: click.Context, bootstrap_servers: str | None, namespace: str | None, reason: str | None, since: str | None,
    as_json: bool, examples: int,
) -> None:
    """Summarize quarantined events by stage and rule, with examples of the offending values."""
    if ctx.invoked_subcommand is not None:
        return
    from stream_processors.quarantine import replayed_positions, summarize

    cluster, letters = _letters(bootstrap_servers, namespace, reason, since)
    summary = summarize(letters, replayed=replayed_positions(cluster), examples=examples)
    if as_json:
        click.echo(json.dumps(summary.as_dict(), indent=2))
        return
    console = options_console()
    table = Table(title=f"{summary.total} dead letters on {cluster.topics.dead_letters}")
    for column in ("stage", "rule", "count", "example"):
        table.add_column(column, justify="right" if column == "count" else "left", overflow="fold")
    for (stage, rule), count in summary.by_rule.most_common():
        shown = summary.examples.get((stage, rule), [])
        example = f"{shown[0]['source']}: {shown[0]['message']}" if shown else ""
        table.add_row(stage, rule, str(count), example)
    console.print(table)
    console.print(
        f"replayed {summary.replayed}, replays quarantined again {summary.requarantined}, "
        f"truncated (too large to keep whole) {summary.truncated}",
        markup=False,
    )


@deadletters_group.command("replay")
@_filters
@click.option("--dry-run", is_flag=True, help="Say what would be replayed; send nothing.")
def replay_command(
    bootstrap_servers: str | None, namespace: str | None, reason: str | None, since: str | None, dry_run: bool
) -> None:
    """Re-send quarantined events to the raw topic, each at most once, marked as replays."""
    from stream_processors.quarantine import replay

    cluster, letters = _letters(bootstrap_servers, namespace, reason, since)
    report = replay(cluster, letters, dry_run=dry_run)
    verb = "would replay" if dry_run else "replayed"
    click.echo(f"{verb} {len(report.replayed)} to {cluster.topics.raw_events}; "
               f"{len(report.already_replayed)} already replayed before")
    for position, source in report.not_replayable:
        click.echo(f"not replayed {position}: truncated dead letter; the whole record is at {source}")


COMMANDS = [deadletters_group]
