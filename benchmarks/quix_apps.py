"""The quixstreams baselines, run as child processes with the interpreter of ``.venv-quix``.

``.venv-quix/bin/python -m benchmarks.quix_apps forward|work --bootstrap H:P --source T --dest T
[--dead-letters T] --group G --state-dir DIR``

quixstreams 3.x needs confluent-kafka < 2.13 and the project's venv has a
newer one, so these apps live in their own venv
(:func:`benchmarks.processor_throughput.quix_python` makes it once).

- ``forward``: a quixstreams app forwarding each record's bytes: its floor.
- ``work``: what a user would write with quixstreams to do the processor's
  job with the kernel's own functions, record by record: Avro decode
  (:class:`streamml.serde.AvroSerde`), the contract
  (:func:`streamml.validation.validate`, :func:`~streamml.validation.check_event_time`),
  features (:func:`streamml.featurization.featurize`), the per-key window
  (:mod:`streamml.windows`, its state in quixstreams' RocksDB state with its
  changelog), the FeatureVector encoding, and a dead letter
  (:func:`stream_processors.dead_letters.dead_letter`) for every rejected
  record. It leaves out what the processor adds on top: replay journals,
  drift monitoring, metrics and progress counts.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["main"]

SESSION_MS = 6000


def _tolerate_missing_retention() -> None:
    """Let quixstreams derive a changelog's config from a topic whose described config lacks retention.

    The embedded broker (Tansu) leaves ``retention.ms`` and ``retention.bytes``
    out of its DescribeConfigs answer, and quixstreams' ``derive_topic_config``
    indexes them (KeyError); Kafka's defaults stand in for them.
    """
    # Not installed in .venv (where mypy runs): it lives in .venv-quix.
    from quixstreams.models.topics.manager import TopicManager  # type: ignore[import-not-found]

    original = TopicManager.derive_topic_config

    def derive(self: Any, topics: Any) -> Any:
        for topic in topics:
            extra = topic.broker_config.extra_config
            extra.setdefault("retention.ms", "604800000")
            extra.setdefault("retention.bytes", "-1")
        return original(topics)  # a classmethod: already bound

    TopicManager.derive_topic_config = derive


def _application(bootstrap: str, group: str, state_dir: Path) -> Any:
    from quixstreams import Application  # type: ignore[import-not-found]

    _tolerate_missing_retention()
    return Application(
        broker_address=bootstrap,
        consumer_group=group,
        auto_offset_reset="earliest",
        # The processor commits every 0.5 s: the same here.
        commit_interval=0.5,
        consumer_extra_config={"session.timeout.ms": SESSION_MS, "fetch.wait.max.ms": 10},
        producer_extra_config={"linger.ms": 5},
        state_dir=state_dir,
        loglevel="WARNING",
        auto_create_topics=True,
    )


def _bytes_topic(app: Any, name: str) -> Any:
    return app.topic(name, value_deserializer="bytes", key_deserializer="bytes",
                     value_serializer="bytes", key_serializer="bytes")


def run_forward(bootstrap: str, source: str, dest: str, group: str, state_dir: Path) -> None:
    """Forward ``source`` to ``dest`` unchanged until SIGTERM."""
    app = _application(bootstrap, group, state_dir)
    sdf = app.dataframe(_bytes_topic(app, source))
    sdf.to_topic(_bytes_topic(app, dest))
    app.run()


def run_work(bootstrap: str, source: str, dest: str, dead_letters: str, group: str, state_dir: Path) -> None:
    """Validate, featurize and window ``source`` into ``dest``, rejects to ``dead_letters``, until SIGTERM."""
    from quixstreams import message_context

    from stream_processors.dead_letters import Rejection, dead_letter
    from streamml.config import load_settings
    from streamml.errors import DecodeError
    from streamml.featurization import EVENT_ID_FIELD, FeatureSpec, featurize, roles
    from streamml.records import FeatureVector, RecordCodec
    from streamml.serde import AvroSchema, AvroSerde
    from streamml.validation import check_event_time, validate
    from streamml.windows import WindowSpec, WindowState, window_features

    settings = load_settings({})
    schema = AvroSchema.from_file(settings.schema_path)
    serde = AvroSerde(schema)
    codec = RecordCodec(FeatureVector)
    key_field, label_field, time_field = settings.key_field, settings.label_field, settings.time_field
    spec = FeatureSpec.from_schema(schema, exclude=roles(key_field, label_field, time_field))
    window = WindowSpec(settings.window_seconds, tuple(settings.window_field_list))
    feature_headers = codec.headers
    future_ms = int(settings.max_event_future_seconds * 1000)
    age_ms = int(settings.max_event_age_seconds * 1000)

    def reject(value: bytes, key: bytes | None, headers: Any, rejection: Any, now_ms: int) -> tuple[str, Any, Any]:
        context = message_context()
        _, letter, letter_headers = dead_letter(
            value, key, headers or (), rejection, topic=source, partition=context.partition,
            offset=context.offset, source_timestamp_ms=None, now_ms=now_ms, max_bytes=settings.dead_letter_max_bytes,
        )
        return ("d", letter, letter_headers)

    def process(value: bytes, key: bytes | None, timestamp: int, headers: Any, state: Any) -> tuple[str, Any, Any]:
        now_ms = int(time.time() * 1000)
        try:
            event = serde.decode(value, headers)
        except DecodeError as exc:
            return reject(value, key, headers, Rejection("decode", exc.rule, "", str(exc)), now_ms)
        violations = validate(event, schema)
        if violations:
            return reject(value, key, headers, Rejection.from_violations(violations), now_ms)
        time_ms = int(event[time_field])
        late = check_event_time(time_field, time_ms, now_ms, max_future_ms=future_ms, max_age_ms=age_ms)
        if late is not None:
            return reject(value, key, headers, Rejection("validate", late.rule, late.field, late.message), now_ms)
        values = {name: None if event.get(name) is None else float(event[name]) for name in window.fields}
        windows = WindowState.load(state.get("window"), window)
        features = featurize(event, spec)
        features.update(window_features(windows, time_ms, values, window))
        if windows.add(time_ms, values, window):
            state.set("window", windows.dump(window))
        context = message_context()
        vector = FeatureVector(
            key=str(event.get(key_field)),
            event_id=str(event.get(EVENT_ID_FIELD) or f"{source}-{context.partition}-{context.offset}"),
            event_time=time_ms,
            features=features,
            label=event.get(label_field),
            source_topic=source,
            source_partition=context.partition,
            source_offset=context.offset,
        )
        return ("f", codec.encode(vector), feature_headers)

    app = _application(bootstrap, group, state_dir)
    sdf = app.dataframe(_bytes_topic(app, source))
    sdf = sdf.apply(process, stateful=True, metadata=True)
    for kind, topic in (("f", dest), ("d", dead_letters)):
        branch = sdf.filter(lambda out, kind=kind: out[0] == kind)
        branch = branch.set_headers(lambda out, key, timestamp, headers: list(out[2]))
        branch.apply(lambda out: out[1]).to_topic(_bytes_topic(app, topic))
    app.run()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.quix_apps", description=__doc__.split("\n")[0])
    parser.add_argument("kind", choices=("forward", "work"))
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--source", required=True)
    parser.add_argument("--dest", required=True)
    parser.add_argument("--dead-letters", default=None)
    parser.add_argument("--group", required=True)
    parser.add_argument("--state-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.getLogger("stream_processors").setLevel(logging.ERROR)
    if args.kind == "forward":
        run_forward(args.bootstrap, args.source, args.dest, args.group, args.state_dir)
    else:
        if args.dead_letters is None:
            parser.error("work needs --dead-letters")
        run_work(args.bootstrap, args.source, args.dest, args.dead_letters, args.group, args.state_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
