"""The start-up and freshness benchmarks run through the real broker; their figures hang together (none asserted)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from benchmarks.freshness import COMPONENTS
from benchmarks.learner_startup import BASELINE, CANDIDATE, TRACED

pytestmark = pytest.mark.integration

#: Slack for comparing times taken on different clocks' samples (a 20 ms poll, a log line's millisecond).
SLACK_S = 0.25


def test_learner_startup_times_both_learners_over_the_whole_history(bootstrap_servers: str, tmp_path: Path) -> None:
    from benchmarks.learner_startup import main

    out = tmp_path / "startup.json"
    assert main(["--quick", "--events", "600", "--bootstrap-servers", bootstrap_servers, "--json", str(out)]) == 0

    result = json.loads(out.read_text())["learner_startup"]
    assert result["features"] == 600
    contestants = result["contestants"]
    assert set(contestants) == {CANDIDATE, BASELINE, TRACED}
    for name, contestant in contestants.items():
        (run,) = contestant["rounds"]
        # Each first version was trained on the whole history, not on a prefix of it.
        assert run["n_learned"] == 600, name
        assert run["first_version_s"] > 0
        phases = run["phases"]
        # Every phase the child logged came before its output was seen (within one sample).
        assert all(0 < t <= run["first_version_s"] + SLACK_S for t in phases.values()), (name, phases)
    # Phases are listed in the order they happened.
    learn = contestants[CANDIDATE]["rounds"][0]["phases"]
    assert list(learn) == ["first_log_line", "history_known", "assigned", "caught_up", "published"]
    assert list(contestants[BASELINE]["rounds"][0]["phases"]) == ["imported", "first_record", "caught_up", "published"]
    traced = contestants[TRACED]["rounds"][0]
    assert traced["phases"]["imported"] <= traced["phases"]["assigned"]
    assert {"LearningLoop.check_sources", "ModelPublisher.start", "LearningLoop._history"} <= set(traced["calls"])
    assert all(0 <= took <= traced["first_version_s"] for took in traced["calls"].values())
    ratio = contestants[CANDIDATE]["first_version_s"] / contestants[BASELINE]["first_version_s"]
    assert math.isclose(result["ratio"], ratio)


def test_freshness_follows_every_event_to_a_prediction_by_a_version_that_learned_it(
    bootstrap_servers: str, tmp_path: Path
) -> None:
    from benchmarks.freshness import main

    out = tmp_path / "freshness.json"
    argv = ["--seconds", "4", "--rate", "300", "--bootstrap-servers", bootstrap_servers, "--json", str(out)]
    assert main(argv) == 0

    result = json.loads(out.read_text())["freshness"]
    assert result["events"] > 600  # about 4 s at 300/s
    assert result["predicted"] == result["events"]
    # v1 was out before the window (it is what ended the warm-up); a later one learned the window.
    assert result["versions_seen"] >= 2 and min(result["versions_serving_the_window"]) >= 2
    assert sum(v["events"] for v in result["per_version"]) == result["predicted"]
    for key in ("freshness_s", *COMPONENTS):
        s = result[key]
        assert s["min"] <= s["p50"] <= s["p99"] <= s["max"], key
    # Each step comes after the one before it: an event's feature vector after its acknowledgement,
    # the version that learned it after the feature vector, its first prediction after the version.
    for key in COMPONENTS:
        assert result[key]["min"] >= -SLACK_S, (key, result[key])
    # Event by event the components add up to the freshness, so their means do too.
    assert math.isclose(sum(result[key]["mean"] for key in COMPONENTS), result["freshness_s"]["mean"], abs_tol=1e-6)
