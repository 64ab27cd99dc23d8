"""The swap rules of ModelSlot (what ModelSubscriber runs), and the subscriber itself, without a broker."""

from __future__ import annotations

import dataclasses
import fractions
import hashlib
import logging
import pickle
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from consumers.swap import ModelSlot
from streamml.cluster import Cluster
from streamml.config import load_settings
from streamml.envelope import MAX_VERSION, ModelEnvelope, encode_envelope, envelope_headers, seal, sign
from streamml.errors import ModelNotReadyError
from streamml.model_control import ControlRecord, control_serde
from streamml.signing import Keyring, SigningKey
from streamml.trust import TrustPolicy, assess
from tests.conftest import eventually

#: The publisher's key, which every policy and subscriber here trusts.
SIGNER = SigningKey.generate()
#: Someone who can write to the models topic but holds no trusted key.
FORGER = SigningKey.generate()
#: The test models are classes of this module: the restricted unpickler must be told to allow them.
ALLOW = f"{__name__}.*"
POLICY = TrustPolicy(keyring=Keyring().with_key(SIGNER.public_key), pickle_allowed=(ALLOW,))
#: Real inputs whose answers every test model's envelope records (and a consumer replays).
GOLDEN = [{"x": 1.0}, {"x": -2.5}]


class Constant:
    """A picklable model that always answers ``answer``."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer

    def predict_one(self, x: dict[str, Any]) -> Any:
        return self.answer

    def predict_proba_one(self, x: dict[str, Any]) -> dict[Any, float]:
        return {self.answer: 1.0}


class RaisesOnInput:
    """Unpickles fine, then raises on every input (a model broken for the data it will see)."""

    def predict_one(self, x: dict[str, Any]) -> Any:
        raise ValueError(f"cannot score {sorted(x)}")


def envelope(
    version: int, *, signer: SigningKey | None = SIGNER, name: str = "m", model: Any = None
) -> ModelEnvelope:
    """v``version`` answering ``version`` (or ``model``, then without golden examples), signed by ``signer``."""
    return seal(
        Constant(version) if model is None else model,
        model_name=name,
        version=version,
        flavor="river",
        signer=signer,
        golden_inputs=GOLDEN if model is None else (),
    )


def resigned(env: ModelEnvelope, signer: SigningKey = SIGNER, **changes: Any) -> ModelEnvelope:
    """``env`` with ``changes``, signed again: what an honest publisher with that runtime would send."""
    return sign(dataclasses.replace(env, **changes), signer)


def with_payload_of(env: ModelEnvelope, model: Any) -> ModelEnvelope:
    """``env`` (and its golden examples) carrying ``model`` instead, checksummed and signed again.

    What a publisher sends when the model it serialized is not the one whose
    answers it recorded (a bug, another library version, a swapped payload).
    """
    payload = pickle.dumps(model, protocol=5)
    return resigned(env, payload=payload, payload_size=len(payload), sha256=hashlib.sha256(payload).hexdigest())


def flip_payload_byte(env: ModelEnvelope) -> ModelEnvelope:
    payload = bytearray(env.payload)
    payload[len(payload) // 2] ^= 0xFF
    return dataclasses.replace(env, payload=bytes(payload))


def directive(action: str, version: int | None, sequence: int, signer: SigningKey | None = SIGNER) -> ControlRecord:
    record = ControlRecord("m", action, version, sequence, reason="test")
    return record if signer is None else record.signed_by(signer)


@pytest.fixture
def slot() -> ModelSlot:
    s = ModelSlot("m", POLICY)
    assert s.offer(envelope(1))
    return s


def test_nothing_serves_before_the_first_model() -> None:
    fresh = ModelSlot("m", POLICY)
    assert fresh.version is None
    with pytest.raises(ModelNotReadyError):
        fresh.current()


def test_a_newer_version_swaps_and_calls_back_after_the_swap(slot: ModelSlot) -> None:
    seen = []
    slot.on_swap(lambda old, new, env: seen.append((old, new, env["version"], slot.version)))
    assert slot.offer(envelope(2))
    assert slot.current().predict_one({}) == 2 and slot.current().mode == "latest"
    assert seen == [(1, 2, 2, 2)] and slot.swaps == 2


def test_a_failing_callback_is_logged_not_propagated(slot: ModelSlot, caplog: pytest.LogCaptureFixture) -> None:
    def broken(*_: Any) -> None:
        raise RuntimeError("app bug")

    slot.on_swap(broken)
    assert slot.offer(envelope(2))
    assert slot.version == 2 and "app bug" in caplog.text


GOLDEN_KIND = "golden_mismatch"


@pytest.mark.parametrize(
    ("make_bad", "reason", "kind"),
    [
        (lambda: flip_payload_byte(envelope(2)), "sha256", "checksum"),
        (lambda: envelope(2, signer=FORGER), "which this consumer does not trust", "untrusted_key"),
        (lambda: dataclasses.replace(envelope(2), metrics={"accuracy": 1.0}), "does not match", "bad_signature"),
        (lambda: envelope(2, signer=None), "unsigned", "unsigned"),
        (lambda: resigned(envelope(2), runtime={"python": "2.7.18"}), "python 2.7.18", "runtime"),
        (lambda: dataclasses.replace(envelope(2), format="onnx"), "format 'onnx'", "other"),
        (lambda: resigned(envelope(2), version=MAX_VERSION + 1), "outside 1..", "version_range"),
        (lambda: envelope(2, model={"weights": [1, 2]}), "no predict_one", "payload_error"),
        (lambda: envelope(2, model=fractions.Fraction(1, 3)), "fractions.Fraction, refused", "unsafe_payload"),
        (lambda: with_payload_of(envelope(2), RaisesOnInput()), "golden example 0 raised ValueError", GOLDEN_KIND),
        (lambda: with_payload_of(envelope(2), Constant(3)), "predicted 3, the publisher recorded 2", GOLDEN_KIND),
        (lambda: envelope(1), "not newer", "not_newer"),
    ],
    ids=[
        "bad-checksum",
        "untrusted-key",
        "bad-signature",
        "unsigned",
        "runtime-mismatch",
        "unknown-format",
        "version-out-of-range",
        "not-a-model",
        "unsafe-payload",
        "raises-on-golden-inputs",
        "golden-mismatch",
        "same-version",
    ],
)
def test_refused_envelopes_leave_the_last_good_model_serving(
    slot: ModelSlot, make_bad: Callable[[], ModelEnvelope], reason: str, kind: str
) -> None:
    bad = make_bad()
    assert not slot.offer(bad, offset=7)
    assert slot.version == 1 and slot.current().predict_one({}) == 1 and slot.swaps == 1
    [refusal] = slot.refused
    assert refusal.offset == 7 and refusal.version == bad.version and reason in refusal.reason
    assert refusal.kind == kind and slot.refused_by_kind == {kind: 1}


def test_an_older_version_is_refused_after_a_newer_one(slot: ModelSlot) -> None:
    assert slot.offer(envelope(5))
    assert not slot.offer(envelope(3))
    assert slot.version == 5 and "not newer than the serving v5" in slot.refused[0].reason


def test_runtime_mismatch_can_be_allowed_explicitly() -> None:
    other_python = resigned(envelope(1), runtime={"python": "2.7.18"})
    assert not ModelSlot("m", POLICY).offer(other_python)
    lenient = ModelSlot("m", dataclasses.replace(POLICY, allow_runtime_mismatch=True))
    assert lenient.offer(other_python) and lenient.version == 1


def test_unsigned_envelopes_load_only_in_development_mode() -> None:
    unsigned = envelope(1, signer=None)
    assert not ModelSlot("m", POLICY).offer(unsigned)
    assert ModelSlot("m", dataclasses.replace(POLICY, development_mode=True)).offer(unsigned)


def test_another_models_envelopes_are_ignored_not_refused(slot: ModelSlot) -> None:
    assert not slot.offer(envelope(9, name="other"))
    assert slot.version == 1 and not slot.refused and slot.refused_total == 0


def test_start_up_loads_the_newest_valid_version_and_falls_back() -> None:
    fresh = ModelSlot("m", POLICY)
    candidates = [(0, envelope(1)), (1, envelope(2)), (2, flip_payload_byte(envelope(3)))]
    assert fresh.load_newest(reversed(candidates))
    assert fresh.version == 2 and fresh.swaps == 1
    assert [(r.offset, r.version) for r in fresh.refused] == [(2, 3)]


def test_install_serves_any_version_and_says_why(slot: ModelSlot) -> None:
    seen = []
    slot.on_swap(lambda old, new, env: seen.append((old, new)))
    assert slot.offer(envelope(3))
    assert slot.install(assess(envelope(2), POLICY), offset=4, mode="rolled_back")  # older: only a directive may
    assert slot.version == 2 and slot.current().mode == "rolled_back"
    assert slot.current().predict_one({}) == 2
    assert seen == [(1, 3), (3, 2)] and slot.version_regressions == 0
    # An install that does not load leaves the serving model (and its mode) alone.
    assert not slot.install(assess(flip_payload_byte(envelope(1)), POLICY), offset=5, mode="pinned")
    assert slot.version == 2 and slot.current().mode == "rolled_back"
    assert [(r.offset, r.kind) for r in slot.refused] == [(5, "checksum")]
    slot.set_mode("pinned")  # relabel, no reload
    assert slot.current().mode == "pinned" and slot.swaps == 3
    assert slot.offer(envelope(4)) and slot.current().mode == "latest"


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


def test_a_subscriber_that_has_not_loaded_a_model_refuses_to_predict(tmp_path: Path) -> None:
    from consumers import ModelSubscriber  # the documented import path

    # never started: no broker needed
    subscriber = ModelSubscriber(load_settings(env={}, model_name="m", home=str(tmp_path)))
    assert not subscriber.ready and subscriber.version is None and subscriber.envelope is None
    assert subscriber.mode is None
    assert not subscriber.wait_ready(timeout=0.01)
    with pytest.raises(ModelNotReadyError):
        subscriber.predict_one({"a": 1.0})
    with pytest.raises(ModelNotReadyError):
        subscriber.predict_proba_one({"a": 1.0})


def test_public_surface_of_the_consumers_package() -> None:
    import consumers

    assert set(consumers.__all__) == {
        "ModelSubscriber", "ModelSlot", "ServingModel", "Refusal", "StreamScorer", "ScoreReport", "ModelServer",
        "ServingFeatures", "WindowView",
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
    assert slot.refused_by_kind == {"other": 1005}


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
    # a forgery, an unsigned record, a replay of the serving version and another model are not regressions
    assert not slot.offer(envelope(2, signer=FORGER))
    assert not slot.offer(envelope(2, signer=None))
    assert not slot.offer(envelope(5))
    assert not slot.offer(envelope(1, name="other"))
    assert slot.version_regressions == 1
    assert slot.offer(envelope(6)) and slot.version == 6  # monotonic versions still swap


def test_a_payload_that_breaks_loading_is_refused_and_the_next_candidate_loads() -> None:
    fresh = ModelSlot("m", POLICY)
    assert fresh.load_newest([(0, envelope(1)), (1, envelope(2, model=BrokenAttribute()))])
    assert fresh.version == 1
    [(offset, version, reason, kind)] = fresh.refused
    assert (offset, version, kind) == (1, 2, "payload_error") and "RuntimeError: broken model class" in reason


# -- ModelSubscriber's background thread, against an in-memory models topic ----------------


class FakeMessage:
    def __init__(self, offset: int, value: bytes, key: bytes | None, headers: list[tuple[str, bytes]]) -> None:
        self._offset, self._value, self._key, self._headers = offset, value, key, headers

    def offset(self) -> int:
        return self._offset

    def topic(self) -> str:
        return "models.v1"

    def partition(self) -> int:
        return 0

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes:
        return self._value

    def headers(self) -> list[tuple[str, bytes]]:
        return list(self._headers)

    def error(self) -> None:
        return None


class FakeTopic:
    """One partition of the models topic, and the consumers that read it."""

    def __init__(self) -> None:
        self.messages: list[FakeMessage] = []
        self.changed = threading.Condition()
        self.assigned: list[int] = []  # start offset of every follow consumer
        self.reads: list[int] = []  # start offset of every read_to_end (catch-up and read-backs)
        self.poll_errors: list[BaseException] = []  # raised by the next poll() calls
        self.open = threading.Event()  # cleared: poll() blocks, ignoring the subscriber's stop
        self.open.set()
        self.blocked = threading.Event()

    def publish(self, record: bytes | ModelEnvelope | ControlRecord, key: bytes | None = b"m") -> int:
        """Append an envelope, a directive or raw bytes (sent as an envelope); return its offset."""
        if isinstance(record, ModelEnvelope):
            value, headers = encode_envelope(record), envelope_headers()
        elif isinstance(record, ControlRecord):
            value, headers = record.encode(), control_serde().headers
        else:
            value, headers = record, envelope_headers()
        with self.changed:
            offset = len(self.messages)
            self.messages.append(FakeMessage(offset, value, key, headers))
            self.changed.notify_all()
        return offset

    def read_to_end(self, _cluster: Any, _topic: str, *, start: dict[int, int] | None = None, **_: Any) -> Iterator[
        FakeMessage
    ]:
        first = (start or {}).get(0, 0)
        self.reads.append(first)
        yield from list(self.messages[first:])

    def consumer(self, *_: Any, **__: Any) -> FakeConsumer:
        return FakeConsumer(self)


class FakeConsumer:
    def __init__(self, topic: FakeTopic) -> None:
        self.topic = topic
        self.at = 0

    def assign(self, partitions: list[Any]) -> None:
        [tp] = partitions
        self.at = tp.offset
        self.topic.assigned.append(tp.offset)

    def _take(self, n: int, timeout: float) -> list[FakeMessage]:
        with self.topic.changed:
            self.topic.changed.wait_for(lambda: len(self.topic.messages) > self.at, timeout=timeout)
            batch = self.topic.messages[self.at : self.at + n]
        self.at += len(batch)
        return batch

    def poll(self, timeout: float) -> FakeMessage | None:
        if not self.topic.open.is_set():
            self.topic.blocked.set()
            self.topic.open.wait()
        if self.topic.poll_errors:
            raise self.topic.poll_errors.pop(0)
        batch = self._take(1, timeout)
        return batch[0] if batch else None

    def consume(self, n: int, timeout: float) -> list[FakeMessage]:
        return self._take(n, timeout)

    def position(self, partitions: list[Any]) -> list[Any]:
        return [type(tp)(tp.topic, tp.partition, self.at) for tp in partitions]

    def get_watermark_offsets(self, partition: Any, cached: bool = False) -> tuple[int, int]:
        with self.topic.changed:
            return 0, len(self.topic.messages)

    def close(self) -> None:
        pass


@pytest.fixture
def topic(monkeypatch: pytest.MonkeyPatch) -> FakeTopic:
    import consumers.subscriber as subscriber_module
    import consumers.versions as versions_module

    fake = FakeTopic()
    # The Kafka side of the subscriber, faked: one partition, read and followed in memory.
    monkeypatch.setattr(Cluster, "partitions", lambda self, *_, **__: [0])
    monkeypatch.setattr(subscriber_module, "read_to_end", fake.read_to_end)
    monkeypatch.setattr(versions_module, "read_to_end", fake.read_to_end)  # a rollback to an evicted version
    monkeypatch.setattr(Cluster, "consumer", lambda self, *_, **__: fake.consumer())
    monkeypatch.setattr(subscriber_module, "_RETRY_INITIAL_SECONDS", 0.01)
    monkeypatch.setattr(subscriber_module, "_POLL_SECONDS", 0.02)  # stop() is noticed sooner
    return fake


@pytest.fixture
def make_subscriber(topic: FakeTopic, tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """Make subscribers of model "m" that trust SIGNER's public key (read from a PEM file, as deployed)."""
    from consumers import ModelSubscriber

    public = tmp_path / "trusted" / "publisher.pub"
    public.parent.mkdir()
    public.write_bytes(SIGNER.public_pem())
    made: list[ModelSubscriber] = []

    def make(**overrides: Any) -> ModelSubscriber:
        settings = load_settings(
            env={},
            **{
                "model_name": "m",
                "home": str(tmp_path / "home"),  # no default keys folder: only the configured key is trusted
                "model_trusted_keys": str(public),
                "model_pickle_allow": ALLOW,
                **overrides,
            },
        )
        made.append(ModelSubscriber(settings))
        return made[-1]

    yield make
    topic.open.set()
    for subscriber in made:
        assert subscriber.stop(timeout=10)


