"""The quality gate, the learner's gated publishing and the withheld verdict, without a broker."""

from __future__ import annotations

import dataclasses
from typing import Any

import pandas as pd
import pytest

from model_publisher.champion import GatedPublishing
from model_publisher.gate import GateDecision, QualityGate
from model_publisher.snapshot import Snapshot
from streamml.envelope import seal
from streamml.errors import ConfigError, EnvelopeError
from streamml.reader import parse_offsets
from streamml.registry import newest_authentic
from streamml.signing import Keyring, SigningKey
from streamml.trust import TrustPolicy, assess, load_model, unwithheld
from tests.unit.test_trust import GOLDEN_INPUTS, MODEL

SIGNER = SigningKey.generate()
POLICY = TrustPolicy(keyring=Keyring().with_key(SIGNER.public_key))


class Constant:
    def __init__(self, answer: Any) -> None:
        self.answer = answer

    def predict_one(self, x: dict[str, float]) -> Any:
        return self.answer


class Threshold:
    def predict_one(self, x: dict[str, float]) -> bool:
        return x["a"] > 0


class Raises:
    def predict_one(self, x: dict[str, float]) -> Any:
        raise ValueError("cannot take it")


EVENTS = [({"a": float(i % 5 - 2)}, i % 5 - 2 > 0) for i in range(100)]  # 40% True


def test_the_first_version_is_promoted_without_scoring() -> None:
    decision = QualityGate().judge(Constant(True), None, [])
    assert decision.promoted and "first version" in decision.reason and decision.candidate is None


def test_a_candidate_worse_than_the_champion_by_more_than_the_margin_is_refused() -> None:
    gate = QualityGate(margin=0.02)
    decision = gate.judge(Constant(False), Threshold(), EVENTS, champion_name="m", champion_version=3)
    assert not decision.promoted
    assert decision.candidate == pytest.approx(0.6) and decision.champion == pytest.approx(1.0)
    assert decision.n_events == 100 and "m v3" in decision.reason and "worse" in decision.reason


class Oracle:
    """Knows every label of the events it is given."""

    def __init__(self, events: list[tuple[dict[str, float], bool]]) -> None:
        self.answers = {x["a"]: y for x, y in events}

    def predict_one(self, x: dict[str, float]) -> bool:
        return self.answers[x["a"]]


@pytest.mark.parametrize(("misses", "promoted"), [(0, True), (1, True), (3, False)])
def test_the_margin_decides_in_accuracy_points(misses: int, promoted: bool) -> None:
    # 100 events; the candidate (a > 0) gets `misses` of them wrong, the oracle champion none.
    events = [({"a": float(i) - 49.5}, i >= 50 if i >= misses else i < 50) for i in range(100)]
    decision = QualityGate(margin=0.02).judge(Threshold(), Oracle(events), events)
    assert decision.candidate == pytest.approx(1 - misses / 100) and decision.champion == 1.0
    assert decision.promoted is promoted


def test_a_candidate_that_raises_scores_misses_not_a_crash() -> None:
    decision = QualityGate().judge(Raises(), Threshold(), EVENTS)
    assert not decision.promoted and decision.candidate == 0.0


def test_too_few_held_back_events_is_refused_as_unjudged() -> None:
    decision = QualityGate(min_events=20).judge(Threshold(), Threshold(), EVENTS[:5])
    assert not decision.promoted and "unjudged" in decision.reason


def test_regression_uses_mae_with_a_relative_margin() -> None:
    events = [({"a": float(i)}, float(i)) for i in range(30)]

    class Off:
        def __init__(self, by: float) -> None:
            self.by = by

        def predict_one(self, x: dict[str, float]) -> float:
            return x["a"] + self.by

    gate = QualityGate(task="regression", margin=0.1)
    assert gate.metric == "mae"
    assert gate.judge(Off(1.05), Off(1.0), events).promoted  # 5% worse, margin 10%
    refused = gate.judge(Off(1.5), Off(1.0), events)
    assert not refused.promoted and refused.candidate == pytest.approx(1.5) and refused.champion == pytest.approx(1.0)
    # A regressor that raises gets the worst error seen, never a better score.
    assert gate.score(Raises(), events) >= 0 and not gate.judge(Raises(), Off(1.0), events).promoted


