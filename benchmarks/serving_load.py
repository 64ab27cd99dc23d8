"""``python -m benchmarks.serving_load``: ``streamml serve`` under load, with and without swaps, beside bare FastAPI.

On loopback, in one run, with 1 and 8 keep-alive client connections:

- **streamml**: ``streamml serve`` (a :class:`~consumers.http_service.ModelServer`
  over a :class:`~consumers.ModelSubscriber`) on a fresh namespace, serving a
  small signed river logistic regression;
- **streamml + swaps**: the same server while ``--swaps`` new versions (50;
  ``--quick``: 10) are published at a fixed interval during the load;
- **baseline**: the FastAPI + uvicorn app a user would write, the same river
  model in a global, no Kafka, no metrics.

Each server and the swap publisher run in processes of their own, and the
load comes from this one (threads on raw keep-alive sockets, the cheapest
Python client): in one process, clients, servers and publisher would take
turns on one GIL and the client would measure that instead. It reports, per
scenario and connection count, requests, failed requests (any status but 200,
or a connection error), throughput, p50 and p99 latency; the ratios
swaps/no-swaps p99 and streamml/baseline throughput and p99; the time from
the start of each version's ``publish()`` to the first answer naming it (p50
and p99 over the swaps: the model API's publish-to-first-prediction latency);
and checks that every answer names a version that was published. Without
``--bootstrap-servers`` it starts the embedded broker itself.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from benchmarks.harness import broker_at

__all__ = ["LoadResult", "run", "main"]

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "serving_load.json"
BODY = {"features": {"a": 1.0, "b": 2.0}}
CONNECTIONS = (1, 8)


def small_model(n: int) -> Any:
    """A river logistic regression trained on ``n`` rows of a fixed pattern (as the integration tests use)."""
    from model_publisher import catalog

    model = catalog.build("logistic")
    for i in range(n):
        model.learn_one({"a": float(i % 5), "b": float(i % 3)}, i % 2 == 0)
    return model


GOLDEN = [{"a": 1.0, "b": 2.0}, {"a": 4.0, "b": 0.0}]


@dataclass
class LoadResult:
    """What one bounded load against one server saw."""

    scenario: str
    connections: int
    seconds: float
    latencies_ms: list[float] = field(default_factory=list)
    failed: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    versions: Counter[int] = field(default_factory=Counter)
    swaps: int | None = None
    published: list[int] = field(default_factory=list)
    #: Wall-clock time each version's publish() started (the publisher process's clock; same machine).
    published_at: dict[int, float] = field(default_factory=dict)
    #: Wall-clock time each version was first in an answer, over all connections.
    first_answer_at: dict[int, float] = field(default_factory=dict)

    def publish_to_first_answer_ms(self) -> list[float]:
        """Per published version, from the start of its publish() to the first answer that names it."""
        return [
            (self.first_answer_at[v] - t) * 1000 for v, t in self.published_at.items() if v in self.first_answer_at
        ]

    @staticmethod
    def _pct(samples: Sequence[float], q: float) -> float:
        ordered = sorted(samples)
        return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))] if ordered else float("nan")

    def summary(self) -> dict[str, Any]:
        requests = len(self.latencies_ms) + self.failed
        return {
            "scenario": self.scenario,
            "connections": self.connections,
            "requests": requests,
            "failed": self.failed,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "throughput_rps": requests / self.seconds if self.seconds else 0.0,
            "p50_ms": self._pct(self.latencies_ms, 0.5),
            "p99_ms": self._pct(self.latencies_ms, 0.99),
            "versions_answered": sorted(self.versions),
            "swaps": self.swaps,
            "published": self.published,
            "publish_to_first_answer_p50_ms": self._pct(self.publish_to_first_answer_ms(), 0.5),
            "publish_to_first_answer_p99_ms": self._pct(self.publish_to_first_answer_ms(), 0.99),
        }


# -- the load -----------------------------------------------------------------------------------


def _request_bytes(host: str, port: int, body: dict[str, Any]) -> bytes:
    payload = json.dumps(body).encode()
    head = (
        f"POST /predict HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    )
    return head.encode() + payload


class _Client(threading.Thread):
    """One keep-alive connection sending the same request until told to stop; reconnects after an error."""

    def __init__(self, host: str, port: int, stop: threading.Event) -> None:
        super().__init__(name=f"load-{port}", daemon=True)
        self.address = (host, port)
        self.request = _request_bytes(host, port, BODY)
        self.stop = stop
        self.latencies_ms: list[float] = []
        self.failed = 0
        self.statuses: Counter[int] = Counter()
        self.versions: Counter[int] = Counter()
        #: Wall-clock time of the first answer naming each version.
        self.first_seen: dict[int, float] = {}

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                with socket.create_connection(self.address, timeout=10) as sock:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    self._loop(sock)
            except OSError:  # refused, reset or timed out: a failed request, then a new connection
                self.failed += 1

    def _loop(self, sock: socket.socket) -> None:
        reader = sock.makefile("rb")
        while not self.stop.is_set():
            started = time.perf_counter()
            sock.sendall(self.request)
            status_line = reader.readline()
            if not status_line:
                raise ConnectionResetError("the server closed the connection")
            status = int(status_line.split()[1])
            length = 0
            while (line := reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            body = reader.read(length)
            elapsed = (time.perf_counter() - started) * 1000
            self.statuses[status] += 1
            if status != 200:
                self.failed += 1
                continue
            self.latencies_ms.append(elapsed)
            version = json.loads(body).get("model_version")
            if version is not None:
                self.versions[version] += 1
                if version not in self.first_seen:
                    self.first_seen[version] = time.time()


def _load(
    scenario: str, port: int, connections: int, seconds: float, during: Callable[[], None] | None = None
) -> LoadResult:
    """``connections`` clients for ``seconds`` (and until ``during()``, run alongside, has returned)."""
    stop = threading.Event()
    clients = [_Client("127.0.0.1", port, stop) for _ in range(connections)]
    started = time.perf_counter()
    for client in clients:
        client.start()
    if during is not None:
        during()
    remaining = seconds - (time.perf_counter() - started)
    if remaining > 0:
        stop.wait(remaining)  # the load runs for its fixed duration; nothing sets this event early
    stop.set()
    for client in clients:
        client.join(15)
    result = LoadResult(scenario, connections, time.perf_counter() - started)
    for client in clients:
        result.latencies_ms += client.latencies_ms
        result.failed += client.failed
        result.statuses.update(client.statuses)
        result.versions.update(client.versions)
        for version, at in client.first_seen.items():
            result.first_answer_at[version] = min(at, result.first_answer_at.get(version, at))
    return result


# -- the servers and the publisher, each in a process of its own ----------------------------------


def _wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.05)  # a bounded re-check of the condition, not a stand-in for it


def _answers(url: str, body: dict[str, Any] | None = None) -> bool:
    data = None if body is None else json.dumps(body).encode()
    try:
        request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=5) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _swaps(port: int) -> int:
    """The server's own count of installed models, from its /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith("streamml_model_swaps_total "):
                return int(float(line.split()[1]))
    raise RuntimeError("the server's /metrics has no streamml_model_swaps_total")


