"""The stream processor's metrics and its quarantine-burst line, fed real batches (no broker)."""

from __future__ import annotations

import logging
from collections import Counter

import pytest

from benchmarks import workloads
from stream_processors.batches import BatchResult, OutputRecord, SourceRecord
from stream_processors.metrics import METRIC_NAMES, ProcessorMetrics, QuarantineBursts
from stream_processors.pipeline import BatchProcessor
from tests.unit.test_metrics_http import samples

TOPIC = "events.raw.v1"


def _run(processor: BatchProcessor, metrics: ProcessorMetrics, records: list[SourceRecord], size: int) -> Counter:
    """Process ``records`` in batches as the faust handler does; return the rules that quarantined."""
    windows: dict = {}
    rules: Counter = Counter()
    for start in range(0, len(records), size):
        batch = records[start : start + size]
        result = processor.process_batch(batch, windows)
        for key, update in result.window_updates.items():
            windows[key] = update.state
        metrics.observe_batch(TOPIC, batch, result, 0.004)
        rules.update(result.quarantined)
    return rules


def test_counts_match_what_the_batches_did() -> None:
    processor = BatchProcessor.from_settings(workloads.demo_settings().with_overrides(drift_window_events=0))
    records = workloads.source_records(600, bad_fraction=0.1)
    metrics = ProcessorMetrics()
    rules = _run(processor, metrics, records, 250)
    got = samples(metrics.registry)
    assert got[("streamml_processor_events_consumed_total", (("topic", TOPIC),))] == 600
    dead = {labels[0][1]: v for (name, labels), v in got.items() if name == "streamml_processor_dead_letters_total"}
    assert dead == dict(rules) and sum(dead.values()) > 0
    assert got[("streamml_processor_events_featurized_total", ())] == 600 - sum(rules.values())
    assert got[("streamml_processor_batch_size_count", ())] == 3  # 250 + 250 + 100: one observation per batch
    assert got[("streamml_processor_batch_size_sum", ())] == 600
    assert got[("streamml_processor_batch_seconds_bucket", (("le", "0.005"),))] == 3
    assert got[("streamml_processor_drift_windows_total", ())] == 0  # monitoring off: no window closed


def test_drift_scores_come_from_the_closed_windows() -> None:
    settings = workloads.demo_settings().with_overrides(drift_reference_events=100, drift_window_events=100)
    processor = BatchProcessor.from_settings(settings)
    metrics = ProcessorMetrics()
    _run(processor, metrics, workloads.source_records(500, bad_fraction=0.0), 50)
    got = samples(metrics.registry)
    windows = got[("streamml_processor_drift_windows_total", ())]
    assert windows >= 3  # 500 valid events: a reference of 100, then a window per 100
    numeric, categorical = processor.monitored_fields()
    psi = {labels[0][1]: v for (name, labels), v in got.items() if name == "streamml_processor_drift_psi"}
    assert set(numeric) <= set(psi) and all(v >= 0 for v in psi.values())
    assert ("streamml_processor_drifted_fields", ()) in got


def test_label_join_counts_are_read_at_scrape_time() -> None:
    metrics = ProcessorMetrics()
    counts = {"joined": 0, "expired_unlabelled": 0}
    metrics.watch_label_join(lambda: dict(counts))
    counts["joined"] = 7
    got = samples(metrics.registry)
    assert got[("streamml_processor_label_join_total", (("outcome", "joined"),))] == 7


def test_every_sample_of_a_scrape_is_in_metric_names() -> None:
    settings = workloads.demo_settings().with_overrides(drift_reference_events=100, drift_window_events=100)
    metrics = ProcessorMetrics()
    metrics.watch_label_join(lambda: {"joined": 1})
    _run(BatchProcessor.from_settings(settings), metrics, workloads.source_records(300, bad_fraction=0.1), 100)
    scraped = {name for name, _ in samples(metrics.registry)}
    assert scraped <= set(METRIC_NAMES), sorted(scraped - set(METRIC_NAMES))
    families = {n for n in METRIC_NAMES if not n.endswith(("_total", "_created", "_bucket", "_sum", "_count"))}
    assert families <= {n.removesuffix("_total") for n in scraped} | {n.rsplit("_", 1)[0] for n in scraped}


def _batch(n: int, bad: int) -> tuple[list[SourceRecord], BatchResult]:
    records = [SourceRecord(b"x", b"k", (), TOPIC, 1, 100 + i) for i in range(n)]
    result = BatchResult()
    for record in records[:bad]:
        result.dead_letters.append(OutputRecord(b"k", b"x", [], None, record))
    result.quarantined.update({"below_min": bad - bad // 3, "undecodable": bad // 3})
    return records, result


def test_a_quarantine_burst_is_one_line_naming_the_first_record(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    bursts = QuarantineBursts(min_events=10, min_share=0.1, every_seconds=10.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="stream_processors.metrics"):
        assert not bursts.observe(*_batch(500, 9))  # under min_events
        assert not bursts.observe(*_batch(500, 40))  # under min_share
        assert bursts.observe(*_batch(100, 30))
        now[0] = 5.0
        assert not bursts.observe(*_batch(100, 30))  # within every_seconds: counted into the next line
        now[0] = 11.0
        assert bursts.observe(*_batch(100, 30))
    first, second = caplog.records
    assert first.getMessage() == (
        f"quarantine burst: 30 of 100 events quarantined (below_min 20, undecodable 10), the first at {TOPIC}[1]@100"
    )
    assert first.event == "quarantine_burst" and first.record == f"{TOPIC}[1]@100"  # type: ignore[attr-defined]
    assert second.getMessage().endswith("; 1 more burst(s) since the last line")


def test_the_app_wires_the_label_join_counts_in_delayed_mode(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from stream_processors.app import build_app
    from streamml.config import Settings

    metrics = ProcessorMetrics()
    build_app(Settings(namespace="ns.", label_mode="delayed", home=tmp_path), metrics=metrics)
    got = samples(metrics.registry)
    assert got[("streamml_processor_label_join_total", (("outcome", "joined"),))] == 0
