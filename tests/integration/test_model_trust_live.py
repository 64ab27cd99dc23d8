"""The models topic as a trustworthy registry, on the real broker, tried as an attacker with write access.

Every hostile record is refused with a clear reason while the last good
version keeps serving; rollback and pin reach every consumer and survive a
restart; a model larger than Kafka's default record limit travels in chunks,
and a broken transfer is never activated.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from consumers import ModelSubscriber
from consumers.http_service import ModelServer
from model_publisher.publisher import ModelPublisher
from streamml.cluster import Cluster
from streamml.config import Settings
from streamml.envelope import MAX_VERSION, ModelEnvelope, encode_envelope, envelope_headers, seal, sign
from streamml.kafka import make_producer
from streamml.registry import read_history
from streamml.signing import SigningKey, signer_from_settings
from streamml.topics import Topics
from streamml.transfer import ModelChunk, chunk_envelope, chunk_serde, digest, split_payload
from streamml_cli import cli
from tests.conftest import eventually
from tests.integration.conftest import small_model

pytestmark = pytest.mark.integration

X = {"a": 1.0, "b": -2.0}
ROWS = [{"a": float(i % 5), "b": float(i % 3)} for i in range(8)]


class RunsAShellCommand:
    """A payload that runs ``touch`` when unpickled by a plain ``pickle.loads``."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return os.system, (f"touch {self.sentinel}",)


def _produce(settings: Settings, topics: Topics, value: bytes, headers: list[tuple[str, bytes]]) -> None:
    producer = make_producer(settings)
    producer.produce(topics.models, key=settings.model_name.encode(), value=value, headers=headers)
    assert producer.flush(10) == 0


def _plant(settings: Settings, topics: Topics, envelope: ModelEnvelope) -> None:
    _produce(settings, topics, encode_envelope(envelope), envelope_headers())


def _evil_envelope(settings: Settings, sentinel: Path, version: int, signer: SigningKey | None) -> ModelEnvelope:
    """A well-formed envelope (right checksum and runtime) whose payload runs a shell command."""
    good = seal(small_model(3), model_name=settings.model_name, version=version, flavor="river")
    payload = pickle.dumps(RunsAShellCommand(sentinel), protocol=5)
    evil = dataclasses.replace(good, payload=payload, sha256=digest(payload), payload_size=len(payload))
    return sign(evil, signer) if signer is not None else evil


def _publish(publisher: ModelPublisher, n: int = 20) -> ModelEnvelope:
    return publisher.publish(small_model(n), metrics={}, n_learned=n, input_offsets={}, golden_inputs=ROWS)


@pytest.mark.parametrize("signed_by", ["nobody", "an untrusted key", "the trusted key"])
def test_a_code_executing_pickle_never_runs(
    settings: Settings, topics: Topics, publisher: ModelPublisher, tmp_path: Path, signed_by: str
) -> None:
    sentinel = tmp_path / "pwned"
    signer = {"nobody": None, "an untrusted key": SigningKey.generate(), "the trusted key": publisher.signer}[signed_by]
    with ModelSubscriber(settings) as subscriber:
        _publish(publisher)
        assert subscriber.wait_for_version(1, timeout=15)
        _plant(settings, topics, _evil_envelope(settings, sentinel, 2, signer))
        [refusal] = eventually(lambda: subscriber.refused, timeout=15, what="the evil v2 to be refused")
        expected = {"nobody": "unsigned", "an untrusted key": "untrusted_key", "the trusted key": "unsafe_payload"}
        assert refusal.kind == expected[signed_by], refusal.reason
        assert subscriber.version == 1 and subscriber.predict_one(X) is not None
        # A new subscriber (cold start reads the whole topic) refuses it as well.
        with ModelSubscriber(settings) as late:
            assert late.wait_for_version(1, timeout=15) and late.version == 1
    assert not sentinel.exists()
    assert _publish(publisher).version == 2  # the refused record did not take the number


def test_the_model_api_refuses_an_unsigned_pickle_too(
    settings: Settings, topics: Topics, publisher: ModelPublisher, tmp_path: Path
) -> None:
    sentinel = tmp_path / "pwned"
    subscriber = ModelSubscriber(settings)
    with subscriber, ModelServer(subscriber, port=0):
        _publish(publisher)
        assert subscriber.wait_for_version(1, timeout=15)
        _plant(settings, topics, _evil_envelope(settings, sentinel, 2, None))
        eventually(lambda: subscriber.refused, timeout=15, what="the evil v2 to be refused")
        assert subscriber.version == 1
    assert not sentinel.exists()


