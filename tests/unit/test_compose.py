"""docker-compose.yml: Kafka in KRaft mode and real streamml commands for every service.

No Docker engine runs on our machines, so the file is checked here, not run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from streamml_cli import cli

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
#: The services built from this repository (the brokers, Prometheus and Grafana are images).
COMPONENTS = {name: svc for name, svc in SERVICES.items() if svc.get("build")}


def resolve(args: list[str]) -> click.Command:
    """Parse ``args`` exactly as the CLI would, without running the command."""
    command: click.Command = cli
    ctx = cli.make_context("streamml", list(args), resilient_parsing=True)
    remaining = list(args)
    while isinstance(command, click.Group):
        assert remaining, f"{args}: names a group, not a command"
        name = remaining.pop(0)
        sub = command.get_command(ctx, name)
        assert sub is not None, f"{args}: {name!r} is not a streamml command"
        command = sub
    # make_context validates every option and argument; a typo raises UsageError.
    command.make_context(command.name or "", remaining)
    return command


def test_kafka_runs_in_kraft_mode() -> None:
    assert "zookeeper" not in str(COMPOSE).lower()
    for name in ("kafka-1", "kafka-2", "kafka-3"):
        env = SERVICES[name]["environment"]
        assert "controller" in env["KAFKA_PROCESS_ROLES"] and "broker" in env["KAFKA_PROCESS_ROLES"]
        assert SERVICES[name]["image"].startswith("apache/kafka:")
        assert SERVICES[name]["healthcheck"]["test"]


@pytest.mark.parametrize("name", sorted(COMPONENTS))
def test_every_service_runs_a_real_streamml_command(name: str) -> None:
    service = COMPONENTS[name]
    assert service["build"] == "." and service["image"] == "streamml:latest"
    assert service["environment"]["STREAMML_BOOTSTRAP_SERVERS"] == "kafka-1:9092,kafka-2:9092,kafka-3:9092"
    resolve(service["command"])


@pytest.mark.parametrize("name", sorted(COMPONENTS))
def test_healthchecks_are_real_commands(name: str) -> None:
    service = COMPONENTS[name]
    check = service.get("healthcheck", {})
    if service.get("restart") == "no":
        return  # one-shot tools: compose waits for them to finish, not to be healthy
    test = check["test"]
    if test[:2] == ["CMD", "python"]:
        # HTTP services are checked on their own port (the paths: test_every_pipeline_service_...).
        port = service["command"][service["command"].index("--port") + 1]
        assert test[-1].count(f"127.0.0.1:{port}/") == 1, name
        return
    assert test[:2] == ["CMD", "streamml"], f"{name}: healthcheck must call streamml"
    resolve(test[2:])


def test_components_wait_for_topics_and_topics_wait_for_healthy_kafka() -> None:
    for node in ("kafka-1", "kafka-2", "kafka-3"):
        assert SERVICES["topics"]["depends_on"][node]["condition"] == "service_healthy"
    for name in ("producer", "processor", "learner", "scorer", "model-api", "monitor"):
        assert SERVICES[name]["depends_on"]["topics"]["condition"] == "service_completed_successfully"


def test_a_typo_in_a_command_would_be_caught() -> None:
    with pytest.raises((AssertionError, click.UsageError)):
        resolve(["topics", "craete"])
    with pytest.raises(click.UsageError):
        resolve(["lag", "--grop", "x"])


def test_dockerfile_installs_the_project_and_uses_the_cli() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert "pip install ." in text and 'ENTRYPOINT ["streamml"]' in text
    import tomllib

    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    for package in (p.rstrip("*") for p in packages):
        assert f"COPY {package} " in text, package


# --- the production-like parts: a 3-node cluster, readiness, Prometheus and Grafana ---

KAFKA_NODES = sorted(name for name in SERVICES if name.startswith("kafka-"))
PIPELINE = ("producer", "processor", "learner", "scorer", "model-api", "monitor")
DEPLOY = ROOT / "deploy"


def test_kafka_is_a_three_node_kraft_cluster_with_replication_3_and_min_isr_2() -> None:
    assert KAFKA_NODES == ["kafka-1", "kafka-2", "kafka-3"]
    ids, voters = set(), set()
    for name in KAFKA_NODES:
        env = SERVICES[name]["environment"]
        ids.add(str(env["KAFKA_NODE_ID"]))
        voters.add(env["KAFKA_CONTROLLER_QUORUM_VOTERS"])
        assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
        assert f"PLAINTEXT://{name}:9092" in env["KAFKA_ADVERTISED_LISTENERS"]
        assert str(env["KAFKA_DEFAULT_REPLICATION_FACTOR"]) == "3" and str(env["KAFKA_MIN_INSYNC_REPLICAS"]) == "2"
        assert str(env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"]) == "3"
        assert any(v.endswith(":/var/lib/kafka/data") for v in SERVICES[name]["volumes"]), name
    assert ids == {"1", "2", "3"}
    [quorum] = voters
    assert quorum == "1@kafka-1:9093,2@kafka-2:9093,3@kafka-3:9093"


def test_pipeline_topics_are_created_with_replication_3_and_min_isr_2() -> None:
    from streamml.config import load_settings
    from streamml.topics import Topics

    env = {k: v for k, v in SERVICES["topics"]["environment"].items() if k.startswith("STREAMML_")}
    assert env["STREAMML_BOOTSTRAP_SERVERS"] == "kafka-1:9092,kafka-2:9092,kafka-3:9092"
    settings = load_settings(env={k: v for k, v in env.items() if k not in {"STREAMML_MODEL_TRUSTED_KEYS"}})
    assert settings.replication_factor == 3
    assert all(s.config["min.insync.replicas"] == "2" for s in Topics.from_settings(settings).specs(settings))
    for node in KAFKA_NODES:
        assert SERVICES["topics"]["depends_on"][node]["condition"] == "service_healthy"


@pytest.mark.parametrize("name", PIPELINE)
def test_every_pipeline_service_restarts_and_has_a_readiness_check(name: str) -> None:
    service = SERVICES[name]
    assert service["restart"] in ("unless-stopped", "always", "on-failure")
    test = service["healthcheck"]["test"]
    if test[:2] == ["CMD", "python"]:
        # HTTP services are ready when they say so: serve's /readyz waits for a verified model.
        port = service["command"][service["command"].index("--port") + 1]
        path = "/readyz" if service["command"][0] == "serve" else "/healthz"
        assert f"127.0.0.1:{port}{path}" in test[-1], name
    elif service["command"][0] in ("process", "learn", "score"):
        # A verdict on the component's own group, not "the broker answers".
        args = test[2:]
        assert args[:1] == ["lag"] and "--fail-on" in args and "--group" in args, name
        group = args[args.index("--group") + 1]
        assert group == {"process": "streamml.processor", "learn": "streamml.learner", "score": "streamml.scorer"}[
            service["command"][0]
        ]


def test_images_are_pinned() -> None:
    for name, service in SERVICES.items():
        image = service.get("image", "")
        if service.get("build"):
            continue
        assert ":" in image and not image.endswith(":latest"), f"{name}: pin the image, got {image!r}"


def _metrics_port(service: dict[str, Any]) -> str:
    command = service["command"]
    for flag in ("--metrics-port", "--port"):
        if flag in command:
            return str(command[command.index(flag) + 1])
    raise AssertionError(f"{command}: opens no metrics port")


def test_prometheus_scrapes_every_component_at_the_port_its_command_opens() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    targets = {t for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]}
    expected = {f"{name}:{_metrics_port(SERVICES[name])}" for name in ("processor", "learner", "scorer", "model-api",
                                                                        "monitor")}
    assert targets == expected
    volumes = SERVICES["prometheus"]["volumes"]
    assert "./deploy/prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in volumes
    assert "--config.file=/etc/prometheus/prometheus.yml" in SERVICES["prometheus"]["command"]


def _exported_metric_names() -> set[str]:
    """Every metric family the code can export, from each component's own list."""
    from consumers import scorer_metrics, serving_metrics
    from model_publisher import metrics as learner_metrics
    from stream_processors import metrics as processor_metrics
    from streamml_cli.orchestration import monitor_service

    names: set[str] = set()
    for module in (serving_metrics, scorer_metrics, learner_metrics, processor_metrics, monitor_service):
        names.update(module.METRIC_NAMES)
    return names


