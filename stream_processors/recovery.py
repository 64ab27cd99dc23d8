"""Complete faust's table recovery where the broker under-reports a changelog's end.

faust recovers a table by reading its changelog up to the end ``ListOffsets``
reports. The embedded broker answers ``ListOffsets`` with the base offset of
the last record *batch* plus one (``docs/embedded-broker.md#list-offsets``), so
faust stops early and a restarted worker would join labels against (or count
windows from) part of its state. On Apache Kafka the answer is right and this
step finds nothing more.

:func:`complete_recovery` runs when faust signals that recovery is done and
before the streams resume (``app.on_rebalance_complete``): it reads the
changelog partitions this worker now owns to their real end (the high
watermark of fetch responses, :func:`streamml.reader.read_to_end`) and
applies every record in order, tombstones included, which leaves the store
exactly as the log says whatever prefix faust had applied. Entries of
partitions the worker no longer owns are dropped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import faust

from streamml.cluster import Cluster
from streamml.reader import read_to_end

__all__ = ["complete_recovery", "changelog_state"]

logger = logging.getLogger(__name__)


def changelog_state(
    cluster: Cluster, topic: str, partitions: set[int], decode: Callable[[bytes], Any]
) -> tuple[dict[bytes, tuple[int, Any]], int]:
    """The final ``key -> (partition, value)`` of ``partitions`` of a changelog, and how many records were read."""
    state: dict[bytes, tuple[int, Any]] = {}
    count = 0
    for message in read_to_end(cluster, topic, timeout=120):
        partition, key = message.partition(), message.key()
        if partition not in partitions or key is None:
            continue
        count += 1
        value = message.value()
        if value is None:
            state.pop(key, None)
        else:
            state[key] = (partition, decode(value))
    return state, count


async def complete_recovery(app: faust.App, table: Any, cluster: Cluster) -> None:
    """Make ``table``'s store what its changelog holds for the partitions this worker owns (see the module doc)."""
    topic = table.changelog_topic.get_topic_name()
    owned = {tp.partition for tp in app.assignor.assigned_actives() if tp.topic == topic}
    serializer = table.value_serializer

    def decode(value: bytes) -> Any:
        return faust.serializers.codecs.loads(serializer, value)

    loop = asyncio.get_running_loop()
    # A blocking client read, off the event loop: faust's own heartbeats go on meanwhile.
    state, count = await loop.run_in_executor(None, changelog_state, cluster, topic, owned, decode)
    store = table.data
    before = len(store)
    store.clear()
    for key, (_, value) in state.items():
        store[key] = value
    logger.info(
        "table %s: %d keys from %d changelog records of partitions %s (faust had recovered %d keys)",
        table.name, len(store), count, sorted(owned), before,
    )
