"""``streamml demo``: the whole system on the embedded broker, with a live view and a summary."""

from __future__ import annotations

import signal
import time

import click
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from streamml.config import Settings
from streamml_cli.options import connection_options, settings_from
from streamml_cli.options import console as options_console
from streamml_cli.orchestration.demo import DemoOptions, DemoProgress, DemoResult, run_demo
from streamml_cli.orchestration.monitor import AlertSeen, ModelVersionSeen, PipelineSnapshot

__all__ = ["COMMANDS"]


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _drift(s: PipelineSnapshot) -> str:
    """The monitor's windows and the first alert per field, e.g. ``car PSI 4.7 at valid event 10,500``."""
    if not s.monitoring_windows:
        return "building its reference"
    firsts: dict[tuple[str, str], AlertSeen] = {}
    for alert in s.alerts:
        firsts.setdefault((alert.field, alert.rule), alert)
    shown = ", ".join(
        f"{a.field} {'PSI' if a.rule == 'psi' else a.rule} {a.value:.2f} at valid event {a.observed:,}"
        for a in firsts.values()
    )
    return f"{s.monitoring_windows} windows" + (f"; first alerts: {shown}" if shown else ", no alert")


def _rises(latest: ModelVersionSeen | None) -> str:
    """What the learner's ADWIN said about its error rate, as of the newest version."""
    if latest is None:
        return "-"
    if not latest.error_rate_rises:
        return "no rise detected"
    return f"{latest.error_rate_rises} rise(s) detected, the last after {latest.error_rate_rise_at:,} learned"


def _progress_table(p: DemoProgress) -> Table:
    s = p.snapshot
    table = Table(title=f"streamml demo: {p.stage} ({p.elapsed:.0f}s)", show_header=False, min_width=60)
    table.add_column(style="bold")
    table.add_column(justify="right")
    latest = s.latest
    table.add_row("events produced", f"{s.produced:,}")
    table.add_row("valid (featurized)", f"{s.features:,}")
    table.add_row("quarantined", f"{s.quarantined:,}")
    table.add_row("predictions", f"{s.predictions:,}")
    table.add_row("model versions published", str(len(s.versions)) + (f" (latest v{latest.version})" if latest else ""))
    table.add_row("learner accuracy (rolling 1k)", _pct(latest.rolling_accuracy if latest else None))
    table.add_row("scorer accuracy (rolling 1k)", _pct(s.scorer_rolling))
    table.add_row("SDK subscriber model", f"v{p.sdk_version} ({p.sdk_swaps} swaps)" if p.sdk_version else "not ready")
    table.add_row("distribution monitor", _drift(s))
    table.add_row("learner error rate", _rises(latest))
    table.add_row("consumer lag", ", ".join(f"{g.group.rsplit('.', 1)[-1]}={g.total}" for g in p.lag) or "-")
    return table


