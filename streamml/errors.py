"""The streamml error tree.

Every error a streamml component raises on purpose derives from one root, so an
application can catch ``StreamMLError`` and a CLI can turn any of them into one
clear line::

    StreamMLError
    ├── ConfigError              a setting is missing, malformed or out of range
    │   └── PublisherFencedError another publisher of the same model name took over
    ├── BrokerError              the embedded broker cannot start, stop or be reached
    ├── KafkaClientError         a Kafka client call failed (translated from librdkafka)
    ├── SchemaError              an Avro schema or data contract cannot be loaded
    ├── SerializationError       a record cannot be encoded or decoded
    │   ├── RecordError          one input row does not fit the schema (row, field)
    │   └── DecodeError          a record value cannot be decoded (rule, for dead letters)
    ├── EnvelopeError            a model envelope cannot be trusted or loaded
    │   └── ModelTooLargeError   an envelope is over the topic's message size limit
    ├── ModelNotReadyError       a prediction was asked for before any model was loaded
    ├── EventRejectedError       a raw event given at serving time breaks the data contract
    ├── FeaturesUnavailableError a feature the model needs cannot be computed at serving time
    ├── UnlearnableRecordsError  the learner met too many consecutive records its model cannot learn
    ├── SourceError              an event source (file, generator) cannot be read
    └── ComponentError           a supervised pipeline component exited unexpectedly

Library errors are translated at the boundary with ``raise ... from exc`` so the
original cause stays on the traceback for debugging.
"""

from __future__ import annotations

__all__ = [
    "StreamMLError",
    "ConfigError",
    "PortInUseError",
    "MissingTopicError",
    "TopicMismatchError",
    "PublisherFencedError",
    "BrokerError",
    "KafkaClientError",
    "SchemaError",
    "SerializationError",
    "RecordError",
    "DecodeError",
    "EnvelopeError",
    "ModelTooLargeError",
    "ModelNotReadyError",
    "EventRejectedError",
    "FeaturesUnavailableError",
    "UnlearnableRecordsError",
    "SourceError",
    "ComponentError",
]


class StreamMLError(Exception):
    """Root of every error streamml raises on purpose."""

    #: Process exit code the CLI uses for this kind of error.
    exit_code: int = 1


class ConfigError(StreamMLError):
    """A setting is missing, malformed or out of range."""

    exit_code = 2


class PortInUseError(ConfigError):
    """A port a command was asked to listen on is taken: choose another (a usage error, exit 2)."""


class MissingTopicError(ConfigError):
    """Topics a command needs do not exist: the pipeline is not set up (a setup error, exit 2).

    Nothing creates them implicitly; ``streamml topics create`` does.
    """

    def __init__(self, topics: list[str], bootstrap_servers: str) -> None:
        self.topics = topics
        names = ", ".join(topics)
        super().__init__(
            f"topic{'s' if len(topics) > 1 else ''} {names} not found on {bootstrap_servers}; "
            "create the pipeline's topics with 'streamml topics create' (same STREAMML_NAMESPACE)"
        )


class TopicMismatchError(ConfigError):
    """Existing topics differ from their spec (partitions, configs) and were left unchanged (a setup error, exit 2).

    ``mismatches`` holds one line per topic; ``outcome`` what creation did
    with every topic asked for (``created``, ``exists`` or ``differs``).
    """

    def __init__(self, mismatches: list[str], outcome: dict[str, str]) -> None:
        self.mismatches = mismatches
        self.outcome = outcome
        super().__init__("; ".join(mismatches))


class PublisherFencedError(ConfigError):
    """A newer publisher of the same model name fenced this one (a setup error, exit 2: run one learner per model).

    Raised by :meth:`model_publisher.publisher.ModelPublisher.publish` when
    the broker refuses this publisher's transactional id because another
    producer initialised it since. Nothing this publisher had not published
    is lost: its consumer offsets were stored only for published versions,
    so the publisher that took over learns the rest again.
    """

    def __init__(self, model_name: str, transactional_id: str, cause: str) -> None:
        self.model_name = model_name
        self.transactional_id = transactional_id
        super().__init__(
            f"another learner for model {model_name} took over publishing (transactional id {transactional_id}: "
            f"{cause}): this one stops; nothing it had not published is lost (its offsets were stored only for "
            "published versions); run one learner per model name"
        )


class BrokerError(StreamMLError):
    """The embedded broker cannot be started, stopped or reached."""

    exit_code = 3


