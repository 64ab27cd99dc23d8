"""Typed, immutable settings read from ``STREAMML_*`` environment variables.

Entry points call :func:`load_settings` once and pass the resulting
:class:`Settings` down; nothing else in the project reads the environment.
Every problem is reported at once, booleans are parsed strictly, and secrets
are hidden from ``repr`` and logs.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streamml.errors import ConfigError
from streamml.records import DEMO_EVENTS_SCHEMA_PATH
from streamml.security import security_problems

__all__ = ["Secret", "Settings", "load_settings", "ENV_PREFIX", "DEMO_SCHEMA_PATH"]

ENV_PREFIX = "STREAMML_"
#: Variables under this prefix belong to the test suite, not to the settings.
_IGNORED_PREFIXES = ("STREAMML_TEST_",)
DEMO_SCHEMA_PATH = DEMO_EVENTS_SCHEMA_PATH


class Secret:
    """A string that never shows itself in ``repr``, ``str`` or logs."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get(self) -> str:
        """Return the secret value; call this only where a client needs it."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class Settings:
    """Everything a streamml component needs to know about its environment.

    Each field maps to ``STREAMML_<FIELD NAME IN UPPER CASE>``.
    """

    #: Kafka bootstrap servers, ``host:port[,host:port...]``.
    bootstrap_servers: str = "127.0.0.1:9092"
    #: ``PLAINTEXT``, ``SSL``, ``SASL_PLAINTEXT`` or ``SASL_SSL`` (any case): the
    #: same on every client, librdkafka and faust (``docs/security.md``).
    security_protocol: str = "PLAINTEXT"
    #: ``PLAIN``, ``SCRAM-SHA-256`` or ``SCRAM-SHA-512``; only with a ``SASL_*`` protocol.
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: Secret | None = None
    #: CA certificates (PEM) that sign the brokers' certificates; unset: the system's CA store.
    ssl_ca_file: Path | None = None
    #: Client certificate (PEM) for brokers that require one; needs ``ssl_key_file``.
    ssl_certificate_file: Path | None = None
    #: Private key (PEM) of the client certificate.
    ssl_key_file: Path | None = None
    #: Password of an encrypted ``ssl_key_file``.
    ssl_key_password: Secret | None = None
    #: Check that the broker's certificate names the host connected to. The
    #: certificate itself is always verified; off only for brokers reached by
    #: an address their certificate does not name.
    ssl_check_hostname: bool = True
    #: Prefix for every topic and consumer group name, so several pipelines
    #: (or tests) can share one cluster without seeing each other.
    namespace: str = ""
    #: Partitions of the event, feature and prediction topics.
    partitions: int = 3
    replication_factor: int = 1
    #: ``min.insync.replicas`` of every pipeline topic: how many replicas must
    #: hold a record before an ``acks=all`` write is acknowledged. 1 leaves it
    #: to the broker's default; a 3-broker cluster wants 2 (docker-compose.yml).
    min_insync_replicas: int = 1
    #: Avro schema of the raw events, with the data contract in its fields.
    schema_path: Path = DEMO_SCHEMA_PATH
    #: Field used as the Kafka record key (and for per-key windowed features).
    key_field: str = "customer_id"
    #: Field holding the target; an event without it is scored but not learned.
    label_field: str = "label"
    #: Field holding the event time in epoch milliseconds.
    time_field: str = "event_time"
    model_name: str = "demo-classifier"
    #: River model spec used by the learner, see ``model_publisher.catalog``.
    model_spec: str = "logistic"
    #: Publish a model version after this many learned events ...
    publish_every_events: int = 2000
    #: ... or after this many seconds with at least one new learned event.
    publish_every_seconds: float = 30.0
    #: Quality gate: labelled events a new version and the served champion are
    #: both scored on before the version is promoted (held back: neither has
    #: learned them). 0 turns the gate off: every version is served.
    gate_events: int = 200
    #: How much worse than the champion a candidate may score and still be
    #: promoted: accuracy points (classification) or a fraction of the
    #: champion's mean absolute error (regression).
    gate_margin: float = 0.02
    #: Events the stream processor handles per batch (faust's per-event cost
    #: is high, so decoding, validation and featurization work on batches).
    processor_batch_size: int = 500
    #: An event whose time is more than this ahead of the processor's clock is
    #: quarantined (rule ``event_time_future``): one event must not move a
    #: key's window state into the future.
    max_event_future_seconds: float = 60.0
    #: An event older than this is quarantined (rule ``event_time_past``); the
    #: default, 20 years, catches epoch-0 defaults and seconds sent as milliseconds.
    max_event_age_seconds: float = 20 * 365.25 * 24 * 3600
    #: Largest dead letter the processor writes; a larger quarantined record
    #: keeps a truncated copy of its value plus its size and sha256.
    dead_letter_max_bytes: int = 900_000
    #: Valid events the distribution monitor freezes as its reference when the
    #: schema's profile holds none (``streamml contract infer`` writes one).
    drift_reference_events: int = 1000
    #: Valid events per monitoring window: each window's profile is compared
    #: with the reference and sent to the monitoring topic. 0 turns monitoring off.
    drift_window_events: int = 500
    #: A field whose population stability index over a window reaches this is drifted.
    drift_psi_threshold: float = 0.2
    #: ``inline``: labels come in the events. ``delayed``: events come without
    #: them and labels arrive later on the labels topic, keyed by event id; the
    #: processor joins them with the stored features, the learner predicts when
    #: the features arrive and learns when the label does.
    label_mode: str = "inline"
    #: How long features wait for their label (and a label for its features), seconds.
    label_ttl_seconds: float = 3600.0
    #: Length of the per-key event-time window for windowed features, seconds.
    window_seconds: float = 60.0
    #: Numeric fields whose per-key windowed mean becomes a feature (comma list).
    window_fields: str = "loan"
    #: Largest model envelope the publisher sends (Apache Kafka's default
    #: ``message.max.bytes`` is about 1 MB; the embedded broker accepts more,
    #: so the limit is enforced on the client to stay portable).
    max_model_bytes: int = 1_000_000
    #: Largest model payload a consumer reassembles from chunks (a payload over
    #: ``max_model_bytes`` travels in chunks of at most that size).
    max_model_total_bytes: int = 256_000_000
    #: Ed25519 private key (PEM) the publisher signs envelopes and directives
    #: with. Default: ``<home>/keys/model-signing.key`` when that file exists.
    model_signing_key_file: Path | None = None
    #: Public keys (PEM files or directories of ``*.pub``, comma-separated)
    #: whose signatures consumers trust. Default: ``<home>/keys/``.
    model_trusted_keys: str = ""
    #: Development only: publish unsigned models when no signing key exists,
    #: and accept unsigned models and directives. Never in production.
    development_mode: bool = False
    #: Extra globals the restricted unpickler may resolve for river models,
    #: comma-separated ``module:name`` or ``package.*`` entries.
    model_pickle_allow: str = ""
    #: Extra types skops may build for scikit-learn models, comma-separated
    #: (e.g. ``sklearn.tree._tree.Tree`` for tree ensembles).
    model_skops_trusted: str = ""
    #: Fencing of a second publisher of one model name (``docs/publishing.md``):
    #: ``auto`` publishes in Kafka transactions where the broker supports them
    #: and falls back to plain produces (fencing off, one warning) where it
    #: does not; ``on`` refuses to start without them; ``off`` never uses them.
    publisher_transactions: str = "auto"
    #: The learner stops with an error after this many consecutive records
    #: its model cannot learn, instead of skipping the stream one line at a time.
    learner_max_consecutive_errors: int = 100
    #: The learner remembers this many recently learned event ids and does not
    #: learn an id again (a feature vector the processor re-emitted after a
    #: crash); counted in ``LearnReport.duplicates``. 0: no deduplication.
    learner_dedup_events: int = 100_000
    #: How often ``streamml process`` commits its consumed offsets, seconds:
    #: after a crash everything since the last commit is processed again
    #: (docs/delivery-guarantees.md).
    processor_commit_interval_seconds: float = 0.5
    #: Event loop of ``streamml process``: ``uvloop`` (libuv; faust's per-record
    #: awaits make the loop a large share of its CPU) or ``asyncio`` (the
    #: standard library's), see README "Performance".
    processor_event_loop: str = "uvloop"
    #: Let the learner train on the predictions topic, or on records that carry
    #: a model version (a feedback loop: the model learning its own outputs).
    #: Off: it refuses such a source at start (exit 2) and such records at run time.
    learner_allow_prediction_source: bool = False
    #: Port of the embedded broker started by ``streamml broker start``.
    broker_port: int = 9092
    #: Where the embedded broker keeps its pid file and log.
    home: Path = field(default_factory=lambda: Path.home() / ".streamml")
    #: Consumer session timeout; short, because the embedded broker makes a
    #: first group join wait about half of it (docs/embedded-broker.md#first-group-join).
    session_timeout_ms: int = 6000
    #: Longest a fetch waits for data; low so model updates travel fast
    #: (docs/embedded-broker.md#fetch-wait).
    fetch_wait_max_ms: int = 10
    #: How long a command waits at start-up for the cluster to answer before
    #: it fails with exit 3 (long-running ones retry on their own once connected).
    connect_timeout_seconds: float = 10.0
    #: ``streamml serve``: accept (and ignore) feature names the model never
    #: learned from, instead of answering 422 naming them.
    serve_allow_extra_features: bool = False
    log_level: str = "WARNING"
    #: ``text`` (one readable line per event) or ``json`` (one JSON object
    #: per line, with the event's fields as keys): see ``docs/metrics.md``.
    log_format: str = "text"
    #: Port where ``streamml process``, ``learn`` and ``score`` serve Prometheus
    #: ``/metrics`` (0: any free one); unset: no metrics endpoint.
    metrics_port: int | None = None
    #: Address the metrics endpoint listens on (``0.0.0.0`` for a container).
    metrics_host: str = "127.0.0.1"

    def __post_init__(self) -> None:
        # Spellings are normalized once here, so every client sees one form ("sasl_ssl" -> "SASL_SSL").
        object.__setattr__(self, "security_protocol", self.security_protocol.strip().upper())
        if self.sasl_mechanism is not None:
            object.__setattr__(self, "sasl_mechanism", self.sasl_mechanism.strip().upper())
        problems = _validate(self)
        if problems:
            raise ConfigError(_format_problems(problems))

    def __repr__(self) -> str:
        # dataclass repr would be fine (Secret masks itself) but this keeps logs short.
        shown = ", ".join(
            f"{f.name}={getattr(self, f.name)!r}"
            for f in dataclasses.fields(self)
            if getattr(self, f.name) != f.default
        )
        return f"Settings({shown})"

    # Derived names: one place for every topic and group name of the pipeline.
    def topic(self, base: str) -> str:
        """Return a topic or group name with this pipeline's namespace prefix."""
        return f"{self.namespace}{base}"

    def to_env(self) -> dict[str, str]:
        """Return ``STREAMML_*`` variables that reproduce these settings in a child process.

        Secrets are included (a child needs them); never log the result.
        """
        env: dict[str, str] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            env[ENV_PREFIX + f.name.upper()] = value.get() if isinstance(value, Secret) else str(value)
        return env

    def list_of(self, name: str) -> list[str]:
        """A comma-separated setting split into its non-empty items."""
        raw = getattr(self, name)
        return [item.strip() for item in str(raw).split(",") if item.strip()]

    @property
    def keys_dir(self) -> Path:
        """Where ``streamml keys generate`` and the demo keep the default model signing key pair."""
        return self.home / "keys"

    @property
    def window_field_list(self) -> list[str]:
        """``window_fields`` split into names."""
        return [f.strip() for f in self.window_fields.split(",") if f.strip()]

    def with_overrides(self, **overrides: Any) -> Settings:
        """Return a copy with some fields replaced (``None`` values are ignored).

        String values are parsed like environment variables, so CLI flags and
        the environment follow the same rules.
        """
        parsed: dict[str, Any] = {}
        problems: list[str] = []
        for name, raw in overrides.items():
            if raw is None:
                continue
            if name not in _FIELDS:
                raise ConfigError(f"unknown setting {name!r}")
            if isinstance(raw, str):
                try:
                    parsed[name] = _parse(name, raw)
                except ValueError as exc:
                    problems.append(f"{name}: {exc}")
            else:
                parsed[name] = raw
        if problems:
            raise ConfigError(_format_problems(problems))
        return dataclasses.replace(self, **parsed)


