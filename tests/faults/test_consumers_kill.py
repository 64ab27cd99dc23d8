"""Fault 4: the stream scorer and ``streamml serve`` SIGKILLed, a new version published while they are down.

Both serve v1 first; both are SIGKILLed; v2 is published; both restart.
Guarantees: each is back on the newest verified version (v2) within
:data:`BACK_WITHIN` seconds of its restart (serve: ``GET /readyz``; scorer: its
predictions name v2), and no prediction goes back to v1 on a partition after
v2 appeared there.
"""

from __future__ import annotations

import json
import random
import time
import urllib.request
from collections.abc import Callable
from typing import Any

from model_publisher import catalog
from model_publisher.publisher import ModelPublisher
from streamml.broker import free_port
from streamml.cluster import Cluster
from streamml.config import Settings
from streamml.reader import read_to_end
from streamml.records import Prediction, RecordCodec
from streamml.topics import Topics
from tests.conftest import eventually
from tests.faults.conftest import Component
from tests.faults.workload import FeatureFeeder

PREDICTIONS = RecordCodec(Prediction)
#: Longest either may take from its restart to serving the newest version, seconds (loose; printed).
BACK_WITHIN = 30.0


def _publish(settings: Settings, seed: int) -> int:
    rng = random.Random(seed)
    model = catalog.build("logistic")
    for _ in range(300):
        a, b = rng.gauss(0, 1), rng.gauss(0, 1)
        model.learn_one({"a": a, "b": b, "noise": rng.random()}, a + b > 0)
    publisher = ModelPublisher(settings)
    publisher.start()
    try:
        return publisher.publish(model, metrics={"accuracy": 1.0}, n_learned=300, input_offsets={}).version
    finally:
        publisher.close()


def _ready_version(port: int) -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
            body: dict[str, Any] = json.loads(response.read())
            return int(body["model_version"])
    except OSError:
        return None  # not listening yet, or 503 (no model yet)


def _predictions(settings: Settings, topics: Topics) -> list[tuple[int, int, Prediction]]:
    return [(m.partition() or 0, m.offset() or 0, PREDICTIONS.decode(m.value(), m.headers()))
            for m in read_to_end(Cluster(settings), topics.predictions)]


def test_scorer_and_server_come_back_on_the_newest_version(
    settings: Settings, topics: Topics, spawn: Callable[..., Component]
) -> None:
    assert _publish(settings, 1) == 1
    port = free_port()
    server = spawn("serve", "--port", str(port))
    scorer = spawn("score")
    feeder = FeatureFeeder(settings, topics, rate=200.0, limit=20_000).start()
    try:
        def on_v1() -> bool:
            server.assert_alive()
            scorer.assert_alive()
            return _ready_version(port) == 1 and any(p.model_version == 1 for *_, p in _predictions(settings, topics))

        eventually(on_v1, timeout=45, interval=0.3, what="serve and the scorer on v1")
        server.kill()
        scorer.kill()
        assert _publish(settings, 2) == 2
        scored_before = len(_predictions(settings, topics))
        server.start()
        scorer.start()
        restarted = time.monotonic()

        def server_on_v2() -> float | None:
            server.assert_alive()
            return time.monotonic() - restarted if _ready_version(port) == 2 else None

        def scorer_on_v2() -> float | None:
            scorer.assert_alive()
            if any(p.model_version == 2 for *_, p in _predictions(settings, topics)[scored_before:]):
                return time.monotonic() - restarted
            return None

        serve_back = eventually(server_on_v2, timeout=60, interval=0.1, what="serve back on v2")
        scorer_back = eventually(scorer_on_v2, timeout=60, interval=0.2, what="the scorer back on v2")
    finally:
        feeder.stop()
    codes = (server.stop(), scorer.stop())
    predictions = _predictions(settings, topics)
    regressions = 0
    newest: dict[int, int] = {}
    for partition, _, p in sorted(predictions, key=lambda t: (t[0], t[1])):
        if p.model_version < newest.get(partition, 0):
            regressions += 1
        newest[partition] = max(newest.get(partition, 0), p.model_version)
    print(
        f"faults: consumers-kill: serve back on v2 {serve_back:.1f} s, scorer back on v2 {scorer_back:.1f} s "
        f"after restart, predictions {len(predictions)}, version regressions {regressions}"
    )
    assert serve_back <= BACK_WITHIN and scorer_back <= BACK_WITHIN, (serve_back, scorer_back)
    assert regressions == 0
    assert codes == (0, 0), (server.tail(), scorer.tail())