class KafkaClientError(StreamMLError):
    """A Kafka client call failed; the librdkafka error is the ``__cause__``."""

    exit_code = 3


class SchemaError(StreamMLError):
    """An Avro schema or its data contract cannot be loaded or parsed."""

    exit_code = 2


class SerializationError(StreamMLError):
    """A record cannot be encoded to, or decoded from, Avro."""


class RecordError(SerializationError):
    """One input record does not fit the schema.

    ``row`` is the 1-based position in the source (a file line or a generator
    index) and ``field`` the offending field, when known.
    """

    def __init__(self, message: str, *, row: int | None = None, field: str | None = None) -> None:
        parts = []
        if row is not None:
            parts.append(f"row {row}")
        if field is not None:
            parts.append(f"field {field!r}")
        prefix = ", ".join(parts)
        super().__init__(f"{prefix}: {message}" if prefix else message)
        self.row = row
        self.field = field
        self.reason = message


class DecodeError(SerializationError):
    """A record value cannot be decoded; ``rule`` names why, for the dead-letter reason."""

    def __init__(self, message: str, *, rule: str) -> None:
        super().__init__(message)
        self.rule = rule


class EnvelopeError(StreamMLError):
    """A model envelope fails verification (checksum, signature, format, runtime)."""


class ModelTooLargeError(EnvelopeError):
    """An envelope is larger than the models topic accepts.

    ``model_name`` and ``version`` name the envelope, ``size`` is its encoded
    size and ``limit`` the limit it broke, both in bytes.
    """

    def __init__(
        self,
        *,
        model_name: str,
        version: int,
        size: int,
        limit: int,
        advice: str | None = None,
        setting: str = "STREAMML_MAX_MODEL_BYTES; Apache Kafka's default message.max.bytes is about 1 MB",
    ) -> None:
        message = f"model {model_name} v{version} is {size} bytes, over the {limit}-byte limit ({setting})"
        super().__init__(f"{message}; {advice}" if advice else message)
        self.model_name = model_name
        self.version = version
        self.size = size
        self.limit = limit


class ModelNotReadyError(StreamMLError):
    """No model has been loaded yet; serving code must treat this as 'not ready'."""


class EventRejectedError(StreamMLError):
    """A raw event given for scoring breaks the data contract, so the stream would quarantine it.

    ``violations`` lists every broken rule as ``{"field", "rule", "message"}``
    (the same rules and words as a dead letter's), so an API can answer 422
    naming the fields.
    """

    def __init__(self, violations: list[dict[str, str]]) -> None:
        self.violations = violations
        listed = "; ".join(f"{v['field']}: {v['message']}" for v in violations) or "no details"
        super().__init__(f"the event breaks the data contract: {listed}")


class FeaturesUnavailableError(StreamMLError):
    """A feature the stream would compute cannot be computed here (yet), so no prediction is made.

    Raised instead of filling the feature with zero: for example the windowed
    per-key features before the serving process has read the processor's
    window state. ``features`` names them; ``retryable`` is true when the
    cause passes by itself (the window state is still being read), so an API
    answers 503 with ``Retry-After`` rather than 422.
    """

    def __init__(self, features: list[str], reason: str, *, retryable: bool = False) -> None:
        self.features = features
        self.reason = reason
        self.retryable = retryable
        super().__init__(f"feature(s) {', '.join(features)} unavailable at serving time: {reason}")


class UnlearnableRecordsError(StreamMLError):
    """The model raised on ``count`` records in a row: the learner stops instead of skipping the stream (exit 1).

    ``first`` is the ``topic[partition]@offset`` of the first failing record
    of the run. No offset past the last published version was stored, so a
    restart after the fix learns those records again.
    """

    def __init__(self, *, model_spec: str, count: int, first: str, error: str, since: str) -> None:
        self.model_spec = model_spec
        self.count = count
        self.first = first
        super().__init__(
            f"learner stopped: the {model_spec} model failed to learn {count} consecutive feature records, "
            f"the first at {first} ({error}); no offsets were stored since {since}, so a restart learns them "
            "again once the model or the data is fixed (STREAMML_LEARNER_MAX_CONSECUTIVE_ERRORS: how many in a "
            "row stop it)"
        )


class SourceError(StreamMLError):
    """An event source (file or generator) cannot be opened or read."""


class ComponentError(StreamMLError):
    """A supervised pipeline component (a child process) exited unexpectedly."""
