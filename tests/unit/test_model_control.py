"""Signed serving directives (ControlRecord) and the state consumers fold from them (ServingState)."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import pytest

from streamml.envelope import encode_envelope, envelope_headers, seal
from streamml.errors import EnvelopeError
from streamml.model_control import ControlRecord, ServingState, control_serde
from streamml.models_topic import ControlEvent, ModelsTopicFolder, RecordRefused, VersionEvent
from streamml.signing import Keyring, SigningKey
from streamml.trust import TrustPolicy

SIGNER = SigningKey.generate()
OTHER = SigningKey.generate()
STRANGER = SigningKey.generate()
POLICY = TrustPolicy(keyring=Keyring().with_key(SIGNER.public_key).with_key(OTHER.public_key))
DEV = dataclasses.replace(POLICY, development_mode=True)


def directive(action: str = "pin", version: int | None = 2, sequence: int = 1, **kwargs: Any) -> ControlRecord:
    return ControlRecord("m", action, version, sequence, issued_at=1_700_000_000_000, reason="test", **kwargs)


def signed(
    action: str = "pin", version: int | None = 2, sequence: int = 1, signer: SigningKey = SIGNER
) -> ControlRecord:
    return directive(action, version, sequence).signed_by(signer)


# -- ControlRecord: signature and shape ----------------------------------------------------------


@pytest.mark.parametrize(("action", "version"), [("pin", 2), ("rollback", 1), ("unpin", None)])
def test_a_directive_signed_by_a_trusted_key_may_be_obeyed(action: str, version: int | None) -> None:
    record = signed(action, version)
    assert record.key_id == SIGNER.key_id and record.signature is not None
    assert record.problem(POLICY) is None
    assert signed(action, version, signer=OTHER).problem(POLICY) is None


def test_an_unsigned_directive_is_refused_unless_in_development_mode() -> None:
    record = directive()
    assert "unsigned" in (record.problem(POLICY) or "")
    assert record.problem(DEV) is None


def test_a_directive_signed_by_an_untrusted_key_is_refused_even_in_development_mode() -> None:
    record = signed(signer=STRANGER)
    for policy in (POLICY, DEV):
        assert "does not trust" in (record.problem(policy) or "")


@pytest.mark.parametrize(
    "changes",
    [
        {"version": 1},
        {"action": "rollback"},
        {"sequence": 99},
        {"model_name": "other"},
        {"issued_at": 1},
        {"reason": "forged"},
        {"key_id": OTHER.key_id},
        {"signature": bytes(64)},
    ],
    ids=lambda c: next(iter(c)),
)
def test_a_directive_changed_after_signing_fails_its_signature(changes: dict[str, Any]) -> None:
    tampered = dataclasses.replace(signed(), **changes)
    for policy in (POLICY, DEV):
        assert "does not match" in (tampered.problem(policy) or "")


@pytest.mark.parametrize(
    "changes", [{"signature": None}, {"key_id": None}], ids=["signature-stripped", "key-id-stripped"]
)
def test_a_half_signed_directive_is_refused_even_in_development_mode(changes: dict[str, Any]) -> None:
    tampered = dataclasses.replace(signed(), **changes)
    for policy in (POLICY, DEV):
        assert "not signed" in (tampered.problem(policy) or "")


@pytest.mark.parametrize(
    ("action", "version", "reason"),
    [
        ("delete", 2, "unknown action"),
        ("pin", None, "pin needs a version"),
        ("rollback", None, "rollback needs a version"),
        ("unpin", 3, "unpin takes no version"),
    ],
)
def test_a_malformed_directive_is_refused_even_when_signed(action: str, version: int | None, reason: str) -> None:
    for record in (signed(action, version), directive(action, version)):
        assert reason in (record.problem(DEV) or "")


def test_a_directive_round_trips_through_avro_and_still_verifies() -> None:
    for record in (signed("rollback", 3, 7), directive("unpin", None, 2)):
        decoded = ControlRecord.decode(record.encode(), control_serde().headers)
        assert decoded == record
        assert decoded.signed_bytes() == record.signed_bytes()
    assert ControlRecord.decode(signed().encode(), control_serde().headers).problem(POLICY) is None


def test_a_record_that_is_not_a_directive_does_not_decode() -> None:
    with pytest.raises(EnvelopeError, match="not a model control record"):
        ControlRecord.decode(signed().encode(), envelope_headers())
    with pytest.raises(EnvelopeError, match="not a model control record"):
        ControlRecord.decode(b"\x01", control_serde().headers)


def test_describe_names_the_action_target_and_sequence() -> None:
    assert directive("rollback", 3, 9).describe() == "rollback v3 of m (#9)"
    assert directive("unpin", None, 4).describe() == "unpin of m (#4)"


# -- ServingState ----------------------------------------------------------------------------------


def state_after(versions: list[int]) -> ServingState:
    state = ServingState()
    for version in versions:
        state.saw_version(version)
    return state


def test_latest_serves_the_highest_acceptable_version() -> None:
    state = state_after([1, 2, 3])
    assert state.mode_for(state.choose({1, 2, 3})) == "latest"
    assert state.choose({1, 2, 3}) == 3
    assert state.choose({1, 2}) == 2  # the newest this consumer cannot load is skipped
    assert state.choose(set()) is None


def test_a_pin_holds_its_version_while_newer_ones_arrive_and_unpin_returns_to_latest() -> None:
    state = state_after([1, 2, 3])
    assert state.apply(signed("pin", 2, 1), {1, 2, 3}) is None
    assert state.mode_for(state.choose({1, 2, 3})) == "pinned" and state.choose({1, 2, 3}) == 2
    for version in (4, 5):
        state.saw_version(version)
    assert state.choose({1, 2, 3, 4, 5}) == 2
    assert state.choose({1, 3, 4}) is None  # pinned to what is not loadable: serve nothing rather than guess
    assert state.apply(signed("unpin", None, 2), {1, 2, 3, 4, 5}) is None
    assert state.mode_for(state.choose({1, 2, 3, 4, 5})) == "latest" and state.pinned is None
    assert state.choose({1, 2, 3, 4, 5}) == 5


def test_a_rollback_withdraws_the_newer_versions_seen_before_it() -> None:
    state = state_after([1, 2, 3, 4])
    assert state.apply(signed("rollback", 2, 1), {1, 2, 3, 4}) is None
    assert state.withdrawn == {3, 4}
    assert state.mode_for(state.choose({1, 2, 3, 4})) == "rolled_back" and state.choose({1, 2, 3, 4}) == 2
    assert state.choose({1, 3, 4}) == 1  # the target gone too: the best version not withdrawn


def test_versions_published_after_a_rollback_are_served_again() -> None:
    state = state_after([1, 2, 3, 4])
    state.apply(signed("rollback", 2, 1), {1, 2, 3, 4})
    state.saw_version(5)
    assert state.mode_for(state.choose({1, 2, 3, 4, 5})) == "latest" and state.choose({1, 2, 3, 4, 5}) == 5
    assert state.choose({1, 2, 3, 4}) == 2  # 3 and 4 stay withdrawn even if 5 cannot be loaded
    assert state.withdrawn == {3, 4}


def test_a_rollback_clears_a_pin_and_a_pin_may_reach_a_withdrawn_version() -> None:
    state = state_after([1, 2, 3])
    state.apply(signed("pin", 3, 1), {1, 2, 3})
    assert state.apply(signed("rollback", 1, 2), {1, 2, 3}) is None
    assert state.pinned is None and state.mode_for(state.choose({1, 2, 3})) == "rolled_back"
    assert state.choose({1, 2, 3}) == 1
    assert state.apply(signed("pin", 3, 3), {1, 2, 3}) is None  # explicit: the operator asked for exactly 3
    assert state.choose({1, 2, 3}) == 3
    state.apply(signed("unpin", None, 4), {1, 2, 3})
    assert state.choose({1, 2, 3}) == 1  # 2 and 3 are still withdrawn by the rollback


def test_a_rollback_to_a_later_version_restores_it_but_not_the_ones_between() -> None:
    state = state_after([1, 2, 3, 4])
    state.apply(signed("rollback", 1, 1), {1, 2, 3, 4})
    assert state.withdrawn == {2, 3, 4}
    state.apply(signed("rollback", 3, 2), {1, 2, 3, 4})
    assert state.withdrawn == {2, 4} and state.choose({1, 2, 3, 4}) == 3


@pytest.mark.parametrize("sequence", [1, 2], ids=["same-sequence", "older-sequence"])
def test_a_replayed_directive_is_refused_and_changes_nothing(sequence: int) -> None:
    state = state_after([1, 2, 3])
    state.apply(signed("rollback", 1, 1), {1, 2, 3})
    state.apply(signed("pin", 3, 2), {1, 2, 3})
    state.apply(signed("unpin", None, 3), {1, 2, 3})
    before = copy.deepcopy(state)
    problem = state.apply(signed("pin", 2, sequence), {1, 2, 3})
    assert problem is not None and "replayed" in problem and "#3" in problem
    assert state == before and state.choose({1, 2, 3}) == 1
    assert state.next_sequence() == 4


def test_a_directive_to_a_version_this_consumer_cannot_load_is_refused() -> None:
    state = state_after([1, 2, 3])
    before = copy.deepcopy(state)
    for record in (signed("pin", 7, 1), signed("rollback", 7, 1), signed("pin", 2, 1)):
        problem = state.apply(record, {1, 3})
        assert problem is not None and f"v{record.version} is not a version this consumer can load" in problem
        assert state == before
    # the refused sequence number was not used up
    assert state.apply(signed("pin", 3, 1), {1, 3}) is None and state.last_sequence == 1


def test_mode_says_what_is_being_served() -> None:
    state = state_after([1, 2, 3])

    def mode(acceptable: set[int]) -> str:
        return state.mode_for(state.choose(acceptable))

    modes = [mode({1, 2, 3})]
    state.apply(signed("pin", 2, 1), {1, 2, 3})
    modes.append(mode({1, 2, 3}))
    state.apply(signed("rollback", 1, 2), {1, 2, 3})
    modes.append(mode({1, 2, 3}))
    state.saw_version(4)
    modes.append(mode({1, 2, 3, 4}))
    assert modes == ["latest", "pinned", "rolled_back", "latest"]


# -- on the models topic -----------------------------------------------------------------------------


class Constant:
    def predict_one(self, x: dict[str, float]) -> int:
        return 1


def test_the_folder_turns_directive_records_into_events_with_their_problem() -> None:
    envelope = seal(Constant(), model_name="m", version=1, flavor="river", signer=SIGNER)
    headers = control_serde().headers
    records = [
        (b"m", encode_envelope(envelope), envelope_headers()),
        (b"m", signed("pin", 1, 1).encode(), headers),
        (b"m", signed("pin", 1, 2, signer=STRANGER).encode(), headers),
        (b"m", dataclasses.replace(signed("pin", 1, 3), version=2).encode(), headers),
        (b"other", ControlRecord("other", "unpin", None, 1).signed_by(SIGNER).encode(), headers),
        (b"m", b"\x00garbage", headers),
    ]
    folder = ModelsTopicFolder(POLICY, model_name="m")
    events = [folder.feed(offset, *record) for offset, record in enumerate(records)]
    assert isinstance(events[0], VersionEvent) and events[0].verdict.acceptable
    controls = events[1:4]
    assert all(isinstance(e, ControlEvent) for e in controls)
    assert [e.problem is None for e in controls if isinstance(e, ControlEvent)] == [True, False, False]
    assert "does not trust" in (getattr(events[2], "problem", "") or "")
    assert "does not match" in (getattr(events[3], "problem", "") or "")
    assert events[4] is None  # another model's directive
    assert isinstance(events[5], RecordRefused) and "not a model control record" in events[5].reason