def _queried_metric_names(dashboard: dict[str, Any]) -> set[str]:
    import re

    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    assert exprs, "the dashboard queries nothing"
    found = {m for e in exprs for m in re.findall(r"\bstreamml_[a-z0-9_]+", e)}
    # Prometheus adds these to a family's samples; the family is what the code names.
    return {re.sub(r"_(total|bucket|sum|count|created)$", "", m) for m in found}


def test_grafana_is_provisioned_with_prometheus_and_the_dashboard() -> None:
    datasource = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
    [source] = datasource["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    provider = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "dashboards" / "streamml.yml").read_text())
    path = provider["providers"][0]["options"]["path"]
    assert "./deploy/grafana/dashboards:" + path + ":ro" in SERVICES["grafana"]["volumes"]


def test_every_metric_the_dashboard_queries_is_one_the_code_exports() -> None:
    import json

    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "streamml.json").read_text())
    queried = _queried_metric_names(dashboard)
    exported = _exported_metric_names()
    assert queried <= exported, sorted(queried - exported)
    assert len(queried) >= 10  # lag, status, throughput, dead letters, versions, accuracy, latency, swaps, age, drift
    datasource_uids = {p["datasource"]["uid"] for p in dashboard["panels"] if "datasource" in p}
    assert datasource_uids == {"prometheus"}


def test_the_dashboard_check_would_catch_a_metric_the_code_does_not_export() -> None:
    fake = {"panels": [{"targets": [{"expr": "rate(streamml_no_such_metric_total[1m])"}]}]}
    assert _queried_metric_names(fake) - _exported_metric_names() == {"streamml_no_such_metric"}
