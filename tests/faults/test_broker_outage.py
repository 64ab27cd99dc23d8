"""Fault 5: the broker unreachable for several seconds mid-stream, then back.

A dedicated embedded broker sits behind a cuttable proxy
(:class:`tests.faults.tcp_proxy.CuttableProxy`, the Tansu binary's own
``proxy``); every component -- ``streamml process`` (faust/aiokafka) and the
event producer (librdkafka) -- bootstraps through the proxy. The proxy is cut
for :data:`OUTAGE_SECONDS` while events flow, then resumed. Nothing is
restarted: the components must reconnect by themselves, and every
acknowledged event must come out featurized or quarantined (lost == 0).

A probe that reads the broker directly (not through the proxy) checks that the
cut really stopped the output, and measures the time from the resume to the
first new output record.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from streamml.broker import EmbeddedBroker, free_port
from streamml.cluster import Cluster
from streamml.config import Settings
from streamml.topics import Topics
from tests.conftest import eventually
from tests.faults.checker import Ledger, check
from tests.faults.conftest import Component
from tests.faults.tcp_proxy import CuttableProxy
from tests.faults.workload import Feeder, records_in

EVENTS = 4000
RATE = 200.0
#: Feature vectors out before the cut: the processor is mid-stream.
BEFORE_CUT = 400
#: How long the broker is unreachable (the issue asks for 5 to 20 s).
OUTAGE_SECONDS = 8.0


@pytest.fixture
def proxied(tmp_path: Path) -> Iterator[tuple[EmbeddedBroker, CuttableProxy]]:
    """A broker of this test's own, and a started proxy in front of it."""
    broker = EmbeddedBroker(port=free_port(), home=tmp_path / "broker")
    broker.start(timeout=30)
    proxy = CuttableProxy(port=free_port(), origin=broker.bootstrap_servers, log_file=tmp_path / "proxy.log")
    try:
        with proxy:
            yield broker, proxy
    finally:
        broker.stop()


def test_components_reconnect_by_themselves_after_an_outage_and_lose_nothing(
    settings: Settings, proxied: tuple[EmbeddedBroker, CuttableProxy], spawn: Callable[..., Component],
) -> None:
    broker, proxy = proxied
    through_proxy = settings.with_overrides(bootstrap_servers=proxy.bootstrap_servers)
    direct = settings.with_overrides(bootstrap_servers=broker.bootstrap_servers)
    topics = Topics.from_settings(through_proxy)
    Cluster(through_proxy).create_topics(topics.specs(through_proxy))

    ledger = Ledger(through_proxy, topics)
    feeder = Feeder(through_proxy, topics, ledger, rate=RATE).start(0, EVENTS)
    processor = spawn("process", "--report-every", "0", settings_=through_proxy)
    pid = processor.process.pid if processor.process else None

    def mid_stream() -> bool:
        processor.assert_alive()
        return records_in(direct, topics.features) >= BEFORE_CUT

    eventually(mid_stream, timeout=60, interval=0.1, what=f"{BEFORE_CUT} feature vectors before the cut")

    proxy.cut()
    sent_before_cut = feeder.sent
    assert sent_before_cut < EVENTS, "the producer had finished before the cut: nothing of it was cut off"
    assert proxy.refuses(), "the cut left the proxy port accepting connections"
    during_cut: list[int] = []
    outage_ends = time.monotonic() + OUTAGE_SECONDS
    while time.monotonic() < outage_ends:  # the outage's length is the fault itself, not a wait for a condition
        processor.assert_alive()
        during_cut.append(records_in(direct, topics.features))
        time.sleep(min(0.5, max(0.0, outage_ends - time.monotonic())))
    # What was in flight when the cut fell may land in its first moments; after that, nothing.
    assert len(set(during_cut[2:])) <= 1, f"output went on through the cut: {during_cut}"
    at_resume = records_in(direct, topics.features)
    proxy.resume()
    resumed = time.monotonic()

    def new_output() -> float | None:
        processor.assert_alive()
        return time.monotonic() - resumed if records_in(direct, topics.features) > at_resume else None

    first_output_s = eventually(new_output, timeout=45, interval=0.05, what="the first output after the resume")
    feeder.join(timeout=90)

    def all_out() -> bool:
        processor.assert_alive()
        return not check(ledger.read_outputs()).lost

    eventually(all_out, timeout=60, interval=0.5, what="every acknowledged event out after the outage")
    report = check(ledger.read_outputs())
    print(report.format(
        f"broker outage {OUTAGE_SECONDS:g}s", sent_before_cut=sent_before_cut,
        first_output_after_resume_s=round(first_output_s, 2),
    ))
    # The same process all along: it reconnected by itself.
    assert processor.running and processor.process is not None and processor.process.pid == pid
    assert len(processor.starts) == 1
    assert report.produced == EVENTS and not ledger.failed, ledger.failed[:5]
    assert report.lost == 0, report.lost_sample
    assert report.unexpected == 0, report.unexpected_sample
    assert report.featurized >= EVENTS and report.without_rule == 0  # every event of the workload is valid
    assert processor.stop() == 0, processor.tail()
