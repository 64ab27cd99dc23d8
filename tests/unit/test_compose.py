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
COMPONENTS = {name: svc for name, svc in SERVICES.items() if name != "kafka"}


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
    env = SERVICES["kafka"]["environment"]
    assert "controller" in env["KAFKA_PROCESS_ROLES"] and "broker" in env["KAFKA_PROCESS_ROLES"]
    assert "zookeeper" not in str(COMPOSE).lower()
    assert SERVICES["kafka"]["image"].startswith("apache/kafka:")
    assert SERVICES["kafka"]["healthcheck"]["test"]


@pytest.mark.parametrize("name", sorted(COMPONENTS))
def test_every_service_runs_a_real_streamml_command(name: str) -> None:
    service = COMPONENTS[name]
    assert service["build"] == "." and service["image"] == "streamml:latest"
    assert service["environment"]["STREAMML_BOOTSTRAP_SERVERS"] == "kafka:9092"
    resolve(service["command"])


@pytest.mark.parametrize("name", sorted(COMPONENTS))
def test_healthchecks_are_real_commands(name: str) -> None:
    service = COMPONENTS[name]
    check = service.get("healthcheck", {})
    if service.get("restart") == "no":
        return  # one-shot tools: compose waits for them to finish, not to be healthy
    test = check["test"]
    if test[:2] == ["CMD", "python"]:
        # The HTTP service is checked on its own /healthz endpoint.
        assert "/healthz" in test[-1] and "--port" in service["command"], name
        assert test[-1].count(":8080/") == 1 and "8080" in service["command"]
        return
    assert test[:2] == ["CMD", "streamml"], f"{name}: healthcheck must call streamml"
    resolve(test[2:])


def test_components_wait_for_topics_and_topics_wait_for_healthy_kafka() -> None:
    assert SERVICES["topics"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    for name in ("producer", "processor", "learner", "scorer"):
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
