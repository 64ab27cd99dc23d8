"""ModelSubscriber from asyncio code, start(wait=...) and stop(), without a broker.

A model is installed through the subscriber's slot (what its thread does
after reading an envelope), so no Kafka is needed: the broker side has its
own tests in tests/integration/test_subscriber_live.py.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from consumers import ModelSubscriber
from streamml.config import load_settings
from streamml.envelope import seal
from tests.conftest import eventually


class Constant:
    """A picklable model that always answers ``answer``."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer

    def predict_one(self, x: dict[str, Any]) -> Any:
        return self.answer


def subscriber(tmp_path: Path, **overrides: Any) -> ModelSubscriber:
    settings = load_settings(
        env={}, model_name="m", home=str(tmp_path), development_mode=True, model_pickle_allow=f"{__name__}.*",
        **overrides,
    )
    return ModelSubscriber(settings)


def install(models: ModelSubscriber, version: int) -> None:
    """Load v``version`` into the subscriber as its thread would."""
    assert models._slot.offer(seal(Constant(version), model_name="m", version=version, flavor="river"))


async def ticking_while(awaitable: Any) -> tuple[Any, int]:
    """Await ``awaitable`` while a second coroutine counts how often the loop let it run."""
    ticks = 0
    done = False

    async def tick() -> None:
        nonlocal ticks
        while not done:
            ticks += 1
            await asyncio.sleep(0.01)

    ticker = asyncio.create_task(tick())
    try:
        result = await awaitable
    finally:
        done = True
        await ticker
    return result, ticks


def test_wait_ready_async_times_out_without_blocking_the_event_loop(tmp_path: Path) -> None:
    models = subscriber(tmp_path)
    started = time.monotonic()
    ready, ticks = asyncio.run(ticking_while(models.wait_ready_async(timeout=0.3)))
    assert ready is False and time.monotonic() - started >= 0.3
    assert ticks >= 5  # a blocking wait would have let the ticker run once at most
    assert models._async_waiters == set()


def test_wait_ready_async_wakes_as_soon_as_a_model_is_loaded_by_another_thread(tmp_path: Path) -> None:
    models = subscriber(tmp_path)

    def load_when_waited_for() -> None:
        eventually(lambda: models._async_waiters, timeout=10, what="a coroutine to wait")
        install(models, 1)

    loader = threading.Thread(target=load_when_waited_for)
    loader.start()
    started = time.monotonic()
    ready, ticks = asyncio.run(ticking_while(models.wait_ready_async(timeout=30)))
    loader.join()
    assert ready is True and models.version == 1
    assert time.monotonic() - started < 10  # woken by the swap, not by the timeout
    assert ticks >= 1


def test_wait_ready_async_answers_at_once_when_ready_and_a_cancelled_wait_leaves_nothing(tmp_path: Path) -> None:
    models = subscriber(tmp_path)

    async def cancelled() -> None:
        task = asyncio.create_task(models.wait_ready_async())
        while not models._async_waiters:
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancelled())
    assert models._async_waiters == set()
    install(models, 1)
    assert asyncio.run(models.wait_ready_async(timeout=0)) is True
    # current() and predict_one are plain calls from a coroutine: they never block.
    assert asyncio.run(_predict(models)) == (1, 1)


async def _predict(models: ModelSubscriber) -> tuple[int, Any]:
    serving = models.current()
    return serving.version, models.predict_one({"a": 1.0})


def test_start_with_wait_returns_itself_not_ready_when_no_model_comes_and_stop_leaves_no_thread(
    tmp_path: Path, unused_port: int
) -> None:
    before = set(threading.enumerate())
    models = subscriber(tmp_path, bootstrap_servers=f"127.0.0.1:{unused_port}", connect_timeout_seconds=1.0)
    started = time.monotonic()
    assert models.start(wait=0.5) is models
    assert not models.ready and 0.5 <= time.monotonic() - started < 5
    ours = [t for t in set(threading.enumerate()) - before if t.name == "model-subscriber-m"]
    assert len(ours) == 1 and ours[0].is_alive()
    assert models.stop(timeout=15)
    assert not ours[0].is_alive()
    assert [t for t in set(threading.enumerate()) - before if t.name.startswith("model-subscriber-")] == []
