"""``streamml models list|show|rollback|pin``: the model registry on the models topic."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import click
from rich.table import Table

from streamml.cluster import Cluster
from streamml.errors import ConfigError
from streamml.registry import ModelHistory, VersionRecord, read_history
from streamml.trust import GATE_KEY
from streamml_cli.options import connection_options, settings_from
from streamml_cli.options import console as options_console

__all__ = ["COMMANDS"]


@click.group("models")
def models_group() -> None:
    """Inspect the model versions on the models topic; roll back, pin and unpin."""


def _history(
    bootstrap_servers: str | None, namespace: str | None, model_name: str | None
) -> tuple[Cluster, ModelHistory]:
    settings = settings_from(bootstrap_servers=bootstrap_servers, namespace=namespace)
    cluster = Cluster(settings)
    cluster.require_topics([cluster.topics.models])
    return cluster, read_history(cluster, model_name=model_name)


def _when(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _gate_cell(lineage: dict[str, str]) -> str:
    """``promoted 0.912 vs 0.887 (demo v3)``: the gate's decision and both scores, ``-`` when ungated."""
    decision = lineage.get(GATE_KEY)
    if decision is None:
        return "-"
    if lineage.get("gate_champion", "none") == "none":
        return f"{decision} (first)" if decision == "promoted" else f"{decision} (unjudged)"
    against = lineage.get("gate_champion_version", "champion")
    return f"{decision} {lineage.get('gate_candidate')} vs {lineage.get('gate_champion')} ({against})"


def gate_of(summary: dict[str, Any] | None) -> dict[str, str] | None:
    """The gate entries of a version's lineage, without the ``gate_`` prefix (``None`` when ungated)."""
    lineage = (summary or {}).get("lineage", {})
    if GATE_KEY not in lineage:
        return None
    return {"decision": lineage[GATE_KEY], **{k[len("gate_"):]: v for k, v in lineage.items() if k.startswith("gate_")}}


def _row(record: VersionRecord, served: int | None) -> list[str]:
    s = record.summary or {}
    metrics = s.get("metrics", {})

    def num(*keys: str) -> str:
        return next((f"{metrics[key]:.3f}" for key in keys if key in metrics), "-")

    withheld = record.verdict is not None and record.verdict.withheld
    status = "ok" if record.reason is None else ("withheld" if withheld else f"refused @{record.offset}")
    if record.version is not None and record.version == served and record.reason is None:
        status = "serving"
    return [
        "-" if record.version is None else str(record.version),
        _when(s.get("created_at")),
        str(s.get("kind", "-")),
        str(s.get("n_learned", "-")),
        # An online version's accuracy is progressive (test-then-train); a batch one's, on its holdout.
        num("accuracy", "holdout_accuracy"),
        num("rolling_accuracy"),
        _gate_cell(s.get("lineage", {})),
        str(s.get("payload_bytes", "-")),
        s.get("key_id") or ("unsigned" if s else "-"),
        status,
    ]


