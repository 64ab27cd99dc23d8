"""Runs through a real broker: pre-filled input, an output counter, and a child process timed end to end.

One *run* starts a program (the real ``streamml process`` or a baseline) as a
child process, which reads a raw topic that was filled before it started.
An :class:`OutputCounter` in this process reads every output topic with
``assign()`` (no group join, 10 ms fetch waits) and counts records, so the
run knows when the first output appeared and when the last expected one did.
The child's CPU time (``/proc/<pid>/stat``) is sampled at both moments, and
its peak RSS (``VmHWM``) at the end. The steady window opens at the last
sample (every ~20 ms) that saw no output yet and closes when the last
expected record arrived: events/s is N over that window, and CPU per event
is the CPU spent in it over N, so neither start-up, imports nor the group
join are counted in them (events/s including start-up is N over the time
from the spawn to the last record).
Linux only (``/proc``), like the machines the figures are for.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from stream_processors.batches import SourceRecord

__all__ = ["ChildStats", "RunResult", "OutputCounter", "fill", "child_stats", "run_child", "stop_child"]

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ChildStats:
    """CPU seconds (user + system, threads included) and peak RSS in bytes of one process."""

    cpu_seconds: float
    peak_rss_bytes: int


def child_stats(pid: int) -> ChildStats:
    """Read ``pid``'s CPU time and peak RSS from ``/proc`` (zeros once it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return ChildStats(0.0, 0)
    # The command name (field 2) may hold spaces: split after its closing parenthesis.
    fields = stat[stat.rindex(")") + 2 :].split()
    cpu = (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS  # utime, stime
    peak = 0
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            peak = int(line.split()[1]) * 1024
    return ChildStats(cpu, peak)


def fill(bootstrap: str, topic: str, records: Sequence[SourceRecord]) -> None:
    """Produce ``records`` (value, key, headers) to ``topic``, each to its own ``partition``."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "acks": "all", "log_level": 3})
    for record in records:
        while True:
            try:
                producer.produce(
                    topic, value=record.value, key=record.key, headers=list(record.headers), partition=record.partition
                )
                break
            except BufferError:  # librdkafka's queue is full: let it drain
                producer.poll(0.05)
        producer.poll(0)
    if producer.flush(60):
        raise RuntimeError(f"could not fill {topic}: records still undelivered after 60 s")


class OutputCounter:
    """Count the records on some topics as they arrive (read with ``assign()``, from the start)."""

    def __init__(self, bootstrap: str, partitions: Mapping[str, Sequence[int]]) -> None:
        self.consumer = Consumer({
            "bootstrap.servers": bootstrap,
            "group.id": "bench-output-counter",  # never joined nor committed: assign() only
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 10,
            "log_level": 3,
        })
        self.consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, ps in partitions.items() for p in ps])
        self.counts: dict[str, int] = dict.fromkeys(partitions, 0)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def poll(self, timeout: float = 0.02) -> int:
        """Read what has arrived (waiting up to ``timeout``); return the total count so far."""
        for message in self.consumer.consume(10_000, timeout):
            if message.error() is None:
                self.counts[message.topic()] += 1  # type: ignore[index]
        return self.total

    def close(self) -> None:
        self.consumer.close()


@dataclass(frozen=True)
class RunResult:
    """One run of one program over ``events`` input events."""

    events: int
    #: Seconds from the spawn to the last sample that saw no output (the
    #: output began after it), to the first that saw some, and to the last expected record.
    quiet_s: float
    first_output_s: float
    last_output_s: float
    #: CPU seconds of the children from ``quiet_s`` to the last output, and in all.
    steady_cpu_s: float
    total_cpu_s: float
    peak_rss_bytes: tuple[int, ...]
    counts: Mapping[str, int]

    @property
    def steady_rate(self) -> float:
        """Events/s from the start of the output (see ``quiet_s``) to its last record."""
        return self.events / (self.last_output_s - self.quiet_s)

    @property
    def total_rate(self) -> float:
        """Events/s including start-up and group join."""
        return self.events / self.last_output_s

    @property
    def cpu_us_per_event(self) -> float:
        """Children's CPU µs per event while output flowed."""
        return self.steady_cpu_s / self.events * 1e6

    def to_dict(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "events_per_s": self.steady_rate,
            "events_per_s_incl_startup": self.total_rate,
            "cpu_us_per_event": self.cpu_us_per_event,
            "first_output_s": self.first_output_s,
            "last_output_s": self.last_output_s,
            "total_cpu_s": self.total_cpu_s,
            "peak_rss_bytes": list(self.peak_rss_bytes),
            "counts": dict(self.counts),
        }


def stop_child(process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """SIGTERM ``process`` (a clean stop), then SIGKILL it if it is still there after ``timeout``."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def run_child(
    commands: Sequence[Sequence[str]],
    *,
    bootstrap: str,
    outputs: Mapping[str, Sequence[int]],
    expected: int,
    env: Mapping[str, str],
    log: Path,
    timeout: float = 300.0,
) -> RunResult:
    """Start every command in ``commands`` at once and time them until ``outputs`` hold ``expected`` records.

    The children get ``env``; their output goes to ``log`` (read it when a
    run fails). They are stopped (SIGTERM) when the run is over, whatever
    happened. Raises :class:`RuntimeError` if a child exits early or the
    outputs are short after ``timeout`` seconds.
    """
    counter = OutputCounter(bootstrap, outputs)
    processes: list[subprocess.Popen[bytes]] = []
    try:
        with log.open("ab") as sink:
            started = time.perf_counter()
            for command in commands:
                processes.append(subprocess.Popen(list(command), env=dict(env), stdout=sink, stderr=subprocess.STDOUT))
        # The steady window opens at the last sample that saw no output yet: the
        # output began after it, so the rate counts all ``expected`` records.
        quiet_s, quiet_cpu, first_s = 0.0, 0.0, None
        deadline = started + timeout
        while True:
            seen = counter.poll()
            now = time.perf_counter()
            if not seen:
                quiet_s, quiet_cpu = now - started, sum(child_stats(p.pid).cpu_seconds for p in processes)
            elif first_s is None:
                first_s = now - started
            if seen >= expected:
                break
            dead = [p for p in processes if p.poll() is not None]
            if dead or now > deadline:
                what = f"exited with code {dead[0].returncode}" if dead else f"ran {timeout:g} s"
                raise RuntimeError(f"{' '.join(commands[0])} {what} with {seen}/{expected} outputs; see {log}")
        last_s = now - started
        stats = [child_stats(p.pid) for p in processes]
    finally:
        for process in processes:  # all at once: a group's members leave together
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            stop_child(process)
        counter.close()
    total_cpu = sum(s.cpu_seconds for s in stats)
    assert first_s is not None
    return RunResult(
        events=expected,
        quiet_s=quiet_s,
        first_output_s=first_s,
        last_output_s=last_s,
        steady_cpu_s=total_cpu - quiet_cpu,
        total_cpu_s=total_cpu,
        peak_rss_bytes=tuple(s.peak_rss_bytes for s in stats),
        counts=dict(counter.counts),
    )
