"""Outputs of a batch of faust events, sent without waiting, its events held until they are delivered.

At-least-once in faust: it commits only offsets of acked messages, and
``Stream.take_events`` acks a batch's events as soon as the agent asks for the
next batch. :class:`HeldBatches` holds an extra reference on each event's
message and drops it once every output of the batch is acknowledged by the
broker. That wait runs in the background, so batch N+1 is processed while
batch N is in flight (at most :attr:`HeldBatches.MAX_IN_FLIGHT`); on a clean
stop faust's ``stream_wait_empty`` waits for the holds before its final commit.
A failed delivery crashes the worker with the batch still held: it exits
non-zero and replays from the last commit when restarted.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from typing import Any

import faust

from streamml.errors import KafkaClientError

__all__ = ["HeldBatches", "Output"]

logger = logging.getLogger(__name__)

#: ``(topic, key, value, partition or None, headers or None)``: one record to send.
Output = tuple[str, bytes | None, bytes | None, int | None, Any]


class HeldBatches:
    """Send a batch's outputs and ack its events once all are delivered (see the module doc)."""

    #: Batches whose deliveries may be outstanding while the next one is processed.
    MAX_IN_FLIGHT = 4

    def __init__(self, app: faust.App) -> None:
        self.app = app
        self._in_flight: set[asyncio.Future[None]] = set()

    @staticmethod
    def hold(events: Sequence[faust.EventT[Any]]) -> None:
        """Keep ``events`` unacked until :meth:`send` has delivered their outputs."""
        for event in events:
            event.message.incref()

    async def send(self, events: Sequence[faust.EventT[Any]], span: str, outputs: Iterable[Output]) -> None:
        """Hand ``outputs`` to the producer and release ``events`` (held) once all are delivered.

        ``span`` names the batch in log lines. Straight to the producer, not
        through faust's send buffer: the buffer hands records to aiokafka one
        task switch at a time and stalls the stream whenever it holds over 100
        (``ProducerBuffer.max_messages``).
        """
        send = self.app.producer.send
        pending = []
        try:
            for topic, key, value, partition, headers in outputs:
                pending.append(await send(topic, key, value, partition, None, headers))
        except Exception as exc:
            await self._fail(span, exc)
            raise KafkaClientError(f"cannot send the outputs of {span}: {exc}") from exc
        task = asyncio.ensure_future(self._release_when_delivered(events, span, pending))
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)
        if len(self._in_flight) >= self.MAX_IN_FLIGHT:
            await asyncio.wait(set(self._in_flight), return_when=asyncio.FIRST_COMPLETED)

    async def _release_when_delivered(self, events: Sequence[faust.EventT[Any]], span: str, pending: list[Any]) -> None:
        try:
            await asyncio.gather(*pending)
        except Exception as exc:
            await self._fail(span, exc)  # the batch stays held: never committed
            return
        for event in events:
            event.ack()  # drops our hold; with take_events' own ack the offset becomes committable

    async def _fail(self, span: str, exc: BaseException) -> None:
        logger.critical("cannot deliver the outputs of %s; stopping: %r", span, exc)
        await self.app.crash(exc)
