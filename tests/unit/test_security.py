"""Every security protocol maps to the same security on librdkafka and on faust/aiokafka; bad combinations refuse."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError

from streamml.config import Settings, load_settings
from streamml.errors import ConfigError
from streamml.kafka import connection_config
from streamml.security import PROTOCOLS, aiokafka_security, faust_credentials, refusal, uses_sasl, uses_tls
from tests.tls_certs import TlsFiles, make_tls_files


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


def _env(protocol: str, tls: TlsFiles, **extra: str) -> dict[str, str]:
    env = {"STREAMML_SECURITY_PROTOCOL": protocol}
    if uses_tls(protocol.upper()):
        env.update(
            STREAMML_SSL_CA_FILE=str(tls.ca),
            STREAMML_SSL_CERTIFICATE_FILE=str(tls.client_cert),
            STREAMML_SSL_KEY_FILE=str(tls.client_key_encrypted),
            STREAMML_SSL_KEY_PASSWORD=tls.client_key_password,
        )
    if uses_sasl(protocol.upper()):
        env.update(STREAMML_SASL_MECHANISM="SCRAM-SHA-256", STREAMML_SASL_USERNAME="alice",
                   STREAMML_SASL_PASSWORD="pw-alice")
    env.update(extra)
    return env


def _ca_subjects(context: ssl.SSLContext) -> list[Any]:
    return [cert["subject"] for cert in context.get_ca_certs()]


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("check_hostname", [True, False])
def test_librdkafka_and_faust_get_the_same_security(protocol: str, check_hostname: bool, tls: TlsFiles) -> None:
    extra = {} if check_hostname or not uses_tls(protocol) else {"STREAMML_SSL_CHECK_HOSTNAME": "false"}
    settings = load_settings(env=_env(protocol.lower(), tls, **extra))  # any case is accepted
    assert settings.security_protocol == protocol

    rdkafka = connection_config(settings)
    aiokafka = aiokafka_security(settings)
    assert rdkafka["security.protocol"] == aiokafka["security_protocol"] == protocol
    assert rdkafka.get("sasl.mechanism") == aiokafka.get("sasl_mechanism") == settings.sasl_mechanism
    if uses_sasl(protocol):
        assert (rdkafka["sasl.username"], rdkafka["sasl.password"]) == ("alice", "pw-alice")
        assert (aiokafka["sasl_plain_username"], aiokafka["sasl_plain_password"]) == ("alice", "pw-alice")
    context = aiokafka.get("ssl_context")
    if not uses_tls(protocol):
        assert context is None and not any(k.startswith("ssl.") for k in rdkafka)
        return
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED  # the certificate is verified even without the name check
    assert context.check_hostname is check_hostname
    assert rdkafka["ssl.endpoint.identification.algorithm"] == ("https" if check_hostname else "none")
    # Only the configured CA is trusted, on both clients.
    assert _ca_subjects(context) == [((("commonName", "streamml test CA"),),)]
    assert rdkafka["ssl.ca.location"] == str(tls.ca)
    assert rdkafka["ssl.certificate.location"] == str(tls.client_cert)
    assert (rdkafka["ssl.key.location"], rdkafka["ssl.key.password"]) == (
        str(tls.client_key_encrypted), tls.client_key_password,
    )


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_the_processors_faust_app_connects_with_the_configured_protocol(protocol: str, tls: TlsFiles) -> None:
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    from stream_processors.app import build_app

    settings = load_settings(env=_env(protocol, tls))
    app = build_app(settings)
    # What faust's consumer, producer and admin calls hand aiokafka (drivers/aiokafka.py).
    auth = credentials_to_aiokafka_auth(app.conf.broker_credentials, app.conf.ssl_context)
    assert auth["security_protocol"] == protocol
    assert isinstance(auth.get("ssl_context"), ssl.SSLContext) is uses_tls(protocol)


def test_a_faust_that_would_drop_tls_is_refused(tls: TlsFiles, monkeypatch: pytest.MonkeyPatch) -> None:
    import faust

    class DowngradingCredentials(faust.SASLCredentials):
        """The bug of issue 13: SASL credentials whose protocol stays SASL_PLAINTEXT despite the TLS context."""

        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.protocol = faust.types.auth.AuthProtocol.SASL_PLAINTEXT

    monkeypatch.setattr(faust, "SASLCredentials", DowngradingCredentials)
    settings = load_settings(env=_env("SASL_SSL", tls))
    with pytest.raises(ConfigError, match="refusing to start with weaker security"):
        faust_credentials(settings)


@pytest.mark.parametrize(
    ("env", "fragments"),
    [
        ({"STREAMML_SECURITY_PROTOCOL": "TLS"}, ["security_protocol: expected one of PLAINTEXT, SSL"]),
        ({"STREAMML_SECURITY_PROTOCOL": "SASL_SSL", "STREAMML_SASL_MECHANISM": "GSSAPI",
          "STREAMML_SASL_USERNAME": "a", "STREAMML_SASL_PASSWORD": "b"}, ["sasl_mechanism: expected one of PLAIN"]),
        ({"STREAMML_SECURITY_PROTOCOL": "SASL_SSL"},
         ["needs STREAMML_SASL_MECHANISM", "needs STREAMML_SASL_USERNAME and STREAMML_SASL_PASSWORD"]),
        ({"STREAMML_SECURITY_PROTOCOL": "SSL", "STREAMML_SASL_MECHANISM": "PLAIN", "STREAMML_SASL_USERNAME": "a",
          "STREAMML_SASL_PASSWORD": "b"}, ["security_protocol SSL sends no credentials; use SASL_SSL"]),
        ({"STREAMML_SSL_CA_FILE": "{ca}"}, ["ssl_ca_file: set, but security_protocol PLAINTEXT does not use TLS"]),
        ({"STREAMML_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "STREAMML_SASL_MECHANISM": "PLAIN",
          "STREAMML_SASL_USERNAME": "a", "STREAMML_SASL_PASSWORD": "b", "STREAMML_SSL_CHECK_HOSTNAME": "off"},
         ["ssl_check_hostname: set, but security_protocol SASL_PLAINTEXT does not use TLS; use SASL_SSL"]),
        ({"STREAMML_SECURITY_PROTOCOL": "SSL", "STREAMML_SSL_CERTIFICATE_FILE": "{cert}"},
         ["set STREAMML_SSL_KEY_FILE too"]),
        ({"STREAMML_SECURITY_PROTOCOL": "SSL", "STREAMML_SSL_KEY_FILE": "{key}", "STREAMML_SSL_KEY_PASSWORD": "x"},
         ["set STREAMML_SSL_CERTIFICATE_FILE too"]),
        ({"STREAMML_SECURITY_PROTOCOL": "SSL", "STREAMML_SSL_KEY_PASSWORD": "x"},
         ["ssl_key_password: set without STREAMML_SSL_KEY_FILE"]),
        ({"STREAMML_SECURITY_PROTOCOL": "SSL", "STREAMML_SSL_CA_FILE": "{missing}"}, ["does not exist"]),
        ({"STREAMML_SECURITY_PROTOCOL": "SSL", "STREAMML_SSL_CA_FILE": "{dir}"}, ["is not a file"]),
        ({"STREAMML_SECURITY_PROTOCOL": "SSL", "STREAMML_SSL_CA_FILE": "{key}"}, ["ssl_ca_file: cannot load"]),
        ({"STREAMML_SECURITY_PROTOCOL": "SSL", "STREAMML_SSL_CERTIFICATE_FILE": "{cert}",
          "STREAMML_SSL_KEY_FILE": "{encrypted}", "STREAMML_SSL_KEY_PASSWORD": "wrong"},
         ["ssl_certificate_file/ssl_key_file: cannot load", "STREAMML_SSL_KEY_PASSWORD"]),
    ],
)
def test_combinations_a_client_cannot_honour_are_refused_at_load(
    env: dict[str, str], fragments: list[str], tls: TlsFiles, tmp_path: Path
) -> None:
    paths = {"ca": tls.ca, "cert": tls.client_cert, "key": tls.client_key, "encrypted": tls.client_key_encrypted,
             "missing": tmp_path / "nope.pem", "dir": tmp_path}
    with pytest.raises(ConfigError) as raised:
        load_settings(env={k: v.format(**paths) for k, v in env.items()})
    for fragment in fragments:
        assert fragment in str(raised.value)
    assert "\n" not in str(raised.value)


def test_unreadable_files_are_named(tls: TlsFiles, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    # Made unreadable by the access check itself: chmod cannot lock root (CI's user) out.
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != tls.ca)
    with pytest.raises(ConfigError, match=f"ssl_ca_file: {tls.ca} cannot be read by this user"):
        load_settings(env={"STREAMML_SECURITY_PROTOCOL": "SSL", "STREAMML_SSL_CA_FILE": str(tls.ca)})


def test_the_key_password_never_shows(tls: TlsFiles) -> None:
    settings = load_settings(env=_env("SSL", tls))
    assert tls.client_key_password not in repr(settings) and tls.client_key_password not in str(settings)
    assert settings.ssl_key_password is not None and settings.ssl_key_password.get() == tls.client_key_password
    # A child process gets everything it needs to connect the same way.
    assert load_settings(env=settings.to_env()) == settings


def test_without_a_ca_file_the_system_store_is_trusted() -> None:
    settings = Settings(security_protocol="SSL")
    assert "ssl.ca.location" not in connection_config(settings)
    context = aiokafka_security(settings)["ssl_context"]
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname is True


def test_refusals_that_waiting_cannot_heal_are_one_clear_line() -> None:
    settings = Settings(security_protocol="SSL")
    tls_error = refusal(KafkaError(KafkaError._SSL, "SSL handshake failed: certificate verify failed"), settings)
    assert tls_error is not None and "STREAMML_SSL_CA_FILE" in tls_error and "certificate verify failed" in tls_error
    auth_error = refusal(KafkaError(KafkaError._AUTHENTICATION, "SASL authentication error"), settings)
    assert auth_error is not None and "STREAMML_SASL_PASSWORD" in auth_error
    assert refusal(KafkaError(KafkaError._TRANSPORT, "Connection refused"), settings) is None