_FIELDS = {f.name: f for f in dataclasses.fields(Settings)}
_SECRET_FIELDS = {"sasl_password", "ssl_key_password"}
_SECURITY_OPTIONAL = {"ssl_ca_file", "ssl_certificate_file", "ssl_key_file", "ssl_key_password"}
_OPTIONAL_FIELDS = {"metrics_port", "sasl_mechanism", "sasl_username", "sasl_password", "model_signing_key_file"}
_INT_FIELDS = {
    "partitions",
    "replication_factor",
    "min_insync_replicas",
    "publish_every_events",
    "max_model_bytes",
    "max_model_total_bytes",
    "dead_letter_max_bytes",
    "broker_port",
    "session_timeout_ms",
    "fetch_wait_max_ms",
    "processor_batch_size",
    "drift_reference_events",
    "drift_window_events",
    "gate_events",
    "learner_max_consecutive_errors",
    "learner_dedup_events",
    "metrics_port",
}
_FLOAT_FIELDS = {
    "publish_every_seconds", "window_seconds", "max_event_future_seconds", "max_event_age_seconds",
    "drift_psi_threshold", "label_ttl_seconds", "connect_timeout_seconds",
    "gate_margin", "processor_commit_interval_seconds",
}
_PATH_FIELDS = {"schema_path", "home", "model_signing_key_file", "ssl_ca_file", "ssl_certificate_file", "ssl_key_file"}
_BOOL_FIELDS = {
    "development_mode", "serve_allow_extra_features", "learner_allow_prediction_source", "ssl_check_hostname",
}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def parse_bool(raw: str) -> bool:
    """Parse a boolean strictly: anything but a known spelling is an error."""
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"expected one of {sorted(_TRUE | _FALSE)}, got {raw!r}")


