"""The dead-letter wire contract: reason header names, and reading them back.

The stream processor writes these headers (``stream_processors.dead_letters``);
the monitor, replay tools and tests read them here, without importing a
component. See that module for the full list of headers.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from streamml.serde import header_value

__all__ = ["DLQ_PREFIX", "REASON_FIELDS", "read_rejection"]

DLQ_PREFIX = "streamml.dlq."
#: Reason header names, without the prefix.
REASON_FIELDS = (
    "stage",
    "rule",
    "field",
    "message",
    "violations",
    "source.topic",
    "source.partition",
    "source.offset",
    "source.timestamp",
    "timestamp",
)

Headers = Sequence[tuple[str, bytes | None]]


def read_rejection(headers: Headers | None) -> dict[str, Any]:
    """Read the reason headers of a dead letter back into a dict (for tools and tests).

    Keys are the header names without the ``streamml.dlq.`` prefix;
    ``violations`` is decoded from JSON and the source partition and offset
    are ints. Missing headers are absent from the result.
    """
    out: dict[str, Any] = {}
    for name in REASON_FIELDS:
        raw = header_value(headers, DLQ_PREFIX + name)
        if raw is not None:
            out[name] = raw.decode("utf-8", errors="replace")
    if "violations" in out:
        out["violations"] = json.loads(out["violations"])
    for name in ("source.partition", "source.offset"):
        if name in out:
            out[name] = int(out[name])
    return out
