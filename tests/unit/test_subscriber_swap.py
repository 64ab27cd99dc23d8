"""The swap rules of ModelSlot (what ModelSubscriber runs), without a broker."""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from consumers.swap import ModelSlot
from streamml.cluster import Cluster
from streamml.config import load_settings
from streamml.envelope import (
    ModelEnvelope,
    TrustPolicy,
    _sign,
    _signed_bytes,
    encode_envelope,
    envelope_headers,
    seal,
)
from streamml.errors import ModelNotReadyError
from tests.conftest import eventually

KEY = "s3cret"


class Constant:
    """A picklable model that always answers ``answer``."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer

    def predict_one(self, x: dict[str, Any]) -> Any:
        return self.answer

    def predict_proba_one(self, x: dict[str, Any]) -> dict[Any, float]:
        return {self.answer: 1.0}


def envelope(version: int, *, key: str | None = KEY, name: str = "m", model: Any = None) -> ModelEnvelope:
    return seal(model or Constant(version), model_name=name, version=version, flavor="river", signing_key=key)


def resigned(env: ModelEnvelope, key: str = KEY, **changes: Any) -> ModelEnvelope:
    """``env`` with ``changes``, signed again: what an honest publisher with that runtime would send."""
    changed = dataclasses.replace(env, **changes)
    return dataclasses.replace(changed, signature=_sign(key, _signed_bytes(changed)))


def flip_payload_byte(env: ModelEnvelope) -> ModelEnvelope:
    payload = bytearray(env.payload)
    payload[len(payload) // 2] ^= 0xFF
    return dataclasses.replace(env, payload=bytes(payload))


@pytest.fixture
def slot() -> ModelSlot:
    s = ModelSlot("m", TrustPolicy(signing_key=KEY))
    assert s.offer(envelope(1))
    return s


def test_nothing_serves_before_the_first_model() -> None:
    fresh = ModelSlot("m", TrustPolicy(signing_key=KEY))
    assert fresh.version is None
    with pytest.raises(ModelNotReadyError):
        fresh.current()


def test_a_newer_version_swaps_and_calls_back_after_the_swap(slot: ModelSlot) -> None:
    seen = []
    slot.on_swap(lambda old, new, env: seen.append((old, new, env["version"], slot.version)))
    assert slot.offer(envelope(2))
    assert slot.current().predict_one({}) == 2
    assert seen == [(1, 2, 2, 2)] and slot.swaps == 2


def test_a_failing_callback_is_logged_not_propagated(slot: ModelSlot, caplog: pytest.LogCaptureFixture) -> None:
    def broken(*_: Any) -> None:
        raise RuntimeError("app bug")

    slot.on_swap(broken)
    assert slot.offer(envelope(2))
    assert slot.version == 2 and "app bug" in caplog.text


@pytest.mark.parametrize(
    ("make_bad", "reason"),
    [
        (lambda: flip_payload_byte(envelope(2)), "sha256"),
        (lambda: envelope(2, key="wrong key"), "signature does not match"),
        (lambda: envelope(2, key=None), "not signed"),
        (lambda: resigned(envelope(2), runtime={"python": "2.7.18"}), "python 2.7.18"),
        (lambda: dataclasses.replace(envelope(2), format="onnx"), "format 'onnx'"),
        (lambda: envelope(2, model={"weights": [1, 2]}), "no predict_one"),
        (lambda: envelope(1), "not newer"),
    ],
    ids=[
        "bad-checksum",
        "bad-signature",
        "unsigned",
        "runtime-mismatch",
        "unknown-format",
        "not-a-model",
        "same-version",
    ],
)
def test_refused_envelopes_leave_the_last_good_model_serving(slot: ModelSlot, make_bad: Any, reason: str) -> None:
    assert not slot.offer(make_bad(), offset=7)
    assert slot.version == 1 and slot.current().predict_one({}) == 1 and slot.swaps == 1
    [refusal] = slot.refused
    assert refusal.offset == 7 and refusal.version in (1, 2) and reason in refusal.reason


def test_an_older_version_is_refused_after_a_newer_one(slot: ModelSlot) -> None:
    assert slot.offer(envelope(5))
    assert not slot.offer(envelope(3))
    assert slot.version == 5 and "not newer than the serving v5" in slot.refused[0].reason


def test_runtime_mismatch_can_be_allowed_explicitly() -> None:
    lenient = ModelSlot("m", TrustPolicy(allow_runtime_mismatch=True))
    assert lenient.offer(dataclasses.replace(envelope(1, key=None), runtime={"python": "2.7.18"}))


def test_another_models_envelopes_are_ignored_not_refused(slot: ModelSlot) -> None:
    assert not slot.offer(envelope(9, name="other"))
    assert slot.version == 1 and not slot.refused and slot.refused_total == 0


def test_start_up_loads_the_newest_valid_version_and_falls_back() -> None:
    fresh = ModelSlot("m", TrustPolicy(signing_key=KEY))
    candidates = [(0, envelope(1)), (1, envelope(2)), (2, flip_payload_byte(envelope(3)))]
    assert fresh.load_newest(reversed(candidates))
    assert fresh.version == 2 and fresh.swaps == 1
    assert [(r.offset, r.version) for r in fresh.refused] == [(2, 3)]


def test_wait_for_returns_false_on_timeout_and_true_when_the_version_arrives(slot: ModelSlot) -> None:
    assert not slot.wait_for(lambda s: s is not None and s.version >= 2, timeout=0.05)
    threading.Timer(0.05, slot.offer, args=(envelope(2),)).start()
    assert slot.wait_for(lambda s: s is not None and s.version >= 2, timeout=10)


def test_readers_never_see_an_error_during_swaps(slot: ModelSlot) -> None:
    errors: list[BaseException] = []
    answers: set[Any] = set()
    done = threading.Event()

    def hammer() -> None:
        while not done.is_set():
            try:
                serving = slot.current()
                answer = serving.predict_one({})
                if answer != serving.version:  # a mixed-up snapshot would show here
                    raise AssertionError(f"v{serving.version} answered {answer}")
                answers.add(answer)
            except BaseException as exc:  # count every failure, whatever it is
                errors.append(exc)

    updates = [envelope(version) for version in range(2, 60)]  # sealed up front: the loop only swaps
    readers = [threading.Thread(target=hammer) for _ in range(2)]
    for t in readers:
        t.start()
    try:
        for update in updates:
            assert slot.offer(update)
            # Hand the GIL to the readers until one has served this version, so
            # reads really interleave with swaps even on a loaded machine.
            eventually(
                lambda update=update: update.version in answers,
                timeout=10,
                interval=0.0005,
                what=f"a read of v{update.version}",
            )
    finally:
        done.set()
    for t in readers:
        t.join()
    assert errors == []
    assert slot.version == 59 and answers >= set(range(2, 60))


def test_a_subscriber_that_has_not_loaded_a_model_refuses_to_predict() -> None:
    from consumers import ModelSubscriber  # the documented import path
    from streamml.config import load_settings

    subscriber = ModelSubscriber(load_settings(env={}, model_name="m"))  # never started: no broker needed
    assert not subscriber.ready and subscriber.version is None and subscriber.envelope is None
    assert not subscriber.wait_ready(timeout=0.01)
    with pytest.raises(ModelNotReadyError):
        subscriber.predict_one({"a": 1.0})
    with pytest.raises(ModelNotReadyError):
        subscriber.predict_proba_one({"a": 1.0})


def test_public_surface_of_the_consumers_package() -> None:
    import consumers

    assert set(consumers.__all__) == {
        "ModelSubscriber", "ModelSlot", "ServingModel", "Refusal", "StreamScorer", "ScoreReport", "ModelServer"
    }
    assert all(hasattr(consumers, name) for name in consumers.__all__)


# -- refusals, regressions, payloads that break loading --------------------------------------


class BrokenAttribute:
    """Unpickles fine, but asking for predict_one raises something other than AttributeError."""

    @property
    def predict_one(self) -> Any:
        raise RuntimeError("broken model class")


def test_refusals_are_capped_but_all_counted(slot: ModelSlot) -> None:
    for offset in range(1005):
        slot.refuse(offset, 2, "bad")
    assert len(slot.refused) == 1000 and slot.refused_total == 1005
    assert slot.refused[0].offset == 5 and slot.refused[-1].offset == 1004


def test_an_authentic_older_version_is_reported_as_a_regression_not_swapped(
    slot: ModelSlot, caplog: pytest.LogCaptureFixture
) -> None:
    assert slot.offer(envelope(5))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="consumers.swap"):
        assert not slot.offer(envelope(3), offset=9)  # publisher history lost: it restarted its numbering
    assert slot.version == 5 and slot.version_regressions == 1
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "went backwards" in warning.getMessage() and "publisher history lost" in warning.getMessage()
    assert "went backwards" in slot.refused[-1].reason
    # a forgery, a replay of the serving version and another model are not regressions
    assert not slot.offer(envelope(2, key="forger"))
    assert not slot.offer(envelope(5))
    assert not slot.offer(envelope(1, name="other"))
    assert slot.version_regressions == 1
    assert slot.offer(envelope(6)) and slot.version == 6  # monotonic versions still swap


def test_a_payload_that_breaks_loading_is_refused_and_the_next_candidate_loads() -> None:
    fresh = ModelSlot("m", TrustPolicy(signing_key=KEY))
    assert fresh.load_newest([(0, envelope(1)), (1, envelope(2, model=BrokenAttribute()))])
    assert fresh.version == 1
    [(offset, version, reason)] = fresh.refused
    assert (offset, version) == (1, 2) and "RuntimeError: broken model class" in reason


# -- ModelSubscriber's background thread, against an in-memory models topic ----------------


class FakeMessage:
    def __init__(self, offset: int, value: bytes, key: bytes | None = b"m") -> None:
        self._offset, self._value, self._key = offset, value, key

    def offset(self) -> int:
        return self._offset

    def partition(self) -> int:
        return 0

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes:
        return self._value

    def headers(self) -> list[tuple[str, bytes]]:
        return envelope_headers()

    def error(self) -> None:
        return None


class FakeTopic:
    """One partition of the models topic, and the consumers that read it."""

    def __init__(self) -> None:
        self.messages: list[FakeMessage] = []
        self.changed = threading.Condition()
        self.assigned: list[int] = []  # start offset of every follow consumer
        self.consume_errors: list[BaseException] = []  # raised by the next consume() calls
        self.open = threading.Event()  # cleared: consume() blocks, ignoring the subscriber's stop
        self.open.set()
        self.blocked = threading.Event()

    def publish(self, value: bytes | ModelEnvelope, key: bytes | None = b"m") -> None:
        raw = encode_envelope(value) if isinstance(value, ModelEnvelope) else value
        with self.changed:
            self.messages.append(FakeMessage(len(self.messages), raw, key))
            self.changed.notify_all()

    def read_to_end(self, *_: Any, **__: Any) -> Iterator[FakeMessage]:
        yield from list(self.messages)

    def consumer(self, *_: Any, **__: Any) -> FakeConsumer:
        return FakeConsumer(self)


class FakeConsumer:
    def __init__(self, topic: FakeTopic) -> None:
        self.topic = topic
        self.position = 0

    def assign(self, partitions: list[Any]) -> None:
        [tp] = partitions
        self.position = tp.offset
        self.topic.assigned.append(tp.offset)

    def consume(self, n: int, timeout: float) -> list[FakeMessage]:
        if not self.topic.open.is_set():
            self.topic.blocked.set()
            self.topic.open.wait()
        if self.topic.consume_errors:
            raise self.topic.consume_errors.pop(0)
        with self.topic.changed:
            self.topic.changed.wait_for(lambda: len(self.topic.messages) > self.position, timeout=timeout)
            batch = self.topic.messages[self.position : self.position + n]
        self.position += len(batch)
        return batch

    def close(self) -> None:
        pass


@pytest.fixture
def topic(monkeypatch: pytest.MonkeyPatch) -> FakeTopic:
    import consumers.subscriber as subscriber_module

    fake = FakeTopic()
    # The Kafka side of the subscriber, faked: one partition, read and followed in memory.
    monkeypatch.setattr(Cluster, "partitions", lambda self, *_, **__: [0])
    monkeypatch.setattr(subscriber_module, "read_to_end", fake.read_to_end)
    monkeypatch.setattr(Cluster, "consumer", lambda self, *_, **__: fake.consumer())
    monkeypatch.setattr(subscriber_module, "_RETRY_INITIAL_SECONDS", 0.01)
    return fake


@pytest.fixture
def subscriber(topic: FakeTopic) -> Iterator[Any]:
    from consumers import ModelSubscriber

    s = ModelSubscriber(load_settings(env={}, model_name="m", model_signing_key=KEY))
    yield s
    topic.open.set()
    assert s.stop(timeout=10)


def test_a_record_that_fails_unexpectedly_is_refused_and_the_thread_goes_on(
    topic: FakeTopic, subscriber: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import consumers.subscriber as subscriber_module

    real_decode = subscriber_module.decode_envelope

    def decode(value: bytes | None, headers: Any) -> ModelEnvelope:
        if value == b"boom":
            raise RuntimeError("decoder bug")
        return real_decode(value, headers)

    monkeypatch.setattr(subscriber_module, "decode_envelope", decode)
    topic.publish(envelope(1))
    topic.publish(b"boom")  # during the start-up catch-up
    subscriber.start()
    assert subscriber.wait_for_version(1, timeout=10)
    topic.publish(b"boom")  # while following
    topic.publish(envelope(2))
    assert subscriber.wait_for_version(2, timeout=10)
    assert [(o, v) for o, v, _ in subscriber.refused] == [(1, None), (2, None)]
    assert all("RuntimeError: decoder bug" in reason for _, _, reason in subscriber.refused)
    assert isinstance(subscriber.last_error, RuntimeError)


def test_a_failing_consumer_is_retried_and_resumes_where_it_was(topic: FakeTopic, subscriber: Any) -> None:
    subscriber.start()
    eventually(lambda: topic.assigned == [0], timeout=10, what="the follow consumer")
    topic.publish(envelope(1))
    topic.publish(envelope(2))
    assert subscriber.wait_for_version(2, timeout=10)
    topic.consume_errors = [
        KafkaException(KafkaError(KafkaError._TRANSPORT, "broker went away")),
        RuntimeError("client bug"),  # not a Kafka error: must not end the thread either
    ]
    eventually(lambda: len(topic.assigned) == 3, timeout=10, what="two retries")
    assert topic.assigned == [0, 2, 2]  # resumed after v2, not replayed from the start offset
    assert isinstance(subscriber.last_error, RuntimeError)
    topic.publish(envelope(3))
    assert subscriber.wait_for_version(3, timeout=10)
    assert subscriber.refused == [] and subscriber.swaps == 3


def test_retry_backoff_doubles_and_is_bounded() -> None:
    from consumers.subscriber import (
        _RETRY_INITIAL_SECONDS,
        _RETRY_MAX_SECONDS,
        _backoff,
    )

    assert [_backoff(n) for n in (1, 2, 3)] == [_RETRY_INITIAL_SECONDS * f for f in (1, 2, 4)]
    assert _backoff(10**6) == _RETRY_MAX_SECONDS


def test_a_stopped_subscriber_can_be_started_again_and_resumes(topic: FakeTopic, subscriber: Any) -> None:
    topic.publish(envelope(1))
    subscriber.start()
    assert subscriber.wait_for_version(1, timeout=10)
    assert subscriber.stop(timeout=10)
    topic.publish(envelope(2))
    assert subscriber.version == 1
    subscriber.start()
    assert subscriber.wait_for_version(2, timeout=10)
    assert topic.assigned == [1, 1] and subscriber.refused == []


def test_stop_that_times_out_keeps_the_thread_and_start_refuses_to_double_it(topic: FakeTopic, subscriber: Any) -> None:
    topic.open.clear()  # the follow consumer hangs in consume()
    subscriber.start()
    assert topic.blocked.wait(10)
    assert subscriber.stop(timeout=0.05) is False
    with pytest.raises(RuntimeError, match="still stopping"):
        subscriber.start()
    topic.open.set()
    assert subscriber.stop(timeout=10) is True
    topic.publish(envelope(1))
    subscriber.start()  # a clean restart after a completed stop
    assert subscriber.wait_for_version(1, timeout=10)


def test_catch_up_stops_reading_when_stopped(
    topic: FakeTopic, subscriber: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import consumers.subscriber as subscriber_module

    read: list[int] = []
    closed = threading.Event()

    def slow_read_to_end(*_: Any, **__: Any) -> Iterator[FakeMessage]:
        try:
            for version in range(1, 101):
                read.append(version)
                if version == 2:
                    subscriber.stop(timeout=0)  # never started: only sets the flag
                yield FakeMessage(version - 1, encode_envelope(envelope(version)))
        finally:
            closed.set()

    monkeypatch.setattr(subscriber_module, "read_to_end", slow_read_to_end)
    assert subscriber._catch_up() is None
    assert read == [1, 2] and closed.is_set()  # nothing read past the stop, reader closed
    assert subscriber.version is None
