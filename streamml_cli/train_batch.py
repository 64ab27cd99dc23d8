"""``streamml train-batch``: a scikit-learn model from a snapshot of the features topic, gated and published."""

from __future__ import annotations

import json
from typing import Any

import click

from streamml.cluster import Cluster
from streamml.errors import ConfigError
from streamml_cli.deadletters import parse_duration, parse_since
from streamml_cli.options import connection_options, settings_from, stop_on_signals

__all__ = ["COMMANDS", "parse_every"]



def parse_every(text: str | None) -> float | None:
    """``--every 30m`` -> seconds (``None`` when not given); :class:`ConfigError` when malformed."""
    if text is None:
        return None
    seconds = parse_duration(text)
    if seconds is None or seconds <= 0:
        raise ConfigError(f"--every {text!r}: expected a positive duration such as 90s, 15m, 2h or 1d")
    return seconds


def _report(result: Any, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(result.summary(), sort_keys=True))
        return
    metrics = result.metrics
    shown = ", ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items()) if k.startswith("holdout_"))
    click.echo(f"snapshot: {len(result.snapshot)} labelled rows ({result.snapshot.lineage()['snapshot_offsets']})")
    click.echo(f"trained on {int(metrics['n_train'])} rows, held out the newest {int(metrics['n_holdout'])}: {shown}")
    if result.decision is not None:
        verdict = "promoted" if result.decision.promoted else "refused (consumers keep the champion)"
        click.echo(f"gate: {verdict}: {result.decision.reason}")
    if result.envelope is not None:
        env = result.envelope
        status = "served" if result.decision is None or result.decision.promoted else "withheld"
        click.echo(f"published {env.model_name} v{env.version} (batch, {env.payload_size} bytes, {status})")


@click.command("train-batch")
@connection_options
@click.option(
    "--model", "model_name", required=True, help="Model name to publish as (its own name, not the learner's)."
)
@click.option("--spec", default="logistic", show_default=True,
              help="logistic, random_forest, gradient_boosting, ridge, or package.module:factory.")
@click.option(
    "--from-offsets", default=None, metavar="P:O,...", help="First offset per partition (default: the beginning)."
)
@click.option(
    "--to-offsets", default=None, metavar="P:O,...", help="End offset per partition, exclusive (default: the end now)."
)
@click.option("--since", default=None, help="Only events from this event time: a duration back (2h) or an ISO time.")
@click.option("--until", default=None, help="Only events before this event time: a duration back or an ISO time.")
@click.option("--holdout", type=float, default=0.2, show_default=True,
              help="Fraction of the newest rows held out for evaluation (time-ordered).")
@click.option("--max-rows", type=int, default=1_000_000, show_default=True, help="Refuse snapshots larger than this.")
@click.option("--champion", default=None, help="Model whose served version the candidate must not be worse than "
              "(default: this model's own).")
@click.option("--gate-events", type=int, default=None,
              help="Held-back events the gate scores both on; 0 publishes ungated [env STREAMML_GATE_EVENTS].")
@click.option("--gate-margin", type=float, default=None,
              help="How much worse than the champion a candidate may be [env STREAMML_GATE_MARGIN].")
@click.option("--gate-timeout", type=float, default=60.0, show_default=True,
              help="Seconds to wait for the held-back events.")
@click.option(
    "--every", default=None, help="Retrain on this schedule (e.g. 15m) until Ctrl-C; with --since the range slides."
)
@click.option("--on-drift", is_flag=True, help="Also retrain when the monitoring topic reports a drift alert.")
@click.option("--on-metric-drop", type=float, default=None, metavar="X",
              help="Also retrain when the champion's rolling accuracy on live events drops by more than X.")
@click.option("--watch-window", type=int, default=500, show_default=True,
              help="Live labelled events the metric-drop trigger averages over.")
@click.option("--dry-run", is_flag=True, help="Train, evaluate and gate, but publish nothing.")
@click.option("--json", "as_json", is_flag=True, help="One JSON summary line per run.")
def train_batch(
    bootstrap_servers: str | None,
    namespace: str | None,
    model_name: str,
    spec: str,
    from_offsets: str | None,
    to_offsets: str | None,
    since: str | None,
    until: str | None,
    holdout: float,
    max_rows: int,
    champion: str | None,
    gate_events: int | None,
    gate_margin: float | None,
    gate_timeout: float,
    every: str | None,
    on_drift: bool,
    on_metric_drop: float | None,
    watch_window: int,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Train a scikit-learn model on a snapshot of the features topic and publish it, gated."""
    settings = settings_from(
        bootstrap_servers=bootstrap_servers, namespace=namespace, model_name=model_name,
        gate_events=gate_events, gate_margin=gate_margin,
    )
    period = parse_every(every)
    parse_since(since), parse_since(until)  # malformed times fail before any broker work
    from model_publisher.batch_training import BatchTrainer  # deferred: imports scikit-learn
    from streamml.reader import parse_offsets

    start, end = parse_offsets(from_offsets), parse_offsets(to_offsets)
    cluster = Cluster(settings)
    cluster.require_topics([cluster.topics.features, cluster.topics.models])
    trainer = BatchTrainer(
        cluster, spec=spec, holdout=holdout, champion=champion, gate_margin=settings.gate_margin,
        gate_events=settings.gate_events, gate_timeout=gate_timeout,
    )
    from model_publisher.triggers import RetrainTriggers

    triggers = RetrainTriggers(
        cluster, every=period, on_drift=on_drift, metric_drop=on_metric_drop, window=watch_window,
        task=trainer.task, champion=trainer.champion_model,
    )
    repeat = period is not None or on_drift or on_metric_drop is not None
    reason: str | None = "manual" if not repeat else "start"
    with stop_on_signals() as stop:
        while reason is not None:
            result = trainer.run(
                start=start, end=end, since_ms=parse_since(since), until_ms=parse_since(until), max_rows=max_rows,
                publish=not dry_run, trigger=reason,
            )
            _report(result, as_json)
            if not repeat:
                break
            reason = triggers.wait(stop)
            if reason is not None and not as_json:
                click.echo(f"retraining: {reason}")


COMMANDS = [train_batch]