def _parse(name: str, raw: str) -> Any:
    value = raw.strip()
    if (name in _OPTIONAL_FIELDS or name in _SECURITY_OPTIONAL) and value == "":
        return None
    if name in _SECRET_FIELDS:
        return Secret(value)
    if name in _BOOL_FIELDS:
        return parse_bool(value)
    if name in _INT_FIELDS:
        try:
            return int(value)
        except ValueError:
            raise ValueError(f"expected a whole number, got {raw!r}") from None
    if name in _FLOAT_FIELDS:
        try:
            return float(value)
        except ValueError:
            raise ValueError(f"expected a number, got {raw!r}") from None
    if name in _PATH_FIELDS:
        return Path(value).expanduser()
    return value


def _validate(s: Settings) -> list[str]:
    problems: list[str] = []
    if not s.bootstrap_servers.strip():
        problems.append("bootstrap_servers: must name at least one host:port")
    else:
        for server in s.bootstrap_servers.split(","):
            host, sep, port = server.strip().rpartition(":")
            if not sep or not host or not port.isdigit():
                problems.append(
                    f"bootstrap_servers: {server.strip()!r} is not host:port (example: 127.0.0.1:9092)"
                )
    for name in (
        "partitions", "replication_factor", "publish_every_events", "max_model_bytes", "processor_batch_size",
        "max_model_total_bytes", "dead_letter_max_bytes",
    ):
        if getattr(s, name) < 1:
            problems.append(f"{name}: must be at least 1, got {getattr(s, name)}")
    if not 1 <= s.min_insync_replicas <= max(s.replication_factor, 1):
        problems.append(
            f"min_insync_replicas: must be between 1 and replication_factor ({s.replication_factor}), "
            f"got {s.min_insync_replicas}; with more, no write could ever be acknowledged"
        )
    if s.publish_every_seconds <= 0:
        problems.append(f"publish_every_seconds: must be positive, got {s.publish_every_seconds}")
    if s.max_event_future_seconds <= 0 or s.max_event_age_seconds <= 0:
        problems.append("max_event_future_seconds / max_event_age_seconds: must be positive")
    if s.gate_events < 0:
        problems.append(f"gate_events: must be 0 (gate off) or more, got {s.gate_events}")
    if not 0 <= s.gate_margin <= 1:
        problems.append(f"gate_margin: must be between 0 and 1, got {s.gate_margin}")
    if s.drift_window_events < 0:
        problems.append(f"drift_window_events: must be 0 (off) or more, got {s.drift_window_events}")
    if s.drift_reference_events < 100:
        problems.append(f"drift_reference_events: must be at least 100, got {s.drift_reference_events}")
    if not s.drift_psi_threshold > 0:
        problems.append(f"drift_psi_threshold: must be positive, got {s.drift_psi_threshold}")
    if s.publisher_transactions not in ("auto", "on", "off"):
        problems.append(f"publisher_transactions: expected auto, on or off, got {s.publisher_transactions!r}")
    if s.learner_max_consecutive_errors < 1:
        problems.append(
            f"learner_max_consecutive_errors: must be at least 1, got {s.learner_max_consecutive_errors}"
        )
    if s.learner_dedup_events < 0:
        problems.append(f"learner_dedup_events: must be 0 (off) or more, got {s.learner_dedup_events}")
    if not 0 < s.processor_commit_interval_seconds <= 60:
        problems.append(
            f"processor_commit_interval_seconds: must be in (0, 60], got {s.processor_commit_interval_seconds}"
        )
    if s.processor_event_loop not in ("uvloop", "asyncio"):
        problems.append(f"processor_event_loop: expected uvloop or asyncio, got {s.processor_event_loop!r}")
    if s.label_mode not in ("inline", "delayed"):
        problems.append(f"label_mode: expected inline or delayed, got {s.label_mode!r}")
    if not s.label_ttl_seconds > 0:
        problems.append(f"label_ttl_seconds: must be positive, got {s.label_ttl_seconds}")
    if s.window_seconds <= 0:
        problems.append(f"window_seconds: must be positive, got {s.window_seconds}")
    if s.metrics_port is not None and not 0 <= s.metrics_port <= 65535:
        problems.append(f"metrics_port: must be between 0 and 65535, got {s.metrics_port}")
    if s.log_format not in ("text", "json"):
        problems.append(f"log_format: expected text or json, got {s.log_format!r}")
    if not 1 <= s.broker_port <= 65535:
        problems.append(f"broker_port: must be between 1 and 65535, got {s.broker_port}")
    if not 0 < s.connect_timeout_seconds <= 3600:
        problems.append(f"connect_timeout_seconds: must be in (0, 3600], got {s.connect_timeout_seconds}")
    if s.session_timeout_ms < 1000:
        problems.append(f"session_timeout_ms: must be at least 1000, got {s.session_timeout_ms}")
    if s.fetch_wait_max_ms < 0:
        problems.append(f"fetch_wait_max_ms: must not be negative, got {s.fetch_wait_max_ms}")
    problems.extend(security_problems(s))
    if s.log_level.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
        problems.append(f"log_level: expected DEBUG, INFO, WARNING, ERROR or CRITICAL, got {s.log_level!r}")
    for name in ("key_field", "label_field", "time_field", "model_name"):
        if not getattr(s, name):
            problems.append(f"{name}: must not be empty")
    return problems


def _format_problems(problems: list[str]) -> str:
    if len(problems) == 1:
        return f"invalid setting: {problems[0]}"
    return f"{len(problems)} invalid settings: " + "; ".join(problems)


def load_settings(env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Read settings from ``STREAMML_*`` variables, then apply ``overrides``.

    ``env`` defaults to ``os.environ``. All problems (unknown variables,
    unparsable values, out-of-range numbers) are collected and raised together
    as one :class:`~streamml.errors.ConfigError`.
    """
    source = os.environ if env is None else env
    values: dict[str, Any] = {}
    problems: list[str] = []
    env_names = {ENV_PREFIX + name.upper(): name for name in _FIELDS}
    for key, raw in source.items():
        if not key.startswith(ENV_PREFIX) or key.startswith(_IGNORED_PREFIXES):
            continue
        name = env_names.get(key)
        if name is None:
            close = difflib.get_close_matches(key, env_names, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            problems.append(f"{key}: unknown variable{hint}")
            continue
        try:
            values[name] = _parse(name, raw)
        except ValueError as exc:
            problems.append(f"{key}: {exc}")
    if problems:
        raise ConfigError(_format_problems(problems))
    settings = Settings(**values)
    return settings.with_overrides(**overrides) if overrides else settings
