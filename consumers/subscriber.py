"""Subscribe to a model's versions and hot-swap it inside a running app.

::

    from consumers import ModelSubscriber

    with ModelSubscriber(settings) as models:
        if models.wait_ready(timeout=30):
            y = models.predict_one(x)

A background thread reads the models topic with ``assign()`` and no consumer
group: every app instance must see every version, and ``assign()`` avoids the
slow first group join (BROKER-NOTES quirk 2). At start it reads the topic to
its current end (the fetch-response high watermark, see ``streamml.reader``)
and loads the newest version that verifies; then it follows the topic and
swaps in each newer version that verifies. Anything else is refused with a
reason and the current model keeps serving.
"""

from __future__ import annotations

import logging
import threading
import uuid
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

from consumers.swap import ModelSlot, Refusal, ServingModel, SwapCallback
from streamml.config import Settings
from streamml.envelope import ModelEnvelope, decode_envelope, verify
from streamml.errors import EnvelopeError, KafkaClientError, StreamMLError
from streamml.kafka import describe_error, format_record, make_consumer
from streamml.reader import partitions_of, read_to_end
from streamml.topics import Topics

__all__ = ["ModelSubscriber"]

logger = logging.getLogger(__name__)

#: Verified start-up candidates kept in memory (newest first) in case the
#: newest fails to load; older ones are superseded and dropped.
_FALLBACKS = 8
_TOPIC_RETRY_SECONDS = 1.0


class ModelSubscriber:
    """Keep the newest trustworthy version of a model loaded, in the background.

    ``model_name`` defaults to ``settings.model_name``; envelopes are checked
    with ``settings.model_signing_key`` when it is set. Predictions before the
    first model is loaded raise :class:`~streamml.errors.ModelNotReadyError`,
    never a default answer.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        model_name: str | None = None,
        on_swap: SwapCallback | None = None,
        allow_runtime_mismatch: bool = False,
    ) -> None:
        self.settings = settings
        self.model_name = model_name or settings.model_name
        self.topic = Topics.from_settings(settings).models
        self._signing_key = settings.model_signing_key.get() if settings.model_signing_key else None
        self._allow_runtime_mismatch = allow_runtime_mismatch
        self._slot = ModelSlot(
            self.model_name, signing_key=self._signing_key, allow_runtime_mismatch=allow_runtime_mismatch
        )
        if on_swap is not None:
            self._slot.on_swap(on_swap)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: The last error the background thread hit (it keeps retrying).
        self.last_error: StreamMLError | None = None

    # -- lifecycle -------------------------------------------------------
    def start(self) -> ModelSubscriber:
        """Start the background thread (returns ``self``)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"model-subscriber-{self.model_name}", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the background thread; the loaded model keeps answering."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

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
    def swaps(self) -> int:
        """Models installed so far (the first load counts)."""
        return self._slot.swaps

    @property
    def refused(self) -> list[Refusal]:
        """``(offset, version, reason)`` of every record that was not loaded."""
        return list(self._slot.refused)

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

    def wait_for_version(self, version: int, timeout: float | None = None) -> bool:
        """Block until version ``version`` or a newer one serves; ``False`` on timeout."""
        return self._slot.wait_for(lambda s: s is not None and s.version >= version, timeout)

    # -- background thread -----------------------------------------------
    def _run(self) -> None:
        next_offset: int | None = None
        while not self._stop.is_set():
            try:
                if next_offset is None:
                    next_offset = self._catch_up()
                    if next_offset is None:  # topic missing: wait for it
                        self._stop.wait(_TOPIC_RETRY_SECONDS)
                        continue
                next_offset = self._follow(next_offset)
            except StreamMLError as exc:
                self.last_error = exc
                logger.error("model subscriber for %s: %s; retrying", self.topic, exc)
                self._stop.wait(_TOPIC_RETRY_SECONDS)

    def _catch_up(self) -> int | None:
        """Read to the current end and load the newest good version; return the next offset."""
        if not partitions_of(self.settings, self.topic):
            return None
        candidates: list[tuple[int, ModelEnvelope]] = []
        next_offset = 0
        for message in read_to_end(self.settings, self.topic):
            next_offset = message.offset() + 1
            envelope = self._decode(message.offset(), message.key(), message.value(), message.headers())
            if envelope is None or envelope.model_name != self.model_name:
                continue
            try:
                verify(envelope, signing_key=self._signing_key, allow_runtime_mismatch=self._allow_runtime_mismatch)
            except EnvelopeError as exc:
                self._slot.refuse(message.offset(), envelope.version, str(exc))
                continue
            candidates.append((message.offset(), envelope))
            if len(candidates) > 2 * _FALLBACKS:
                candidates = sorted(candidates, key=lambda c: c[1].version, reverse=True)[:_FALLBACKS]
        self._slot.load_newest(candidates)
        return next_offset

    def _follow(self, start: int) -> int:
        """Swap in newer versions as they arrive, until stopped; return the next offset."""
        consumer: Consumer = make_consumer(
            self.settings, f"streamml.subscriber.{uuid.uuid4().hex}", **{"enable.auto.commit": False}
        )
        next_offset = start
        try:
            consumer.assign([TopicPartition(self.topic, 0, start)])
            while not self._stop.is_set():
                for message in consumer.consume(100, timeout=0.2):
                    if message.error():
                        logger.warning("models topic %s: %s", self.topic, message.error())
                        continue
                    next_offset = message.offset() + 1
                    envelope = self._decode(message.offset(), message.key(), message.value(), message.headers())
                    if envelope is not None:
                        self._slot.offer(envelope, message.offset())
        except KafkaException as exc:
            raise KafkaClientError(f"cannot read {self.topic}: {describe_error(exc)}") from exc
        finally:
            consumer.close()
        return next_offset

    def _decode(self, offset: int, key: bytes | None, value: bytes | None, headers: Any) -> ModelEnvelope | None:
        try:
            return decode_envelope(value, headers)
        except EnvelopeError as exc:
            # Only this model's records (or unkeyed ones) are ours to refuse.
            if key is None or key.decode("utf-8", errors="replace") == self.model_name:
                self._slot.refuse(offset, None, f"{format_record(self.topic, 0, offset)}: {exc}")
            return None
