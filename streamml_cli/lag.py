"""``streamml lag``: consumer lag per group, topic and partition, in records and in time, with a verdict."""

from __future__ import annotations

import difflib
import json
import time
from collections.abc import Callable

import click
from rich.live import Live
from rich.table import Table

from streamml.cluster import Cluster
from streamml.errors import ConfigError
from streamml.lag import GroupLag, commit_intervals, observe_lag, pipeline_lag
from streamml.lag_status import GroupStatus, LagEvaluator, LagStatus
from streamml_cli.options import connection_options, settings_from
from streamml_cli.options import console as options_console

__all__ = ["COMMANDS", "FAIL_ON_EXIT", "format_age"]

#: Exit code when a group is at or worse than ``--fail-on`` (documented in the help and docs/lag.md).
FAIL_ON_EXIT = 4
_COLOURS = {LagStatus.OK: "green", LagStatus.WARNING: "yellow"}

EXIT_CODES = f"""
\b
Exit codes:
  0    done; no group at or worse than --fail-on (or no --fail-on)
  2    a usage or setup error (an unknown --group, a bad option)
  3    no broker answered, or the lag could not be read: lag unknown, never 0
  {FAIL_ON_EXIT}    a group is at or worse than --fail-on (with --watch: as soon as one is)
  130  interrupted (Ctrl-C ends --watch with 0)
"""


@click.command("lag", epilog=EXIT_CODES)
@connection_options
@click.option("--group", "-g", default=None, help="Only this consumer group.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table (with --watch: one line each).")
@click.option(
    "--watch", type=click.FloatRange(min=0.1), is_flag=False, flag_value=2.0, default=None, metavar="[SECONDS]",
    help="Refresh a live table every SECONDS (default 2) until Ctrl-C, judging over the observations made.",
)
@click.option("--samples", type=click.IntRange(min=1), default=5, show_default=True,
              help="Observations a single run makes before its verdict.")
@click.option("--interval", type=click.FloatRange(min=0.0), default=1.0, show_default=True,
              help="Seconds between a single run's observations.")
@click.option("--window", type=click.IntRange(min=2), default=None,
              help="Observations the verdict looks back over [default: --samples; 10 with --watch].")
@click.option("--stopped-after", type=click.FloatRange(min=0.0, min_open=True), default=60.0, show_default=True,
              metavar="SECONDS", help="An offset unmoved this long while lag > 0 is STOPPED.")
@click.option("--fail-on", type=click.Choice([s.value for s in LagStatus if s is not LagStatus.OK]),
              default=None, help=f"Exit {FAIL_ON_EXIT} when any group is at or worse than this status.")
def lag(
    bootstrap_servers: str | None, namespace: str | None, group: str | None, as_json: bool, watch: float | None,
    samples: int, interval: float, window: int | None, stopped_after: float, fail_on: str | None,
) -> None:
    """Committed offset, log-end offset, lag in records and in time, and a status per group and partition.

    Lag in time is the age of the oldest record a group has not consumed.
    The status (OK, WARNING, STALLED, STOPPED, ERROR) follows Burrow's rules
    over the observations this command makes: a single run makes --samples
    of them --interval apart (about 5 s by default), so STALLED and STOPPED,
    which need an offset unmoved for longer than a group's commit interval
    or --stopped-after, show only over a longer run or with --watch.
    See docs/lag.md.
    """
    settings = settings_from(bootstrap_servers=bootstrap_servers, namespace=namespace)
    cluster = Cluster(settings)
    cluster.wait_ready()
    if group is not None:
        _check_group(cluster, group)
    evaluator = LagEvaluator(
        window or (10 if watch else max(samples, 2)), stopped_after, commit_intervals=commit_intervals(cluster)
    )
    threshold = LagStatus(fail_on) if fail_on else None
    timeout = settings.connect_timeout_seconds
    if watch is not None:
        code = _watch(evaluator, lambda: observe_lag(cluster, group, timeout), watch, as_json, threshold)
    else:
        code = _single(evaluator, lambda: pipeline_lag(cluster, group, timeout), samples, interval, as_json,
                       threshold)
    if code:
        raise click.exceptions.Exit(code)


