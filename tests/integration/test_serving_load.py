"""The serving load benchmark runs end to end on the session broker (figures not asserted, correctness is)."""

from __future__ import annotations

import pytest

from benchmarks.serving_load import run, table

pytestmark = pytest.mark.integration


def test_quick_load_with_swaps_fails_no_request_and_answers_only_published_versions(bootstrap_servers: str) -> None:
    report = run(bootstrap_servers, quick=True)
    runs = report["runs"]
    assert {(r["scenario"], r["connections"]) for r in runs} == {
        (scenario, connections) for scenario in ("baseline", "streamml", "streamml+swaps") for connections in (1, 8)
    }
    assert [r for r in runs if r["failed"]] == [], table(report)
    assert all(r["requests"] > 0 for r in runs)
    assert report["unpublished_versions_answered"] == []
    for swapping in (r for r in runs if r["scenario"] == "streamml+swaps"):
        # Counted by the server itself (/metrics), during the load: the swaps really happened under it.
        assert swapping["swaps"] >= 10 and len(swapping["published"]) == 10
        assert len(swapping["versions_answered"]) >= 2  # the load saw the versions change
