"""The bare baseline of :mod:`benchmarks.learner_startup`: river and confluent-kafka, nothing of streamml.

``python -m benchmarks.bare_learner --bootstrap-servers B --source T --dest D --partitions N --schema PATH``
reads ``T`` from the start to its end with ``assign()``, learns the default
model (``StandardScaler | LogisticRegression``) with ``predict_one`` /
``learn_one`` on every labelled feature vector, and produces it pickled to
``D``. It imports only what a user's own loop would (this module is not
part of the ``benchmarks`` package's import graph), so its start-up is a
fair baseline; it prints one JSON line per phase, like the traced learner.
"""

from __future__ import annotations

import argparse
import io
import json
import pickle
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import fastavro
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from river import compose, linear_model, preprocessing


def _phase(name: str, **extra: Any) -> None:
    print(json.dumps({"phase": name, "ts": time.time(), "took": None, **extra}), flush=True)


def baseline_child(bootstrap: str, source: str, dest: str, partitions: int, schema_path: Path) -> None:
    """Read ``source`` from the start to its end, learn the default model, produce it pickled to ``dest``."""
    _phase("imported")
    schema = fastavro.parse_schema(json.loads(schema_path.read_text()))
    model: Any = compose.Pipeline(preprocessing.StandardScaler(), linear_model.LogisticRegression())
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4().hex}",
                         "enable.auto.commit": False, "fetch.wait.max.ms": 10, "log_level": 3})
    tps = [TopicPartition(source, p, OFFSET_BEGINNING) for p in range(partitions)]
    consumer.assign(tps)
    done: dict[int, bool] = {}
    learned = 0
    while len(done) < partitions or not all(done.values()):
        for message in consumer.consume(500, 0.2):
            if message.error() is not None:
                continue
            if not learned:
                _phase("first_record")
            record = fastavro.schemaless_reader(io.BytesIO(message.value() or b""), schema, None)
            x, y = record["features"], record["label"]  # type: ignore[index,call-overload]
            if y is not None:
                model.predict_one(x)
                model.learn_one(x, y)
                learned += 1
        # The end from the fetch responses (ListOffsets is short on the embedded broker).
        for tp in consumer.position(tps):
            high = consumer.get_watermark_offsets(TopicPartition(source, tp.partition), cached=True)[1]
            if high >= 0:
                done[tp.partition] = high == 0 or tp.offset >= high
    _phase("caught_up")
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0, "acks": "all", "log_level": 3})
    producer.produce(dest, value=pickle.dumps(model))
    if producer.flush(30):
        raise RuntimeError(f"the model was not delivered to {dest}")
    _phase("published", n_learned=learned)
    consumer.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bare_learner")
    parser.add_argument("--bootstrap-servers", required=True)
    parser.add_argument("--source", required=True)
    parser.add_argument("--dest", required=True)
    parser.add_argument("--partitions", type=int, required=True)
    parser.add_argument("--schema", type=Path, required=True, help="the feature vector schema (JSON)")
    args = parser.parse_args(argv)
    baseline_child(args.bootstrap_servers, args.source, args.dest, args.partitions, args.schema)
    return 0


if __name__ == "__main__":
    sys.exit(main())