def test_the_decision_travels_as_string_lineage() -> None:
    decision = QualityGate().judge(Constant(False), Threshold(), EVENTS, champion_name="m", champion_version=3)
    lineage = decision.lineage()
    assert lineage["gate"] == "refused" and lineage["gate_champion_version"] == "m v3"
    assert lineage["gate_candidate"] == "0.6" and lineage["gate_events"] == "100"
    assert all(isinstance(v, str) for v in lineage.values())


def test_a_gate_refused_version_is_withheld_authentic_and_resumable_but_not_served() -> None:
    decision = GateDecision(False, "worse than the champion", candidate=0.5, champion=0.9)
    envelope = seal(
        MODEL, model_name="m", version=2, flavor="river", signer=SIGNER, golden_inputs=GOLDEN_INPUTS,
        lineage=decision.lineage(),
    )
    verdict = assess(envelope, POLICY)
    assert verdict.authentic and not verdict.acceptable and verdict.withheld
    assert "withheld by the quality gate: worse than the champion" in (verdict.reason or "")
    with pytest.raises(EnvelopeError):
        load_model(verdict)  # never served
    assert load_model(unwithheld(verdict)).predict_one(GOLDEN_INPUTS[0]) is not None
    # Forging the decision away breaks the signature: the gate's word is signed.
    forged = dataclasses.replace(envelope, lineage={})
    assert not assess(forged, POLICY).authentic


def test_the_publisher_resumes_from_a_withheld_version() -> None:
    from streamml.registry import VersionRecord

    envelope = seal(MODEL, model_name="m", version=2, flavor="river", signer=SIGNER,
                    lineage=GateDecision(False, "worse").lineage())
    verdict = assess(envelope, POLICY)
    record = VersionRecord(5, "m", 2, envelope.summary(), verdict.reason, True, envelope, verdict)
    [resumable] = newest_authentic([record], "m")
    assert resumable.verdict is not None and resumable.verdict.acceptable


def test_gated_publishing_holds_a_frozen_copy_until_the_window_is_full() -> None:
    gating = GatedPublishing(QualityGate(min_events=2), window=3)
    live = {"w": 1}
    assert not gating.needs_window()  # no champion yet: publish at once
    gating.crown(Threshold(), "m", 1)
    assert gating.needs_window()
    candidate = gating.freeze(live, metrics={"accuracy": 0.5}, n_learned=10, input_offsets={"f[0]": 10},
                              feature_names=["a"])
    live["w"] = 2  # the live model keeps learning; the candidate does not move
    assert candidate.model == {"w": 1}
    gating.hold(candidate)
    assert not gating.observe({"a": 1.0}, None)  # unlabelled: not an event to judge on
    assert not gating.observe({"a": 1.0}, True) and not gating.observe({"a": -1.0}, False)
    assert gating.observe({"a": 2.0}, True)
    assert gating.take_pending() is candidate and gating.pending is None
    assert len(candidate.events) == 3
    assert GatedPublishing(None, window=3).decide(candidate) is None  # gate off: no decision


def test_parse_offsets() -> None:
    assert parse_offsets("0:120, 1:0") == {0: 120, 1: 0}
    assert parse_offsets(None) is None and parse_offsets("") is None
    with pytest.raises(ConfigError, match="PARTITION:OFFSET"):
        parse_offsets("0=12")


def test_hold_back_takes_the_newest_rows_the_champion_has_not_learned() -> None:
    frame = pd.DataFrame({"a": [float(i) for i in range(6)]})
    positions = [(0, 0), (1, 0), (0, 1), (1, 1), (0, 2), (1, 2)]
    snapshot = Snapshot(frame, [i % 2 == 0 for i in range(6)], list(range(6)),
                        {"f[0]": (0, 3), "f[1]": (0, 3)}, positions=positions, topic="f")
    rest, events = snapshot.hold_back({"f[0]": 1, "f[1]": 3}, 10)  # partition 1 fully learned
    assert [x["a"] for x, _ in events] == [2.0, 4.0]
    assert list(rest.frame["a"]) == [0.0, 1.0, 3.0, 5.0] and len(rest) == 4
    assert rest.end_offsets == snapshot.end_offsets  # seen (held back), not learned
    _, newest = snapshot.hold_back({}, 1)
    assert [x["a"] for x, _ in newest] == [5.0]