class Features(BaseModel):
    """The baseline's request body (at module level: FastAPI resolves the handler's annotation by name)."""

    features: dict[str, float]


def baseline_app() -> Any:
    """The app a user would write around a model in a global: FastAPI, a pydantic body, a dict back."""
    from fastapi import FastAPI

    model = small_model(200)
    app = FastAPI()

    @app.post("/predict")
    async def predict(request: Features) -> dict[str, Any]:
        return {
            "prediction": model.predict_one(request.features),
            "probabilities": {str(k): v for k, v in model.predict_proba_one(request.features).items()},
        }

    return app


def _serve_baseline(port: int) -> None:
    import uvicorn

    uvicorn.run(baseline_app(), host="127.0.0.1", port=port, log_level="warning", access_log=False)


def _publish_versions(env: dict[str, str], count: int, interval: float, pipe: Connection) -> None:
    """In a child process: start a publisher, say so, then on "go" publish ``count`` versions every ``interval``."""
    from model_publisher.publisher import ModelPublisher
    from streamml.config import load_settings

    publisher = ModelPublisher(load_settings(env=env))
    publisher.start()  # fences the previous publisher of this name: only one publishes at a time
    pipe.send("ready")
    pipe.recv()
    versions: list[tuple[int, float]] = []
    try:
        start = time.monotonic()
        for i in range(count):
            # A fixed schedule, not a fixed pause: a slow publish does not push the later ones back.
            delay = start + (i + 1) * interval - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            model = small_model(200 + i + 1)
            started = time.time()
            envelope = publisher.publish(model, metrics={}, n_learned=i + 1, input_offsets={}, golden_inputs=GOLDEN)
            versions.append((envelope.version, started))
    finally:
        publisher.close()
        pipe.send(versions)


