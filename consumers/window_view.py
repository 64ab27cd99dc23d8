"""The stream processor's per-key window state, followed in a serving process.

The processor keeps each key's window buckets in a faust table whose
changelog topic (:func:`streamml.topics.window_changelog`) is compacted and
keyed by the raw event's key. :class:`WindowView` reads that topic to its
end in a background thread, then follows it, so a serving app can compute
the windowed features of an event (``key_events_60s``, ``loan_mean_60s``)
from the same state the stream computes them from
(:mod:`consumers.serving_features`).

What a lookup sees is the state as of the last changelog record read: the
processor sends a key's record with the batch that changed it, so the view
trails the stream by about one batch plus the read latency. Until the first
read to the end is done the view is not :attr:`~WindowView.ready`, and
callers must say the windowed features are unavailable rather than compute
them from an empty state.

Values are kept as the raw JSON bytes and decoded on lookup: most keys are
written many times and read rarely.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Message, TopicPartition

from streamml.cluster import Cluster
from streamml.config import Settings
from streamml.errors import KafkaClientError, StreamMLError
from streamml.kafka import describe_error
from streamml.reader import read_to_end
from streamml.topics import window_changelog
from streamml.windows import WindowSpec, WindowState

__all__ = ["WindowView"]

logger = logging.getLogger(__name__)

#: Longest one wait for a changelog record; bounds how late a stop is noticed.
_POLL_SECONDS = 0.2
_RETRY_SECONDS = 1.0


class WindowView:
    """Follow the processor's window changelog and answer "what is key K's window state now?".

    ``cluster`` is a :class:`~streamml.cluster.Cluster` or the settings to
    make one from; ``topic`` defaults to the processor's changelog for this
    namespace. Start it (or use it as a context manager) before looking up.
    """

    def __init__(self, cluster: Cluster | Settings, spec: WindowSpec, *, topic: str | None = None) -> None:
        self.cluster = Cluster.of(cluster)
        self.spec = spec
        self.topic = topic or window_changelog(self.cluster.groups)
        #: key -> the newest changelog value (JSON bytes); a tombstone deletes.
        self._values: dict[bytes, bytes] = {}
        self._positions: dict[int, int] = {}
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: Why the view is not ready, for error messages (``None`` once ready).
        self.problem: str | None = "the window state has not been read yet"
        #: Changelog records read so far.
        self.records = 0

    # -- lifecycle -------------------------------------------------------
    def start(self) -> WindowView:
        """Start the background reader (a no-op if it runs); returns ``self``."""
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name=f"window-view-{self.topic}", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop the reader; ``False`` if it did not end within ``timeout``."""
        self._stop.set()
        thread = self._thread
        if thread is None:
            return True
        thread.join(timeout)
        if thread.is_alive():
            return False
        self._thread = None
        return True

    def __enter__(self) -> WindowView:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- lookups ---------------------------------------------------------
    @property
    def ready(self) -> bool:
        """``True`` once the changelog was read to its end at least once."""
        return self._ready.is_set()

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block until :attr:`ready`; ``False`` on timeout."""
        return self._ready.wait(timeout)

    def state(self, key: bytes) -> WindowState:
        """The window state of ``key`` as last read (empty for a key the processor never saw).

        Raises ``ValueError`` for state this spec cannot read (written under
        another window length or field list it is discarded, like the
        processor does: that comes back empty).
        """
        raw = self._values.get(key)
        if raw is None:
            return WindowState()
        return WindowState.load(json.loads(raw), self.spec)

    def __len__(self) -> int:
        return len(self._values)

    # -- background thread -----------------------------------------------
    def _run(self) -> None:
        caught_up = False
        while not self._stop.is_set():
            try:
                if not caught_up:
                    caught_up = self._catch_up()
                    if not caught_up:
                        self._stop.wait(_RETRY_SECONDS)
                        continue
                self._follow()
            except Exception as exc:  # the thread must outlive any one failure
                logger.error(
                    "window view of %s: %s; retrying in %gs", self.topic, exc, _RETRY_SECONDS,
                    exc_info=not isinstance(exc, StreamMLError),
                )
                self._stop.wait(_RETRY_SECONDS)

    def _catch_up(self) -> bool:
        partitions = self.cluster.partitions(self.topic)
        if not partitions:
            self.problem = (
                f"the processor's window state topic {self.topic} does not exist yet (has `streamml process` run "
                "in this namespace?)"
            )
            return False
        messages = read_to_end(self.cluster, self.topic)
        try:
            for message in messages:
                if self._stop.is_set():
                    return False
                self._take(message)
        finally:
            messages.close()
        for partition in partitions:
            self._positions.setdefault(partition, OFFSET_BEGINNING)
        self.problem = None
        self._ready.set()
        logger.info("window view of %s: %d keys read", self.topic, len(self._values))
        return True

    def _follow(self) -> None:
        consumer: Consumer = self.cluster.consumer("window-view")
        try:
            consumer.assign([TopicPartition(self.topic, p, o) for p, o in self._positions.items()])
            while not self._stop.is_set():
                first = consumer.poll(_POLL_SECONDS)
                if first is None:
                    continue
                for message in [first, *consumer.consume(500, 0)]:
                    if message.error():
                        logger.debug("window changelog %s: %s", self.topic, message.error())
                        continue
                    self._take(message)
        except KafkaException as exc:
            raise KafkaClientError(f"cannot read {self.topic}: {describe_error(exc)}") from exc
        finally:
            try:
                consumer.close()
            except Exception:  # a failed close must not hide the real outcome
                logger.debug("closing the window-view consumer failed", exc_info=True)

    def _take(self, message: Message) -> None:
        key, value, partition, offset = message.key(), message.value(), message.partition(), message.offset()
        if partition is not None and offset is not None:
            self._positions[partition] = offset + 1
        self.records += 1
        if key is None:
            return
        if value is None:
            self._values.pop(key, None)
        else:
            self._values[key] = value

    def describe(self) -> dict[str, Any]:
        """What the view holds, for status pages: topic, readiness, keys, records read."""
        return {"topic": self.topic, "ready": self.ready, "keys": len(self._values), "records": self.records,
                "problem": self.problem}
