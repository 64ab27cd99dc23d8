"""The acceptable versions a subscriber has seen: where each is on the models topic, and a few in memory.

A rollback or a pin may ask for any version seen so far. Keeping every
payload in memory would cost the sum of all model sizes, so the book keeps
the verdicts (payload included) of the newest few versions and of any it was
asked for, and only the position of the others; an evicted version is read
back from the topic (from its first chunk to its envelope) when needed.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from streamml.cluster import Cluster
from streamml.kafka import record_headers
from streamml.models_topic import ModelsTopicFolder, VersionEvent
from streamml.reader import read_to_end
from streamml.trust import Verdict

__all__ = ["VersionBook"]

logger = logging.getLogger(__name__)

#: Verdicts (with their payloads) kept in memory, newest first.
KEEP_IN_MEMORY = 8


@dataclass(frozen=True)
class _Position:
    start_offset: int
    offset: int


class VersionBook:
    """Acceptable versions of one model, by version number."""

    def __init__(
        self, cluster: Cluster, topic: str, folder_factory: Callable[[], ModelsTopicFolder], keep: int = KEEP_IN_MEMORY
    ) -> None:
        self._cluster = cluster
        self._topic = topic
        self._folder_factory = folder_factory
        self._keep = keep
        self._positions: dict[int, _Position] = {}
        self._cached: OrderedDict[int, Verdict] = OrderedDict()

    @property
    def acceptable(self) -> set[int]:
        """Every acceptable version seen (loadable or not yet tried)."""
        return set(self._positions)

    def clear(self) -> None:
        self._positions.clear()
        self._cached.clear()

    def add(self, verdict: Verdict, start_offset: int, offset: int) -> None:
        """Record an acceptable version (a later record of the same version replaces it)."""
        self._positions[verdict.version] = _Position(start_offset, offset)
        self._remember(verdict)

    def discard(self, version: int) -> None:
        """Forget a version that did not load here: it is no candidate any more."""
        self._positions.pop(version, None)
        self._cached.pop(version, None)

    def verdict(self, version: int) -> tuple[Verdict, int] | None:
        """The verdict of ``version`` and its offset, read back from the topic if evicted."""
        position = self._positions.get(version)
        if position is None:
            return None
        cached = self._cached.get(version)
        if cached is None:
            cached = self._read_back(version, position)
            if cached is None:
                self.discard(version)
                return None
            self._remember(cached)
        return cached, position.offset

    def _remember(self, verdict: Verdict) -> None:
        self._cached[verdict.version] = verdict
        # Keep the newest versions; the one just asked for stays too (it is about to serve).
        newest = sorted(self._cached, reverse=True)[: self._keep]
        for version in list(self._cached):
            if version not in newest and version != verdict.version:
                del self._cached[version]

    def _read_back(self, version: int, position: _Position) -> Verdict | None:
        folder = self._folder_factory()
        messages = read_to_end(self._cluster, self._topic, start={0: position.start_offset})
        try:
            for message in messages:
                offset = message.offset()
                assert offset is not None  # read_to_end yields consumed records only
                event = folder.feed(offset, message.key(), message.value(), record_headers(message))
                if offset >= position.offset:
                    if isinstance(event, VersionEvent) and event.verdict.version == version:
                        return event.verdict if event.verdict.acceptable else None
                    break
        finally:
            messages.close()
        logger.warning("v%d is no longer at %s@%d: the topic was trimmed?", version, self._topic, position.offset)
        return None
