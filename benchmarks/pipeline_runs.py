"""The programs a pipeline run can time, and the per-round setup they share.

A :class:`Round` is one namespace on the broker: the pipeline's topics
(created as ``streamml topics create`` would), a raw topic filled with the
same synthetic Avro events (:func:`benchmarks.workloads.source_records`, a
few percent invalid so dead letters are exercised) and an output topic pair
per baseline. Every contestant of the round reads that raw topic from the
start with its own group, so they all see the same bytes.

:data:`CONTESTANTS` maps a name to a function building the child commands,
and the topics to count, for one contestant in one round.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks import workloads
from benchmarks.broker_runs import RunResult, fill, run_child
from stream_processors.batches import SourceRecord
from streamml.cluster import Cluster
from streamml.config import Settings, load_settings
from streamml.topics import TopicSpec

__all__ = ["ROOT", "Round", "Contestant", "CONTESTANTS", "QUIX", "quix_python", "run_contestant"]

ROOT = Path(__file__).resolve().parent.parent
#: The separate venv of the quixstreams baselines (quixstreams 3 needs confluent-kafka < 2.13).
QUIX_VENV = ROOT / ".venv-quix"
#: The contestants that need :data:`QUIX_VENV`.
QUIX = ("quix_work", "quix_forward")
BAD_FRACTION = 0.03


def quix_python(*, create: bool) -> Path | None:
    """The interpreter of ``.venv-quix``: made once (PyPI) if ``create``, else ``None`` when absent."""
    python = QUIX_VENV / "bin" / "python"
    ready = QUIX_VENV / ".installed"
    if ready.exists():
        return python
    if not create:
        return None
    print(f"creating {QUIX_VENV} (once): python -m venv + pip install -e . 'quixstreams>=3,<4'", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", str(QUIX_VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "-e", str(ROOT), "quixstreams>=3,<4"], check=True)
    ready.touch()
    return python


@dataclass
class Round:
    """One namespace with its topics created and its raw topic filled."""

    bootstrap: str
    home: Path
    settings: Settings
    events: int
    cluster: Cluster
    #: The raw records, for :meth:`variant`.
    records: Sequence[SourceRecord] = ()
    _variants: set[str] = field(default_factory=set)

    @classmethod
    def prepare(cls, bootstrap: str, home: Path, *, events: int, partitions: int = 3) -> Round:
        namespace = f"b{uuid.uuid4().hex[:8]}."
        home = home / namespace.rstrip(".")
        settings = load_settings(env={}, bootstrap_servers=bootstrap, namespace=namespace, home=home,
                                 partitions=partitions)
        cluster = Cluster(settings)
        cluster.create_topics(cluster.topics.specs(settings))
        records = workloads.source_records(events, bad_fraction=BAD_FRACTION, partitions=partitions)
        # source_records names its topic: retarget it at this round's raw topic.
        fill(bootstrap, settings.topic(workloads.EVENTS_TOPIC), records)
        return cls(bootstrap, home, settings, events, cluster, records)

    def variant(self, tag: str) -> Settings:
        """Settings of a sibling namespace ``<namespace><tag>.`` holding the same raw records (made once)."""
        settings = self.settings.with_overrides(namespace=f"{self.settings.namespace}{tag}.")
        if settings.namespace not in self._variants:
            cluster = Cluster(settings)
            cluster.create_topics(cluster.topics.specs(settings))
            fill(self.bootstrap, cluster.topics.raw_events, self.records)
            self._variants.add(settings.namespace)
        return settings

    @property
    def raw(self) -> str:
        return self.cluster.topics.raw_events

    def outputs(self, *names: str) -> dict[str, list[int]]:
        """Create ``bench.<name>`` topics (as many partitions as the raw one); return their partitions."""
        topics = [self.settings.topic(f"bench.{name}") for name in names]
        self.cluster.create_topics([TopicSpec(topic, self.settings.partitions) for topic in topics])
        return {topic: list(range(self.settings.partitions)) for topic in topics}

    def env(self) -> dict[str, str]:
        """The children's environment: this round's settings, nothing of the caller's ``STREAMML_*``."""
        base = {k: v for k, v in os.environ.items() if not k.startswith("STREAMML_")}
        return {**base, **self.settings.to_env(), "PYTHONPATH": str(ROOT)}


