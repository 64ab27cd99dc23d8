"""Chunked model transfers: split_payload, the Reassembler, and ModelsTopicFolder on encoded records."""

from __future__ import annotations

import dataclasses
import hashlib
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from river import tree

from model_publisher.publisher import ModelPublisher
from streamml.config import load_settings
from streamml.envelope import ModelEnvelope, encode_envelope, envelope_headers, seal, sign
from streamml.errors import DecodeError, EnvelopeError
from streamml.models_topic import ModelsTopicFolder, RecordRefused, VersionEvent
from streamml.serde import Headers
from streamml.signing import Keyring, SigningKey, generate_key_pair
from streamml.transfer import (
    ModelChunk,
    Reassembler,
    chunk_envelope,
    chunk_serde,
    digest,
    new_transfer_id,
    split_payload,
)
from streamml.trust import TrustPolicy, load_model

SIGNER = SigningKey.generate()
POLICY = TrustPolicy(keyring=Keyring().with_key(SIGNER.public_key))
KEY = b"m"

Record = tuple[bytes | None, bytes | None, Headers]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- split_payload ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("size", "chunk_size", "count"), [(10, 3, 4), (9, 3, 3), (1, 5, 1), (5, 5, 1), (0, 4, 1)])
def test_split_payload_cuts_into_bounded_pieces_that_join_back(size: int, chunk_size: int, count: int) -> None:
    payload = bytes(range(size))
    pieces = split_payload(payload, chunk_size)
    assert len(pieces) == count
    assert b"".join(pieces) == payload
    assert all(len(p) <= chunk_size for p in pieces)
    assert all(len(p) == chunk_size for p in pieces[:-1])


@pytest.mark.parametrize("chunk_size", [0, -1])
def test_split_payload_refuses_a_non_positive_chunk_size(chunk_size: int) -> None:
    with pytest.raises(ValueError, match="chunk_size must be positive"):
        split_payload(b"abc", chunk_size)


def test_a_chunk_round_trips_through_avro_and_other_records_are_not_chunks() -> None:
    chunk = ModelChunk("m", 3, "t", 1, 4, b"\x00\xffdata")
    assert ModelChunk.decode(chunk.encode(), chunk_serde().headers) == chunk
    with pytest.raises(DecodeError):
        ModelChunk.decode(chunk.encode(), envelope_headers())  # an envelope's schema, not a chunk's
    assert "data=" not in repr(chunk) and "\\xff" not in repr(chunk)  # the payload bytes stay out of logs


# -- Reassembler -----------------------------------------------------------------------------------


@dataclasses.dataclass
class Transfer:
    """One payload cut into chunks, and what its manifest would say."""

    payload: bytes
    chunks: list[ModelChunk]
    model_name: str = "m"
    version: int = 1

    @property
    def transfer_id(self) -> str:
        return self.chunks[0].transfer_id

    @property
    def digests(self) -> list[tuple[str, int]]:
        return [(sha(c.data), len(c.data)) for c in self.chunks]

    def complete(self, reassembler: Reassembler, **changes: Any) -> bytes:
        manifest: dict[str, Any] = {
            "transfer_id": self.transfer_id,
            "model_name": self.model_name,
            "version": self.version,
            "chunks": self.digests,
            "sha256": sha(self.payload),
        }
        return reassembler.complete(**{**manifest, **changes})


def make_transfer(
    size: int = 1000, chunk_size: int = 300, *, model_name: str = "m", version: int = 1, seed: int = 0
) -> Transfer:
    payload = random.Random(seed).randbytes(size)
    pieces = split_payload(payload, chunk_size)
    transfer_id = new_transfer_id()
    chunks = [ModelChunk(model_name, version, transfer_id, i, len(pieces), p) for i, p in enumerate(pieces)]
    return Transfer(payload, chunks, model_name, version)


def feed(reassembler: Reassembler, chunks: list[ModelChunk]) -> None:
    for chunk in chunks:
        reassembler.add(chunk)
        assert reassembler.held_bytes <= reassembler.max_bytes


