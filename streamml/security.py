"""Connection security: one set of settings, the same security on every Kafka client.

streamml has two Kafka clients: librdkafka (confluent-kafka: producers,
consumers, the admin client) and aiokafka (under faust, in the stream
processor). Both get their security protocol, SASL mechanism and TLS
material from the same :class:`~streamml.config.Settings` fields, mapped
here:

=================  ======================================  ======================================
setting            librdkafka property                     faust / aiokafka
=================  ======================================  ======================================
security_protocol  ``security.protocol``                   credentials class -> ``security_protocol``
sasl_*             ``sasl.mechanism/username/password``    ``SASLCredentials(mechanism=...)``
ssl_ca_file        ``ssl.ca.location``                     ``SSLContext(cafile=...)``
ssl_certificate_   ``ssl.certificate.location``,           ``SSLContext.load_cert_chain(cert,
file, ssl_key_*    ``ssl.key.location/password``           key, password)``
ssl_check_hostname ``ssl.endpoint.identification.          ``SSLContext.check_hostname``
                   algorithm`` ``https``/``none``
=================  ======================================  ======================================

The server certificate is always verified (against ``ssl_ca_file``, or the
system's CA store when unset); only the host name check can be turned off.
:func:`faust_credentials` checks, through faust's own mapping to aiokafka,
that faust would connect with exactly the configured protocol and refuses to
start otherwise: never a silent downgrade. Nothing here imports faust at
module level.
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streamml.errors import ConfigError

if TYPE_CHECKING:
    from confluent_kafka import KafkaError

    from streamml.config import Settings

__all__ = [
    "PROTOCOLS",
    "SASL_MECHANISMS",
    "uses_tls",
    "uses_sasl",
    "security_problems",
    "librdkafka_security",
    "tls_context",
    "faust_credentials",
    "aiokafka_security",
    "refusal",
]

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
#: The mechanisms both clients implement (librdkafka and aiokafka); GSSAPI and
#: OAUTHBEARER need per-client callbacks and are not offered.
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
_TLS_FILES = ("ssl_ca_file", "ssl_certificate_file", "ssl_key_file")


def uses_tls(protocol: str) -> bool:
    """Whether ``protocol`` encrypts the connection (``SSL``, ``SASL_SSL``)."""
    return protocol in ("SSL", "SASL_SSL")


def uses_sasl(protocol: str) -> bool:
    """Whether ``protocol`` authenticates with SASL (``SASL_PLAINTEXT``, ``SASL_SSL``)."""
    return protocol in ("SASL_PLAINTEXT", "SASL_SSL")


def security_problems(s: Settings) -> list[str]:
    """Every problem of the security settings, each with how to fix it (empty: usable).

    Called by :class:`~streamml.config.Settings` at load: a combination that
    a client would ignore (TLS files with a plaintext protocol, a mechanism
    without SASL) is an error, not a silent downgrade.
    """
    protocol = s.security_protocol
    if protocol not in PROTOCOLS:
        return [f"security_protocol: expected one of {', '.join(PROTOCOLS)}, got {protocol!r}"]
    problems: list[str] = []
    if s.sasl_mechanism is not None and s.sasl_mechanism not in SASL_MECHANISMS:
        problems.append(f"sasl_mechanism: expected one of {', '.join(SASL_MECHANISMS)}, got {s.sasl_mechanism!r}")
    if uses_sasl(protocol) and s.sasl_mechanism is None:
        problems.append(f"security_protocol: {protocol} needs STREAMML_SASL_MECHANISM ({', '.join(SASL_MECHANISMS)})")
    if (uses_sasl(protocol) or s.sasl_mechanism) and not (s.sasl_username and s.sasl_password):
        problems.append("sasl_username, sasl_password: SASL needs STREAMML_SASL_USERNAME and STREAMML_SASL_PASSWORD")
    if not uses_sasl(protocol):
        given = [n for n in ("sasl_mechanism", "sasl_username", "sasl_password") if getattr(s, n) is not None]
        if given:
            problems.append(
                f"{', '.join(given)}: set, but security_protocol {protocol} sends no credentials; "
                f"use {'SASL_SSL' if uses_tls(protocol) else 'SASL_PLAINTEXT or SASL_SSL'}, or unset them"
                + ("" if s.sasl_mechanism else " (and set STREAMML_SASL_MECHANISM)")
            )
    tls_given = [n for n in (*_TLS_FILES, "ssl_key_password") if getattr(s, n) is not None]
    if not s.ssl_check_hostname:
        tls_given.append("ssl_check_hostname")
    if tls_given and not uses_tls(protocol):
        problems.append(
            f"{', '.join(tls_given)}: set, but security_protocol {protocol} does not use TLS; "
            f"use {'SASL_SSL' if uses_sasl(protocol) else 'SSL or SASL_SSL'}, or unset them"
        )
    if (s.ssl_certificate_file is None) != (s.ssl_key_file is None):
        have, missing = (
            ("ssl_certificate_file", "STREAMML_SSL_KEY_FILE") if s.ssl_key_file is None
            else ("ssl_key_file", "STREAMML_SSL_CERTIFICATE_FILE")
        )
        problems.append(
            f"{have}: a client certificate needs both its certificate and its private key; set {missing} "
            "too (the same file if it holds both)"
        )
    if s.ssl_key_password is not None and s.ssl_key_file is None:
        problems.append("ssl_key_password: set without STREAMML_SSL_KEY_FILE; set the key file or unset the password")
    for name in _TLS_FILES:
        problem = _unreadable(getattr(s, name))
        if problem:
            problems.append(f"{name}: {problem}")
    if not problems and uses_tls(protocol):
        # Load the material now, the way the clients will: a CA that is no
        # certificate or a wrong key password is found at start-up, in one list.
        try:
            tls_context(s)
        except ConfigError as exc:
            problems.append(str(exc))
    return problems


def _unreadable(path: Path | None) -> str | None:
    if path is None:
        return None
    if not path.exists():
        return f"{path} does not exist"
    if not path.is_file():
        return f"{path} is not a file (a PEM file is expected)"
    if not os.access(path, os.R_OK):
        return f"{path} cannot be read by this user"
    return None


def librdkafka_security(s: Settings) -> dict[str, Any]:
    """The librdkafka properties for the security settings (part of ``connection_config``).

    Holds the SASL password and key password in clear: never log the result.
    """
    config: dict[str, Any] = {"security.protocol": s.security_protocol}
    if uses_sasl(s.security_protocol):
        config["sasl.mechanism"] = s.sasl_mechanism
        config["sasl.username"] = s.sasl_username
        config["sasl.password"] = s.sasl_password.get() if s.sasl_password else None
    if uses_tls(s.security_protocol):
        if s.ssl_ca_file is not None:
            config["ssl.ca.location"] = str(s.ssl_ca_file)
        if s.ssl_certificate_file is not None and s.ssl_key_file is not None:
            config["ssl.certificate.location"] = str(s.ssl_certificate_file)
            config["ssl.key.location"] = str(s.ssl_key_file)
            if s.ssl_key_password is not None:
                config["ssl.key.password"] = s.ssl_key_password.get()
        # librdkafka's default is https already; stated so both clients visibly follow the one setting.
        config["ssl.endpoint.identification.algorithm"] = "https" if s.ssl_check_hostname else "none"
    return config


def tls_context(s: Settings) -> ssl.SSLContext:
    """The client TLS context aiokafka gets: the CA, the client certificate chain, the host name check.

    The server's certificate is always verified. Raises :class:`ConfigError`
    when the material cannot be loaded.
    """
    ca = str(s.ssl_ca_file) if s.ssl_ca_file is not None else None
    try:
        # With a cafile only that CA is trusted (as librdkafka's ssl.ca.location); without, the system's.
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"ssl_ca_file: cannot load {ca} as PEM CA certificates ({exc})") from exc
    context.verify_mode = ssl.CERT_REQUIRED
    context.check_hostname = s.ssl_check_hostname
    if s.ssl_certificate_file is not None and s.ssl_key_file is not None:
        password = s.ssl_key_password.get() if s.ssl_key_password is not None else None
        try:
            context.load_cert_chain(str(s.ssl_certificate_file), str(s.ssl_key_file), password=password)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(
                f"ssl_certificate_file/ssl_key_file: cannot load {s.ssl_certificate_file} with key {s.ssl_key_file} "
                f"({exc}); check that they are PEM, belong together, and STREAMML_SSL_KEY_PASSWORD"
            ) from exc
    return context


def faust_credentials(s: Settings) -> Any:
    """faust's ``broker_credentials`` for the settings: ``None`` (plaintext), SSL or SASL credentials.

    Raises :class:`ConfigError` if faust would not connect with exactly the
    configured protocol and mechanism (checked through faust's own mapping
    to aiokafka), so the processor never starts with weaker security.
    """
    protocol = s.security_protocol
    credentials: Any = None
    if protocol != "PLAINTEXT":
        import faust  # deferred: the kernel does not import faust at module level

        context = tls_context(s) if uses_tls(protocol) else None
        if protocol == "SSL":
            credentials = faust.SSLCredentials(context)
        else:
            credentials = faust.SASLCredentials(
                username=s.sasl_username,
                password=s.sasl_password.get() if s.sasl_password else None,
                mechanism=s.sasl_mechanism,
                ssl_context=context,
            )
    _require_honoured(s, _to_aiokafka(credentials))
    return credentials


def aiokafka_security(s: Settings) -> dict[str, Any]:
    """The security keyword arguments faust hands aiokafka for the settings (for checks and tests)."""
    return _to_aiokafka(faust_credentials(s))


def _to_aiokafka(credentials: Any) -> dict[str, Any]:
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    return dict(credentials_to_aiokafka_auth(credentials))


def _require_honoured(s: Settings, auth: dict[str, Any]) -> None:
    wanted = {
        "security_protocol": s.security_protocol,
        "sasl_mechanism": s.sasl_mechanism if uses_sasl(s.security_protocol) else None,
        "ssl_context": uses_tls(s.security_protocol),
    }
    got = {
        "security_protocol": auth.get("security_protocol"),
        "sasl_mechanism": auth.get("sasl_mechanism"),
        "ssl_context": isinstance(auth.get("ssl_context"), ssl.SSLContext),
    }
    if got != wanted:
        raise ConfigError(
            f"the stream processor's Kafka client (faust/aiokafka) would connect with {got}, not the configured "
            f"{wanted}; refusing to start with weaker security"
        )


def refusal(error: KafkaError, settings: Settings) -> str | None:
    """One line for a librdkafka error that retrying cannot heal (TLS or SASL refused), else ``None``.

    A connection probe stops at such an error instead of waiting out its
    timeout and blaming an absent broker.
    """
    from confluent_kafka import KafkaError  # deferred: config imports this module, and config stays light

    code = error.code()
    if code == KafkaError._SSL:
        return (
            f"TLS with {settings.bootstrap_servers} failed: {error.str()}; check STREAMML_SSL_CA_FILE (the CA that "
            "signed the broker's certificate), STREAMML_SSL_CHECK_HOSTNAME and STREAMML_SECURITY_PROTOCOL"
        )
    if code == KafkaError._AUTHENTICATION:
        return (
            f"the broker at {settings.bootstrap_servers} refused this client's credentials: {error.str()}; check "
            "STREAMML_SASL_MECHANISM, STREAMML_SASL_USERNAME and STREAMML_SASL_PASSWORD"
        )
    return None