def test_an_unsigned_huge_version_cannot_hijack_the_sequence(
    settings: Settings, topics: Topics, publisher: ModelPublisher
) -> None:
    with ModelSubscriber(settings) as subscriber:
        _publish(publisher)
        assert subscriber.wait_for_version(1, timeout=15)
        hijack = dataclasses.replace(
            seal(small_model(3), model_name=settings.model_name, version=1, flavor="river"), version=2**62
        )
        _plant(settings, topics, hijack)
        assert _publish(publisher).version == 2
        assert subscriber.wait_for_version(2, timeout=15) and subscriber.version == 2
        assert subscriber.refused_by_reason == {"version_range": 1}  # checked before anything else
    restarted = ModelPublisher(settings)
    assert restarted.start() == 3  # numbering comes from verified envelopes only
    restarted.close()


def test_a_signed_version_at_the_edge_of_the_range_is_refused(
    settings: Settings, topics: Topics, publisher: ModelPublisher
) -> None:
    assert publisher.signer is not None
    with ModelSubscriber(settings) as subscriber:
        _publish(publisher)
        assert subscriber.wait_for_version(1, timeout=15)
        edge = seal(small_model(3), model_name=settings.model_name, version=1, flavor="river")
        _plant(settings, topics, sign(dataclasses.replace(edge, version=MAX_VERSION + 1), publisher.signer))
        [refusal] = eventually(lambda: subscriber.refused, timeout=15, what="the out-of-range version")
        assert refusal.kind == "version_range" and subscriber.version == 1


def test_a_replayed_old_version_is_refused(settings: Settings, topics: Topics, publisher: ModelPublisher) -> None:
    v1 = _publish(publisher)
    with ModelSubscriber(settings) as subscriber:
        _publish(publisher)
        assert subscriber.wait_for_version(2, timeout=15)
        _plant(settings, topics, v1)  # a byte-for-byte copy of a genuine, signed record
        [refusal] = eventually(lambda: subscriber.refused, timeout=15, what="the replayed v1")
        assert refusal.kind == "not_newer" and subscriber.version == 2


def test_a_model_that_raises_on_predict_is_never_activated(
    settings: Settings, topics: Topics, publisher: ModelPublisher
) -> None:
    assert publisher.signer is not None
    with ModelSubscriber(settings) as subscriber:
        _publish(publisher)
        assert subscriber.wait_for_version(1, timeout=15)
        # A genuine model of v2 with golden examples recorded that its payload cannot answer:
        # a payload swapped for a model with other features (it raises on the recorded rows).
        other = seal(small_model(3), model_name=settings.model_name, version=2, flavor="river", golden_inputs=ROWS)
        _plant(settings, topics, _swap_payload(other, _strict_model(), publisher.signer))
        [refusal] = eventually(lambda: subscriber.refused, timeout=15, what="the broken v2")
        assert refusal.kind == "golden_mismatch", refusal.reason
        assert subscriber.version == 1 and subscriber.predict_one(X) is not None


def _strict_model() -> Any:
    """A river model that raises on any input lacking its own feature names (as on the golden rows)."""
    from river import compose, linear_model, preprocessing

    model = compose.Pipeline(preprocessing.StandardScaler(), linear_model.LogisticRegression())
    model.learn_one({"x": 1.0}, True)
    # A str where a float belongs: predicting with it raises TypeError on every row.
    model["StandardScaler"].means["a"] = "not a number"
    return model


def test_a_golden_mismatch_is_refused(settings: Settings, topics: Topics, publisher: ModelPublisher) -> None:
    assert publisher.signer is not None
    with ModelSubscriber(settings) as subscriber:
        _publish(publisher)
        assert subscriber.wait_for_version(1, timeout=15)
        recorded = seal(small_model(40), model_name=settings.model_name, version=2, flavor="river", golden_inputs=ROWS)
        # small_model(1) loads fine but answers differently from the model the examples were recorded with.
        _plant(settings, topics, _swap_payload(recorded, small_model(1), publisher.signer))
        [refusal] = eventually(lambda: subscriber.refused, timeout=15, what="the mismatching v2")
        assert refusal.kind == "golden_mismatch" and subscriber.version == 1


