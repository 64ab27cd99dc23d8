"""Over TLS, for real: an embedded broker that accepts TLS only, and every kind of client against it.

The broker (``EmbeddedBroker`` with ``cert``/``key``: Tansu behind the TLS
front, docs/security.md#embedded-broker) gets a server certificate for
127.0.0.1/localhost from a CA made here. librdkafka clients and the whole
pipeline (``streamml process`` on faust/aiokafka, ``learn``, ``score``, the
producer and an SDK subscriber, run as ``streamml demo`` runs them) connect
with ``STREAMML_SECURITY_PROTOCOL=SSL`` and the CA; the port they are given
(the one the broker advertises) refuses plaintext, so whatever worked went over TLS. A client without the CA
or with another CA is refused with one line at once, a plaintext one after
its connect timeout.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from streamml.broker import EmbeddedBroker, free_port, resolve_binary
from streamml.cluster import Cluster
from streamml.config import Settings, load_settings
from streamml.kafka import make_consumer, make_producer
from streamml.tls_proxy import start_tls_front
from streamml.topics import TopicSpec
from tests.conftest import eventually
from tests.tls_certs import TlsFiles, make_tls_files

pytestmark = pytest.mark.integration

STREAMML = Path(sys.executable).with_name("streamml")


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def tls_broker(tls: TlsFiles) -> Iterator[EmbeddedBroker]:
    """An embedded broker of this module's own that speaks TLS only, with the test CA's server certificate."""
    with EmbeddedBroker(port=free_port(), home=tls.ca.parent / "home", cert=tls.server_cert, key=tls.server_key) as b:
        yield b


@pytest.fixture(scope="module")
def sasl_ssl_broker(tls: TlsFiles, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Tansu with ``--authentication`` behind the TLS front: a SASL_SSL-only broker; its address.

    Not an ``EmbeddedBroker`` option: Tansu 0.6.0's storage engines keep no
    SCRAM credentials (``tansu user create`` answers OK and stores nothing),
    so this broker refuses every user (docs/security.md#authentication).
    """
    tansu_port, port = free_port(), free_port()
    with open(tmp_path_factory.mktemp("sasl") / "broker.log", "wb") as log:
        tansu = subprocess.Popen(
            [resolve_binary(), "broker", "--listener-url", f"tcp://127.0.0.1:{tansu_port}",
             "--advertised-listener-url", f"tcp://127.0.0.1:{port}", "--authentication"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        front = start_tls_front(("127.0.0.1", port), ("127.0.0.1", tansu_port), tls.server_cert, tls.server_key, log)
        try:
            eventually(lambda: _listening(tansu_port) and _listening(port), timeout=10, what="the SASL_SSL broker")
            yield f"127.0.0.1:{port}"
        finally:
            for process in (front, tansu):
                process.terminate()
                process.wait(10)


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def tls_settings(tls_broker: EmbeddedBroker, tls: TlsFiles, tmp_path: Path, model_keys: tuple[Path, Path]) -> Settings:
    """This test's namespace on the TLS broker, with the CA; models signed with the session's keys."""
    private, public = model_keys
    return load_settings(
        env={}, bootstrap_servers=tls_broker.bootstrap_servers, namespace=f"tls{uuid.uuid4().hex[:8]}.",
        home=tmp_path / "home", security_protocol="SSL", ssl_ca_file=tls.ca,
        model_signing_key_file=private, model_trusted_keys=str(public),
    )


def _cli(args: list[str], env: dict[str, str], timeout: float = 30) -> tuple[subprocess.CompletedProcess[str], float]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("STREAMML_")}
    started = time.monotonic()
    result = subprocess.run([str(STREAMML), *args], env={**clean, **env}, capture_output=True, text=True,
                            timeout=timeout)
    return result, time.monotonic() - started


def test_librdkafka_producer_and_consumer_round_trip_over_tls(
    tls_settings: Settings, tls_broker: EmbeddedBroker
) -> None:
    topic = tls_settings.topic("roundtrip")
    Cluster(tls_settings).create_topics([TopicSpec(topic, 1)])
    producer = make_producer(tls_settings)
    for i in range(100):
        producer.produce(topic, key=b"k", value=b"v%d" % i)
    assert producer.flush(10) == 0
    consumer = make_consumer(tls_settings, tls_settings.topic("g"))
    consumer.assign([TopicPartition(topic, 0, 0)])
    values: list[bytes] = []

    def all_read() -> bool:
        values.extend(m.value() or b"" for m in consumer.consume(100, 0.5) if m.error() is None)
        return len(values) >= 100

    eventually(all_read, timeout=20, what="100 records over TLS")
    consumer.close()
    assert values == [b"v%d" % i for i in range(100)]
    # The same port refuses a plaintext client: the records above did travel encrypted.
    plaintext = AdminClient({"bootstrap.servers": tls_broker.bootstrap_servers, "log_level": 0})
    with pytest.raises(KafkaException, match="transport failure"):
        plaintext.list_topics(timeout=2)


@pytest.mark.parametrize("ca", ["none", "other"])
def test_a_client_without_the_ca_is_refused_with_one_line(
    ca: str, tls_settings: Settings, tls: TlsFiles
) -> None:
    env = {"STREAMML_BOOTSTRAP_SERVERS": tls_settings.bootstrap_servers, "STREAMML_SECURITY_PROTOCOL": "SSL"}
    if ca == "other":
        env["STREAMML_SSL_CA_FILE"] = str(tls.other_ca)
    result, took = _cli(["topics", "list"], env)
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "certificate verify failed" in lines[0] and "STREAMML_SSL_CA_FILE" in lines[0]
    assert took < 8, f"refused after {took:.1f}s, not at once"  # the connect timeout is 10 s


def test_a_plaintext_client_fails_cleanly(tls_settings: Settings) -> None:
    env = {"STREAMML_BOOTSTRAP_SERVERS": tls_settings.bootstrap_servers, "STREAMML_CONNECT_TIMEOUT_SECONDS": "2"}
    result, took = _cli(["lag"], env)
    assert result.returncode == 3, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert f"no Kafka broker answered at {tls_settings.bootstrap_servers} within 2s" in lines[0]
    assert took < 10


def test_the_whole_pipeline_runs_over_tls(tls_settings: Settings) -> None:
    """Producer, processor (faust), learner, scorer and an SDK subscriber, as ``streamml demo`` runs them."""
    from streamml_cli.orchestration.demo import DemoOptions, run_demo

    settings = tls_settings.with_overrides(publish_every_events=300, publish_every_seconds=2.0, gate_events=0)
    started = time.monotonic()
    result = run_demo(
        settings, DemoOptions(events=1500, rate=None, bad_fraction=0.02, seed=5, timeout=120, embedded=False)
    )
    assert time.monotonic() - started < 120
    # Every event in features or dead letters, every feature vector scored, versions published and
    # served, lag back to zero, every component (each a `streamml` child process) exited 0.
    assert len(result.checks) >= 8 and all(result.checks.values()), result.checks


def test_refused_credentials_are_one_clear_line(sasl_ssl_broker: str, tls: TlsFiles) -> None:
    env = {
        "STREAMML_BOOTSTRAP_SERVERS": sasl_ssl_broker, "STREAMML_SECURITY_PROTOCOL": "SASL_SSL",
        "STREAMML_SSL_CA_FILE": str(tls.ca), "STREAMML_SASL_MECHANISM": "SCRAM-SHA-256",
        "STREAMML_SASL_USERNAME": "alice", "STREAMML_SASL_PASSWORD": "not-her-password",
    }
    result, took = _cli(["topics", "list"], env)
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    # TLS held (the CA is right); the SCRAM exchange itself was refused.
    assert f"the broker at {sasl_ssl_broker} refused this client's credentials" in lines[0], lines[0]
    assert "SCRAM authentication failed" in lines[0] and "STREAMML_SASL_PASSWORD" in lines[0]
    assert took < 8, f"refused after {took:.1f}s, not at once"