def test_a_complete_in_order_transfer_reassembles_the_payload() -> None:
    t = make_transfer(1000, 300)
    assert len(t.chunks) == 4
    r = Reassembler(max_bytes=10_000)
    feed(r, t.chunks)
    assert r.held_bytes == 1000 and list(r) == [t.transfer_id]
    assert t.complete(r) == t.payload
    assert r.held_bytes == 0 and list(r) == []  # forgotten once complete
    with pytest.raises(EnvelopeError, match="none of the 4 chunks"):
        t.complete(r)  # a replayed manifest finds nothing


def test_interleaved_transfers_of_different_models_each_complete() -> None:
    a, b = make_transfer(900, 200, model_name="a", seed=1), make_transfer(700, 200, model_name="b", seed=2)
    r = Reassembler(max_bytes=10_000)
    for pair in zip(a.chunks, b.chunks, strict=False):
        feed(r, list(pair))
    feed(r, a.chunks[len(b.chunks) :])
    assert b.complete(r) == b.payload and a.complete(r) == a.payload


def broken_cases() -> dict[str, tuple[Callable[[Transfer], list[ModelChunk]], dict[str, Any], str]]:
    """name -> (chunks to feed, manifest changes, the reason's text)."""

    def other_version(t: Transfer) -> list[ModelChunk]:
        return [*t.chunks[:2], dataclasses.replace(t.chunks[2], version=2), t.chunks[3]]

    def other_model(t: Transfer) -> list[ModelChunk]:
        return [*t.chunks[:2], dataclasses.replace(t.chunks[2], model_name="x"), t.chunks[3]]

    def other_payload(t: Transfer) -> list[ModelChunk]:
        foreign = make_transfer(1000, 300, seed=99)
        return [t.chunks[0], dataclasses.replace(foreign.chunks[1], transfer_id=t.transfer_id), *t.chunks[2:]]

    def corrupted(t: Transfer) -> list[ModelChunk]:
        data = bytearray(t.chunks[1].data)
        data[7] ^= 0x01
        return [t.chunks[0], dataclasses.replace(t.chunks[1], data=bytes(data)), *t.chunks[2:]]

    def truncated(t: Transfer) -> list[ModelChunk]:
        return [*t.chunks[:3], dataclasses.replace(t.chunks[3], data=t.chunks[3].data[:-1])]

    def count_lies(t: Transfer) -> list[ModelChunk]:
        return [*t.chunks[:3], dataclasses.replace(t.chunks[3], count=5)]

    return {
        "last-chunk-missing": (lambda t: t.chunks[:3], {}, r"3 of 4 chunks arrived \(partial transfer\)"),
        "middle-chunk-missing": (lambda t: [t.chunks[0], *t.chunks[2:]], {}, "chunk 2 arrived where chunk 1"),
        "reordered": (lambda t: [t.chunks[1], t.chunks[0], *t.chunks[2:]], {}, "chunk 1 arrived where chunk 0"),
        "swapped-later": (lambda t: [t.chunks[0], t.chunks[2], t.chunks[1], t.chunks[3]], {}, "chunk 2 arrived"),
        "duplicated": (lambda t: [t.chunks[0], t.chunks[0], *t.chunks[1:]], {}, "chunk 0 arrived where chunk 1"),
        "corrupted": (corrupted, {}, "chunk 1 does not match the manifest"),
        "truncated": (truncated, {}, "chunk 3 does not match the manifest"),
        "chunk-of-another-payload": (other_payload, {}, "chunk 1 does not match the manifest"),
        "chunk-of-another-version": (other_version, {}, "chunk 2 claims m v2"),
        "chunk-of-another-model": (other_model, {}, "chunk 2 claims x v1"),
        "chunk-count-lies": (count_lies, {}, r"chunk 3 claims m v1 \(5 chunks\)"),
        "manifest-of-another-version": (lambda t: t.chunks, {"version": 2}, "holds chunks of m v1"),
        "manifest-lists-fewer-chunks": (lambda t: t.chunks, {"chunks": "first-three"}, "4 of 3 chunks arrived"),
        "whole-payload-digest-differs": (lambda t: t.chunks, {"sha256": "0" * 64}, "reassembled payload does not"),
        "manifest-before-its-chunks": (lambda t: [], {}, "none of the 4 chunks of transfer"),
    }


