"""The broker side of ``streamml monitor``: its reads of lag and of the topics, each bounded.

A Kafka client call can block past every timeout it was given (librdkafka's
``close()`` takes none; the embedded broker leaves some requests unanswered,
``docs/embedded-broker.md``), so each read runs through a
:class:`~streamml_cli.orchestration.bounded.BoundedCalls` and the sampler waits
for it at most ``call_timeout`` seconds: past that the sample says so and the
lag is unknown, never 0.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from streamml.cluster import Cluster
from streamml.errors import MissingTopicError
from streamml.lag import GroupLag, observe_lag
from streamml_cli.orchestration.bounded import BoundedCalls
from streamml_cli.orchestration.monitor import PipelineMonitor, PipelineSnapshot

__all__ = ["TopicReader", "BrokerReaders", "broker_readers"]

logger = logging.getLogger(__name__)

#: Records read from the watched topics per sample at most: a monitor started on a long history catches up
#: over several samples instead of overrunning its bound in the first one.
MAX_RECORDS_PER_SAMPLE = 20_000


class TopicReader:
    """Reads the pipeline's topics with a :class:`PipelineMonitor`, made once every topic it reads exists.

    A monitor started before ``streamml topics create`` raises
    :class:`~streamml.errors.MissingTopicError` on each call until the topics
    are there (a :class:`PipelineMonitor` made earlier would never see them).
    Not thread-safe: call it from one thread at a time.
    """

    def __init__(self, cluster: Cluster, *, timeout: float = 5.0, max_records: int = MAX_RECORDS_PER_SAMPLE) -> None:
        self._cluster = cluster
        self._timeout = timeout
        self._max_records = max_records
        self._monitor: PipelineMonitor | None = None

    def __call__(self) -> PipelineSnapshot:
        if self._monitor is None:
            topics = self._cluster.topics
            needed = [topics.raw_events, topics.features, topics.dead_letters, topics.predictions, topics.models,
                      topics.monitoring]
            found = self._cluster.partition_counts(needed, timeout=self._timeout)
            missing = [name for name in needed if name not in found]
            if missing:
                raise MissingTopicError(missing, self._cluster.settings.bootstrap_servers)
            self._monitor = PipelineMonitor(self._cluster)
        return self._monitor.poll(max_records=self._max_records)

    def close(self) -> None:
        if self._monitor is not None:
            self._monitor.close()
            self._monitor = None


@dataclass
class BrokerReaders:
    """The sampler's two reads, each returning within its bound, and how to close what they hold."""

    read_lag: Callable[[], list[GroupLag]]
    read_topics: Callable[[], PipelineSnapshot]
    close: Callable[[], None]


def broker_readers(cluster: Cluster, *, call_timeout: float = 15.0, lag_timeout: float = 5.0) -> BrokerReaders:
    """Bounded readers of ``cluster``'s lag and topics for :class:`~.monitor_service.Sampler`.

    ``lag_timeout`` is the lag probe's own timeout per request; ``call_timeout``
    the most a read may take before the sampler gives up on it
    (:class:`~streamml_cli.orchestration.bounded.CallStalled`, one thread left waiting at most).
    """
    lag_calls = BoundedCalls("probing consumer lag")
    topic_calls = BoundedCalls("reading the pipeline's topics")
    reader = TopicReader(cluster, timeout=lag_timeout)

    def read_lag() -> list[GroupLag]:
        return lag_calls.call("a lag probe", lambda: observe_lag(cluster, timeout=lag_timeout), call_timeout)

    def read_topics() -> PipelineSnapshot:
        return topic_calls.call("a read of the topics", reader, call_timeout)

    def close() -> None:
        try:  # a few seconds even when the broker is gone: the close frees its resources
            topic_calls.call("closing the topic reader", reader.close, 5.0)
        except Exception as exc:  # shutting down: say what failed, never mask the exit
            logger.warning("closing the monitor's topic reader: %s", exc)

    return BrokerReaders(read_lag, read_topics, close)
