"""``streamml drift``: the distribution monitor's newest window per processor, with its alerts."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import click
from rich.table import Table

from streamml.cluster import Cluster
from streamml.errors import RecordError
from streamml.monitoring import LABELS, PROFILE, REFERENCE, MonitoringRecord, decode_record
from streamml.reader import read_to_end
from streamml_cli.options import connection_options, settings_from
from streamml_cli.options import console as options_console

__all__ = ["COMMANDS", "DriftView", "read_drift", "EXIT_DRIFT"]

#: Exit code of ``streamml drift --fail-on-drift`` when the newest window of a source has an alert.
EXIT_DRIFT = 4


@dataclass
class DriftView:
    """What the monitoring topic says: the newest profile per source and how long each alert has lasted."""

    latest: dict[str, MonitoringRecord] = field(default_factory=dict)
    references: dict[str, MonitoringRecord] = field(default_factory=dict)
    #: Delayed-label mode: the newest label-join counts per processor.
    label_joins: dict[str, MonitoringRecord] = field(default_factory=dict)
    #: ``(source, field, rule)`` -> the first profile of the alert's current run of windows.
    since: dict[tuple[str, str, str], MonitoringRecord] = field(default_factory=dict)
    undecodable: int = 0

    @property
    def alerting(self) -> bool:
        return any(record.alerts for record in self.latest.values())

    def add(self, record: MonitoringRecord) -> None:
        if record.kind == REFERENCE:
            self.references[record.source] = record
            return
        if record.kind == LABELS:
            self.label_joins[record.source] = record
            return
        if record.kind != PROFILE:
            return
        now = {(record.source, alert.field, alert.rule) for alert in record.alerts}
        for key in [k for k in self.since if k[0] == record.source and k not in now]:
            del self.since[key]  # the alert ended: a later one starts a new run
        for key in now:
            self.since.setdefault(key, record)
        self.latest[record.source] = record


def read_drift(cluster: Cluster, stream: str | None = None, timeout: float = 30.0) -> DriftView:
    """Read the whole monitoring topic (it is small) into a :class:`DriftView`."""
    view = DriftView()
    for message in read_to_end(cluster, cluster.topics.monitoring, timeout=timeout):
        try:
            record = decode_record(message.value())
        except RecordError:
            view.undecodable += 1
            continue
        if stream is None or record.stream == stream:
            view.add(record)
    return view


@click.command("drift")
@connection_options
@click.option("--stream", default=None, help="Only this event stream (the event schema's name).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@click.option(
    "--fail-on-drift", is_flag=True, help=f"Exit {EXIT_DRIFT} when the newest window of any processor has an alert."
)
def drift(
    bootstrap_servers: str | None, namespace: str | None, stream: str | None, as_json: bool, fail_on_drift: bool
) -> int:
    """Show each processor's newest monitoring window: statistics, drift scores and alerts."""
    settings = settings_from(bootstrap_servers=bootstrap_servers, namespace=namespace)
    cluster = Cluster(settings)
    cluster.wait_ready()
    view = read_drift(cluster, stream)
    if as_json:
        click.echo(json.dumps(_as_json(view), indent=2))
    elif not view.latest and not view.label_joins:
        waiting = " (a reference is frozen; the first window is still filling)" if view.references else ""
        click.echo(f"no monitoring window on {cluster.topics.monitoring} yet{waiting}")
    else:
        _print(view)
    return EXIT_DRIFT if fail_on_drift and view.alerting else 0


def _as_json(view: DriftView) -> dict[str, Any]:
    sources = []
    for source, record in sorted(view.latest.items()):
        since = {
            f"{field_name}/{rule}": {"window": first.window, "first_event_time": first.first_event_time}
            for (src, field_name, rule), first in view.since.items() if src == source
        }
        sources.append({"source": source, "latest": record.as_dict(), "alerting_since": since})
    joins = [{"source": source, **record.fields} for source, record in sorted(view.label_joins.items())]
    return {"sources": sources, "label_joins": joins, "alerting": view.alerting, "undecodable": view.undecodable}


def _print(view: DriftView) -> None:
    console = options_console()
    for source, record in sorted(view.latest.items()):
        title = (
            f"{record.stream} · window {record.window} of {source}: {record.events} events, "
            f"{record.quarantined} quarantined, {_span(record)} · reference: {record.origin}"
        )
        table = Table(title=title, title_justify="left")
        for column in ("field", "kind", "count", "nulls", "mean / mode", "std / share", "PSI", "KS p / JS", "ADWIN"):
            table.add_column(column, justify="left" if column in ("field", "kind", "mean / mode") else "right")
        table.add_column("status")
        alerted = {alert.field for alert in record.alerts}
        for name, entry in record.fields.items():
            table.add_row(*_row(name, entry), "[red]ALERT[/red]" if name in alerted else "ok")
        console.print(table)
        for alert in record.alerts:
            first = view.since.get((source, alert.field, alert.rule))
            started = f" since window {first.window} ({_when(first.first_event_time)})" if first else ""
            console.print(f"  [red]alert[/red] {alert.message}{started}")
    for source, record in sorted(view.label_joins.items()):
        c, w = record.fields.get("counts", {}), record.fields.get("waiting", {})
        console.print(
            f"label join of {source}: {c.get('joined', 0):,} joined ({c.get('joined_label_first', 0):,} label "
            f"first), {c.get('duplicate_labels', 0):,} duplicate labels, {c.get('expired_unlabelled', 0):,} "
            f"expired unlabelled, {c.get('unmatched_labels', 0):,} unmatched labels; waiting: "
            f"{w.get('features', 0):,} features, {w.get('label', 0):,} labels"
        )
    if view.undecodable:
        console.print(f"{view.undecodable} record(s) on the monitoring topic could not be read")


def _row(name: str, entry: dict[str, Any]) -> tuple[str, ...]:
    count = str(entry.get("count", ""))
    nulls = _num(entry.get("null_rate"), "{:.1%}")
    if entry.get("kind") == "numeric":
        return (
            name, "numeric", count, nulls, _num(entry.get("mean")), _num(entry.get("std")),
            _num(entry.get("psi"), "{:.3f}"), _num(entry.get("ks_pvalue"), "{:.2g}"),
            str(entry.get("adwin_changes", "")),
        )
    mode = entry.get("mode")
    return (
        name, "categorical", count, nulls, "-" if mode is None else str(mode), _num(entry.get("max_share"), "{:.1%}"),
        _num(entry.get("psi"), "{:.3f}"), _num(entry.get("js_distance"), "{:.3f}"), "",
    )


def _num(value: Any, spec: str = "{:.4g}") -> str:
    return "-" if value is None else spec.format(value)


def _span(record: MonitoringRecord) -> str:
    return f"event time {_when(record.first_event_time)} to {_when(record.last_event_time)}"


def _when(ms: int | None) -> str:
    return "-" if ms is None else time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms / 1000))


COMMANDS = [drift]