@pytest.mark.parametrize("case", list(broken_cases()))
def test_a_transfer_that_is_not_whole_and_in_order_is_refused_with_the_reason(case: str) -> None:
    chunks_of, changes, reason = broken_cases()[case]
    t = make_transfer(1000, 300)
    r = Reassembler(max_bytes=10_000)
    feed(r, chunks_of(t))
    if changes.get("chunks") == "first-three":
        changes = {**changes, "chunks": t.digests[:3]}
    with pytest.raises(EnvelopeError, match=reason):
        t.complete(r, **changes)
    assert t.transfer_id not in list(r) and r.held_bytes == 0


def test_a_manifest_before_its_chunks_fails_and_the_late_chunks_do_not_complete_it() -> None:
    t = make_transfer(1000, 300)
    r = Reassembler(max_bytes=10_000)
    with pytest.raises(EnvelopeError, match="none of the 4 chunks"):
        t.complete(r)
    feed(r, t.chunks)  # arrive late: held (bounded) but never activated by the old manifest
    r.discard(t.transfer_id)
    assert r.held_bytes == 0 and list(r) == []


def test_a_transfer_over_max_bytes_is_refused_and_releases_its_memory() -> None:
    t = make_transfer(1000, 300)
    r = Reassembler(max_bytes=800)
    feed(r, t.chunks[:2])
    assert r.held_bytes == 600
    feed(r, t.chunks[2:])  # 900 > 800: the transfer breaks
    assert r.held_bytes == 0
    with pytest.raises(EnvelopeError, match="exceeds the 800-byte model size limit"):
        t.complete(r)


def test_the_oldest_incomplete_transfer_is_dropped_to_stay_within_max_bytes() -> None:
    a, b, c = (make_transfer(800, 400, version=v, seed=v) for v in (1, 2, 3))
    r = Reassembler(max_bytes=1000)
    feed(r, [a.chunks[0], b.chunks[0]])
    assert list(r) == [a.transfer_id, b.transfer_id] and r.held_bytes == 800
    feed(r, [c.chunks[0]])  # 1200 > 1000: the oldest (a) goes, the newer two stay
    assert list(r) == [b.transfer_id, c.transfer_id] and r.held_bytes == 800
    feed(r, [b.chunks[1]])  # the transfer being fed is kept; the oldest other one (c) goes
    assert list(r) == [b.transfer_id] and r.held_bytes == 800
    assert b.complete(r) == b.payload
    with pytest.raises(EnvelopeError, match="none of the 2 chunks"):
        a.complete(r)
    feed(r, a.chunks[1:])  # the rest of a dropped transfer cannot complete it
    with pytest.raises(EnvelopeError, match="chunk 1 arrived where chunk 0 was expected"):
        a.complete(r)


def test_held_bytes_never_exceed_max_bytes_under_many_interleaved_transfers() -> None:
    rng = random.Random(7)
    transfers = [make_transfer(rng.randrange(100, 3000), rng.randrange(50, 400), seed=i) for i in range(40)]
    queues = [list(t.chunks) for t in transfers]
    r = Reassembler(max_bytes=4000)
    peak = 0
    while any(queues):
        queue = rng.choice([q for q in queues if q])
        r.add(queue.pop(0))
        assert 0 <= r.held_bytes <= r.max_bytes
        peak = max(peak, r.held_bytes)
    assert peak > 2000  # the bound was actually exercised
    assert len(list(r)) < len(transfers)  # old incomplete transfers were dropped
    completed = 0
    for t in transfers:
        try:
            assert t.complete(r) == t.payload  # whatever completes is exactly the payload
            completed += 1
        except EnvelopeError:
            pass
    assert completed >= 1 and r.held_bytes == 0


def test_discard_forgets_a_transfer_and_its_bytes() -> None:
    t = make_transfer(1000, 300)
    r = Reassembler(max_bytes=10_000)
    feed(r, t.chunks[:2])
    r.discard(t.transfer_id)
    r.discard("never-seen")
    assert r.held_bytes == 0 and list(r) == []


# -- ModelsTopicFolder on encoded records ----------------------------------------------------------


def big_tree() -> Any:
    model = tree.HoeffdingTreeClassifier(grace_period=20)
    rng = random.Random(0)
    for _ in range(3000):
        x = {f"f{j}": rng.random() for j in range(5)}
        model.learn_one(x, x["f0"] + x["f1"] > 1)  # type: ignore[no-untyped-call]
    return model