def _cli(settings: Settings, *args: str) -> str:
    result = CliRunner().invoke(
        cli,
        [*args[:2], "--bootstrap-servers", settings.bootstrap_servers, "--namespace", settings.namespace, *args[2:]],
        env=_cli_env(settings),
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    return result.output


def _cli_env(settings: Settings) -> dict[str, str]:
    return {
        "STREAMML_MODEL_SIGNING_KEY_FILE": str(settings.model_signing_key_file),
        "STREAMML_MODEL_TRUSTED_KEYS": settings.model_trusted_keys,
        "STREAMML_HOME": str(settings.home),
    }


def _serving(subscribers: list[ModelSubscriber], version: int, mode: str) -> bool:
    return all(s.version == version and s.mode == mode for s in subscribers)


def test_rollback_and_pin_reach_every_consumer_and_survive_a_restart(
    settings: Settings, topics: Topics, publisher: ModelPublisher
) -> None:
    for _ in range(3):
        _publish(publisher)
    first, second = ModelSubscriber(settings).start(), ModelSubscriber(settings).start()
    try:
        both = [first, second]
        eventually(lambda: _serving(both, 3, "latest"), timeout=15, what="both on v3")
        _cli(settings, "models", "pin", settings.model_name, "1")
        eventually(lambda: _serving(both, 1, "pinned"), timeout=5, what="both pinned to v1")
        assert _publish(publisher).version == 4
        with ModelSubscriber(settings) as witness:  # the new version arrived: a fresh reader sees it
            eventually(lambda: witness.version == 1 and witness.mode == "pinned", timeout=15, what="restart, pinned")
        assert _serving(both, 1, "pinned")  # v4 is not served while pinned
        for subscriber in both:
            assert subscriber.stop(timeout=15)
        first, second = ModelSubscriber(settings).start(), ModelSubscriber(settings).start()
        both = [first, second]
        eventually(lambda: _serving(both, 1, "pinned"), timeout=15, what="pinned after a restart")
        _cli(settings, "models", "pin", settings.model_name, "--unpin")
        eventually(lambda: _serving(both, 4, "latest"), timeout=5, what="both back on v4")
        _cli(settings, "models", "rollback", settings.model_name, "--to", "2", "--reason", "v3 and v4 misbehave")
        eventually(lambda: _serving(both, 2, "rolled_back"), timeout=5, what="both rolled back to v2")
        for subscriber in both:
            assert subscriber.stop(timeout=15)
        first, second = ModelSubscriber(settings).start(), ModelSubscriber(settings).start()
        both = [first, second]
        eventually(lambda: _serving(both, 2, "rolled_back"), timeout=15, what="rolled back after a restart")
        assert _publish(publisher).version == 5
        eventually(lambda: _serving(both, 5, "latest"), timeout=5, what="a version after the rollback serves")
    finally:
        first.stop()
        second.stop()
    history = read_history(Cluster(settings), model_name=settings.model_name)
    assert [r.version for r in history.versions] == [1, 2, 3, 4, 5]  # every version kept
    assert [(d.record.action, d.problem) for d in history.directives] == [
        ("pin", None), ("unpin", None), ("rollback", None)
    ]
    assert history.served(settings.model_name) == 5
    shown = _cli(settings, "models", "show", settings.model_name, "3")
    assert '"status": "ok"' in shown and "passed (8 examples reproduced)" in shown and '"key_id"' in shown


def test_an_unsigned_or_replayed_directive_is_refused(
    settings: Settings, topics: Topics, publisher: ModelPublisher
) -> None:
    from streamml.model_control import ControlRecord, control_serde

    for _ in range(2):
        _publish(publisher)
    with ModelSubscriber(settings) as subscriber:
        assert subscriber.wait_for_version(2, timeout=15)
        unsigned = ControlRecord(settings.model_name, "pin", 1, sequence=1)
        _produce(settings, topics, unsigned.encode(), control_serde().headers)
        [refusal] = eventually(lambda: subscriber.refused, timeout=15, what="the unsigned pin")
        assert refusal.kind == "directive" and subscriber.version == 2
        _cli(settings, "models", "rollback", settings.model_name, "--to", "1")
        eventually(lambda: subscriber.version == 1, timeout=5, what="the signed rollback")
        [pin] = [d for d in read_history(Cluster(settings)).directives if d.problem is None]
        _produce(settings, topics, pin.record.encode(), control_serde().headers)  # replayed as is
        eventually(lambda: len(subscriber.refused) == 2, timeout=15, what="the replayed rollback refused")
        assert "replayed" in subscriber.refused[-1].reason


def _big_model(features: int = 100_000) -> Any:
    from benchmarks.latency import large_model

    return large_model(features)


def _swap_payload(envelope: ModelEnvelope, model: Any, signer: SigningKey) -> ModelEnvelope:
    """``envelope`` carrying another model's payload, checksum fixed and re-signed (a key holder's forgery)."""
    payload = pickle.dumps(model, protocol=5)
    swapped = dataclasses.replace(envelope, payload=payload, sha256=digest(payload), payload_size=len(payload))
    return sign(swapped, signer)


GOLDEN_BIG = [{"f1": 1.0, "f2": 5.0}, {"f3": 0.5}]


def test_a_5_mb_model_travels_in_chunks_under_a_1_mb_limit(
    settings: Settings, topics: Topics, publisher: ModelPublisher
) -> None:
    assert settings.max_model_bytes == 1_000_000  # Apache Kafka's default, enforced on the client
    model = _big_model()
    with ModelSubscriber(settings) as subscriber:
        envelope = publisher.publish(model, metrics={}, n_learned=2, input_offsets={}, golden_inputs=GOLDEN_BIG)
        assert envelope.payload_size >= 5_000_000 and len(envelope.chunks) >= 5
        assert subscriber.wait_for_version(1, timeout=30)
        assert subscriber.predict_proba_one(GOLDEN_BIG[0]) == pytest.approx(model.predict_proba_one(GOLDEN_BIG[0]))
    [record] = read_history(Cluster(settings)).versions
    assert record.status == "ok" and record.start_offset == 0 and record.offset == len(envelope.chunks)


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        ("truncated", "chunks arrived (partial transfer)"),
        ("reordered", "chunk 2 arrived where chunk 1 was expected"),
        ("mixed", "chunk 1 claims"),
        ("corrupted", "chunk 0 does not match the manifest"),
    ],
)
def test_a_broken_chunked_transfer_is_never_activated(
    settings: Settings, topics: Topics, publisher: ModelPublisher, damage: str, reason: str
) -> None:
    assert publisher.signer is not None
    with ModelSubscriber(settings) as subscriber:
        _publish(publisher)
        assert subscriber.wait_for_version(1, timeout=15)
        values = _chunked_records(settings, publisher.signer, version=2, damage=damage)
        producer = make_producer(settings, **{"linger.ms": 0})
        for value, headers in values:
            producer.produce(topics.models, key=settings.model_name.encode(), value=value, headers=headers)
        assert producer.flush(30) == 0
        refusal = eventually(
            lambda: next((r for r in subscriber.refused if r.version == 2), None), timeout=30, what="v2 refused"
        )
        assert refusal.kind == "transfer" and reason in refusal.reason, refusal.reason
        assert subscriber.version == 1
        assert _publish(publisher).version == 2  # a refused transfer takes no number
        assert subscriber.wait_for_version(2, timeout=15)


