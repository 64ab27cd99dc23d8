"""Rate limiting on a schedule: event ``n`` is due ``n / rate`` seconds after the start.

A schedule keeps the long-run rate exact even though each wait is coarse (the
producer's ``poll`` waits in whole milliseconds): a late event is followed by a
short burst that catches up. The burst is bounded by ``max_lag`` so a stall
(a full queue, a slow broker) is not followed by a flood.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["Pacer"]


class Pacer:
    """Tells the caller how long to wait before each event to hold ``rate`` events/s.

    The clock is injectable so the arithmetic can be tested without sleeping.
    The pacer never sleeps itself: the caller waits in a way that keeps doing
    useful work (the produce loop serves delivery reports while it waits).
    """

    def __init__(
        self,
        rate: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_lag: float = 1.0,
    ) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be positive, got {rate}")
        self.rate = rate
        self.max_lag = max_lag
        self._clock = clock
        self._start: float | None = None
        self._count = 0

    def delay(self) -> float:
        """Return the seconds to wait before the next event (0 if it is due), and count it."""
        now = self._clock()
        if self._start is None:
            self._start = now
        due = self._start + self._count / self.rate
        if now - due > self.max_lag:
            # Too far behind: restart the schedule here instead of bursting.
            self._start, self._count = now, 0
            due = now
        self._count += 1
        return max(0.0, due - now)
