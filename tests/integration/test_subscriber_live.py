"""ModelSubscriber against a real broker: start-up, live swaps, refusals."""

from __future__ import annotations

import dataclasses
import threading

import pytest

from consumers import ModelSubscriber
from model_publisher.publisher import ModelPublisher
from streamml.config import Settings
from streamml.envelope import ModelEnvelope, encode_envelope, envelope_headers, seal
from streamml.errors import ModelNotReadyError
from streamml.kafka import make_producer
from streamml.signing import signer_from_settings
from streamml.topics import Topics
from tests.conftest import eventually
from tests.integration.conftest import small_model

pytestmark = pytest.mark.integration

X = {"a": 1.0, "b": -2.0}


def publish(publisher: ModelPublisher, n: int = 20) -> ModelEnvelope:
    return publisher.publish(small_model(n), metrics={"accuracy": 0.9}, n_learned=n, input_offsets={})


def publish_corrupt(settings: Settings, topics: Topics, version: int) -> None:
    """Publish an envelope whose payload has a flipped byte but the original checksum."""
    good = seal(
        small_model(3), model_name=settings.model_name, version=version, flavor="river",
        signer=signer_from_settings(settings),
    )
    payload = bytearray(good.payload)
    payload[len(payload) // 2] ^= 0x01
    bad = dataclasses.replace(good, payload=bytes(payload))
    producer = make_producer(settings)
    producer.produce(
        topics.models, key=settings.model_name.encode(), value=encode_envelope(bad), headers=envelope_headers()
    )
    assert producer.flush(10) == 0


def test_not_ready_until_v1_then_swaps_to_each_new_version(settings: Settings, publisher: ModelPublisher) -> None:
    swaps: list[tuple[int | None, int]] = []
    with ModelSubscriber(settings, on_swap=lambda old, new, env: swaps.append((old, new))) as subscriber:
        assert not subscriber.wait_ready(timeout=1.0)
        assert subscriber.version is None and subscriber.envelope is None
        with pytest.raises(ModelNotReadyError):
            subscriber.predict_one(X)
        for expected in (1, 2, 3):
            assert publish(publisher, n=10 * expected).version == expected
            assert subscriber.wait_for_version(expected, timeout=15), f"v{expected} not loaded"
            assert subscriber.version == expected
            assert subscriber.envelope["n_learned"] == 10 * expected
        assert subscriber.predict_one(X) == small_model(30).predict_one(X)
        assert subscriber.predict_proba_one(X) == pytest.approx(small_model(30).predict_proba_one(X))
        assert swaps == [(None, 1), (1, 2), (2, 3)] and subscriber.swaps == 3
        assert subscriber.refused == []


def test_a_corrupted_envelope_is_refused_and_the_previous_model_keeps_serving(
    settings: Settings, topics: Topics, publisher: ModelPublisher
) -> None:
    with ModelSubscriber(settings) as subscriber:
        publish(publisher)
        assert subscriber.wait_for_version(1, timeout=15)
        publish_corrupt(settings, topics, version=2)
        eventually(lambda: subscriber.refused, timeout=15, what="the corrupt v2 to be refused")
        [(offset, version, reason, _)] = subscriber.refused
        # Offset 2: each version is a transaction, its commit marker takes an offset.
        assert (offset, version) == (2, 2) and "sha256" in reason
        assert subscriber.version == 1 and subscriber.predict_one(X) is not None
        assert publish(publisher).version == 2  # the corrupt record did not take the number
        assert subscriber.wait_for_version(2, timeout=15)
        assert subscriber.swaps == 2


def test_a_late_subscriber_loads_the_newest_valid_version_directly(
    settings: Settings, topics: Topics, publisher: ModelPublisher
) -> None:
    for _ in range(3):
        publish(publisher)
    publish_corrupt(settings, topics, version=4)  # the newest record is bad: fall back to v3
    with ModelSubscriber(settings) as subscriber:
        assert subscriber.wait_ready(timeout=15)
        assert subscriber.version == 3 and subscriber.swaps == 1
        assert [(o, v) for o, v, *_ in subscriber.refused] == [(6, 4)]  # commit markers take offsets


def test_predictions_never_fail_while_versions_swap(settings: Settings, publisher: ModelPublisher) -> None:
    publish(publisher)
    errors: list[BaseException] = []
    calls = 0
    done = threading.Event()
    with ModelSubscriber(settings) as subscriber:
        assert subscriber.wait_ready(timeout=15)

        def hammer() -> None:
            nonlocal calls
            while not done.is_set():
                try:
                    subscriber.predict_one(X)
                    subscriber.predict_proba_one(X)
                    calls += 1
                except BaseException as exc:  # every failure counts
                    errors.append(exc)

        reader = threading.Thread(target=hammer)
        reader.start()
        try:
            for version in range(2, 7):
                publish(publisher, n=version * 7)
                assert subscriber.wait_for_version(version, timeout=15)
        finally:
            done.set()
            reader.join()
    assert errors == [] and calls > 0 and subscriber.swaps == 6


def test_a_non_ascii_checksum_on_the_topic_is_refused_and_the_subscriber_goes_on(
    settings: Settings, topics: Topics, publisher: ModelPublisher
) -> None:
    with ModelSubscriber(settings) as subscriber:
        publish(publisher)
        assert subscriber.wait_for_version(1, timeout=15)
        planted = dataclasses.replace(
            seal(
                small_model(3), model_name=settings.model_name, version=2, flavor="river",
                signer=signer_from_settings(settings),
            ),
            sha256="é" * 64,
        )
        producer = make_producer(settings)
        producer.produce(
            topics.models, key=settings.model_name.encode(), value=encode_envelope(planted), headers=envelope_headers()
        )
        assert producer.flush(10) == 0
        eventually(lambda: subscriber.refused, timeout=15, what="the planted record to be refused")
        [(offset, version, reason, _)] = subscriber.refused
        assert (offset, version) == (2, 2) and "not 64 lowercase hex digits" in reason
        assert publish(publisher).version == 2  # the publisher reads past it too
        assert subscriber.wait_for_version(2, timeout=15)
        assert subscriber.last_error is None


def test_a_stopped_subscriber_restarts_and_resumes_following(settings: Settings, publisher: ModelPublisher) -> None:
    subscriber = ModelSubscriber(settings).start()
    try:
        publish(publisher)
        assert subscriber.wait_for_version(1, timeout=15)
        assert subscriber.stop(timeout=15)
        publish(publisher)
        subscriber.start()
        assert subscriber.wait_for_version(2, timeout=15)
        publish(publisher)
        assert subscriber.wait_for_version(3, timeout=15)
        assert subscriber.refused == [] and subscriber.swaps == 3
    finally:
        assert subscriber.stop(timeout=15)


def _subscriber_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("model-subscriber-") and t.is_alive()}


