"""The kernel's metrics endpoint: serve a registry, release the port, a taken port in one line (no broker)."""

from __future__ import annotations

import socket

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from streamml.config import load_settings
from streamml.errors import PortInUseError
from streamml.metrics_http import MetricsExporter, exporter_for, sample_names

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(registry: CollectorRegistry) -> Samples:
    """Every sample of ``registry`` as ``{(name, sorted labels): value}``, through the text format."""
    text = generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_an_exporter_serves_its_registry_and_releases_the_port() -> None:
    registry = CollectorRegistry()
    Counter("streamml_test_things", "things", registry=registry).inc(3)
    with MetricsExporter(registry, port=0) as exporter:
        assert exporter.port > 0 and exporter.url == f"http://127.0.0.1:{exporter.port}/metrics"
        text = httpx.get(exporter.url, timeout=5).text
        assert "streamml_test_things_total 3.0" in text
        port = exporter.port
    with socket.socket() as sock:  # stopped: the port can be bound again at once
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
    exporter.stop()  # idempotent


def test_two_registries_in_one_process_stay_apart() -> None:
    first, second = CollectorRegistry(), CollectorRegistry()
    Counter("streamml_test_a", "a", registry=first).inc()
    Counter("streamml_test_a", "a", registry=second).inc(5)
    with MetricsExporter(first) as one, MetricsExporter(second) as two:
        assert "streamml_test_a_total 1.0" in httpx.get(one.url, timeout=5).text
        assert "streamml_test_a_total 5.0" in httpx.get(two.url, timeout=5).text


def test_a_taken_port_is_one_config_error_naming_it() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(PortInUseError, match=f"metrics port {port} on 127.0.0.1 is already in use") as caught:
            MetricsExporter(CollectorRegistry(), port=port).start()
    assert caught.value.exit_code == 2 and "\n" not in str(caught.value)


def test_the_settings_decide_whether_an_exporter_runs() -> None:
    registry = CollectorRegistry()
    assert exporter_for(load_settings({}), registry) is None
    on = exporter_for(load_settings({"STREAMML_METRICS_PORT": "9400", "STREAMML_METRICS_HOST": "0.0.0.0"}), registry)
    assert on is not None and (on.host, on.port) == ("0.0.0.0", 9400)
    flag = exporter_for(load_settings({"STREAMML_METRICS_PORT": "9400"}), registry, port=9401)
    assert flag is not None and flag.port == 9401  # --metrics-port wins over the variable


@pytest.mark.parametrize("raw", ["-1", "65536", "http"])
def test_a_bad_metrics_port_is_a_config_error(raw: str) -> None:
    from streamml.errors import ConfigError

    with pytest.raises(ConfigError, match="METRICS_PORT|metrics_port"):
        load_settings({"STREAMML_METRICS_PORT": raw})


def test_sample_names_add_what_prometheus_client_writes() -> None:
    names = sample_names({"streamml_h": "histogram", "streamml_g": "gauge"})
    assert set(names) == {
        "streamml_g", "streamml_h", "streamml_h_bucket", "streamml_h_count", "streamml_h_sum", "streamml_h_created",
    }
    with pytest.raises(ValueError, match="unknown metric type"):
        sample_names({"streamml_x": "countr"})
