"""Reading the quarantine without a broker: --since parsing and the summary by stage and rule."""

from __future__ import annotations

import pytest

from stream_processors.quarantine import REPLAY_HEADER, DeadLetter, summarize
from streamml.errors import ConfigError
from streamml_cli.deadletters import parse_since

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("text", "expected_ms"),
    [("90s", (NOW - 90) * 1000), ("15m", (NOW - 900) * 1000), ("2h", (NOW - 7200) * 1000),
     ("1d", (NOW - 86400) * 1000)],
)
def test_since_takes_durations_back_from_now(text: str, expected_ms: float) -> None:
    assert parse_since(text, now=NOW) == int(expected_ms)


def test_since_takes_an_iso_time_and_refuses_anything_else() -> None:
    assert parse_since("2026-12-01T10:00:00+00:00") == 1_796_119_200_000
    assert parse_since(None) is None
    with pytest.raises(ConfigError, match="expected a duration"):
        parse_since("yesterday-ish")


def letter(offset: int, stage: str, rule: str, *, truncated: bool = False, replay_of: str | None = None) -> DeadLetter:
    reason = {"stage": stage, "rule": rule, "field": "age", "message": f"{rule} at {offset}", "source.topic": "raw",
              "source.partition": 0, "source.offset": offset, "original.size": 2_000_000 if truncated else ""}
    headers = ((REPLAY_HEADER, replay_of.encode()),) if replay_of else ()
    return DeadLetter(f"dlq[0]@{offset}", None, reason, b"k", b"v", headers)


def test_summary_groups_by_stage_and_rule_with_examples_and_counts_replays() -> None:
    letters = [letter(i, "validate", "below_min") for i in range(5)]
    letters += [
        letter(10, "decode", "undecodable", truncated=True),
        letter(11, "validate", "below_min", replay_of="dlq[0]@1"),
    ]
    summary = summarize(letters, replayed={"dlq[0]@1", "dlq[0]@2"}, examples=2)
    assert summary.total == 7 and summary.by_rule == {("validate", "below_min"): 6, ("decode", "undecodable"): 1}
    assert [e["message"] for e in summary.examples[("validate", "below_min")]] == ["below_min at 0", "below_min at 1"]
    assert (summary.truncated, summary.requarantined, summary.replayed) == (1, 1, 2)
    document = summary.as_dict()
    assert document["rules"][0]["rule"] == "below_min" and document["rules"][0]["count"] == 6
    assert letters[-1].replay_of == "dlq[0]@1" and letters[5].truncated and not letters[0].truncated
