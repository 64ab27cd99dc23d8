"""Fault 7: a producer SIGKILLed with records queued in its client.

``tests/faults/acked_producer.py`` sends events with the project's
EventProducer and writes each id the broker acknowledged to a file as the
delivery report arrives. Once :data:`KILL_AFTER` are on file it is SIGKILLed
(records still queued, lingering). Guarantee: every id it recorded as
acknowledged is in the raw topic, at the position its ack named.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from streamml.cluster import Cluster
from streamml.config import Settings
from streamml.reader import read_to_end
from streamml.topics import Topics
from tests.conftest import eventually
from tests.faults.checker import Ledger, check
from tests.faults.workload import serde

KILL_AFTER = 3000


def test_every_acknowledged_event_of_a_killed_producer_is_on_the_topic(
    settings: Settings, topics: Topics, tmp_path: Path
) -> None:
    acks = tmp_path / "acks.txt"
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMML_")}
    env.update(settings.to_env())
    log = tmp_path / "producer.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.faults.acked_producer", str(acks), "3000"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            cwd=Path(__file__).parents[2],
        )
    try:
        def acknowledged() -> bool:
            assert process.poll() is None, log.read_text()
            return acks.exists() and acks.read_text().count("\n") >= KILL_AFTER

        eventually(acknowledged, timeout=60, interval=0.05, what=f"{KILL_AFTER} acknowledged events")
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(30)

    ledger = Ledger(settings, topics)
    for line in acks.read_text().splitlines():
        if line.count(" ") == 2:  # a line cut by the kill has no offset yet: not recorded as acknowledged
            event_id, partition, offset = line.split()
            ledger.acknowledged((int(partition), int(offset)), event_id)
    codec = serde(settings)
    on_topic = {(m.partition() or 0, m.offset() or 0): codec.decode(m.value(), m.headers())["event_id"]
                for m in read_to_end(Cluster(settings), topics.raw_events)}
    missing = [(p, e) for p, e in ledger.produced.items() if on_topic.get(p) != e]
    ids = list(on_topic.values())
    unacknowledged = len(on_topic) - len(ledger.produced)
    # The raw topic is this test's "output": reuse the checker's counts for the one-line figure.
    report = check(ledger)
    print(
        f"faults: producer-kill: acknowledged {report.produced}, on topic {len(on_topic)} "
        f"({unacknowledged} more, delivered but unacknowledged when killed), lost {len(missing)}, "
        f"duplicates {len(ids) - len(set(ids))}"
    )
    assert len(ledger.produced) >= KILL_AFTER
    assert missing == [], missing[:10]
