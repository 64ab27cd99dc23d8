"""How streamml.registry classifies models-topic records, without a broker."""

from __future__ import annotations

import dataclasses

from streamml.config import load_settings
from streamml.envelope import encode_envelope, envelope_headers, seal
from streamml.registry import classify, newest_authentic, next_version

SETTINGS = load_settings(env={}, model_signing_key="k")


class Constant:
    def predict_one(self, x: dict) -> int:
        return 1


def record(version: int, *, offset: int, name: str = "m", key: str | None = "k", **changes: object):
    env = seal(Constant(), model_name=name, version=version, flavor="river", signing_key=key)
    env = dataclasses.replace(env, **changes) if changes else env
    return classify(offset, name.encode(), encode_envelope(env), envelope_headers(), SETTINGS)


def test_a_good_envelope_is_ok_and_authentic() -> None:
    r = record(1, offset=0)
    assert r.status == "ok" and r.authentic and r.version == 1 and r.summary["signed"]
    assert "payload" not in r.as_dict()["envelope"]


def test_an_undecodable_record_is_refused_with_the_reason() -> None:
    r = classify(3, b"m", b"\x00garbage", [("streamml.schema", b"0000000000000000")], SETTINGS)
    assert r.status == "refused" and not r.authentic and r.version is None and r.model_name == "m"
    assert "not a model envelope (unknown_schema)" in r.reason


def test_a_runtime_mismatch_is_refused_but_still_authentic() -> None:
    r = record(2, offset=1, runtime={"python": "2.7.18"})
    assert r.status == "refused" and r.authentic and "python 2.7.18" in r.reason


def test_next_version_counts_only_authentic_records_of_the_model() -> None:
    records = [
        record(1, offset=0),
        record(2, offset=1, runtime={"python": "2.7.18"}),
        record(1000, offset=2, key="forger"),  # wrong signature: must not move the sequence
        record(50, offset=3, name="other"),
    ]
    assert next_version(records, "m") == 3
    assert next_version(records, "other") == 51
    assert next_version([], "m") == 1


def test_newest_authentic_orders_acceptable_versions_newest_first() -> None:
    records = [record(1, offset=0), record(3, offset=1), record(2, offset=2), record(4, offset=3, key=None)]
    assert [r.version for r in newest_authentic(records, "m")] == [3, 2, 1]
