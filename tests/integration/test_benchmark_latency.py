"""The publish-to-swap latency benchmark runs end to end on the real broker (figures not asserted)."""

from __future__ import annotations

import pytest

from benchmarks.latency import run

pytestmark = pytest.mark.integration


def test_quick_latency_run_measures_both_sides_for_both_sizes(bootstrap_servers: str) -> None:
    results = run(bootstrap_servers, quick=True)
    assert list(results) == ["small_model", "large_model"]
    small, large = results["small_model"].summary(), results["large_model"].summary()
    # The large model really travels in chunks: over one record's 1 MB limit.
    assert large["record_bytes"] > 1_000_000 > small["record_bytes"]
    for summary in (small, large):
        assert summary["samples"] >= 2
        assert summary["baseline_p50_ms"] > 0 and summary["candidate_p50_ms"] > 0