def _summary(result: DemoResult, console: Console) -> None:
    s = result.snapshot
    table = Table(title="streamml demo: summary", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("broker", result.bootstrap_servers)
    producing = f" in {result.producing_seconds:.1f}s" if result.producing_seconds is not None else ""
    table.add_row("events produced", f"{s.produced:,}{producing}")
    table.add_row("whole run", f"{result.elapsed:.1f}s (broker start to every component stopped)")
    table.add_row("valid, featurized", f"{s.features:,}")
    reasons = ", ".join(f"{rule}={n}" for rule, n in s.quarantine_rules.most_common())
    table.add_row("quarantined (dead letters)", f"{s.quarantined:,}" + (f" ({reasons})" if reasons else ""))
    table.add_row("predictions", f"{s.predictions:,} by {len(s.versions_scored)} model versions")
    if s.versions:
        v1 = s.versions[0].version
        table.add_row(f"first prediction after v{v1} published", _after(s.first_prediction_after(v1)))
        delays = sorted(d for v in s.versions if (d := s.first_prediction_after(v.version)) is not None)
        if delays:
            table.add_row(
                "publish to first prediction",
                f"median {_seconds(delays[len(delays) // 2])}, max {_seconds(delays[-1])} "
                f"over the {len(delays)} versions that made predictions",
            )
    if s.joined:
        table.add_row("joined with delayed labels", f"{s.joined:,}")
    if s.versions:
        first, latest = s.versions[0], s.versions[-1]
        table.add_row("model versions published", f"{len(s.versions)} (v{first.version}..v{latest.version})")
        table.add_row(
            "learner accuracy", f"{_pct(latest.accuracy)} progressive, {_pct(latest.rolling_accuracy)} last 1k"
        )
    table.add_row("scorer accuracy", f"{_pct(s.scorer_accuracy)} overall, {_pct(s.scorer_rolling)} last 1k")
    table.add_row("distribution monitor", _drift(s))
    table.add_row("learner error rate", _rises(s.latest))
    table.add_row(
        "SDK subscriber", f"{_version(result.sdk_version)}, {result.sdk_swaps} swaps, {result.sdk_refused} refused"
    )
    for group in result.lag:
        table.add_row(f"lag {group.group}", str(group.total))
    table.add_row("component exits", ", ".join(f"{k}={v}" for k, v in result.exit_codes.items()))
    table.add_row("logs", str(result.run_dir))
    console.print(table)

    versions = Table(title="model versions (progressive validation at publish time)")
    for column in ("version", "learned", "accuracy", "rolling 1k", "predictions made", "first after publish"):
        versions.add_column(column, justify="right")
    for v in s.versions:
        delay = s.first_prediction_after(v.version)
        versions.add_row(
            f"v{v.version}", f"{v.n_learned:,}", _pct(v.accuracy), _pct(v.rolling_accuracy),
            f"{s.versions_scored.get(v.version, 0):,}", "-" if delay is None else _seconds(delay),
        )
    console.print(versions)
    for note in result.notes:
        console.print(f"  [yellow]![/yellow] {note}")
    for check, passed in result.checks.items():
        console.print(f"  {'[green]✓[/green]' if passed else '[red]✗[/red]'} {check}")


def _seconds(value: float) -> str:
    return f"{value:.1f} s" if value >= 0.1 else f"{value * 1000:.0f} ms"


def _after(delay: float | None) -> str:
    """``0.4 s``, or why there is no figure (the version made no prediction)."""
    return "it made no prediction" if delay is None else _seconds(delay)


def _version(version: int | None) -> str:
    """``v3``, or ``no model yet`` before the first swap (never ``vNone``)."""
    return f"v{version}" if version is not None else "no model yet"


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@click.command("demo")
@connection_options
@click.option("--events", type=click.IntRange(min=100), default=20_000, show_default=True, help="Events to stream.")
@click.option(
    "--rate", type=float, default=1000.0, show_default=True, help="Events per second (0: as fast as possible)."
)
@click.option(
    "--bad-fraction",
    type=click.FloatRange(0, 0.5),
    default=0.02,
    show_default=True,
    help="Share of malformed events injected.",
)
@click.option(
    "--publish-every", type=int, default=None, help="Publish a model version every N learned events [default 2000]."
)
@click.option(
    "--publish-every-seconds",
    type=float,
    default=5.0,
    show_default=True,
    help="... or every T seconds with something new learned.",
)
@click.option(
    "--label-delay",
    type=click.FloatRange(0, 60),
    default=None,
    metavar="SECONDS",
    help="Delayed labels: events come without labels, each label up to SECONDS later on labels.v1.",
)
@click.option("--seed", type=int, default=42, show_default=True)
@click.option("--port", type=int, default=None, help="Port for the embedded broker [default: a free one].")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    metavar="SECONDS",
    help="Give up after SECONDS, stop everything and exit 4 naming what it was waiting for "
    "[default: 120 + EVENTS/200 + EVENTS/RATE].",
)
def demo(
    bootstrap_servers: str | None,
    namespace: str | None,
    events: int,
    rate: float,
    bad_fraction: float,
    publish_every: int | None,
    publish_every_seconds: float,
    label_delay: float | None,
    seed: int,
    port: int | None,
    timeout: float | None,
) -> None:
    """Run the whole pipeline on a drifting event stream and print a summary.

    Starts the embedded broker (unless --bootstrap-servers or
    STREAMML_BOOTSTRAP_SERVERS names a cluster), creates the topics, runs the
    processor, learner and scorer, streams EVENTS synthetic events with concept
    drift, and stops everything it started.

    Exit codes: 0 every check passed; 1 a check failed or a component exited
    unexpectedly; 2 bad options; 3 the broker could not be started or
    reached; 4 the run did not finish within --timeout (stopping the
    components then takes up to 30 s more); 130 interrupted.
    """
    settings = settings_from(
        bootstrap_servers=bootstrap_servers,
        namespace=namespace,
        publish_every_events=publish_every,
        publish_every_seconds=publish_every_seconds,
    )
    options = DemoOptions(
        events=events,
        rate=rate or None,
        bad_fraction=bad_fraction,
        seed=seed,
        timeout=timeout,
        embedded=settings.bootstrap_servers == Settings().bootstrap_servers,
        port=port,
        label_delay=label_delay,
    )
    # SIGTERM (a supervisor, `timeout`, CI) stops the demo like Ctrl-C does:
    # the unwinding stops every component and the broker it started.
    signal.signal(signal.SIGTERM, _interrupt)
    console = options_console()
    if console.is_terminal:
        with Live(console=console, refresh_per_second=4, transient=True) as live:
            result = run_demo(settings, options, lambda p: live.update(Group(_progress_table(p))))
    else:
        last = [0.0]

        def plain(p: DemoProgress) -> None:
            if time.monotonic() - last[0] >= 3.0:
                last[0] = time.monotonic()
                s = p.snapshot
                click.echo(
                    f"[{p.elapsed:5.0f}s] {p.stage}: produced={s.produced} valid={s.features} "
                    f"quarantined={s.quarantined} predictions={s.predictions} versions={len(s.versions)} "
                    f"sdk={_version(p.sdk_version)} lag={sum(g.total for g in p.lag)}"
                )

        result = run_demo(settings, options, plain)
    _summary(result, console)
    if not result.ok:
        failed = [name for name, passed in result.checks.items() if not passed]
        raise click.ClickException(f"demo finished but checks failed: {'; '.join(failed)}")


COMMANDS = [demo]
