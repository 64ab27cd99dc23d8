"""The settings and errors of one-publisher-per-model and the learner's stop rule."""

from __future__ import annotations

import pytest

from streamml.config import load_settings
from streamml.errors import ConfigError, PublisherFencedError, UnlearnableRecordsError


def test_defaults_fence_where_possible_and_stop_after_100_failures_in_a_row() -> None:
    settings = load_settings(env={})
    assert (settings.publisher_transactions, settings.learner_max_consecutive_errors) == ("auto", 100)


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({"STREAMML_PUBLISHER_TRANSACTIONS": "sometimes"}, "publisher_transactions: expected auto, on or off"),
        ({"STREAMML_LEARNER_MAX_CONSECUTIVE_ERRORS": "0"}, "learner_max_consecutive_errors: must be at least 1"),
        ({"STREAMML_LEARNER_MAX_CONSECUTIVE_ERRORS": "many"}, "expected a whole number"),
    ],
)
def test_bad_values_are_config_errors(env: dict[str, str], problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        load_settings(env=env)


def test_the_errors_are_one_line_with_the_exit_code_the_readme_gives() -> None:
    fenced = PublisherFencedError("m", "streamml-publisher.models.v1.m", "fenced by a newer instance")
    assert fenced.exit_code == 2 and "\n" not in str(fenced)
    assert str(fenced).startswith("another learner for model m took over publishing (transactional id ")
    stopped = UnlearnableRecordsError(
        model_spec="logistic", count=7, first="f[0]@3", error="ValueError: x", since="v2 was published"
    )
    assert stopped.exit_code == 1 and "\n" not in str(stopped)
    assert "failed to learn 7 consecutive feature records, the first at f[0]@3 (ValueError: x)" in str(stopped)
