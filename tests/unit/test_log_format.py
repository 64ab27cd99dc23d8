"""``--log-format json``: one JSON object per log line, extras as keys; the option reaches every command."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from click.testing import CliRunner

from streamml.config import Settings, load_settings
from streamml_cli import cli, options
from streamml_cli.log_format import JsonFormatter


def _record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("consumers.swap", logging.WARNING, __file__, 1, message, args, None)
    record.__dict__.update(extra)
    return record


def test_a_line_is_one_json_object_with_the_extras_as_keys() -> None:
    record = _record("refused %s v%d", "m", 3, event="model_refused", version=3, record="models.v1[0]@12")
    line = JsonFormatter().format(record)
    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed["message"] == "refused m v3" and parsed["level"] == "WARNING"
    assert parsed["logger"] == "consumers.swap" and parsed["ts"].endswith("+00:00")
    assert (parsed["event"], parsed["version"], parsed["record"]) == ("model_refused", 3, "models.v1[0]@12")
    # Only the message and the extras: none of LogRecord's own attributes (args, lineno...) leak in.
    assert set(parsed) == {"ts", "level", "logger", "message", "event", "version", "record"}


def test_values_json_cannot_hold_become_strings_and_tracebacks_stay_on_one_line() -> None:
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        record = _record("failed", path=Path("/tmp/x"), rules={"a": 1})
        record.exc_info = sys.exc_info()
    line = JsonFormatter().format(record)
    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed["path"] == "/tmp/x" and parsed["rules"] == {"a": 1}
    assert "ValueError: boom" in parsed["exception"] and "Traceback" in parsed["exception"]


@contextmanager
def bare_root() -> Iterator[logging.Logger]:
    """The root logger with no handlers (as in a fresh process), restored afterwards.

    Entered in the test body: pytest adds its capture handlers to the root for the call phase.
    """
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    root.handlers = []
    try:
        yield root
    finally:
        root.handlers, root.level = saved, level


def test_setup_logging_installs_one_handler_and_switches_its_format() -> None:
    stream = io.StringIO()
    with bare_root() as root:
        options.setup_logging(load_settings({}, log_level="INFO"))
        options.setup_logging(load_settings({}, log_level="INFO", log_format="json"))
        [handler] = root.handlers
        assert isinstance(handler.formatter, JsonFormatter) and root.level == logging.INFO
        handler.setStream(stream)  # type: ignore[attr-defined]
        learner = logging.getLogger("model_publisher.learning_loop")
        learner.info("published m v%d", 2, extra={"event": "model_published"})
    assert json.loads(stream.getvalue())["event"] == "model_published"


def test_a_bad_log_format_is_a_config_error() -> None:
    from streamml.errors import ConfigError

    with pytest.raises(ConfigError, match="log_format: expected text or json"):
        load_settings({"STREAMML_LOG_FORMAT": "yaml"})


def test_the_global_option_reaches_the_command_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seen: list[Settings] = []
    monkeypatch.setattr(options, "setup_logging", seen.append)
    missing = tmp_path / "no-such-schema.avsc"
    result = CliRunner().invoke(cli, ["--log-format", "json", "process", "--schema", str(missing)], env={})
    assert result.exit_code != 0  # the schema does not exist: settings were loaded before that
    assert [s.log_format for s in seen] == ["json"]
    seen.clear()
    CliRunner().invoke(cli, ["process", "--schema", str(missing)], env={"STREAMML_LOG_FORMAT": "json"})
    assert [s.log_format for s in seen] == ["json"]  # the variable works too