@models_group.command("list")
@connection_options
@click.option("--model-name", default=None, help="Only this model [env STREAMML_MODEL_NAME]; default: every model.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def list_(bootstrap_servers: str | None, namespace: str | None, model_name: str | None, as_json: bool) -> None:
    """List every version and directive, whether subscribers accept it, and which version they serve."""
    cluster, history = _history(bootstrap_servers, namespace, model_name)
    records = history.versions
    names = sorted({r.model_name for r in records if r.model_name} | {d.record.model_name for d in history.directives})
    if as_json:
        click.echo(
            json.dumps(
                {
                    "versions": [r.as_dict() for r in records],
                    "directives": [d.as_dict() for d in history.directives],
                    "serving": {
                        n: {"version": history.served(n), "mode": history.states[n].mode_for(history.served(n))}
                        for n in names
                    },
                },
                indent=2,
            )
        )
        return
    console = options_console()
    for name in names or ["?"]:
        served = history.served(name) if names else None
        mode = history.states[name].mode_for(served) if names else "latest"
        table = Table(title=f"{name} on {cluster.topics.models}: consumers serve v{served} ({mode})")
        columns = [
            "version", "created (UTC)", "kind", "learned", "accuracy", "rolling", "gate", "bytes", "signer", "status",
        ]
        for column in columns:
            numeric = column in ("version", "learned", "accuracy", "rolling", "bytes")
            table.add_column(column, justify="right" if numeric else "left", no_wrap=True)
        for record in records:
            if record.model_name in (name, None):
                table.add_row(*_row(record, served))
        console.print(table)
        for directive in history.directives:
            if directive.record.model_name == name:
                obeyed = "obeyed" if directive.problem is None else f"refused: {directive.problem}"
                line = f"@{directive.offset} {directive.record.describe()}: {obeyed}"
                console.print(line, markup=False, soft_wrap=True)
    # Reasons are long: printed whole under the table rather than squeezed into a cell.
    for record in records:
        if record.reason is not None:
            what = "withheld" if record.verdict is not None and record.verdict.withheld else "refused"
            console.print(f"{what} @{record.offset}: {record.reason}", markup=False, soft_wrap=True)
    if not records:
        click.echo("no model versions yet; run 'streamml learn'")


@models_group.command("show")
@connection_options
@click.argument("model_name")
@click.argument("version", type=int)
def show(bootstrap_servers: str | None, namespace: str | None, model_name: str, version: int) -> None:
    """Print one version's whole envelope as JSON: lineage, metrics, runtime, signer, golden check."""
    # Read every model, so an unknown name can be answered with the names that exist.
    cluster, history = _history(bootstrap_servers, namespace, None)
    history.require_model(model_name, cluster.topics.models)
    found = [r for r in history.versions if r.model_name == model_name and r.version == version]
    if not found:
        known = ", ".join(
            f"v{r.version}" for r in history.versions if r.model_name == model_name and r.version is not None
        )
        raise ConfigError(f"{model_name} has no version {version} (versions: {known})")
    record = found[-1]
    out: dict[str, Any] = {
        "offset": record.offset,
        "status": record.status,
        "reason": record.reason,
        "authentic": record.authentic,
        "served": history.served(model_name) == version,
        "serving_mode": history.states[model_name].mode_for(history.served(model_name)),
        "gate": gate_of(record.summary),
        "envelope": record.summary,
    }
    if record.envelope is not None:
        out["golden"] = [
            {"features": g.features, "prediction": g.prediction, "probabilities": g.probabilities}
            for g in record.envelope.golden
        ]
        out["golden_check"] = _golden_check(record)
    click.echo(json.dumps(out, indent=2, default=str))


def _golden_check(record: VersionRecord) -> str:
    """Load the model the way a consumer would and replay its golden examples."""
    from streamml.trust import load_model

    if record.verdict is None or not record.verdict.acceptable:
        return f"not run: {record.reason}"
    if not record.verdict.envelope.golden:
        return "no golden examples recorded"
    try:
        load_model(record.verdict)
    except Exception as exc:  # noqa: BLE001 - reported, not raised: this is an inspection command
        return f"failed: {exc}"
    return f"passed ({len(record.verdict.envelope.golden)} examples reproduced)"


def _issue(bootstrap_servers: str | None, namespace: str | None, name: str, action: str, version: int | None,
           reason: str) -> None:
    from model_publisher.directives import issue_directive

    settings = settings_from(bootstrap_servers=bootstrap_servers, namespace=namespace)
    cluster = Cluster(settings)
    cluster.require_topics([cluster.topics.models])
    record = issue_directive(cluster, name, action, version, reason=reason)
    click.echo(f"published {record.describe()}; consumers obey it within a second")


@models_group.command("rollback")
@connection_options
@click.argument("model_name")
@click.option("--to", "version", type=int, required=True, help="The version to serve again.")
@click.option("--reason", default="", help="Why (kept on the topic with the directive).")
def rollback(bootstrap_servers: str | None, namespace: str | None, model_name: str, version: int, reason: str) -> None:
    """Serve VERSION again and withdraw every newer version published so far."""
    _issue(bootstrap_servers, namespace, model_name, "rollback", version, reason)


@models_group.command("pin")
@connection_options
@click.argument("model_name")
@click.argument("version", type=int, required=False)
@click.option("--unpin", is_flag=True, help="Go back to serving the newest version.")
@click.option("--reason", default="", help="Why (kept on the topic with the directive).")
def pin(
    bootstrap_servers: str | None, namespace: str | None, model_name: str, version: int | None, unpin: bool, reason: str
) -> None:
    """Serve exactly VERSION, whatever is published after, until --unpin."""
    if unpin == (version is not None):
        raise click.UsageError("give a VERSION to pin, or --unpin")
    _issue(bootstrap_servers, namespace, model_name, "unpin" if unpin else "pin", version, reason)


COMMANDS = [models_group]
