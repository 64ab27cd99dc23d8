"""Calls the demo makes to watch the pipeline, each waited for at most a bound.

A Kafka client call can block past every timeout it was given: librdkafka's
``Consumer.close()`` takes none, and the embedded broker leaves some requests
unanswered (``docs/embedded-broker.md``). The demo's loop must keep its own
deadline whatever a watcher does, so each watcher call runs on a daemon
thread of its own and the loop waits for it at most ``timeout`` seconds.

A call that has not returned keeps its thread (a thread cannot be killed);
until it returns, further calls on the same :class:`BoundedCalls` wait for
it within their own bound, then fail instead of piling up more stuck threads. Daemon threads do not keep
the process alive when it exits.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from streamml.errors import StreamMLError

__all__ = ["BoundedCalls", "CallStalled"]

T = TypeVar("T")


class CallStalled(StreamMLError):
    """A watcher call did not return within its bound (or an earlier one still has not)."""

    exit_code = 3


class _Call(Generic[T]):
    def __init__(self, what: str, fn: Callable[[], T]) -> None:
        self.what = what
        self.started = time.monotonic()
        self.done = threading.Event()
        self.result: T | None = None
        self.error: BaseException | None = None
        self._fn = fn

    def run(self) -> None:
        try:
            self.result = self._fn()
        except BaseException as exc:  # handed to the waiting caller, which decides
            self.error = exc
        finally:
            self.done.set()


class BoundedCalls:
    """Run one call at a time on a daemon thread; wait for each at most its ``timeout``."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._pending: _Call[object] | None = None

    @property
    def stalled(self) -> str | None:
        """What the call that has not returned is doing and for how long, or ``None``."""
        pending = self._pending
        if pending is None or pending.done.is_set():
            return None
        return f"{pending.what} (no answer for {time.monotonic() - pending.started:.0f}s)"

    def call(self, what: str, fn: Callable[[], T], timeout: float) -> T:
        """Return ``fn()``, or raise :class:`CallStalled` if it takes longer than ``timeout`` seconds.

        An exception ``fn`` raises is raised here. If an earlier call has not
        returned yet, it is given ``timeout`` to return; if it still has not,
        raises :class:`CallStalled` without calling ``fn`` (one stuck thread at most).
        """
        started = time.monotonic()
        pending = self._pending
        if pending is not None and not pending.done.wait(timeout):
            raise CallStalled(f"{self.name}: still waiting for {self.stalled}")
        timeout = max(0.0, timeout - (time.monotonic() - started))
        call: _Call[T] = _Call(what, fn)
        thread = threading.Thread(target=call.run, name=f"{self.name}: {what}", daemon=True)
        self._pending = call  # type: ignore[assignment]  # only its done/what/started are read back
        thread.start()
        if not call.done.wait(timeout):
            raise CallStalled(f"{self.name}: {what} did not return within {timeout:.1f}s")
        self._pending = None
        if call.error is not None:
            raise call.error
        return call.result  # type: ignore[return-value]  # set by run() when no error was raised
