"""How librdkafka's own reporting reaches the user: its log level and its ``error_cb``.

librdkafka writes its log to stderr itself, bypassing Python logging: with a
broker away, a line per connection attempt floods the terminal. So its log is
off unless debug logging is asked for, and its errors come through Python
logging, deduplicated. :func:`streamml.kafka.connection_config` wires both into
every client.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable

from confluent_kafka import KafkaError

__all__ = ["ClientErrors", "CLIENT_ERRORS", "librdkafka_log_level"]

logger = logging.getLogger(__name__)


class ClientErrors:
    """librdkafka's ``error_cb``: client errors through Python logging, each kind at most once a period.

    librdkafka's own stderr log is off unless ``STREAMML_LOG_LEVEL=DEBUG``
    (:func:`librdkafka_log_level`); its errors still reach the user, here, as
    one warning per kind (error code and broker) per ``period`` seconds, with
    the count of repeats held back since, so a broker outage during a long run
    gives a few lines, not one per retry. Fatal errors are never held back.

    One instance serves every client of the process (:data:`CLIENT_ERRORS`):
    components re-create consumers after a failure, and a per-client memory
    would start each new client's flood afresh. librdkafka calls it only
    inside ``poll()``/``consume()``/``flush()``, on the caller's thread (an
    admin client's errors are never served, as it is never polled), unlike a
    ``logger`` callback, which it calls from its own threads (and which can
    deadlock on close); the lock covers callers on several threads.
    """

    def __init__(self, period: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.period = period
        self._clock = clock
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    @property
    def suppressed(self) -> int:
        """How many errors are held back now (not yet counted in a logged line)."""
        with self._lock:
            return sum(self._held.values())

    def __call__(self, error: KafkaError) -> None:
        message = error.str()
        if error.fatal():
            logger.error("kafka client (fatal): %s", message)
            return
        # The same failure repeats with a changing tail ("after 12ms in state
        # CONNECT"): one key per error code and broker ("host:port/id: ...");
        # a message naming no broker counts as one kind whatever its numbers
        # ("1/1 brokers are down", then "0/2 brokers are down" on close).
        prefix, named, _ = message.partition(": ")
        key = f"{error.code()}|{prefix if named else re.sub(r'[0-9]+', 'N', message)}"
        now = self._clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.period:
                self._held[key] = self._held.get(key, 0) + 1
                return
            self._last[key] = now
            held = self._held.pop(key, 0)
        repeats = f" ({held} more like it in the last {self.period:g}s)" if held else ""
        logger.warning("kafka client: %s%s", message, repeats)


#: The ``error_cb`` of every client :func:`connection_config` configures.
CLIENT_ERRORS = ClientErrors()


def librdkafka_log_level(level: str) -> int:
    """Return librdkafka's ``log_level`` (syslog 0-7) for a streamml log level name.

    Only ``DEBUG`` lets librdkafka write its own log (to stderr, bypassing
    Python logging): 7, everything. Otherwise 0, nothing; its errors come
    through :data:`CLIENT_ERRORS` at WARNING instead of a line per retry.
    """
    return 7 if level.upper() == "DEBUG" else 0
