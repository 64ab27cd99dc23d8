"""``streamml topics create|list``: the pipeline's topics."""

from __future__ import annotations

import click

from streamml.cluster import Cluster
from streamml_cli.options import connection_options, settings_from

__all__ = ["COMMANDS"]


@click.group("topics")
def topics_group() -> None:
    """Create and inspect the pipeline's topics."""


@topics_group.command("create")
@connection_options
@click.option("--partitions", type=int, default=None, help="Partitions of the event topics [env STREAMML_PARTITIONS].")
def create(bootstrap_servers: str | None, namespace: str | None, partitions: int | None) -> None:
    """Create every pipeline topic; topics that exist are left as they are."""
    settings = settings_from(bootstrap_servers=bootstrap_servers, namespace=namespace, partitions=partitions)
    cluster = Cluster(settings)
    cluster.wait_ready(timeout=15)
    specs = cluster.topics.specs(settings)
    outcome = cluster.create_topics(specs)
    for spec in specs:
        click.echo(f"{outcome[spec.name]:8} {spec.name} (partitions={spec.partitions})")


@topics_group.command("list")
@connection_options
def list_(bootstrap_servers: str | None, namespace: str | None) -> None:
    """Show which pipeline topics exist and their partition counts."""
    settings = settings_from(bootstrap_servers=bootstrap_servers, namespace=namespace)
    cluster = Cluster(settings)
    cluster.wait_ready(timeout=10)
    names = cluster.topics.all()
    found = cluster.partition_counts(names)
    for name in names:
        click.echo(f"{name}: {found[name]} partitions" if name in found else f"{name}: missing")


COMMANDS = [topics_group]