def _chunked_records(
    settings: Settings, signer: SigningKey, *, version: int, damage: str
) -> list[tuple[bytes, list[tuple[str, bytes]]]]:
    """Chunk records and a signed manifest of a 5 MB model, damaged as asked."""
    envelope = seal(
        _big_model(), model_name=settings.model_name, version=version, flavor="river", golden_inputs=GOLDEN_BIG
    )
    size = settings.max_model_bytes - 4096
    chunks, manifest = chunk_envelope(envelope, size)
    transfer, count = manifest.transfer_id, len(chunks)
    if damage == "truncated":
        chunks = chunks[:-1]
    elif damage == "reordered":
        chunks[1], chunks[2] = chunks[2], chunks[1]
    elif damage == "corrupted":
        data = bytearray(chunks[0].data)
        data[10] ^= 0xFF
        chunks[0] = dataclasses.replace(chunks[0], data=bytes(data))
    elif damage == "mixed":
        # Chunk 1 comes from another version's transfer under the same transfer id.
        other = seal(_big_model(90_000), model_name=settings.model_name, version=version + 1, flavor="river")
        stranger = split_payload(other.payload, size)[1]
        chunks[1] = ModelChunk(settings.model_name, version + 1, transfer, 1, count, stranger)
    records = [(c.encode(), chunk_serde().headers) for c in chunks]
    records.append((encode_envelope(sign(manifest, signer)), envelope_headers()))
    return records


def test_a_scikit_learn_model_is_served(settings: Settings, topics: Topics) -> None:
    import numpy as np
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(size=200), "b": rng.normal(size=200)})
    estimator = LogisticRegression().fit(frame, frame["a"] + frame["b"] > 0)
    publisher = ModelPublisher(settings, flavor="sklearn")
    publisher.start()
    try:
        envelope = publisher.publish(estimator, metrics={}, n_learned=200, input_offsets={}, golden_inputs=ROWS)
    finally:
        publisher.close()
    assert envelope.format == "skops" and envelope.feature_names == ("a", "b")
    with ModelSubscriber(settings) as subscriber:
        assert subscriber.wait_for_version(1, timeout=15)
        expected = bool(estimator.predict(pd.DataFrame([X]))[0])
        assert subscriber.predict_one(X) == expected
        assert subscriber.predict_proba_one(X)[True] == pytest.approx(estimator.predict_proba(pd.DataFrame([X]))[0][1])


def test_the_publisher_refuses_to_publish_unsigned_by_default(settings: Settings, topics: Topics) -> None:
    from streamml.errors import ConfigError

    keyless = dataclasses.replace(settings, model_signing_key_file=None)
    with pytest.raises(ConfigError, match="streamml keys generate"):
        ModelPublisher(keyless)
    assert signer_from_settings(keyless) is None
