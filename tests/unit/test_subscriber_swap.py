"""The swap rules of ModelSlot (what ModelSubscriber runs), without a broker."""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

import pytest

from tests.conftest import eventually
from consumers.swap import ModelSlot
from streamml.envelope import ModelEnvelope, _sign, _signed_bytes, seal
from streamml.errors import ModelNotReadyError

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
    s = ModelSlot("m", signing_key=KEY)
    assert s.offer(envelope(1))
    return s


def test_nothing_serves_before_the_first_model() -> None:
    fresh = ModelSlot("m", signing_key=KEY)
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
    ids=["bad-checksum", "bad-signature", "unsigned", "runtime-mismatch", "unknown-format", "not-a-model", "same-version"],
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
    lenient = ModelSlot("m", allow_runtime_mismatch=True)
    assert lenient.offer(dataclasses.replace(envelope(1, key=None), runtime={"python": "2.7.18"}))


def test_another_models_envelopes_are_ignored_not_refused(slot: ModelSlot) -> None:
    assert not slot.offer(envelope(9, name="other"))
    assert slot.version == 1 and not slot.refused and slot.refused_total == 0


def test_start_up_loads_the_newest_valid_version_and_falls_back() -> None:
    fresh = ModelSlot("m", signing_key=KEY)
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
            eventually(lambda: update.version in answers, timeout=10, interval=0.0005, what=f"a read of v{update.version}")
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

    assert set(consumers.__all__) == {"ModelSubscriber", "ModelSlot", "ServingModel", "Refusal", "StreamScorer", "ScoreReport"}
    assert all(hasattr(consumers, name) for name in consumers.__all__)