@pytest.fixture
def subscriber(make_subscriber: Callable[..., Any]) -> Any:
    return make_subscriber()


def settled(topic: FakeTopic, subscriber: Any) -> None:
    """Wait until ``subscriber`` has handled every record published so far.

    Records are handled in topic order, so once a record nobody can decode,
    published last, is refused, everything before it was handled.
    """
    before = subscriber.refused_by_reason.get("undecodable", 0)
    offset = topic.publish(b"not an envelope")
    eventually(
        lambda: subscriber.refused_by_reason.get("undecodable", 0) > before,
        timeout=10,
        what=f"the subscriber to reach offset {offset}",
    )


def test_a_record_that_fails_unexpectedly_is_refused_and_the_thread_goes_on(
    topic: FakeTopic, subscriber: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from streamml.envelope import decode_envelope

    def decode(value: bytes | None, headers: Any) -> ModelEnvelope:
        if value == b"boom":
            raise RuntimeError("decoder bug")
        return decode_envelope(value, headers)

    monkeypatch.setattr("streamml.models_topic.decode_envelope", decode)  # where the subscriber's folder decodes
    topic.publish(envelope(1))
    topic.publish(b"boom")  # during the start-up catch-up
    subscriber.start()
    assert subscriber.wait_for_version(1, timeout=10)
    topic.publish(b"boom")  # while following
    topic.publish(envelope(2))
    assert subscriber.wait_for_version(2, timeout=10)
    assert [(o, v) for o, v, _, _ in subscriber.refused] == [(1, None), (2, None)]
    assert all("RuntimeError: decoder bug" in r.reason for r in subscriber.refused)
    assert isinstance(subscriber.last_error, RuntimeError)


def test_a_failing_consumer_is_retried_and_resumes_where_it_was(topic: FakeTopic, subscriber: Any) -> None:
    subscriber.start()
    eventually(lambda: topic.assigned == [0], timeout=10, what="the follow consumer")
    topic.publish(envelope(1))
    topic.publish(envelope(2))
    assert subscriber.wait_for_version(2, timeout=10)
    topic.poll_errors = [
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
    assert topic.reads == [0]  # no second catch-up: it resumed following


def test_stop_that_times_out_keeps_the_thread_and_start_refuses_to_double_it(topic: FakeTopic, subscriber: Any) -> None:
    topic.open.clear()  # the follow consumer hangs in poll()
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
                yield FakeMessage(version - 1, encode_envelope(envelope(version)), b"m", envelope_headers())
        finally:
            closed.set()

    monkeypatch.setattr(subscriber_module, "read_to_end", slow_read_to_end)
    assert subscriber._catch_up() is None
    assert read == [1, 2] and closed.is_set()  # nothing read past the stop, reader closed
    assert subscriber.version is None


# -- trust: unsigned, forged and broken models on the topic ----------------------------------


def test_unsigned_envelopes_are_refused_and_counted_by_reason(topic: FakeTopic, subscriber: Any) -> None:
    topic.publish(envelope(1))
    topic.publish(envelope(2, signer=None))  # read at start-up
    subscriber.start()
    assert subscriber.wait_ready(timeout=10)
    assert subscriber.version == 1 and subscriber.refused_by_reason == {"unsigned": 1}
    topic.publish(envelope(3, signer=None))  # while following
    topic.publish(envelope(4))
    assert subscriber.wait_for_version(4, timeout=10)
    assert subscriber.refused_by_reason == {"unsigned": 2}
    assert [(r.offset, r.version, r.kind) for r in subscriber.refused] == [(1, 2, "unsigned"), (2, 3, "unsigned")]
    assert all("STREAMML_DEVELOPMENT_MODE" in r.reason for r in subscriber.refused)  # the reason says what to do


def test_development_mode_accepts_unsigned_envelopes_and_directives(
    topic: FakeTopic, make_subscriber: Callable[..., Any]
) -> None:
    topic.publish(envelope(1, signer=None))
    topic.publish(envelope(2, signer=None))
    development = make_subscriber(development_mode=True).start()
    assert development.wait_for_version(2, timeout=10)
    topic.publish(directive("pin", 1, sequence=1, signer=None))
    eventually(lambda: development.version == 1, timeout=10, what="the unsigned pin to v1")
    assert development.mode == "pinned" and development.refused == []
    # Out of development mode the same topic serves nothing.
    strict = make_subscriber().start()
    settled(topic, strict)
    assert not strict.ready
    assert strict.refused_by_reason == {"unsigned": 2, "directive": 1, "undecodable": 1}


def test_a_forged_huge_version_does_not_block_later_legitimate_versions(
    topic: FakeTopic, subscriber: Any, make_subscriber: Callable[..., Any]
) -> None:
    topic.publish(envelope(1))
    subscriber.start()
    assert subscriber.wait_for_version(1, timeout=10)
    # Whoever can write to the topic tries to take the version sequence over.
    topic.publish(envelope(2**40, signer=FORGER, model=Constant("hijacked")))
    topic.publish(envelope(2))
    assert subscriber.wait_for_version(2, timeout=10)
    assert subscriber.version == 2 and subscriber.predict_one({}) == 2
    [forged] = subscriber.refused
    assert forged.version == 2**40 and forged.kind == "untrusted_key" and "does not trust" in forged.reason
    assert subscriber.version_regressions == 0  # v2 after "v2**40" is no regression: the forgery never counted
    # A subscriber reading all of it at start-up is not fooled either.
    late = make_subscriber().start()
    assert late.wait_ready(timeout=10)
    assert late.version == 2 and late.refused_by_reason == {"untrusted_key": 1}
    topic.publish(envelope(3))
    assert late.wait_for_version(3, timeout=10) and subscriber.wait_for_version(3, timeout=10)
    assert late.version == subscriber.version == 3


def test_a_model_that_raises_on_its_golden_inputs_is_refused_and_the_previous_keeps_serving(
    topic: FakeTopic, subscriber: Any, make_subscriber: Callable[..., Any]
) -> None:
    topic.publish(envelope(1))
    subscriber.start()
    assert subscriber.wait_for_version(1, timeout=10)
    topic.publish(with_payload_of(envelope(2), RaisesOnInput()))
    eventually(lambda: subscriber.refused_by_reason == {"golden_mismatch": 1}, timeout=10, what="v2's refusal")
    assert subscriber.version == 1 and subscriber.predict_one({"x": 1.0}) == 1 and subscriber.swaps == 1
    [refusal] = subscriber.refused
    assert (refusal.offset, refusal.version) == (1, 2)
    assert "golden example 0 raised ValueError" in refusal.reason and "not activated" in refusal.reason
    topic.publish(envelope(3, model=BrokenAttribute()))
    eventually(lambda: subscriber.refused_total == 2, timeout=10, what="v3's refusal")
    # At start-up the newest versions do not load: a new subscriber falls back to the newest that does.
    fresh = make_subscriber().start()
    assert fresh.wait_ready(timeout=10)
    assert fresh.version == 1 and fresh.swaps == 1
    assert fresh.refused_by_reason == {"golden_mismatch": 1, "payload_error": 1}
    topic.publish(envelope(4))
    assert fresh.wait_for_version(4, timeout=10) and subscriber.wait_for_version(4, timeout=10)


def test_a_class_off_the_allowlist_is_refused_before_it_loads(
    topic: FakeTopic, make_subscriber: Callable[..., Any]
) -> None:
    topic.publish(envelope(1))
    topic.publish(envelope(2))
    cautious = make_subscriber(model_pickle_allow="").start()  # this module's classes are not allowed
    settled(topic, cautious)
    assert not cautious.ready and cautious.refused_by_reason == {"unsafe_payload": 2, "undecodable": 1}
    assert all(f"{__name__}.Constant" in r.reason for r in cautious.refused if r.kind == "unsafe_payload")


# -- signed serving directives: pin, unpin, rollback -----------------------------------------


def test_a_signed_pin_serves_an_older_version_until_unpin(topic: FakeTopic, subscriber: Any) -> None:
    swaps: list[tuple[int | None, int]] = []
    subscriber.on_swap(lambda old, new, _: swaps.append((old, new)))
    topic.publish(envelope(1))
    topic.publish(envelope(2))
    subscriber.start()
    assert subscriber.wait_for_version(2, timeout=10)
    assert subscriber.mode == "latest" and subscriber.current().mode == "latest"
    topic.publish(directive("pin", 1, sequence=1))
    eventually(lambda: subscriber.version == 1, timeout=10, what="the pinned v1")
    assert subscriber.mode == "pinned" and subscriber.current().mode == "pinned"
    assert subscriber.predict_one({}) == 1
    topic.publish(envelope(3))  # newer, but the pin holds
    settled(topic, subscriber)
    assert subscriber.version == 1 and subscriber.mode == "pinned"
    assert subscriber.refused_by_reason == {"undecodable": 1} and subscriber.version_regressions == 0
    topic.publish(directive("unpin", None, sequence=2))
    assert subscriber.wait_for_version(3, timeout=10)
    assert subscriber.mode == "latest" and subscriber.predict_one({}) == 3
    assert swaps == [(None, 2), (2, 1), (1, 3)]


def test_a_signed_rollback_withdraws_newer_versions_and_later_ones_serve(topic: FakeTopic, subscriber: Any) -> None:
    for version in (1, 2, 3):
        topic.publish(envelope(version))
    subscriber.start()
    assert subscriber.wait_for_version(3, timeout=10)
    topic.publish(directive("rollback", 2, sequence=1))
    eventually(lambda: subscriber.version == 2, timeout=10, what="the rollback to v2")
    assert subscriber.mode == "rolled_back" and subscriber.current().mode == "rolled_back"
    assert subscriber.predict_one({}) == 2
    topic.publish(envelope(2**40, signer=FORGER))  # a forgery is no version published after the rollback
    topic.publish(envelope(3))  # the withdrawn version, sent again, does not come back
    settled(topic, subscriber)
    assert subscriber.version == 2 and subscriber.mode == "rolled_back"
    topic.publish(envelope(4))  # published after the rollback: served as usual
    assert subscriber.wait_for_version(4, timeout=10)
    assert subscriber.mode == "latest" and subscriber.predict_one({}) == 4


def test_a_rollback_to_a_version_no_longer_in_memory_reads_it_back_from_the_topic(
    topic: FakeTopic, subscriber: Any
) -> None:
    for version in range(1, 13):  # more versions than the subscriber keeps in memory
        topic.publish(envelope(version))
    subscriber.start()
    assert subscriber.wait_for_version(12, timeout=10)
    topic.publish(directive("rollback", 1, sequence=1))
    eventually(lambda: subscriber.version == 1, timeout=10, what="the rollback to v1")
    assert subscriber.mode == "rolled_back" and subscriber.predict_one({}) == 1
    assert topic.reads == [0, 0]  # the catch-up, then v1 read back from its offset


@pytest.mark.parametrize(
    ("record", "fragment"),
    [
        (lambda: directive("pin", 1, sequence=1, signer=None), "unsigned"),
        (lambda: directive("rollback", 1, sequence=1, signer=FORGER), "which this consumer does not trust"),
        (lambda: dataclasses.replace(directive("pin", 1, sequence=1), action="rollback"), "does not match"),
        (lambda: directive("pin", 7, sequence=1), "v7 is not a version this consumer can load"),
        (lambda: directive("pin", None, sequence=1), "pin needs a version"),
    ],
    ids=["unsigned", "untrusted-key", "tampered", "unknown-version", "malformed"],
)
def test_a_directive_that_must_not_be_obeyed_is_refused(
    topic: FakeTopic, subscriber: Any, record: Callable[[], ControlRecord], fragment: str
) -> None:
    topic.publish(envelope(1))
    topic.publish(envelope(2))
    subscriber.start()
    assert subscriber.wait_for_version(2, timeout=10)
    offset = topic.publish(record())
    settled(topic, subscriber)
    assert subscriber.version == 2 and subscriber.mode == "latest" and subscriber.swaps == 1
    [refusal] = [r for r in subscriber.refused if r.kind == "directive"]
    assert refusal.offset == offset and fragment in refusal.reason and "directive refused" in refusal.reason


def test_a_replayed_directive_is_refused(topic: FakeTopic, subscriber: Any) -> None:
    topic.publish(envelope(1))
    topic.publish(envelope(2))
    subscriber.start()
    assert subscriber.wait_for_version(2, timeout=10)
    pin = directive("pin", 1, sequence=1)
    topic.publish(pin)
    eventually(lambda: subscriber.version == 1, timeout=10, what="the pin to v1")
    topic.publish(directive("unpin", None, sequence=2))
    eventually(lambda: subscriber.version == 2, timeout=10, what="the unpin")
    replayed = topic.publish(pin)  # the genuine, signed old pin, sent again by someone else
    settled(topic, subscriber)
    assert subscriber.version == 2 and subscriber.mode == "latest"
    [refusal] = [r for r in subscriber.refused if r.kind == "directive"]
    assert refusal.offset == replayed and "replayed directive" in refusal.reason


@pytest.mark.parametrize(
    ("action", "mode", "after_next_version"),
    [("pin", "pinned", (2, "pinned")), ("rollback", "rolled_back", (4, "latest"))],
)
def test_a_restarted_subscriber_comes_back_in_the_same_serving_state(
    topic: FakeTopic,
    subscriber: Any,
    make_subscriber: Callable[..., Any],
    action: str,
    mode: str,
    after_next_version: tuple[int, str],
) -> None:
    for version in (1, 2, 3):
        topic.publish(envelope(version))
    subscriber.start()
    assert subscriber.wait_for_version(3, timeout=10)
    topic.publish(directive(action, 2, sequence=1))
    eventually(lambda: subscriber.version == 2, timeout=10, what=f"the {action} to v2")
    assert subscriber.mode == mode
    assert subscriber.stop(timeout=10)
    restarted = make_subscriber().start()  # a new process: all it knows is the topic
    assert restarted.wait_ready(timeout=10)
    assert restarted.version == 2 and restarted.mode == mode and restarted.current().mode == mode
    assert restarted.swaps == 1 and restarted.refused == []  # straight to v2: v3 never served
    topic.publish(envelope(4))
    settled(topic, restarted)
    assert (restarted.version, restarted.mode) == after_next_version