@dataclass
class _Rig:
    env: dict[str, str]
    streamml_port: int
    baseline_port: int
    first_version: int


def _swap_during(rig: _Rig, count: int, interval: float, into: LoadResult) -> Callable[[], None]:
    """A ``during`` for :func:`_load` that publishes ``count`` versions, once a publisher is up."""
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no librdkafka state forked
    ours, theirs = context.Pipe()
    child = context.Process(target=_publish_versions, args=(rig.env, count, interval, theirs), daemon=True)
    child.start()
    if not ours.poll(120) or ours.recv() != "ready":
        child.kill()
        raise RuntimeError("the publisher process did not start")

    def publish() -> None:
        ours.send("go")
        if not ours.poll(count * interval + 120):
            child.kill()
            raise RuntimeError("the publisher process did not finish")
        sent: list[tuple[int, float]] = ours.recv()
        into.published = [version for version, _ in sent]
        into.published_at = dict(sent)
        child.join(30)

    return publish


def run(bootstrap: str | None, *, quick: bool = False, swaps: int | None = None) -> dict[str, Any]:
    """Every scenario for 1 and 8 connections; start the embedded broker when ``bootstrap`` is ``None``."""
    count = swaps if swaps is not None else (10 if quick else 50)
    seconds = 3.0 if quick else 10.0
    with tempfile.TemporaryDirectory(prefix="streamml-serving-load-") as scratch, \
            broker_at(bootstrap, Path(scratch)) as servers:
        return _run_on(servers, Path(scratch), count, seconds)


def _run_on(bootstrap: str, home: Path, count: int, seconds: float) -> dict[str, Any]:
    from model_publisher.publisher import ModelPublisher
    from streamml.broker import free_port
    from streamml.cluster import Cluster
    from streamml.config import load_settings
    from streamml.signing import generate_key_pair

    generate_key_pair(home / "keys", "bench")
    settings = load_settings(
        env={}, bootstrap_servers=bootstrap, namespace=f"load{uuid.uuid4().hex[:8]}.", home=home / "home",
        model_signing_key_file=home / "keys" / "bench.key", model_trusted_keys=str(home / "keys" / "bench.pub"),
    )
    cluster = Cluster(settings)
    cluster.create_topics(cluster.topics.specs(settings))
    publisher = ModelPublisher(cluster)
    publisher.start()
    try:
        first = publisher.publish(small_model(200), metrics={}, n_learned=200, input_offsets={}, golden_inputs=GOLDEN)
    finally:
        publisher.close()
    env = {**settings.to_env(), "PATH": os.environ.get("PATH", "")}
    rig = _Rig(env, free_port(), free_port(), first.version)
    log = (home / "serve.log").open("w")
    streamml = subprocess.Popen(
        [sys.executable, "-m", "streamml_cli", "serve", "--port", str(rig.streamml_port)],
        env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )
    baseline = multiprocessing.get_context("spawn").Process(target=_serve_baseline, args=(rig.baseline_port,))
    baseline.start()
    try:
        _wait_until(lambda: _answers(f"http://127.0.0.1:{rig.streamml_port}/readyz"), 60, "streamml serve ready")
        _wait_until(lambda: _answers(f"http://127.0.0.1:{rig.baseline_port}/predict", BODY), 60, "baseline ready")
        for port in (rig.streamml_port, rig.baseline_port):
            _load("warm-up", port, 2, 0.5)
        results: list[LoadResult] = []
        published = [first.version]
        for connections in CONNECTIONS:
            results.append(_load("baseline", rig.baseline_port, connections, seconds))
            results.append(_load("streamml", rig.streamml_port, connections, seconds))
            swapping = LoadResult("streamml+swaps", connections, 0.0)
            before = _swaps(rig.streamml_port)
            loaded = _load(
                "streamml+swaps", rig.streamml_port, connections, seconds,
                during=_swap_during(rig, count, seconds / (count + 1), swapping),
            )
            loaded.swaps, loaded.published = _swaps(rig.streamml_port) - before, swapping.published
            loaded.published_at = swapping.published_at
            published += swapping.published
            results.append(loaded)
    finally:
        streamml.terminate()
        baseline.terminate()
        streamml.wait(30)
        baseline.join(30)
        log.close()
    return _report(results, published, count)