def _single(
    evaluator: LagEvaluator, read: Callable[[], list[GroupLag]], samples: int, interval: float, as_json: bool,
    threshold: LagStatus | None,
) -> int:
    """Observe ``samples`` times, print the last report with the verdict; return the exit code."""
    started = time.monotonic()
    for i in range(samples):
        if i:
            time.sleep(max(0.0, started + i * interval - time.monotonic()))  # the sampling interval itself
        report = read()  # a broker that fails here raises: exit 3, lag unknown
        statuses = evaluator.observe(report, time.time())
    span = time.monotonic() - started
    if as_json:
        click.echo(json.dumps(_payload(report, statuses, samples, span), indent=2))
    else:
        options_console().print(_table(report, statuses, f"status over {samples} observations in {span:.1f}s"))
    return _exit_code(statuses, threshold)


def _watch(
    evaluator: LagEvaluator, read: Callable[[], list[GroupLag]], every: float, as_json: bool,
    threshold: LagStatus | None,
) -> int:
    """Refresh until Ctrl-C (exit 0) or until a group reaches ``threshold`` (exit :data:`FAIL_ON_EXIT`)."""
    console = options_console()
    observed = 0
    started = time.monotonic()
    try:
        with Live(console=console, auto_refresh=False, transient=False) as live:
            while True:
                tick = time.monotonic()
                report = read()  # an unreadable broker gives groups of unknown lag, rated ERROR
                statuses = evaluator.observe(report, time.time())
                observed += 1
                span = time.monotonic() - started
                if as_json:
                    click.echo(json.dumps(_payload(report, statuses, observed, span)))
                else:
                    seen = min(observed, evaluator.window)
                    caption = f"status over {seen} observations; every {every:g}s, Ctrl-C ends"
                    live.update(_table(report, statuses, caption), refresh=True)
                code = _exit_code(statuses, threshold)
                if code:
                    return code
                time.sleep(max(0.0, tick + every - time.monotonic()))  # the refresh interval itself
    except KeyboardInterrupt:
        return 0


def _exit_code(statuses: list[GroupStatus], threshold: LagStatus | None) -> int:
    worst = LagStatus.worst(s.status for s in statuses)
    return FAIL_ON_EXIT if threshold is not None and worst.severity >= threshold.severity else 0


def _payload(report: list[GroupLag], statuses: list[GroupStatus], samples: int, span: float) -> dict[str, object]:
    groups = []
    for group_lag, status in zip(report, statuses, strict=True):
        rows = group_lag.as_dict()
        for row, verdict in zip(rows["partitions"], status.partitions, strict=True):  # type: ignore[call-overload]
            row.update(status=verdict.status.value, reason=verdict.reason)
        rows.update(status=status.status.value, reason=status.reason, max_lag_seconds=status.max_lag_seconds)
        groups.append(rows)
    known = all(g.known for g in report)
    return {
        "groups": groups,
        "total_lag": sum(g.total for g in report) if known else None,
        "status": LagStatus.worst(s.status for s in statuses).value,
        "observations": samples,
        "span_seconds": round(span, 3),
    }


def _table(report: list[GroupLag], statuses: list[GroupStatus], caption: str) -> Table:
    table = Table(title="consumer lag", caption=caption, show_lines=False)
    right = {"partition", "committed", "log end", "lag", "lag (time)"}
    for column in ("group", "topic", "partition", "committed", "log end", "lag", "lag (time)", "status", "reason"):
        table.add_column(column, justify="right" if column in right else "left")
    for group_lag, status in zip(report, statuses, strict=True):
        for row, verdict in zip(group_lag.partitions, status.partitions, strict=True):
            table.add_row(
                row.group, row.topic, str(row.partition), "-" if row.committed is None else str(row.committed),
                str(row.log_end), str(row.lag), format_age(row.lag_seconds), _status(verdict.status),
                "" if verdict.status is LagStatus.OK and not row.note else verdict.reason,
            )
        total = "unknown" if status.total_lag is None else f"[b]{status.total_lag}[/b]"
        table.add_row(
            group_lag.group, "[b]total[/b]", "", "", "", total, format_age(status.max_lag_seconds),
            _status(status.status), status.reason, end_section=True,
        )
    return table


def _status(status: LagStatus) -> str:
    return f"[{_COLOURS.get(status, 'red')}]{status.value}[/]"


def format_age(seconds: float | None) -> str:
    """``12.3s``, ``4m05s``, ``2h07m``; ``unknown`` for None (a lag in time that could not be read)."""
    if seconds is None:
        return "unknown"
    if seconds < 60:
        return "0s" if seconds == 0 else f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"


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
