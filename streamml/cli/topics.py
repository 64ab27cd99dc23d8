"""``streamml topics create|list``: the pipeline's topics."""

from __future__ import annotations

import click

from streamml.cli.options import connection_options, settings_from
from streamml.kafka import create_topics, describe_topics, wait_for_broker
from streamml.topics import Topics

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
    wait_for_broker(settings, timeout=15)
    topics = Topics.from_settings(settings)
    specs = topics.specs(settings)
    outcome = create_topics(settings, specs)
    for spec in specs:
        click.echo(f"{outcome[spec.name]:8} {spec.name} (partitions={spec.partitions})")


@topics_group.command("list")
@connection_options
def list_(bootstrap_servers: str | None, namespace: str | None) -> None:
    """Show which pipeline topics exist and their partition counts."""
    settings = settings_from(bootstrap_servers=bootstrap_servers, namespace=namespace)
    wait_for_broker(settings, timeout=10)
    names = Topics.from_settings(settings).all()
    found = describe_topics(settings, names)
    for name in names:
        click.echo(f"{name}: {found[name]} partitions" if name in found else f"{name}: missing")


COMMANDS = [topics_group]