def test_no_subscriber_thread_outlives_stop_or_the_with_block(settings: Settings, publisher: ModelPublisher) -> None:
    before = _subscriber_threads()
    publish(publisher)
    subscriber = ModelSubscriber(settings).start(wait=15)
    assert subscriber.ready and subscriber.version == 1  # start(wait=...) returned with the model loaded
    assert len(_subscriber_threads() - before) == 1
    assert subscriber.stop(timeout=15)
    assert _subscriber_threads() - before == set()
    assert subscriber.predict_one(X) is not None  # the loaded model keeps answering after stop()

    with ModelSubscriber(settings) as inside:
        assert inside.wait_ready(timeout=15)
        assert len(_subscriber_threads() - before) == 1
    assert _subscriber_threads() - before == set()


def test_eight_threads_predicting_during_swaps_never_fail(settings: Settings, publisher: ModelPublisher) -> None:
    publish(publisher)
    errors: list[BaseException] = []
    seen: list[set[int]] = [set() for _ in range(8)]
    done = threading.Event()
    with ModelSubscriber(settings) as subscriber:
        assert subscriber.wait_ready(timeout=15)

        def hammer(mine: set[int]) -> None:
            while not done.is_set():
                try:
                    serving = subscriber.current()  # one snapshot: the version and its answer agree
                    serving.predict_one(X)
                    subscriber.predict_one(X)
                    mine.add(serving.version)
                except BaseException as exc:  # every failure counts
                    errors.append(exc)

        readers = [threading.Thread(target=hammer, args=(mine,)) for mine in seen]
        for reader in readers:
            reader.start()
        try:
            eventually(lambda: all(1 in mine for mine in seen), timeout=15, what="every reader to answer with v1")
            for version in range(2, 6):
                publish(publisher, n=version * 11)
                assert subscriber.wait_for_version(version, timeout=15)
                # Each reader answers with the new version before the next swap: swaps happen under load.
                eventually(lambda v=version: all(v in mine for mine in seen), timeout=15, what=f"v{version} answers")
        finally:
            done.set()
            for reader in readers:
                reader.join()
    assert errors == []
    assert all(mine == {1, 2, 3, 4, 5} for mine in seen) and subscriber.swaps == 5


def test_wait_ready_async_on_a_live_topic_wakes_on_the_first_version(
    settings: Settings, publisher: ModelPublisher
) -> None:
    import asyncio

    async def main(subscriber: ModelSubscriber) -> tuple[bool, int]:
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        ticker = asyncio.create_task(tick())
        # Published from a worker thread, so the loop itself stays free while it runs.
        publishing = asyncio.create_task(asyncio.to_thread(publish, publisher))
        ready = await subscriber.wait_ready_async(timeout=30)
        await publishing
        ticker.cancel()
        return ready, ticks

    with ModelSubscriber(settings) as subscriber:
        ready, ticks = asyncio.run(main(subscriber))
        assert ready and subscriber.version == 1
        assert ticks > 1  # the loop kept running while the coroutine waited


def test_the_subscriber_reports_its_position_on_the_models_topic_and_ends_at_zero_lag(
    settings: Settings, publisher: ModelPublisher
) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from consumers.serving_metrics import ModelCollector

    assert publisher.transactional  # each version ends in a commit marker the position must pass
    publish(publisher)
    with ModelSubscriber(settings) as subscriber:
        assert subscriber.wait_ready(30)
        for _ in range(2):
            publish(publisher)
        assert subscriber.wait_for_version(3, timeout=30)

        def at_the_end() -> bool:
            position = subscriber.models_topic_position
            return position is not None and position[0] == position[1]

        eventually(at_the_end, timeout=15, what="the subscriber's position at the models topic's end")
        position, end = subscriber.models_topic_position or (0, 0)
        assert end > 3  # three versions and their transaction markers, at least
        registry = CollectorRegistry()
        registry.register(ModelCollector(subscriber))
        text = generate_latest(registry).decode()
        assert "streamml_model_topic_lag 0.0" in text
        assert f"streamml_model_topic_position {float(position)}" in text
