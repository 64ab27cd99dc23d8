"""The pacer's schedule, the source spec parser and the package's public surface."""

from __future__ import annotations

from pathlib import Path

import pytest

import producers
from producers import CsvSource, JsonLinesSource, Pacer, ParquetSource, ProduceReport, SyntheticSource, open_source
from streamml.config import Settings, load_settings
from streamml.errors import SourceError


class FakeClock:
    """A clock the test moves by hand, so pacing is checked without sleeping."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def settings() -> Settings:
    return load_settings(env={})


def test_pacer_spaces_events_at_one_over_rate() -> None:
    clock = FakeClock()
    pacer = Pacer(4.0, clock=clock)
    assert pacer.delay() == 0.0  # the first event is due at once
    assert pacer.delay() == pytest.approx(0.25)
    clock.now += 0.25
    assert pacer.delay() == pytest.approx(0.25)
    clock.now += 0.25
    assert pacer.delay() == pytest.approx(0.25)


def test_pacer_lets_a_slightly_late_sender_catch_up() -> None:
    clock = FakeClock()
    pacer = Pacer(10.0, clock=clock)
    pacer.delay()
    clock.now += 0.35  # events 1..3 were due at 0.1, 0.2, 0.3
    assert [pacer.delay() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert pacer.delay() == pytest.approx(0.05)  # event 4 is due at 0.4


def test_pacer_holds_the_long_run_rate() -> None:
    clock = FakeClock()
    pacer = Pacer(1000.0, clock=clock)
    start = clock.now
    for _ in range(5000):
        clock.now += pacer.delay()  # a caller that waits exactly as told
    assert clock.now - start == pytest.approx(4.999)


def test_pacer_does_not_burst_after_a_long_stall() -> None:
    clock = FakeClock()
    pacer = Pacer(100.0, clock=clock, max_lag=1.0)
    pacer.delay()
    clock.now += 10.0  # stalled: 1000 events behind schedule
    assert pacer.delay() == 0.0
    assert pacer.delay() == pytest.approx(0.01)


@pytest.mark.parametrize("rate", [0.0, -5.0])
def test_pacer_rejects_a_non_positive_rate(rate: float) -> None:
    with pytest.raises(ValueError, match="rate must be positive"):
        Pacer(rate)


def test_open_source_synthetic_uses_the_length_and_seed(settings: Settings) -> None:
    source = open_source("synthetic", settings, length=300, seed=9, bad_fraction=0.1)
    assert isinstance(source, SyntheticSource)
    assert (source.length, source.seed, source.bad_fraction, source.drift_position) == (300, 9, 0.1, 150)


@pytest.mark.parametrize(
    ("name", "source_class"),
    [("a.csv", CsvSource), ("a.CSV", CsvSource), ("a.jsonl", JsonLinesSource), ("a.parquet", ParquetSource)],
)
def test_open_source_picks_the_reader_by_extension(
    name: str, source_class: type, settings: Settings, tmp_path: Path
) -> None:
    path = tmp_path / name
    if source_class is CsvSource:
        path.write_text("event_id,customer_id,event_time\n")
    elif source_class is JsonLinesSource:
        path.write_text('{"event_id": "e", "customer_id": "c", "event_time": 1}\n')
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({"event_id": ["e"], "customer_id": ["c"], "event_time": [1]}), path)
    assert type(open_source(str(path), settings)) is source_class


def test_open_source_rejects_an_unknown_extension(settings: Settings) -> None:
    with pytest.raises(SourceError) as caught:
        open_source("events.xlsx", settings)
    assert str(caught.value) == (
        "unknown source 'events.xlsx': expected 'synthetic' or a file ending in "
        ".csv, .jsonl, .ndjson, .parquet, .pq"
    )


def test_open_source_refuses_faults_for_files(settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text("event_id,customer_id,event_time\n")
    with pytest.raises(SourceError, match="synthetic source only"):
        open_source(str(path), settings, bad_fraction=0.1)


def test_report_summary_and_ok() -> None:
    report = ProduceReport(
        source="s", topic="t", sent=10, delivered=9, failed=1, injected_bad=2, elapsed=2.0, rate=5.0, bytes=2_000_000
    )
    assert not report.ok
    assert report.summary() == (
        "10 events sent to t, 9 delivered, 1 FAILED, 2 deliberately bad in 2.0s (5 events/s, 2.0 MB)"
    )


def test_public_surface() -> None:
    assert sorted(producers.__all__) == sorted(
        [
            "EventProducer", "ProducerStats", "produce", "ProduceReport", "open_source", "EventSource", "Record",
            "RawPayload", "SourceItem", "SyntheticSource", "FAULT_KINDS", "FileSource", "CsvSource",
            "JsonLinesSource", "ParquetSource", "Pacer",
        ]
    )
    assert all(hasattr(producers, name) for name in producers.__all__)


def test_every_source_satisfies_the_source_protocol(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text("event_id,customer_id,event_time\n")
    settings = load_settings(env={})
    for source in (open_source("synthetic", settings, length=1), open_source(str(path), settings)):
        assert isinstance(source, producers.EventSource)
