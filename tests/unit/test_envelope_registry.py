"""How the registry classifies models-topic records, without a broker.

Raw records go through the real :func:`streamml.registry.read_history` (and so
:class:`~streamml.models_topic.ModelsTopicFolder`); only the Kafka read is replaced.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from streamml import registry
from streamml.config import load_settings
from streamml.envelope import (
    ModelEnvelope,
    decode_envelope,
    encode_envelope,
    envelope_headers,
    seal,
    sign,
    signed_bytes,
)
from streamml.model_control import ControlRecord, control_serde
from streamml.models_topic import ModelsTopicFolder, RecordRefused, VersionEvent
from streamml.registry import ModelHistory, VersionRecord, newest_authentic, next_version, read_history
from streamml.serde import Headers
from streamml.signing import Keyring, SigningKey
from streamml.transfer import ModelChunk, chunk_serde, digest, split_payload
from streamml.trust import TrustPolicy

KEY = SigningKey.generate()
FORGER = SigningKey.generate()
POLICY = TrustPolicy(keyring=Keyring().with_key(KEY.public_key))
DEV = dataclasses.replace(POLICY, development_mode=True)

Raw = tuple[bytes | None, bytes | None, Headers]


class Constant:
    def predict_one(self, x: dict[str, float]) -> int:
        return 1


class Message:
    """The part of a consumed confluent_kafka message the registry reads."""

    def __init__(self, offset: int, raw: Raw) -> None:
        self._offset, (self._key, self._value, self._headers) = offset, raw

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def headers(self) -> Headers:
        return self._headers


def history(raws: list[Raw], policy: TrustPolicy = POLICY, model_name: str | None = None) -> ModelHistory:
    """``read_history`` over ``raws`` as the models topic, offsets 0, 1, 2, ..."""
    cluster: Any = SimpleNamespace(topics=SimpleNamespace(models="t.models"), settings=load_settings(env={}))

    def read_to_end(cluster: Any, topic: str, **kwargs: Any) -> Iterator[Message]:
        assert topic == "t.models"
        return iter([Message(offset, raw) for offset, raw in enumerate(raws)])

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(registry, "read_to_end", read_to_end)
        return read_history(cluster, model_name=model_name, policy=policy)


def versions(raws: list[Raw], policy: TrustPolicy = POLICY) -> list[VersionRecord]:
    return history(raws, policy).versions


def sealed(version: int = 1, *, name: str = "m", key: SigningKey | None = KEY, **kwargs: Any) -> ModelEnvelope:
    return seal(Constant(), model_name=name, version=version, flavor="river", signer=key, **kwargs)


def raw(envelope: ModelEnvelope) -> Raw:
    return envelope.model_name.encode(), encode_envelope(envelope), envelope_headers()


def record(
    version: int, *, name: str = "m", key: SigningKey | None = KEY, resign: bool = False, **changes: Any
) -> Raw:
    """A sealed envelope with ``changes``; ``resign`` signs the changed envelope again."""
    envelope = sealed(version, name=name, key=key)
    envelope = dataclasses.replace(envelope, **changes) if changes else envelope
    if resign and key is not None:
        envelope = sign(envelope, key)
    return raw(envelope)


def one(raw_record: Raw, policy: TrustPolicy = POLICY) -> VersionRecord:
    (found,) = versions([raw_record], policy)
    return found


# -- classification --------------------------------------------------------------------------------


def test_a_good_envelope_is_ok_and_authentic() -> None:
    r = one(record(1))
    assert r.status == "ok" and r.authentic and r.version == 1 and r.model_name == "m" and r.reason is None
    assert r.summary is not None and r.summary["signed"] and r.summary["key_id"] == KEY.key_id
    view = r.as_dict()
    assert view["status"] == "ok" and "payload" not in view["envelope"]
    assert r.verdict is not None and r.verdict.acceptable and r.start_offset == 0


def test_an_undecodable_record_is_refused_with_the_reason() -> None:
    r = one((b"m", b"\x00garbage", [("streamml.schema", b"0000000000000000")]))
    assert r.status == "refused" and not r.authentic and r.version is None and r.model_name == "m"
    assert "not a model envelope (unknown_schema)" in (r.reason or "")


def test_a_record_without_headers_is_refused_not_a_crash() -> None:
    r = one((None, b"\x00", None))
    assert r.status == "refused" and r.model_name is None and "missing_schema_header" in (r.reason or "")


def test_an_unsigned_envelope_is_refused_and_not_authentic_outside_development_mode() -> None:
    r = one(record(1, key=None))
    assert r.status == "refused" and not r.authentic and "unsigned" in (r.reason or "")
    assert one(record(1, key=None), DEV).status == "ok"


def test_a_runtime_mismatch_is_refused_but_still_authentic() -> None:
    r = one(record(2, runtime={"python": "2.7.18"}, resign=True))
    assert r.status == "refused" and r.authentic and "python 2.7.18" in (r.reason or "")
    assert "not portable" in (r.reason or "")
    lenient = one(record(2, runtime={"python": "2.7.18"}, resign=True),
                  dataclasses.replace(POLICY, allow_runtime_mismatch=True))
    assert lenient.status == "ok" and lenient.authentic


def test_a_library_minor_version_mismatch_is_refused_but_a_patch_difference_is_not() -> None:
    runtime = sealed().runtime
    major, minor, *_ = runtime["river"].split(".")
    other_minor = one(record(1, runtime={**runtime, "river": f"{major}.{int(minor) + 1}.0"}, resign=True))
    assert other_minor.status == "refused" and other_minor.authentic and "river" in (other_minor.reason or "")
    patch_only = one(record(1, runtime={**runtime, "river": f"{major}.{minor}.999"}, resign=True))
    assert patch_only.status == "ok"


def test_next_version_counts_only_authentic_records_of_the_model() -> None:
    tampered = dataclasses.replace(sealed(900), version=901)  # signed as 900, says 901
    records = versions(
        [
            record(1),
            record(2, runtime={"python": "2.7.18"}, resign=True),  # authentic, not loadable here: counts
            record(1000, key=FORGER),  # signed by a key nobody trusts: must not move the sequence
            record(500, key=None),  # unsigned outside development mode: neither
            raw(tampered),  # signature does not match
            raw(sign(dataclasses.replace(sealed(3), version=2**62), KEY)),  # signed but out of range
            record(50, name="other"),
        ]
    )
    assert [r.authentic for r in records] == [True, True, False, False, False, False, True]
    assert next_version(records, "m") == 3
    assert next_version(records, "other") == 51
    assert next_version(records, "nobody") == 1
    assert next_version([], "m") == 1


def test_in_development_mode_unsigned_versions_count_but_forged_ones_still_do_not() -> None:
    records = versions([record(1), record(7, key=None), record(1000, key=FORGER)], DEV)
    assert next_version(records, "m") == 8


def test_newest_authentic_orders_acceptable_versions_newest_first() -> None:
    records = versions(
        [
            record(1),
            record(3),
            record(2),
            record(4, key=None),  # unsigned: refused
            record(6, runtime={"python": "2.7.18"}, resign=True),  # authentic but not acceptable
            record(5, key=FORGER),  # forged
            record(2),  # republished: the later offset comes first among equals
            record(9, name="other"),
        ]
    )
    found = newest_authentic(records, "m")
    assert [(r.version, r.offset) for r in found] == [(3, 1), (2, 6), (2, 2), (1, 0)]
    assert all(r.verdict is not None and r.verdict.acceptable for r in found)
    assert newest_authentic(records, "nobody") == []


def test_the_folder_classifies_raw_records_itself() -> None:
    folder = ModelsTopicFolder(POLICY, model_name="m")
    events = [folder.feed(i, *r) for i, r in enumerate([record(1), record(2, name="other"), (b"m", b"x", None)])]
    assert isinstance(events[0], VersionEvent) and events[0].verdict.acceptable
    assert events[1] is None  # another model's envelope
    assert isinstance(events[2], RecordRefused) and events[2].model_name == "m"
    # unkeyed garbage is everybody's business; another model's garbage is not ours
    assert isinstance(folder.feed(3, None, b"x", None), RecordRefused)
    assert folder.feed(4, b"other", b"x", None) is None


def test_a_chunked_version_starts_at_its_first_chunk() -> None:
    envelope = sealed(4)
    pieces = split_payload(envelope.payload, 16)
    assert len(pieces) > 2
    raws: list[Raw] = [record(3)]
    for index, piece in enumerate(pieces):
        chunk = ModelChunk("m", 4, "transfer-1", index, len(pieces), piece)
        raws.append((b"m", chunk.encode(), chunk_serde().headers))
    manifest = dataclasses.replace(
        envelope, payload=b"", chunks=tuple((digest(p), len(p)) for p in pieces), transfer_id="transfer-1",
        key_id=None, signature=None,
    )
    raws.append(raw(sign(manifest, KEY)))
    records = versions(raws)
    assert [(r.version, r.offset, r.start_offset, r.status) for r in records] == [
        (3, 0, 0, "ok"),
        (4, len(raws) - 1, 1, "ok"),
    ]
    assert records[1].summary is not None and records[1].summary["chunks"] == len(pieces)
    assert next_version(records, "m") == 5


def test_read_history_obeys_only_verified_directives() -> None:
    headers = control_serde().headers
    raws = [
        record(1),
        record(2),
        record(3),
        (b"m", ControlRecord("m", "rollback", 2, 1).signed_by(KEY).encode(), headers),
        (b"m", ControlRecord("m", "pin", 3, 2).signed_by(FORGER).encode(), headers),  # not trusted
        (b"m", ControlRecord("m", "pin", 1, 1).signed_by(KEY).encode(), headers),  # replayed sequence
    ]
    found = history(raws)
    assert found.served("m") == 2
    assert [d.problem is None for d in found.directives] == [True, False, False]
    assert "does not trust" in (found.directives[1].problem or "")
    assert "replayed" in (found.directives[2].problem or "")
    assert found.states["m"].withdrawn == {3}
    assert history(raws[:3]).served("m") == 3


# -- malformed digests, signed fields, required runtime --------------------------------------------


@pytest.mark.parametrize(
    ("changes", "policy"),
    [
        ({"sha256": "é" * 64}, POLICY),
        ({"sha256": "é" * 64}, DEV),
        ({"sha256": "\u0663" * 64}, DEV),  # Arabic-Indic digit: str.isdigit() but not hex
        ({"sha256": "ﬀ" * 64}, POLICY),  # a ligature that NFKC-normalizes to "ff"
        ("upper-sha256", POLICY),
        ("short-sha256", POLICY),
    ],
    ids=["non-ascii-sha256", "non-ascii-sha256-dev", "unicode-digit-sha256", "ligature-sha256", "uppercase-sha256",
         "short-sha256"],
)
def test_a_malformed_digest_is_refused_not_a_crash(changes: Any, policy: TrustPolicy) -> None:
    envelope = sealed()
    if changes == "upper-sha256":
        changes = {"sha256": envelope.sha256.upper()}
    elif changes == "short-sha256":
        changes = {"sha256": envelope.sha256[:63]}
    for bad in (dataclasses.replace(envelope, **changes), sign(dataclasses.replace(envelope, **changes), KEY)):
        r = one(raw(bad), policy)  # the registry (publisher numbering, `models list`) classifies it
        assert r.status == "refused" and not r.authentic
        assert "is not 64 lowercase hex digits" in (r.reason or "")


@pytest.mark.parametrize(
    ("signature", "reason"),
    [(b"\xfc" * 64, "does not match"), (b"\x00" * 63, "63 bytes"), (b"", "0 bytes"), (b"\xff" * 65, "65 bytes")],
    ids=["garbage", "short", "empty", "long"],
)
def test_a_malformed_signature_is_refused_not_a_crash(signature: bytes, reason: str) -> None:
    for policy in (POLICY, DEV):
        r = one(raw(dataclasses.replace(sealed(), signature=signature)), policy)
        assert r.status == "refused" and not r.authentic and reason in (r.reason or "")


def test_a_non_ascii_chunk_digest_is_refused_not_a_crash() -> None:
    envelope = sealed(2)
    chunk = ModelChunk("m", 2, "t", 0, 1, envelope.payload)
    manifest = sign(
        dataclasses.replace(envelope, payload=b"", chunks=(("é" * 64, len(envelope.payload)),), transfer_id="t"), KEY
    )
    records = versions([(b"m", chunk.encode(), chunk_serde().headers), raw(manifest)])
    assert [(r.status, r.authentic) for r in records] == [("refused", False)]
    assert "chunk 0 does not match the manifest" in (records[0].reason or "")


@pytest.mark.parametrize(
    "changes",
    [
        {"input_offsets": {"t.events[0]": 10**9}},
        {"n_learned": 10**9},
        {"metrics": {"accuracy": 1.0}},
        {"flavor": "sklearn", "format": "skops"},
        {"model_class": "os.system"},
        {"runtime": {"python": "3.0.0", "river": "0.0.1"}},
        {"created_at": 1},
        {"version": 2},
        {"model_name": "other"},
        {"kind": "batch"},
        {"lineage": {"from": "elsewhere"}},
        {"feature_names": ("x",)},
        {"golden": ()},
        {"payload_size": 1},
        {"key_id": FORGER.key_id},
    ],
    ids=lambda c: next(iter(c)),
)
def test_the_signature_covers_every_field_but_the_payload(changes: dict[str, Any]) -> None:
    envelope = sealed(
        metrics={"accuracy": 0.1, "third": 1 / 3}, n_learned=7, input_offsets={"t.events[0]": 42},
        golden_inputs=[{"a": 1.0}], lineage={"run": "1"},
    )
    decoded = decode_envelope(encode_envelope(envelope), envelope_headers())  # what a subscriber sees
    assert signed_bytes(decoded) == signed_bytes(envelope)  # byte for byte after Avro
    lenient = dataclasses.replace(DEV, allow_runtime_mismatch=True, keyring=POLICY.keyring.with_key(FORGER.public_key))
    assert one(raw(envelope), lenient).status == "ok"
    tampered = one(raw(dataclasses.replace(envelope, **changes)), lenient)
    assert tampered.status == "refused" and not tampered.authentic
    assert "does not match" in (tampered.reason or "")


@pytest.mark.parametrize(
    ("runtime", "missing"),
    [({}, "python"), ({"streamml": "1.0"}, "python"), ("python-only", "river")],
)
def test_an_envelope_that_omits_a_required_runtime_version_is_refused(runtime: Any, missing: str) -> None:
    envelope = sealed()
    if runtime == "python-only":
        runtime = {"python": envelope.runtime["python"]}
    bad = sign(dataclasses.replace(envelope, runtime=runtime), KEY)
    r = one(raw(bad))
    assert r.status == "refused" and r.authentic
    assert f"does not say which {missing} version" in (r.reason or "")
    # the explicit opt-out still applies
    assert one(raw(bad), dataclasses.replace(POLICY, allow_runtime_mismatch=True)).status == "ok"


def test_a_runtime_this_process_lacks_is_refused() -> None:
    envelope = sealed()
    bad = sign(dataclasses.replace(envelope, flavor="sklearn", format="skops",
                                   runtime={"python": envelope.runtime["python"]}), KEY)
    r = one(raw(bad))
    assert r.status == "refused" and r.authentic and "scikit-learn" in (r.reason or "")
