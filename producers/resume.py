"""Resuming a run: which row ids the destination topic already holds.

The topic, not a local checkpoint, is the source of truth: a run resumed on
another machine, or after a crash between a delivery and any bookkeeping,
still skips exactly the rows the topic has. The topic is read once, from the
start to its end (the end taken from fetch responses, right on the embedded
broker too, see ``docs/embedded-broker.md#list-offsets``), within a bounded
time, keeping only the ids.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from streamml.cluster import Cluster
from streamml.errors import ConfigError, DecodeError
from streamml.kafka import record_headers
from streamml.reader import read_to_end
from streamml.serde import AvroSchema, AvroSerde

__all__ = ["DEFAULT_ID_COLUMN", "TopicIds", "resolve_id_column", "ids_on_topic"]

logger = logging.getLogger(__name__)

#: The id column used when none is named and the schema has it.
DEFAULT_ID_COLUMN = "event_id"


@dataclass(frozen=True)
class TopicIds:
    """The row ids found on a topic."""

    topic: str
    id_column: str
    ids: frozenset[str] = field(default_factory=frozenset)
    #: Records read.
    records: int = 0
    #: Records that did not decode with the schema (other writers, corrupt
    #: bytes) or had no id: their rows, if any, cannot be recognised.
    unreadable: int = 0


def resolve_id_column(schema: AvroSchema, id_column: str | None) -> str:
    """The id column to resume by: ``id_column``, else ``event_id`` when the schema has it.

    Raises :class:`ConfigError` (exit 2) when the schema has no such field.
    """
    fields = schema.field_names
    if id_column is None:
        if DEFAULT_ID_COLUMN in fields:
            return DEFAULT_ID_COLUMN
        raise ConfigError(
            f"resuming needs a row id, and schema {schema.name} has no {DEFAULT_ID_COLUMN!r} field; "
            f"name the id column with --id-column (fields: {', '.join(fields)})"
        )
    if id_column not in fields:
        raise ConfigError(
            f"--id-column {id_column!r}: schema {schema.name} has no such field (fields: {', '.join(fields)})"
        )
    return id_column


def ids_on_topic(
    cluster: Cluster, topic: str, schema: AvroSchema, id_column: str, *, timeout: float = 60.0
) -> TopicIds:
    """Read ``topic`` to its end and return the ``id_column`` values of its records, as text.

    Raises :class:`KafkaClientError` if the end is not reached within ``timeout`` seconds.
    """
    serde = AvroSerde(schema)
    ids: set[str] = set()
    records = unreadable = 0
    for message in read_to_end(cluster, topic, timeout=timeout):
        records += 1
        try:
            value = serde.decode(message.value(), record_headers(message)).get(id_column)
        except DecodeError:
            value = None
        if value is None:
            unreadable += 1
        else:
            ids.add(str(value))
    if unreadable:
        logger.warning(
            "%s: %d of %d records have no readable %s; rows they came from would be sent again",
            topic, unreadable, records, id_column,
        )
    return TopicIds(topic, id_column, frozenset(ids), records, unreadable)
