"""Log lines as JSON objects, one per line, for log shippers (``--log-format json``).

Significant events (a model swap or refusal, a publish, a quarantine burst, a
rebalance) are logged with ``extra={"event": ..., ...}``: in the text format
only the message shows; in JSON every extra field becomes a key, so a log
pipeline can select ``event == "model_swap"`` without parsing messages. A
record involved is named ``topic[partition]@offset`` in the message and, where
the caller gives it, in the ``record`` key.

Hand-written rather than python-json-logger: twenty lines of the standard
library do it, and the CLI stays free of another dependency.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

__all__ = ["JsonFormatter", "TEXT_FORMAT"]

#: The text format's line layout.
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

#: Attributes every LogRecord has: everything else on a record came from ``extra``.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``ts``, ``level``, ``logger``, ``message``, the extras, ``exception``.

    >>> record = logging.LogRecord("streamml.x", logging.INFO, "", 0, "served v%d", (3,), None)
    >>> record.event = "model_swap"
    >>> line = json.loads(JsonFormatter().format(record))
    >>> line["message"], line["event"], line["level"]
    ('served v3', 'model_swap', 'INFO')
    """

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` as one line of JSON (values JSON cannot hold are written as ``str``)."""
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        # default=str: a Path or a set in extra must not turn a log call into an exception.
        return json.dumps(line, default=str, ensure_ascii=False)
