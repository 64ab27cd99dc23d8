"""A producer process for the producer-kill fault: ``python -m tests.faults.acked_producer ACKS_FILE [RATE]``.

Sends valid events ``e0, e1, ...`` with the project's :class:`EventProducer`
(settings from ``STREAMML_*``) and appends ``event_id partition offset`` to
ACKS_FILE for each delivery the broker acknowledged, flushed at once, so a
SIGKILL leaves exactly the acknowledged ones on file. Bounded: at most
200,000 events.
"""

from __future__ import annotations

import os
import sys
import time
from typing import IO, Any

from confluent_kafka import KafkaError, Message

from producers.app import EventProducer
from streamml.config import load_settings
from tests.faults.workload import event

LIMIT = 200_000


class AckedProducer(EventProducer):
    """An EventProducer that writes each acknowledged event's id and position to a file."""

    def __init__(self, acks: IO[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._acks = acks
        self._decode = self.serde.decode

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        super()._on_delivery(err, msg)
        if err is None:
            event_id = self._decode(msg.value(), self._headers)["event_id"]  # a delivery report carries no headers
            self._acks.write(f"{event_id} {msg.partition()} {msg.offset()}\n")
            self._acks.flush()
            os.fsync(self._acks.fileno())


def main() -> None:
    path, rate = sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else 2000.0
    settings = load_settings()
    with open(path, "a") as acks:
        # A long linger keeps records queued in the client when the kill lands.
        producer = AckedProducer(acks, settings=settings, client_config={"linger.ms": 200})
        started = time.monotonic()
        for i in range(LIMIT):
            producer.send(event(i))
            producer.poll(0)
            ahead = started + (i + 1) / rate - time.monotonic()  # pacing a stream
            if ahead > 0:
                time.sleep(ahead)
        producer.flush(30)


if __name__ == "__main__":
    main()
