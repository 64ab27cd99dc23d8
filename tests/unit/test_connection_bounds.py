"""Start-up bounds and what librdkafka may print: the connect timeout, the log level, the error callback.

Also the "did you mean" for an unknown model name.
"""

from __future__ import annotations

import logging

import pytest
from confluent_kafka import KafkaError

from streamml.client_errors import ClientErrors, librdkafka_log_level
from streamml.config import load_settings
from streamml.errors import ConfigError
from streamml.kafka import connection_config
from streamml.registry import ModelHistory, VersionRecord


def test_connect_timeout_defaults_to_ten_seconds_and_is_read_from_the_environment() -> None:
    assert load_settings(env={}).connect_timeout_seconds == 10.0
    assert load_settings(env={"STREAMML_CONNECT_TIMEOUT_SECONDS": "2.5"}).connect_timeout_seconds == 2.5


@pytest.mark.parametrize("raw", ["0", "-1", "3601", "soon"])
def test_a_connect_timeout_out_of_range_or_not_a_number_is_a_config_error(raw: str) -> None:
    with pytest.raises(ConfigError, match="(?i)connect_timeout_seconds"):
        load_settings(env={"STREAMML_CONNECT_TIMEOUT_SECONDS": raw})


@pytest.mark.parametrize(
    ("level", "expected"), [("DEBUG", 7), ("debug", 7), ("INFO", 0), ("WARNING", 0), ("ERROR", 0)]
)
def test_librdkafka_logs_only_when_debug_logging_is_asked_for(level: str, expected: int) -> None:
    assert librdkafka_log_level(level) == expected
    config = connection_config(load_settings(env={"STREAMML_LOG_LEVEL": level.upper()}))
    assert config["log_level"] == expected


def test_every_client_has_the_error_callback_and_never_auto_creates_topics() -> None:
    config = connection_config(load_settings(env={}))
    assert isinstance(config["error_cb"], ClientErrors)
    assert config["allow.auto.create.topics"] is False


def _refused(after_ms: int, broker: str = "127.0.0.1:1/bootstrap") -> KafkaError:
    return KafkaError(
        KafkaError._TRANSPORT,
        f"{broker}: Connect to ipv4#127.0.0.1:1 failed: Connection refused (after {after_ms}ms in state CONNECT)",
    )


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_repeated_client_error_is_logged_once_a_period_with_the_count_held_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = _Clock()
    errors = ClientErrors(period=30.0, clock=clock)
    with caplog.at_level(logging.WARNING, logger="streamml.client_errors"):
        for i in range(100):  # a retry every 0.1 s for 10 s, each message with its own tail
            clock.now = i * 0.1
            errors(_refused(i))
        assert len(caplog.records) == 1 and errors.suppressed == 99
        clock.now = 31.0
        errors(_refused(1000))
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and "99 more like it in the last 30s" in lines[1]
    assert errors.suppressed == 0


def test_different_errors_and_fatal_ones_are_not_held_back(caplog: pytest.LogCaptureFixture) -> None:
    errors = ClientErrors(period=30.0, clock=_Clock())
    with caplog.at_level(logging.WARNING, logger="streamml.client_errors"):
        errors(_refused(1, broker="127.0.0.1:1/bootstrap"))
        errors(_refused(1, broker="127.0.0.1:2/bootstrap"))  # another broker
        errors(KafkaError(KafkaError._ALL_BROKERS_DOWN, "2/2 brokers are down"))  # another kind
        errors(KafkaError(KafkaError._FATAL, "producer fenced", fatal=True))
        errors(KafkaError(KafkaError._FATAL, "producer fenced", fatal=True))
        errors(KafkaError(KafkaError._ALL_BROKERS_DOWN, "0/3 brokers are down"))  # the same kind again
    assert len(caplog.records) == 5
    assert [r.levelno for r in caplog.records].count(logging.ERROR) == 2


def _history(*names: str) -> ModelHistory:
    return ModelHistory(versions=[VersionRecord(i, name, 1, {}, None, True) for i, name in enumerate(names)])


def test_an_unknown_model_name_is_an_error_with_did_you_mean() -> None:
    history = _history("demo-classifier", "churn")
    history.require_model("churn", "models.v1")  # known: no error
    typo = r"no model 'demo-clasifier' on models\.v1 \(did you mean demo-classifier\?\)"
    with pytest.raises(ConfigError, match=typo):
        history.require_model("demo-clasifier", "models.v1")
    with pytest.raises(ConfigError, match="models: churn, demo-classifier$"):
        history.require_model("zzz", "models.v1")


def test_a_model_name_on_an_empty_topic_says_to_learn_first() -> None:
    with pytest.raises(ConfigError, match="holds no versions yet; run 'streamml learn'"):
        _history().require_model("demo-classifier", "models.v1")