def _report(results: list[LoadResult], published: list[int], count: int) -> dict[str, Any]:
    summaries = [r.summary() for r in results]
    answered = {v for r in results if r.scenario != "baseline" for v in r.versions}
    ratios = {}
    for connections in CONNECTIONS:
        by = {s["scenario"]: s for s in summaries if s["connections"] == connections}
        base, ours, swapping = by["baseline"], by["streamml"], by["streamml+swaps"]
        ratios[str(connections)] = {
            "swaps_vs_no_swaps_p99": swapping["p99_ms"] / ours["p99_ms"],
            "streamml_vs_baseline_throughput": ours["throughput_rps"] / base["throughput_rps"],
            "streamml_vs_baseline_p99": ours["p99_ms"] / base["p99_ms"],
        }
    return {
        "swaps_per_run": count,
        "runs": summaries,
        "ratios": ratios,
        "published_versions": sorted(published),
        "unpublished_versions_answered": sorted(answered - set(published)),
    }


def table(report: dict[str, Any]) -> str:
    """The report as the terminal table."""
    lines = [f"{'scenario':<16} {'conns':>5} {'requests':>9} {'failed':>6} {'req/s':>8} {'p50 ms':>7} "
             f"{'p99 ms':>7} {'swaps':>5}"]
    for s in report["runs"]:
        swaps = "" if s["swaps"] is None else str(s["swaps"])
        lines.append(
            f"{s['scenario']:<16} {s['connections']:>5} {s['requests']:>9} {s['failed']:>6} "
            f"{s['throughput_rps']:>8.0f} {s['p50_ms']:>7.2f} {s['p99_ms']:>7.2f} {swaps:>5}"
        )
    for connections, r in report["ratios"].items():
        lines.append(
            f"{connections} conn(s): swaps/no-swaps p99 {r['swaps_vs_no_swaps_p99']:.2f}, streamml/baseline "
            f"throughput {r['streamml_vs_baseline_throughput']:.2f}, p99 {r['streamml_vs_baseline_p99']:.2f}"
        )
    for s in report["runs"]:
        if s["scenario"] == "streamml+swaps":
            lines.append(
                f"{s['connections']} conn(s): publish -> first answer with that version p50 "
                f"{s['publish_to_first_answer_p50_ms']:.1f} ms, p99 {s['publish_to_first_answer_p99_ms']:.1f} ms"
            )
    unexpected = report["unpublished_versions_answered"]
    lines.append("every answered version was published" if not unexpected else f"UNPUBLISHED versions: {unexpected}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.serving_load", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 s loads and 10 swaps instead of 10 s and 50")
    parser.add_argument("--bootstrap-servers", default=None, help="use this broker instead of the embedded one")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, metavar="PATH")
    args = parser.parse_args(argv)
    report = run(args.bootstrap_servers, quick=args.quick)
    print(table(report))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"quick": args.quick, **report}, indent=2))
    print(f"results written to {args.json}")
    failed = sum(s["failed"] for s in report["runs"])
    return 1 if failed or report["unpublished_versions_answered"] else 0


if __name__ == "__main__":
    sys.exit(main())