#: Builds ``(commands, outputs)`` for a contestant: child command lines and the topics whose records are counted.
Contestant = Callable[[Round, int], tuple[list[list[str]], Mapping[str, Sequence[int]]]]


def _processor_with(**overrides: str) -> Contestant:
    """``streamml process`` with settings ``overrides`` (``STREAMML_*`` names) in its environment.

    With overrides it runs in a namespace of its own (its topics created and
    its raw topic filled with the round's records), so its outputs and group
    are not the plain candidate's.
    """

    def build(r: Round, processes: int) -> tuple[list[list[str]], Mapping[str, Sequence[int]]]:
        settings = r.variant("v" + "".join(sorted(overrides)).lower()[-24:]) if overrides else r.settings
        cluster = Cluster(settings)
        topics = cluster.topics
        outputs = {t: cluster.partitions(t) for t in (topics.features, topics.dead_letters)}
        env = {**overrides, "STREAMML_NAMESPACE": settings.namespace} if overrides else {}
        # env(1) execs the interpreter: the child's pid, and so its CPU and RSS, stay the process's own.
        prefix = ["env", *(f"{name}={value}" for name, value in env.items())] if env else []
        command = [*prefix, sys.executable, "-m", "streamml_cli", "process", "--report-every", "0"]
        return [command] * processes, outputs

    return build


_processor = _processor_with()


def _forwarder(kind: str) -> Contestant:
    def build(r: Round, processes: int) -> tuple[list[list[str]], Mapping[str, Sequence[int]]]:
        outputs = r.outputs(kind)
        group = r.settings.topic(f"bench.{kind}")
        command = [sys.executable, "-m", "benchmarks.forwarders", kind, "--bootstrap", r.bootstrap,
                   "--source", r.raw, "--dest", next(iter(outputs)), "--group", group,
                   "--datadir", str(r.home / kind)]
        return [command] * processes, outputs

    return build


def _quix(kind: str) -> Contestant:
    def build(r: Round, processes: int) -> tuple[list[list[str]], Mapping[str, Sequence[int]]]:
        python = quix_python(create=False)
        if python is None:
            raise RuntimeError(f"{QUIX_VENV} is missing")
        outputs = r.outputs(f"quix-{kind}", "quix-dead-letters") if kind == "work" else r.outputs(f"quix-{kind}")
        names = list(outputs)
        command = [str(python), "-m", "benchmarks.quix_apps", kind, "--bootstrap", r.bootstrap,
                   "--source", r.raw, "--dest", names[0], "--group", r.settings.topic(f"bench.quix-{kind}"),
                   "--state-dir", str(r.home / f"quix-{kind}")]
        if kind == "work":
            command += ["--dead-letters", names[1]]
        return [command] * processes, outputs

    return build


CONTESTANTS: dict[str, Contestant] = {
    "streamml_process": _processor,
    # What uvloop buys (the default), measured in the same run.
    "streamml_process_asyncio": _processor_with(STREAMML_PROCESSOR_EVENT_LOOP="asyncio"),
    "faust_forward": _forwarder("faust"),
    "confluent_forward": _forwarder("confluent"),
    "quix_work": _quix("work"),
    "quix_forward": _quix("forward"),
}


def run_contestant(name: str, r: Round, *, processes: int = 1, timeout: float = 300.0) -> RunResult:
    """Run contestant ``name`` (``processes`` copies in one group) over round ``r``'s raw topic."""
    commands, outputs = CONTESTANTS[name](r, processes)
    r.home.mkdir(parents=True, exist_ok=True)
    return run_child(commands, bootstrap=r.bootstrap, outputs=outputs, expected=r.events, env=r.env(),
                     log=r.home / f"{name}.log", timeout=timeout)
