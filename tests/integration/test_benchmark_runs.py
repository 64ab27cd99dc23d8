"""The end-to-end benchmarks run through the real broker and count what they promise (no timing asserted)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.processor_throughput import CANDIDATE

pytestmark = pytest.mark.integration


def test_producer_benchmark_quick_run_through_the_broker(bootstrap_servers: str, tmp_path: Path) -> None:
    from benchmarks.producer_throughput import main as producer_main

    out = tmp_path / "producer.json"
    assert producer_main(["--quick", "--bootstrap-servers", bootstrap_servers, "--json", str(out)]) == 0

    results = json.loads(out.read_text())["benchmarks"]
    assert set(results) == {"producer_send", "producer_run"}
    for result in results.values():
        assert result["baseline"]["ops_per_s"] > 0 and result["candidate"]["ops_per_s"] > 0


def test_a_tiny_pipeline_run_counts_every_event_of_the_real_processor(bootstrap_servers: str, tmp_path: Path) -> None:
    from benchmarks.processor_throughput import main as processor_main

    out = tmp_path / "processor.json"
    argv = ["--quick", "--events", "300", "--only", "confluent_forward", "--bootstrap-servers", bootstrap_servers]
    assert processor_main([*argv, "--json", str(out)]) == 0

    document = json.loads(out.read_text())
    assert list(document["contestants"]) == [CANDIDATE, "confluent_forward"]
    (run,) = document["contestants"][CANDIDATE]["rounds"]
    counts = run["counts"]
    features = next(n for topic, n in counts.items() if topic.endswith("features.v1"))
    dead_letters = sum(counts.values()) - features
    # 3% of the synthetic events are spoiled: both outputs are exercised and nothing is lost.
    assert features + dead_letters == 300 and features > 250 and dead_letters > 0
