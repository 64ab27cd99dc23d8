"""When to publish a new model version: every N learned events or T seconds.

Publishing too often floods the models topic and every subscriber with
near-identical versions; too rarely and serving lags the learner. The time
rule only fires when something new was learned, so an idle stream publishes
nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from streamml.config import Settings
from streamml.errors import ConfigError

__all__ = ["PublishPolicy"]


class PublishPolicy:
    """Decide when the learner publishes.

    Due when ``every_events`` events were learned since the last publish, or
    when ``every_seconds`` have passed since it and at least one event was
    learned. ``clock`` returns seconds (monotonic); tests inject a fake one.
    """

    def __init__(
        self,
        every_events: int,
        every_seconds: float,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if every_events < 1:
            raise ConfigError(f"publish_every_events: must be at least 1, got {every_events}")
        if every_seconds <= 0:
            raise ConfigError(f"publish_every_seconds: must be positive, got {every_seconds}")
        self.every_events = every_events
        self.every_seconds = every_seconds
        self._clock = clock
        self._since = 0
        self._last = clock()

    @classmethod
    def from_settings(cls, settings: Settings, *, clock: Callable[[], float] = time.monotonic) -> PublishPolicy:
        return cls(settings.publish_every_events, settings.publish_every_seconds, clock=clock)

    @property
    def pending(self) -> int:
        """Events learned since the last publish."""
        return self._since

    def learned(self, n: int = 1) -> None:
        """Count ``n`` newly learned events."""
        self._since += n

    def due(self) -> bool:
        """Tell whether a version should be published now."""
        if self._since == 0:
            return False
        return self._since >= self.every_events or self._clock() - self._last >= self.every_seconds

    def published(self) -> None:
        """Restart both counts after a publish."""
        self._since = 0
        self._last = self._clock()
