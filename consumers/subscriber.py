"""Subscribe to a model's versions and hot-swap it inside a running app.

::

    from consumers import ModelSubscriber

    with ModelSubscriber(settings) as models:
        if models.wait_ready(timeout=30):
            y = models.predict_one(x)

    models = ModelSubscriber(settings).start(wait=30)  # ready before the first request, if a model exists
    if not models.ready: ...                           # start() returns either way: ``ready`` tells

From asyncio code (a FastAPI lifespan, an aiohttp handler), ``await
models.wait_ready_async(timeout=30)`` waits without blocking the event loop.
:meth:`~ModelSubscriber.current`, :meth:`~ModelSubscriber.predict_one` and
the other readers are safe to call from a coroutine as they are: they take no
lock and do no I/O (one reference read, then the model's own computation),
so there is no ``predict_one_async``. A model slow enough to stall the loop
is better run with ``await asyncio.to_thread(models.predict_one, x)``.
Every method may be called from any thread.

A background thread reads the models topic with ``assign()`` and no consumer
group: every app instance must see every version, and ``assign()`` avoids the
slow first group join (``docs/embedded-broker.md#first-group-join``). At start
it reads the topic to its current end (the fetch-response high watermark, see
``streamml.reader``) through a :class:`~streamml.models_topic.ModelsTopicFolder`
(envelopes, chunks of large models, signed directives), and loads the version
the topic says to serve: the newest acceptable one, unless a signed rollback
or pin says otherwise (:mod:`streamml.model_control`). Then it follows the
topic, swapping in each newer acceptable version and obeying each directive
as it arrives. Anything else is refused with a reason, logged once, counted
by reason, and the current model keeps serving.

The thread does not die on bad input: a record that fails in an unexpected
way is refused (and kept in ``last_error``), and a failing consumer is
retried with a bounded exponential backoff. ``stop()`` then ``start()``
resumes following the topic where it stopped.

Versions only move forward. If the publisher's history is lost (topic
recreated, in-memory broker restarted) it starts again at v1; those versions
are refused as "not newer" and the old model keeps serving, but each one is
logged as a warning that the version sequence went backwards and counted in
``version_regressions``, so the stale model is visible. Restart the
subscriber (a new instance) to accept the new sequence.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import logging
import threading
from collections.abc import Iterable
from typing import Any

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from consumers.swap import ModelSlot, Refusal, ServingModel, SwapCallback
from consumers.versions import VersionBook
from streamml.cluster import Cluster
from streamml.config import Settings
from streamml.errors import EnvelopeError, KafkaClientError, StreamMLError
from streamml.kafka import describe_error, format_record, record_headers
from streamml.model_control import ServingState
from streamml.models_topic import ControlEvent, ModelsTopicFolder, RecordRefused, VersionEvent
from streamml.reader import read_to_end
from streamml.trust import TrustPolicy, load_model

__all__ = ["ModelSubscriber"]

logger = logging.getLogger(__name__)

_TOPIC_RETRY_SECONDS = 1.0
#: Backoff after a failure of the consumer: doubles from the first value, capped at the second.
_RETRY_INITIAL_SECONDS = 0.5
_RETRY_MAX_SECONDS = 30.0
#: Longest one wait for a models-topic record; bounds how late a stop is noticed.
_POLL_SECONDS = 0.2


def _resolve(future: asyncio.Future[bool]) -> None:
    """Resolve a :meth:`ModelSubscriber.wait_ready_async` future (on its loop's thread)."""
    if not future.done():
        future.set_result(True)


#: What a first river model unpickles into, imported by the subscriber thread
#: before it reads the topic: the catalog's default pipeline (a scaler and a
#: linear model) needs all three, and importing them took about 3 s of a first
#: load on a busy 2-core machine (the demo's), enough for the scorer to miss v1.
WARM_UP_MODULES = ("river.compose", "river.preprocessing", "river.linear_model")


def _warm_up(modules: Iterable[str] = WARM_UP_MODULES) -> list[str]:
    """Import ``modules`` (those installed) so a first model load does not wait for them; return those imported.

    A module that fails to import is left to the model load, which reports
    it with the version it belongs to.
    """
    imported: list[str] = []
    for name in modules:
        try:
            if importlib.util.find_spec(name.split(".")[0]) is None:
                continue
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - only a head start: the load itself reports a broken install
            logger.debug("warm-up import of %s failed", name, exc_info=True)
            continue
        imported.append(name)
    return imported


def _backoff(failures: int) -> float:
    """Seconds to wait after the ``failures``-th consecutive failure (>= 1)."""
    factor: int = 2 ** min(max(failures - 1, 0), 16)  # a non-negative exponent: an int
    return min(_RETRY_MAX_SECONDS, _RETRY_INITIAL_SECONDS * factor)


class ModelSubscriber:
    """Keep the newest trustworthy version of a model loaded, in the background.

    ``cluster`` is a :class:`~streamml.cluster.Cluster` or the settings to
    make one from. ``model_name`` defaults to ``settings.model_name``;
    envelopes must be signed by a key of ``settings.model_trusted_keys`` (unsigned
    ones are accepted only in development mode).
    Predictions before the first model is loaded raise
    :class:`~streamml.errors.ModelNotReadyError`, never a default answer.
    """

    def __init__(
        self,
        cluster: Cluster | Settings,
        *,
        model_name: str | None = None,
        on_swap: SwapCallback | None = None,
        allow_runtime_mismatch: bool = False,
    ) -> None:
        self.cluster = Cluster.of(cluster)
        self.settings = self.cluster.settings
        self.model_name = model_name or self.settings.model_name
        self.topic = self.cluster.topics.models
        self._policy = TrustPolicy.from_settings(self.settings, allow_runtime_mismatch=allow_runtime_mismatch)
        self._slot = ModelSlot(self.model_name, self._policy)
        self._folder = ModelsTopicFolder(
            self._policy, model_name=self.model_name, max_bytes=self.settings.max_model_total_bytes
        )
        self._state = ServingState()
        #: Versions already loaded once here (as a directive's target, or served).
        self._loadable: set[int] = set()
        self._book = VersionBook(self.cluster, self.topic, self._folder_factory)
        if on_swap is not None:
            self._slot.on_swap(on_swap)
        self._stop = threading.Event()
        self._lifecycle = threading.Lock()
        self._thread: threading.Thread | None = None
        #: Offset of the next models-topic record to read; ``None`` until the start-up catch-up is done.
        self._next_offset: int | None = None
        self._failures = 0
        #: Where the follow loop stands on the models topic: its position (past
        #: transaction markers) and the topic's end, from the last poll.
        self._position: tuple[int, int] | None = None
        #: The last error the background thread hit (it keeps going: a bad
        #: record is refused, a failing consumer is retried with backoff).
        self.last_error: Exception | None = None
        #: Set once the start-up read to the topic's end is done, whether or not it found a model.
        self._caught_up = threading.Event()
        #: Coroutines waiting in :meth:`wait_ready_async`: their loop and the future to resolve.
        self._async_waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Future[bool]]] = set()
        self._async_lock = threading.Lock()
        self._slot.on_swap(self._wake_async_waiters)

    # -- lifecycle -------------------------------------------------------
    def start(self, wait: float | None = None) -> ModelSubscriber:
        """Start the background thread (returns ``self``); a no-op if it is running.

        With ``wait``, block until a model is loaded or ``wait`` seconds
        passed, so an app whose model exists is ready before its first
        request. It returns ``self`` either way: :attr:`ready` tells which
        (a topic with no acceptable version yet is not an error, the thread
        keeps following it).

        After :meth:`stop` it may be started again: it resumes following the
        topic where it stopped. Raises :class:`RuntimeError` if a previous
        :meth:`stop` timed out and that thread is still winding down.
        """
        with self._lifecycle:
            if self._thread is not None and self._thread.is_alive():
                if self._stop.is_set():
                    raise RuntimeError(
                        f"the model subscriber thread for {self.model_name!r} is still stopping; "
                        "call stop() again first"
                    )
            else:
                self._stop.clear()
                self._thread = threading.Thread(
                    target=self._run, name=f"model-subscriber-{self.model_name}", daemon=True
                )
                self._thread.start()
        if wait is not None:
            self.wait_ready(wait)  # outside the lifecycle lock: stop() must not wait behind it
        return self

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop the background thread; the loaded model keeps answering.

        Returns ``False`` if the thread has not ended within ``timeout`` (it
        still will; call ``stop()`` again to wait more).
        """
        self._stop.set()
        with self._lifecycle:
            thread = self._thread
            if thread is None:
                return True
            thread.join(timeout)
            if thread.is_alive():
                logger.warning("model subscriber for %s did not stop within %gs", self.model_name, timeout)
                return False
            self._thread = None
            return True

    def __enter__(self) -> ModelSubscriber:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- state -----------------------------------------------------------
    @property
    def ready(self) -> bool:
        """``True`` once a model is loaded."""
        return self._slot.version is not None

    @property
    def version(self) -> int | None:
        """The serving version, ``None`` before ready."""
        return self._slot.version

    @property
    def envelope(self) -> dict[str, Any] | None:
        """Summary (no payload) of the serving envelope, ``None`` before ready."""
        return self._slot.current().envelope if self.ready else None

    @property
    def mode(self) -> str | None:
        """Why the serving version serves: ``latest``, ``pinned`` or ``rolled_back`` (``None`` before ready)."""
        return self._slot.current().mode if self.ready else None

    @property
    def refused_by_reason(self) -> dict[str, int]:
        """How many records were refused, by kind of reason (``unsigned``, ``untrusted_key``, ...)."""
        return dict(self._slot.refused_by_kind)

    @property
    def swaps(self) -> int:
        """Models installed so far (the first load counts)."""
        return self._slot.swaps

    @property
    def refused(self) -> list[Refusal]:
        """``(offset, version, reason)`` of the most recent records that were not loaded (at most 1000)."""
        return list(self._slot.refused)

    @property
    def refused_total(self) -> int:
        """How many records were not loaded, in all."""
        return self._slot.refused_total

    @property
    def version_regressions(self) -> int:
        """Authentic versions that arrived older than the serving one (publisher history lost?)."""
        return self._slot.version_regressions

    def current(self) -> ServingModel:
        """Return the serving model and its version (one consistent snapshot).

        Use it to predict several times with the same version, or to report
        which version answered. Raises :class:`ModelNotReadyError` before ready.
        """
        return self._slot.current()

    def predict_one(self, x: dict[str, Any]) -> Any:
        """Predict with the serving model; :class:`ModelNotReadyError` before ready."""
        return self._slot.current().predict_one(x)

    def predict_proba_one(self, x: dict[str, Any]) -> dict[Any, float]:
        """Class probabilities from the serving model; :class:`ModelNotReadyError` before ready."""
        return self._slot.current().predict_proba_one(x)

    def on_swap(self, callback: SwapCallback) -> None:
        """Register ``callback(old_version, new_version, envelope_summary)``, run after each swap.

        Callbacks run on the subscriber thread; their exceptions are logged.
        """
        self._slot.on_swap(callback)

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block until a model is loaded; ``False`` on timeout."""
        return self._slot.wait_for(lambda s: s is not None, timeout)

    async def wait_ready_async(self, timeout: float | None = None) -> bool:
        """Wait until a model is loaded without blocking the event loop; ``False`` on timeout.

        No thread waits on the coroutine's behalf: the swap that loads the
        first model resolves a future on the caller's loop. Cancelling the
        coroutine leaves nothing behind.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        waiter = (loop, future)
        # Checked under the lock the swap callback takes: a model loaded after
        # this check finds the waiter registered, so no wake-up is lost.
        with self._async_lock:
            if self.ready:
                return True
            self._async_waiters.add(waiter)
        try:
            return await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            return self.ready
        finally:
            with self._async_lock:
                self._async_waiters.discard(waiter)

    def _wake_async_waiters(self, _old: int | None, _new: int, _envelope: dict[str, Any]) -> None:
        """Swap callback (subscriber thread): resolve every :meth:`wait_ready_async` future, on its own loop."""
        with self._async_lock:
            waiters, self._async_waiters = self._async_waiters, set()
        for loop, future in waiters:
            try:
                loop.call_soon_threadsafe(_resolve, future)
            except RuntimeError:  # that loop is closed: nobody is waiting any more
                logger.debug("wait_ready_async: the waiting event loop is closed")

    @property
    def caught_up(self) -> bool:
        """``True`` once the start-up read to the models topic's end is done (with or without a model).

        ``caught_up and not ready``: the topic holds no version this process
        accepts yet (``refused`` says why), so waiting longer only helps if
        one is published.
        """
        return self._caught_up.is_set()

    @property
    def models_topic_position(self) -> tuple[int, int] | None:
        """``(position, log end)`` of this subscriber on the models topic, as of its last poll.

        It reads with ``assign()`` and commits nothing, so no consumer group
        shows it; this is its lag (``log end - position``), reported by the
        ``streamml_model_topic_*`` metrics of serve and the scorer. The
        position is the consumer's own, past the transaction markers the
        publisher writes, so a subscriber that read everything is at the end.
        ``None`` before the follow loop polled.
        """
        return self._position

    def wait_caught_up(self, timeout: float | None = None) -> bool:
        """Block until the start-up read to the topic's end is done; ``False`` on timeout."""
        return self._caught_up.wait(timeout)

    def wait_for_version(self, version: int, timeout: float | None = None) -> bool:
        """Block until version ``version`` or a newer one serves; ``False`` on timeout."""
        return self._slot.wait_for(lambda s: s is not None and s.version >= version, timeout)

    # -- background thread -----------------------------------------------
    def _run(self) -> None:
        if self._next_offset is None:  # the first start: a head start for the first model load
            _warm_up()
        while not self._stop.is_set():
            try:
                if self._next_offset is None:
                    start = self._catch_up()
                    if start is None:  # topic missing (or stopping): wait for it
                        self._stop.wait(_TOPIC_RETRY_SECONDS)
                        continue
                    self._next_offset = start
                    self._failures = 0
                    self._caught_up.set()
                self._follow()
            except Exception as exc:  # the thread must outlive any one failure
                self._failures += 1
                delay = _backoff(self._failures)
                self.last_error = exc
                logger.error(
                    "model subscriber for %s: %s; retrying in %gs",
                    self.topic,
                    exc,
                    delay,
                    exc_info=not isinstance(exc, StreamMLError),
                )
                self._stop.wait(delay)

    def _folder_factory(self) -> ModelsTopicFolder:
        return ModelsTopicFolder(
            self._policy, model_name=self.model_name, max_bytes=self.settings.max_model_total_bytes
        )

    def _catch_up(self) -> int | None:
        """Read to the current end, then load what the topic says to serve; return the next offset.

        ``None`` when the topic does not exist yet or :meth:`stop` was called.
        """
        if not self.cluster.partitions(self.topic):
            return None
        self._folder = self._folder_factory()
        self._state = ServingState()
        self._book.clear()
        next_offset = 0
        messages = read_to_end(self.cluster, self.topic)
        try:
            for message in messages:
                if self._stop.is_set():
                    return None
                next_offset = self._take(message, following=False)
        finally:
            messages.close()  # closes the reader's consumer now, not at garbage collection
        if self._stop.is_set():
            return None
        self._converge()
        return next_offset

    def _follow(self) -> None:
        """Apply records as they arrive from ``_next_offset``, until stopped.

        ``_next_offset`` advances with every record, so after a failure the
        next call resumes where this one was instead of replaying.
        """
        assert self._next_offset is not None
        consumer: Consumer = self.cluster.consumer(
            "subscriber", **{"fetch.wait.max.ms": self.settings.fetch_wait_max_ms}
        )
        partition = TopicPartition(self.topic, 0, self._next_offset)
        try:
            consumer.assign([partition])
            while not self._stop.is_set():
                # poll() returns as soon as one record is there; consume(n, t) would
                # wait the whole timeout for n records and delay every swap.
                first = consumer.poll(_POLL_SECONDS)
                self._failures = 0  # the consumer works again
                self._note_position(consumer, partition)
                if first is None:
                    continue
                for message in [first, *consumer.consume(100, 0)]:
                    if message.error():
                        logger.warning("models topic %s: %s", self.topic, message.error())
                        continue
                    self._next_offset = self._take(message, following=True)
        except KafkaException as exc:
            raise KafkaClientError(f"cannot read {self.topic}: {describe_error(exc)}") from exc
        finally:
            try:
                consumer.close()
            except Exception:  # a failed close must not hide the real outcome
                logger.debug("closing the models-topic consumer failed", exc_info=True)

    def _note_position(self, consumer: Consumer, partition: TopicPartition) -> None:
        # The end from the last fetch response (cached: no request; ListOffsets is wrong
        # on the embedded broker); -1001 (invalid) until a fetch answered. A report,
        # not the follow loop's business: if it cannot be read, the last one stands.
        try:
            _, end = consumer.get_watermark_offsets(partition, cached=True)
            [at] = consumer.position([partition])
        except KafkaException:
            return
        position = at.offset if at.offset >= 0 else self._next_offset
        if end >= 0 and position is not None:
            self._position = (position, max(end, position))

    def _take(self, message: Message, *, following: bool) -> int:
        """Fold one record into the state (and, when following, act on it); return the next offset."""
        offset = message.offset()
        assert offset is not None  # set on every consumed record
        try:
            event = self._folder.feed(offset, message.key(), message.value(), record_headers(message))
            if isinstance(event, RecordRefused):
                self._slot.refuse(offset, None, f"{format_record(self.topic, 0, offset)}: {event.reason}")
            elif isinstance(event, VersionEvent):
                self._on_version(event, following)
            elif isinstance(event, ControlEvent):
                self._on_control(event, following)
        except Exception as exc:  # noqa: BLE001 - one bad record must not end the thread
            self._refuse_unexpected(offset, exc)
        return offset + 1

    def _on_version(self, event: VersionEvent, following: bool) -> None:
        verdict = event.verdict
        if not verdict.acceptable:
            self._slot.refuse(event.offset, verdict.version, verdict.reason or "refused")
            if verdict.authentic:
                self._state.saw_version(verdict.version)
            return
        self._state.saw_version(verdict.version)
        self._book.add(verdict, event.start_offset, event.offset)
        if following:
            serving = self._slot.version
            if self._state.pinned is None and serving is not None and verdict.version <= serving:
                self._slot.offer(verdict, event.offset)  # refused as not newer, counted if a regression
                return
            self._converge()

    def _on_control(self, event: ControlEvent, following: bool) -> None:
        problem = event.problem or self._target_problem(event.record.version)
        problem = problem or self._state.apply(event.record, self._book.acceptable)
        if problem is not None:
            self._slot.refuse(event.offset, event.record.version, f"directive refused: {problem}")
            return
        logger.warning("models topic %s@%d: obeying %s", self.topic, event.offset, event.record.describe())
        if following:
            self._converge()

    def _target_problem(self, version: int | None) -> str | None:
        """Why a directive's target cannot serve here (it verifies but does not load), else ``None``.

        Checked before the directive is applied, so a pin or rollback to a
        model this process cannot run is refused and the current model keeps
        serving, instead of leaving the state pointing at nothing.
        """
        if version is None or version in self._loadable:
            return None
        found = self._book.verdict(version)
        if found is None:
            return None  # not acceptable: ServingState.apply refuses it with the reason
        try:
            load_model(found[0])
        except EnvelopeError as exc:
            self._book.discard(version)
            return f"v{version} does not load here: {exc}"
        self._loadable.add(version)
        return None

    def _converge(self) -> None:
        """Serve what the state says; a version that fails to load is dropped and the next best tried."""
        while True:
            target = self._state.choose(self._book.acceptable)
            if target is None:
                return
            mode = self._state.mode_for(target)
            if target == self._slot.version:
                self._slot.set_mode(mode)
                return
            found = self._book.verdict(target)
            if found is not None:
                verdict, offset = found
                serving = self._slot.version
                if mode == "latest" and (serving is None or target > serving):
                    installed = self._slot.offer(verdict, offset)
                else:
                    installed = self._slot.install(verdict, offset, mode=mode)
                if installed:
                    return
            # Not loadable here (refused with its reason): never a candidate again.
            self._book.discard(target)

    def _refuse_unexpected(self, offset: int, exc: Exception) -> None:
        """A record broke its handling in an unexpected way: keep the error, refuse the record, go on."""
        self.last_error = exc
        logger.error("model subscriber for %s: record at offset %d failed", self.topic, offset, exc_info=exc)
        self._slot.refuse(offset, None, f"unexpected error handling the record: {type(exc).__name__}: {exc}")
