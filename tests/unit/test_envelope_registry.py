"""How streamml.registry classifies models-topic records, without a broker."""

from __future__ import annotations

import dataclasses

import pytest

from streamml.config import load_settings
from streamml.envelope import (
    TrustPolicy,
    _sign,
    _signed_bytes,
    decode_envelope,
    encode_envelope,
    envelope_headers,
    seal,
    verify,
)
from streamml.errors import EnvelopeError
from streamml.registry import classify, newest_authentic, next_version

SETTINGS = load_settings(env={}, model_signing_key="k")
POLICY = TrustPolicy.from_settings(SETTINGS)


class Constant:
    def predict_one(self, x: dict) -> int:
        return 1


def record(
    version: int, *, offset: int, name: str = "m", key: str | None = "k", resign: bool = False, **changes: object
):
    """Classify a sealed envelope with ``changes``; ``resign`` signs the changed envelope again."""
    env = seal(Constant(), model_name=name, version=version, flavor="river", signing_key=key)
    env = dataclasses.replace(env, **changes) if changes else env
    if resign and key is not None:
        env = dataclasses.replace(env, signature=_sign(key, _signed_bytes(env)))
    return classify(offset, name.encode(), encode_envelope(env), envelope_headers(), POLICY)


def test_a_good_envelope_is_ok_and_authentic() -> None:
    r = record(1, offset=0)
    assert r.status == "ok" and r.authentic and r.version == 1 and r.summary["signed"]
    assert "payload" not in r.as_dict()["envelope"]


def test_an_undecodable_record_is_refused_with_the_reason() -> None:
    r = classify(3, b"m", b"\x00garbage", [("streamml.schema", b"0000000000000000")], POLICY)
    assert r.status == "refused" and not r.authentic and r.version is None and r.model_name == "m"
    assert "not a model envelope (unknown_schema)" in r.reason


def test_a_runtime_mismatch_is_refused_but_still_authentic() -> None:
    r = record(2, offset=1, runtime={"python": "2.7.18"}, resign=True)
    assert r.status == "refused" and r.authentic and "python 2.7.18" in r.reason


def test_next_version_counts_only_authentic_records_of_the_model() -> None:
    records = [
        record(1, offset=0),
        record(2, offset=1, runtime={"python": "2.7.18"}, resign=True),
        record(1000, offset=2, key="forger"),  # wrong signature: must not move the sequence
        record(50, offset=3, name="other"),
    ]
    assert next_version(records, "m") == 3
    assert next_version(records, "other") == 51
    assert next_version([], "m") == 1


def test_newest_authentic_orders_acceptable_versions_newest_first() -> None:
    records = [record(1, offset=0), record(3, offset=1), record(2, offset=2), record(4, offset=3, key=None)]
    assert [r.version for r in newest_authentic(records, "m")] == [3, 2, 1]


# -- verify: malformed digests, signed fields, required runtime ------------------------------


def sealed(key: str | None = "k", **kwargs: object):
    return seal(Constant(), model_name="m", version=1, flavor="river", signing_key=key, **kwargs)


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"sha256": "é" * 64}, "k"),
        ({"sha256": "\u0663" * 64}, None),  # Arabic-Indic digit: str.isdigit() but not hex
        ({"signature": "ü" * 64}, "k"),
        ({"signature": "ü" * 64}, None),  # malformed even when this process checks no signature
        ("upper-sha256", "k"),
        ("short-signature", "k"),
    ],
    ids=["non-ascii-sha256", "unicode-digit-sha256", "non-ascii-signature", "non-ascii-signature-no-key",
         "uppercase-sha256", "short-signature"],
)
def test_a_malformed_digest_is_an_envelope_error_not_a_crash(changes: object, key: str | None) -> None:
    env = sealed(key="k")
    if changes == "upper-sha256":
        changes = {"sha256": env.sha256.upper()}
    elif changes == "short-signature":
        changes = {"signature": env.signature[:63]}
    bad = dataclasses.replace(env, **changes)
    with pytest.raises(EnvelopeError, match="is not 64 lowercase hex digits"):
        verify(bad, signing_key=key)
    # the registry (publisher numbering, `models list`) classifies it instead of crashing
    r = classify(0, b"m", encode_envelope(bad), envelope_headers(), POLICY)
    assert r.status == "refused" and not r.authentic and "hex digits" in r.reason


@pytest.mark.parametrize(
    "changes",
    [
        {"input_offsets": {"t.events[0]": 10**9}},
        {"n_learned": 10**9},
        {"metrics": {"accuracy": 1.0}},
        {"flavor": "sklearn"},
        {"model_class": "os.system"},
        {"runtime": {"python": "3.0.0", "river": "0.0.1"}},
        {"created_at": 1},
        {"version": 2},
        {"model_name": "other"},
    ],
    ids=lambda c: next(iter(c)),
)
def test_the_signature_covers_every_field_but_the_payload(changes: dict) -> None:
    env = sealed(metrics={"accuracy": 0.1, "third": 1 / 3}, n_learned=7, input_offsets={"t.events[0]": 42})
    decoded = decode_envelope(encode_envelope(env), envelope_headers())  # what a subscriber sees
    verify(decoded, signing_key="k", allow_runtime_mismatch=True)  # untouched: still verifies after Avro
    tampered = decode_envelope(encode_envelope(dataclasses.replace(env, **changes)), envelope_headers())
    with pytest.raises(EnvelopeError, match="signature does not match"):
        verify(tampered, signing_key="k", allow_runtime_mismatch=True)


@pytest.mark.parametrize(
    ("runtime", "missing"),
    [({}, "python"), ({"streamml": "1.0"}, "python"), ("python-only", "river")],
)
def test_an_envelope_that_omits_a_required_runtime_version_is_refused(runtime: object, missing: str) -> None:
    env = sealed(key=None)
    if runtime == "python-only":
        runtime = {"python": env.runtime["python"]}
    bad = dataclasses.replace(env, runtime=runtime)
    with pytest.raises(EnvelopeError, match=f"does not say which {missing} version"):
        verify(bad)
    verify(bad, allow_runtime_mismatch=True)  # the explicit opt-out still applies
    r = classify(0, b"m", encode_envelope(bad), envelope_headers(), TrustPolicy())
    assert r.status == "refused" and r.authentic