GOLDEN = [{f"f{j}": (i + j) / 10 for j in range(5)} for i in range(8)]


@pytest.fixture(scope="module")
def sealed() -> ModelEnvelope:
    envelope = seal(big_tree(), model_name="m", version=3, flavor="river", signer=SIGNER, golden_inputs=GOLDEN)
    assert envelope.payload_size > 20_000
    return envelope


def chunk_records(
    envelope: ModelEnvelope, chunk_size: int = 2048, signer: SigningKey | None = SIGNER
) -> tuple[list[Record], ModelEnvelope]:
    """The records ``ModelPublisher._send_chunks`` produces: chunks in order, then the signed manifest."""
    chunks, manifest = chunk_envelope(envelope, chunk_size)
    records: list[Record] = [(KEY, chunk.encode(), chunk_serde().headers) for chunk in chunks]
    if signer is not None:
        manifest = sign(manifest, signer)
    records.append((KEY, encode_envelope(manifest), envelope_headers()))
    return records, manifest


def fold(records: list[Record], policy: TrustPolicy = POLICY, **kwargs: Any) -> list[Any]:
    folder = ModelsTopicFolder(policy, **kwargs)
    events = [folder.feed(offset, key, value, headers) for offset, (key, value, headers) in enumerate(records)]
    return [e for e in events if e is not None]


def version_event(records: list[Record], **kwargs: Any) -> VersionEvent:
    events = fold(records, **kwargs)
    assert len(events) == 1 and isinstance(events[0], VersionEvent), events
    return events[0]


def test_a_chunked_model_folds_into_one_acceptable_version_that_loads(sealed: ModelEnvelope) -> None:
    records, manifest = chunk_records(sealed)
    assert len(records) > 10 and manifest.payload == b"" and manifest.chunked
    event = version_event(records, model_name="m")
    assert event.verdict.acceptable and event.verdict.reason is None, event.verdict.reason
    assert (event.start_offset, event.offset) == (0, len(records) - 1)
    assert event.verdict.envelope.payload == sealed.payload
    model = load_model(event.verdict)
    assert model.predict_one(GOLDEN[0]) == sealed.golden[0].prediction
    # the chunks were consumed: nothing is left held
    folder = ModelsTopicFolder(POLICY)
    for offset, record in enumerate(records):
        folder.feed(offset, *record)
    assert folder.reassembler.held_bytes == 0 and list(folder.reassembler) == []


def mangle(records: list[Record], index: int, **changes: Any) -> list[Record]:
    key, value, headers = records[index]
    chunk = dataclasses.replace(ModelChunk.decode(value, headers), **changes)
    return [*records[:index], (key, chunk.encode(), headers), *records[index + 1 :]]


def bad_topics(records: list[Record]) -> dict[str, tuple[list[Record], str]]:
    last = len(records) - 1  # the manifest
    first = ModelChunk.decode(records[1][1], records[1][2])
    flipped = bytearray(first.data)
    flipped[0] ^= 0xFF
    return {
        "truncated-chunk": (mangle(records, 1, data=first.data[:-10]), "chunk 1 does not match the manifest"),
        "corrupted-chunk": (mangle(records, 1, data=bytes(flipped)), "chunk 1 does not match the manifest"),
        "reordered": ([records[1], records[0], *records[2:]], "chunk 1 arrived where chunk 0 was expected"),
        "missing-middle": ([records[0], *records[2:]], "chunk 2 arrived where chunk 1 was expected"),
        "missing-last": ([*records[: last - 1], records[last]], "partial transfer"),
        "other-version-mixed-in": (mangle(records, 2, version=4), "claims m v4"),
        "manifest-first": ([records[last], *records[:last]], "none of the"),
    }


@pytest.mark.parametrize(
    "case",
    ["truncated-chunk", "corrupted-chunk", "reordered", "missing-middle", "missing-last", "other-version-mixed-in",
     "manifest-first"],
)
def test_a_broken_chunked_transfer_on_the_topic_is_refused_with_a_reason(sealed: ModelEnvelope, case: str) -> None:
    records, _ = chunk_records(sealed)
    bad, reason = bad_topics(records)[case]
    event = version_event(bad)
    assert not event.verdict.acceptable and not event.verdict.authentic
    assert event.verdict.reason is not None and reason in event.verdict.reason
    with pytest.raises(EnvelopeError, match="m v3"):
        load_model(event.verdict)


