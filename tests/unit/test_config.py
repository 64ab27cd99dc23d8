"""Settings: parsing, validation, secrets and overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamml.config import Secret, Settings, load_settings, parse_bool
from streamml.errors import ConfigError


def test_defaults_without_environment() -> None:
    settings = load_settings(env={})
    assert settings.bootstrap_servers == "127.0.0.1:9092"
    assert settings.partitions == 3
    # No key is configured: the publisher looks for the default pair, consumers for <home>/keys/*.pub.
    assert settings.model_signing_key_file is None and settings.model_trusted_keys == ""
    assert settings.development_mode is False
    assert settings.model_pickle_allow == "" and settings.model_skops_trusted == ""
    assert settings.max_model_total_bytes == 256_000_000
    assert settings.keys_dir == settings.home / "keys"


@pytest.mark.parametrize(
    ("var", "raw", "field", "expected"),
    [
        ("STREAMML_BOOTSTRAP_SERVERS", "k1:9092,k2:9093", "bootstrap_servers", "k1:9092,k2:9093"),
        ("STREAMML_PARTITIONS", " 6 ", "partitions", 6),
        ("STREAMML_PUBLISH_EVERY_SECONDS", "2.5", "publish_every_seconds", 2.5),
        ("STREAMML_HOME", "/tmp/x", "home", Path("/tmp/x")),
        ("STREAMML_NAMESPACE", "team-a.", "namespace", "team-a."),
        ("STREAMML_SASL_MECHANISM", "", "sasl_mechanism", None),
        ("STREAMML_MODEL_SIGNING_KEY_FILE", "/k/model.key", "model_signing_key_file", Path("/k/model.key")),
        ("STREAMML_MODEL_SIGNING_KEY_FILE", "", "model_signing_key_file", None),
        ("STREAMML_MODEL_TRUSTED_KEYS", "/k/a.pub,/k/dir", "model_trusted_keys", "/k/a.pub,/k/dir"),
        ("STREAMML_DEVELOPMENT_MODE", "true", "development_mode", True),
        ("STREAMML_DEVELOPMENT_MODE", " off ", "development_mode", False),
        ("STREAMML_MAX_MODEL_TOTAL_BYTES", "5000000", "max_model_total_bytes", 5_000_000),
    ],
)
def test_environment_values_are_parsed(var: str, raw: str, field: str, expected: object) -> None:
    assert getattr(load_settings(env={var: raw}), field) == expected


def test_all_problems_are_reported_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(
            env={
                "STREAMML_PARTITIONS": "three",
                "STREAMML_BROKER_PORT": "70000",
                "STREAMML_BOOTSTRAP_SERVER": "x:1",
            }
        )
    message = str(info.value)
    assert "STREAMML_PARTITIONS" in message
    assert "did you mean STREAMML_BOOTSTRAP_SERVERS" in message
    # Range errors surface once parsing succeeds, again all of them.
    with pytest.raises(ConfigError) as info:
        load_settings(env={"STREAMML_BROKER_PORT": "70000", "STREAMML_PARTITIONS": "0"})
    assert "2 invalid settings" in str(info.value)
    assert "broker_port" in str(info.value) and "partitions" in str(info.value)


@pytest.mark.parametrize("servers", ["", "localhost", "host:port", ":9092"])
def test_bad_bootstrap_servers_are_refused_with_an_example(servers: str) -> None:
    with pytest.raises(ConfigError, match="bootstrap_servers"):
        load_settings(env={"STREAMML_BOOTSTRAP_SERVERS": servers})


def test_test_variables_are_not_settings() -> None:
    load_settings(env={"STREAMML_TEST_BOOTSTRAP_SERVERS": "x:1"})


def test_secrets_never_show() -> None:
    settings = load_settings(
        env={
            "STREAMML_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "STREAMML_SASL_MECHANISM": "PLAIN",
            "STREAMML_SASL_USERNAME": "alice",
            "STREAMML_SASL_PASSWORD": "hunter2",
        }
    )
    assert "hunter2" not in repr(settings)
    assert "hunter2" not in str(settings.sasl_password)
    assert settings.sasl_password is not None and settings.sasl_password.get() == "hunter2"


def test_the_removed_shared_signing_key_setting_is_an_error_not_ignored() -> None:
    # A deployment still setting the old HMAC key must hear that it no longer protects anything.
    with pytest.raises(ConfigError, match="did you mean STREAMML_MODEL_SIGNING_KEY_FILE"):
        load_settings(env={"STREAMML_MODEL_SIGNING_KEY": "k3y"})
    with pytest.raises(ConfigError, match="unknown setting 'model_signing_key'"):
        load_settings(env={}, model_signing_key="k3y")


@pytest.mark.parametrize("raw", ["maybe", "2", ""])
def test_development_mode_is_parsed_strictly(raw: str) -> None:
    with pytest.raises(ConfigError, match="STREAMML_DEVELOPMENT_MODE"):
        load_settings(env={"STREAMML_DEVELOPMENT_MODE": raw})


def test_comma_separated_trust_settings_split_into_items() -> None:
    settings = load_settings(
        env={
            "STREAMML_MODEL_TRUSTED_KEYS": " /k/a.pub, ,/k/dir ",
            "STREAMML_MODEL_PICKLE_ALLOW": "mypkg.*,other.mod:Model",
            "STREAMML_MODEL_SKOPS_TRUSTED": "sklearn.tree._tree.Tree",
        }
    )
    assert settings.list_of("model_trusted_keys") == ["/k/a.pub", "/k/dir"]
    assert settings.list_of("model_pickle_allow") == ["mypkg.*", "other.mod:Model"]
    assert settings.list_of("model_skops_trusted") == ["sklearn.tree._tree.Tree"]
    assert load_settings(env={}).list_of("model_trusted_keys") == []


def test_max_model_total_bytes_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="max_model_total_bytes"):
        load_settings(env={"STREAMML_MAX_MODEL_TOTAL_BYTES": "0"})


def test_sasl_mechanism_needs_credentials() -> None:
    with pytest.raises(ConfigError, match="SASL_USERNAME"):
        load_settings(env={"STREAMML_SASL_MECHANISM": "PLAIN"})


def test_settings_are_immutable_and_overrides_parse_like_env() -> None:
    settings = load_settings(env={})
    with pytest.raises(AttributeError):
        settings.partitions = 5  # type: ignore[misc]
    changed = settings.with_overrides(partitions="7", bootstrap_servers=None)
    assert changed.partitions == 7 and changed.bootstrap_servers == settings.bootstrap_servers
    with pytest.raises(ConfigError, match="unknown setting"):
        settings.with_overrides(partition=3)


@pytest.mark.parametrize(("raw", "value"), [("1", True), ("TRUE", True), ("off", False), (" no ", False)])
def test_booleans_are_strict(raw: str, value: bool) -> None:
    assert parse_bool(raw) is value


@pytest.mark.parametrize("raw", ["", "2", "y", "enabled"])
def test_unknown_boolean_spellings_are_errors(raw: str) -> None:
    with pytest.raises(ValueError):
        parse_bool(raw)


def test_namespace_prefixes_topic_and_group_names() -> None:
    from streamml.topics import Groups, Topics

    settings = Settings(namespace="ci-42.")
    assert Topics.from_settings(settings).models == "ci-42.models.v1"
    assert Groups.from_settings(settings).learner == "ci-42.streamml.learner"
    assert Secret("a") == Secret("a")


def test_to_env_reproduces_the_settings() -> None:
    settings = load_settings(
        env={
            "STREAMML_MODEL_SIGNING_KEY_FILE": "/k/model.key",
            "STREAMML_MODEL_TRUSTED_KEYS": "/k/a.pub,/k/b.pub",
            "STREAMML_DEVELOPMENT_MODE": "yes",
            "STREAMML_MODEL_PICKLE_ALLOW": "mypkg.*",
            "STREAMML_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "STREAMML_SASL_MECHANISM": "PLAIN",
            "STREAMML_SASL_USERNAME": "alice",
            "STREAMML_SASL_PASSWORD": "hunter2",
        },
        namespace="n.",
        partitions=5,
        window_seconds=2.5,
        max_model_total_bytes=1234,
    )
    assert load_settings(env=settings.to_env()) == settings
    assert settings.development_mode is True and settings.model_signing_key_file == Path("/k/model.key")


def test_security_spellings_are_normalized_and_tls_fields_parse_from_env(tmp_path: Path) -> None:
    from tests.tls_certs import make_tls_files

    ca = make_tls_files(tmp_path).ca
    settings = load_settings(env={
        "STREAMML_SECURITY_PROTOCOL": " sasl_ssl ", "STREAMML_SASL_MECHANISM": "scram-sha-512",
        "STREAMML_SASL_USERNAME": "u", "STREAMML_SASL_PASSWORD": "p",
        "STREAMML_SSL_CA_FILE": str(ca), "STREAMML_SSL_CHECK_HOSTNAME": "no", "STREAMML_SSL_KEY_FILE": "",
    })
    assert (settings.security_protocol, settings.sasl_mechanism) == ("SASL_SSL", "SCRAM-SHA-512")
    assert settings.ssl_ca_file == ca and settings.ssl_check_hostname is False and settings.ssl_key_file is None
    with pytest.raises(ConfigError, match="STREAMML_SSL_CHECK_HOSTNAME: expected one of"):
        load_settings(env={"STREAMML_SECURITY_PROTOCOL": "SSL", "STREAMML_SSL_CHECK_HOSTNAME": "maybe"})