def test_a_manifest_that_is_not_signed_by_a_trusted_key_is_not_reassembled(sealed: ModelEnvelope) -> None:
    records, _ = chunk_records(sealed, signer=SigningKey.generate())
    folder = ModelsTopicFolder(POLICY)
    events = [folder.feed(i, *r) for i, r in enumerate(records)]
    event = events[-1]
    assert isinstance(event, VersionEvent) and not event.verdict.authentic
    assert "does not trust" in (event.verdict.reason or "")
    assert folder.reassembler.held_bytes == 0 and list(folder.reassembler) == []  # discarded, not kept


def test_a_manifest_with_a_tampered_chunk_list_fails_its_signature(sealed: ModelEnvelope) -> None:
    records, manifest = chunk_records(sealed)
    forged_chunk = b"x" * 2048
    forged = dataclasses.replace(manifest, chunks=((digest(forged_chunk), 2048), *manifest.chunks[1:]))
    bad = [*mangle(records, 0, data=forged_chunk)[:-1], (KEY, encode_envelope(forged), envelope_headers())]
    event = version_event(bad)
    assert not event.verdict.authentic and "does not match" in (event.verdict.reason or "")


def test_the_folder_bounds_chunk_memory_by_its_max_bytes(sealed: ModelEnvelope) -> None:
    records, _ = chunk_records(sealed)
    event = version_event(records, max_bytes=10_000)
    assert not event.verdict.acceptable
    assert "exceeds the 10000-byte model size limit" in (event.verdict.reason or "")


def test_another_models_chunks_and_manifest_are_ignored(sealed: ModelEnvelope) -> None:
    records, _ = chunk_records(sealed)
    folder = ModelsTopicFolder(POLICY, model_name="other")
    assert [folder.feed(i, *r) for i, r in enumerate(records)] == [None] * len(records)
    assert folder.reassembler.held_bytes == 0


def test_a_garbled_chunk_record_is_refused_not_a_crash(sealed: ModelEnvelope) -> None:
    records, _ = chunk_records(sealed)
    key, value, headers = records[0]
    assert value is not None
    events = fold([(key, value[:3], headers)])
    assert len(events) == 1 and isinstance(events[0], RecordRefused) and events[0].model_name == "m"


class FakeProducer:
    """Records what the publisher produces; every record is acknowledged."""

    def __init__(self) -> None:
        self.records: list[Record] = []

    def produce(self, topic: str, value: bytes | None = None, key: bytes | None = None, partition: int = -1,
                on_delivery: Any = None, headers: Headers = None) -> None:  # confluent-kafka's signature
        self.records.append((key, value, headers))

    def poll(self, timeout: float = 0) -> int:
        return 0

    def flush(self, timeout: float = 0) -> int:
        return 0


def test_what_the_real_publisher_sends_in_chunks_folds_into_a_model_that_loads(tmp_path: Path) -> None:
    settings = load_settings(env={}, home=tmp_path / "home", max_model_bytes=6000, model_name="m")
    signer = generate_key_pair(settings.keys_dir)
    publisher = ModelPublisher(settings)
    producer = FakeProducer()
    publisher._producer = producer  # type: ignore[assignment]  # no broker: start() would read the topic
    publisher._next = 5
    model = big_tree()
    manifest = publisher.publish(model, metrics={"accuracy": 0.9}, n_learned=3000, input_offsets={"t[0]": 2999},
                                 golden_inputs=GOLDEN)
    assert manifest.chunked and manifest.version == 5 and len(producer.records) == len(manifest.chunks) + 1 > 5
    assert all(value is not None and len(value) <= settings.max_model_bytes for _, value, _ in producer.records)
    policy = TrustPolicy(keyring=Keyring().with_key(signer.public_key))
    event = version_event(producer.records, policy=policy, model_name="m")
    assert event.verdict.acceptable, event.verdict.reason
    loaded = load_model(event.verdict)
    assert [loaded.predict_one(x) for x in GOLDEN] == [model.predict_one(x) for x in GOLDEN]
