"""Model trust end to end without a broker: seal, sign, assess, load_model, golden examples."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from river import preprocessing
from sklearn.linear_model import LogisticRegression

from model_publisher import catalog
from streamml.envelope import (
    MAX_VERSION,
    GoldenExample,
    ModelEnvelope,
    decode_envelope,
    encode_envelope,
    envelope_headers,
    seal,
    sign,
)
from streamml.errors import EnvelopeError
from streamml.safe_pickle import UnsafePayloadError
from streamml.signing import Keyring, SigningKey
from streamml.sklearn_format import SklearnModel
from streamml.trust import TrustPolicy, Verdict, assess, check_golden, load_model, manifest_problem, refused

SIGNER = SigningKey.generate()
OTHER = SigningKey.generate()  # trusted too: a signature must be by the key the envelope names
STRANGER = SigningKey.generate()  # not trusted
KEYRING = Keyring().with_key(SIGNER.public_key).with_key(OTHER.public_key)
POLICY = TrustPolicy(keyring=KEYRING)
DEV = TrustPolicy(keyring=KEYRING, development_mode=True)

ROWS = [{"a": float(i % 7), "b": float((3 * i) % 5)} for i in range(60)]
GOLDEN_INPUTS = ROWS[:8]


def river_model(flip: bool = False) -> Any:
    """A trained catalog model; ``flip`` learns the opposite labels (same class, other answers)."""
    model = catalog.build("logistic")
    for _ in range(3):
        for x in ROWS:
            model.learn_one(x, (x["a"] > x["b"]) != flip)
    return model


MODEL = river_model()
FLIPPED = river_model(flip=True)


def sealed(model: Any = MODEL, *, signer: SigningKey | None = SIGNER, version: int = 1, **kwargs: Any) -> ModelEnvelope:
    kwargs.setdefault("golden_inputs", GOLDEN_INPUTS)
    return seal(model, model_name="m", version=version, flavor="river", signer=signer, **kwargs)


def resign(envelope: ModelEnvelope, signer: SigningKey = SIGNER, **changes: Any) -> ModelEnvelope:
    """``envelope`` with ``changes``, signed again (what a publisher holding the key could write)."""
    return sign(dataclasses.replace(envelope, **changes), signer)


def over_the_wire(envelope: ModelEnvelope) -> ModelEnvelope:
    return decode_envelope(encode_envelope(envelope), envelope_headers())


# -- authenticity ----------------------------------------------------------------------------------


def test_an_envelope_signed_by_a_trusted_key_is_acceptable_and_loads() -> None:
    envelope = over_the_wire(sealed())
    assert envelope.signed and envelope.key_id == SIGNER.key_id and len(envelope.golden) == len(GOLDEN_INPUTS)
    verdict = assess(envelope, POLICY)
    assert (verdict.authentic, verdict.acceptable, verdict.reason) == (True, True, None)
    assert (verdict.model_name, verdict.version) == ("m", 1)
    model = load_model(verdict)
    assert model is not MODEL and type(model) is type(MODEL)
    for x in ROWS:
        assert model.predict_one(x) == MODEL.predict_one(x)
        assert model.predict_proba_one(x) == MODEL.predict_proba_one(x)


def test_a_second_trusted_key_is_accepted_too() -> None:
    assert assess(over_the_wire(sealed(signer=OTHER)), POLICY).acceptable


def test_an_unsigned_envelope_is_refused_unless_in_development_mode() -> None:
    envelope = over_the_wire(sealed(signer=None))
    assert not envelope.signed and envelope.key_id is None
    verdict = assess(envelope, POLICY)
    assert not verdict.authentic and not verdict.acceptable
    assert "unsigned" in (verdict.reason or "") and "STREAMML_DEVELOPMENT_MODE" in (verdict.reason or "")
    with pytest.raises(EnvelopeError, match="unsigned"):
        load_model(verdict)
    dev = assess(envelope, DEV)
    assert dev.authentic and dev.acceptable
    assert load_model(dev).predict_one(ROWS[0]) == MODEL.predict_one(ROWS[0])


def test_an_envelope_signed_by_an_untrusted_key_is_not_authentic() -> None:
    envelope = over_the_wire(sealed(signer=STRANGER))
    for policy in (POLICY, DEV, TrustPolicy(), dataclasses.replace(POLICY, allow_runtime_mismatch=True)):
        verdict = assess(envelope, policy)
        assert not verdict.authentic and not verdict.acceptable
        assert "does not trust" in (verdict.reason or "") and STRANGER.key_id in (verdict.reason or "")


@pytest.mark.parametrize(
    "changes",
    [{"signature": None}, {"key_id": None}, {"signature": b""}, {"signature": bytes(64)}],
    ids=["signature-stripped", "key-id-stripped", "empty-signature", "zero-signature"],
)
def test_a_half_signed_envelope_is_refused_even_in_development_mode(changes: dict[str, Any]) -> None:
    # Development mode accepts unsigned envelopes, not broken signatures: stripping half doesn't downgrade.
    envelope = over_the_wire(dataclasses.replace(sealed(), **changes))
    for policy in (POLICY, DEV):
        verdict = assess(envelope, policy)
        assert not verdict.authentic and verdict.reason is not None
        assert any(word in verdict.reason for word in ("not signed", "bytes, not 64", "does not match"))


def test_one_flipped_payload_byte_fails_the_checksum() -> None:
    envelope = sealed()
    payload = bytearray(envelope.payload)
    payload[len(payload) // 2] ^= 0x01
    verdict = assess(over_the_wire(dataclasses.replace(envelope, payload=bytes(payload))), POLICY)
    assert not verdict.authentic and "payload sha256" in (verdict.reason or "")
    assert "does not match" in (verdict.reason or "")


def test_a_truncated_payload_fails_the_size_check() -> None:
    envelope = sealed()
    verdict = assess(dataclasses.replace(envelope, payload=envelope.payload[:-1]), DEV)
    assert not verdict.authentic and f"the envelope says {envelope.payload_size}" in (verdict.reason or "")


def _changes(envelope: ModelEnvelope) -> dict[str, dict[str, Any]]:
    other = sealed(FLIPPED)
    golden = envelope.golden[0]
    return {
        "metrics": {"metrics": {"accuracy": 0.99}},
        "input_offsets": {"input_offsets": {"t.events[0]": 10**9}},
        "version": {"version": 2},
        "golden-prediction": {"golden": (dataclasses.replace(golden, prediction=not golden.prediction),)},
        "golden-dropped": {"golden": ()},
        "key_id": {"key_id": OTHER.key_id},
        "model_name": {"model_name": "other"},
        "n_learned": {"n_learned": 10**9},
        "created_at": {"created_at": 1},
        "runtime": {"runtime": {**envelope.runtime, "river": "0.0.1"}},
        "lineage": {"lineage": {"parent": "forged"}},
        "kind": {"kind": "batch"},
        "model_class": {"model_class": "os.system"},
        "feature_names": {"feature_names": ("a",)},
        "payload-swap": {"payload": other.payload, "sha256": other.sha256, "payload_size": other.payload_size},
    }


@pytest.mark.parametrize("field", list(_changes(sealed())))
def test_any_field_changed_after_signing_fails_the_signature(field: str) -> None:
    envelope = sealed(metrics={"accuracy": 0.5, "third": 1 / 3}, n_learned=7, input_offsets={"t.events[0]": 42})
    assert assess(over_the_wire(envelope), POLICY).acceptable  # untouched, it survives Avro
    tampered = over_the_wire(dataclasses.replace(envelope, **_changes(envelope)[field]))
    for policy in (POLICY, DEV, dataclasses.replace(POLICY, allow_runtime_mismatch=True)):
        verdict = assess(tampered, policy)
        assert not verdict.authentic and not verdict.acceptable
        assert "signature by key" in (verdict.reason or "") and "does not match" in (verdict.reason or "")
    with pytest.raises(EnvelopeError, match="does not match"):
        load_model(assess(tampered, POLICY))


@pytest.mark.parametrize("version", [0, -1, 2**62, MAX_VERSION + 1])
def test_a_version_out_of_range_is_refused_even_when_signed(version: int) -> None:
    with pytest.raises(EnvelopeError, match="outside"):
        sealed(version=version)
    envelope = over_the_wire(resign(sealed(), version=version))  # signed: only the range check refuses it
    assert envelope.version == version
    for policy in (POLICY, DEV, dataclasses.replace(POLICY, allow_runtime_mismatch=True)):
        verdict = assess(envelope, policy)
        assert not verdict.authentic and not verdict.acceptable
        assert f"outside 1..{MAX_VERSION}" in (verdict.reason or "")


@pytest.mark.parametrize("version", [1, MAX_VERSION])
def test_the_version_range_bounds_are_accepted(version: int) -> None:
    assert assess(over_the_wire(sealed(version=version)), POLICY).acceptable


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"envelope_version": 1}, "envelope version 1 is not supported"),
        ({"flavor": "sklearn"}, "flavor 'sklearn' with format 'pickle'"),
        ({"flavor": "tensorflow", "format": "saved_model"}, "flavor 'tensorflow'"),
    ],
)
def test_an_unknown_envelope_shape_is_refused_even_when_signed(changes: dict[str, Any], reason: str) -> None:
    verdict = assess(over_the_wire(resign(sealed(), **changes)), DEV)
    assert not verdict.authentic and reason in (verdict.reason or "")


def test_manifest_problem_checks_the_fields_but_not_the_absent_payload() -> None:
    manifest = resign(sealed(), payload=b"", chunks=(("0" * 64, 10),), transfer_id="t")
    assert manifest_problem(manifest, POLICY) is None
    assert "payload is 0 bytes" in (assess(manifest, POLICY).reason or "")  # not loadable as it stands
    assert "does not trust" in (manifest_problem(resign(manifest, STRANGER), POLICY) or "")
    verdict = refused(manifest, "transfer broken", POLICY)
    assert (verdict.authentic, verdict.acceptable, verdict.reason) == (False, False, "transfer broken")
    with pytest.raises(EnvelopeError, match="transfer broken"):
        load_model(verdict)


# -- loading: the restricted unpickler -------------------------------------------------------------


class Gadget:
    """Pickles as ``os.system(command)``: runs the command when a plain unpickler loads it."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Any, ...]:
        return os.system, (self.command,)

    def predict_one(self, x: dict[str, float]) -> int:
        return 1


def test_the_gadget_really_runs_code_under_a_plain_unpickler(tmp_path: Path) -> None:
    """The control for the test below: the payload is a working exploit."""
    marker = tmp_path / "control"
    pickle.loads(pickle.dumps(Gadget(f"touch {marker}"), protocol=5))
    assert marker.exists()


@pytest.mark.parametrize(
    "policy",
    [POLICY, DEV, dataclasses.replace(POLICY, pickle_allowed=("tests.*", f"{__name__}:Gadget"))],
    ids=["default", "development-mode", "test-module-allowed"],
)
def test_a_signed_payload_that_runs_code_is_refused_before_it_runs(tmp_path: Path, policy: TrustPolicy) -> None:
    marker = tmp_path / "pwned"
    envelope = over_the_wire(sealed(Gadget(f"touch {marker}"), golden_inputs=()))
    verdict = assess(envelope, policy)
    assert verdict.acceptable  # signed by a trusted key: a signature says who, not that it is harmless
    assert not marker.exists()  # assessing never deserializes
    with pytest.raises(UnsafePayloadError, match=r"(posix|os)\.system") as caught:
        load_model(verdict)
    assert isinstance(caught.value, EnvelopeError)
    assert not marker.exists()


def test_an_unsigned_gadget_is_refused_without_touching_its_payload(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    verdict = assess(over_the_wire(sealed(Gadget(f"touch {marker}"), signer=None, golden_inputs=())), POLICY)
    with pytest.raises(EnvelopeError, match="unsigned"):
        load_model(verdict)
    assert not marker.exists()


def test_a_signed_payload_that_does_not_unpickle_is_an_envelope_error() -> None:
    envelope = sealed()
    broken = envelope.payload[: len(envelope.payload) // 2]
    bad = resign(envelope, payload=broken, sha256=hashlib.sha256(broken).hexdigest(), payload_size=len(broken))
    verdict = assess(bad, POLICY)
    assert verdict.acceptable
    with pytest.raises(EnvelopeError, match="payload does not load"):
        load_model(verdict)


def test_a_river_object_without_predict_one_is_refused() -> None:
    scaler = preprocessing.StandardScaler()
    for x in ROWS:
        scaler.learn_one(x)  # type: ignore[no-untyped-call]
    verdict = assess(over_the_wire(sealed(scaler, golden_inputs=())), POLICY)
    assert verdict.acceptable
    with pytest.raises(EnvelopeError, match=r"StandardScaler has no predict_one\(\)"):
        load_model(verdict)


# -- golden examples -------------------------------------------------------------------------------


class RaisesAfterLoad:
    """Answers when sealed, raises once it has travelled (its pickled state says so)."""

    def __init__(self) -> None:
        self.travelled = False

    def __getstate__(self) -> dict[str, Any]:
        return {"travelled": True}

    def predict_one(self, x: dict[str, float]) -> int:
        if self.travelled:
            raise RuntimeError("feature 'a' overflowed")
        return 1


ALLOW_RAISES = dataclasses.replace(POLICY, pickle_allowed=(f"{__name__}:RaisesAfterLoad",))


def test_a_user_class_loads_only_when_the_policy_allows_it() -> None:
    envelope = over_the_wire(sealed(RaisesAfterLoad()))
    with pytest.raises(UnsafePayloadError, match="RaisesAfterLoad"):
        load_model(assess(envelope, POLICY))


def test_a_model_whose_predict_one_raises_is_refused_by_its_golden_examples() -> None:
    envelope = over_the_wire(sealed(RaisesAfterLoad()))
    assert [g.prediction for g in envelope.golden] == [1] * len(GOLDEN_INPUTS)
    verdict = assess(envelope, ALLOW_RAISES)
    assert verdict.acceptable
    with pytest.raises(EnvelopeError, match="golden example 0 raised RuntimeError: feature 'a' overflowed"):
        load_model(verdict)
    # without golden examples nothing calls predict_one before serving: the examples are what catch it
    bare = assess(over_the_wire(sealed(RaisesAfterLoad(), golden_inputs=())), ALLOW_RAISES)
    assert isinstance(load_model(bare), RaisesAfterLoad)


def test_a_payload_swapped_for_another_model_of_the_same_class_fails_its_golden_examples() -> None:
    original, other = sealed(MODEL), sealed(FLIPPED)
    assert original.model_class == other.model_class
    assert any(MODEL.predict_one(x) != FLIPPED.predict_one(x) for x in GOLDEN_INPUTS)
    swapped = over_the_wire(
        resign(original, payload=other.payload, sha256=other.sha256, payload_size=other.payload_size)
    )
    verdict = assess(swapped, POLICY)
    assert verdict.acceptable  # signed, checksum holds: only the golden examples can tell
    with pytest.raises(EnvelopeError, match=r"golden example \d+ (predicted|gave P)"):
        load_model(verdict)
    assert load_model(assess(over_the_wire(other), POLICY)) is not None  # the other model is fine on its own


def shifted(envelope: ModelEnvelope, delta: float, label: str = "True") -> ModelEnvelope:
    golden = tuple(
        dataclasses.replace(g, probabilities={**g.probabilities, label: g.probabilities[label] + delta})
        for g in envelope.golden
    )
    return over_the_wire(resign(envelope, golden=golden))


def test_golden_probabilities_are_compared_with_a_tolerance() -> None:
    envelope = sealed()
    assert all(set(g.probabilities) == {"False", "True"} for g in envelope.golden)
    assert load_model(assess(shifted(envelope, 1e-12), POLICY))  # float noise is within 1e-9
    far = shifted(envelope, 1e-6)
    with pytest.raises(EnvelopeError, match=r"golden example 0 gave P\(True\)="):
        load_model(assess(far, POLICY))
    assert load_model(assess(far, dataclasses.replace(POLICY, golden_tolerance=1e-5)))


def test_a_golden_probability_the_model_does_not_give_is_a_mismatch() -> None:
    envelope = sealed()
    golden = (dataclasses.replace(envelope.golden[0], probabilities={"maybe": 0.5}),)
    with pytest.raises(EnvelopeError, match=r"gave P\(maybe\)=None"):
        load_model(assess(resign(envelope, golden=golden), POLICY))


def test_check_golden_compares_predictions() -> None:
    envelope = sealed()
    check_golden(MODEL, envelope)
    with pytest.raises(EnvelopeError, match="predicted"):
        check_golden(FLIPPED, dataclasses.replace(envelope, golden=tuple(
            GoldenExample(dict(x), MODEL.predict_one(x)) for x in GOLDEN_INPUTS
        )))


# -- scikit-learn ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sklearn_data() -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(120, 3)), columns=["f0", "f1", "f2"])
    y = (X["f0"] - X["f2"] > 0).astype(int).to_numpy()
    return X, y


def test_a_sklearn_model_loads_and_answers_like_the_estimator(sklearn_data: tuple[pd.DataFrame, np.ndarray]) -> None:
    X, y = sklearn_data
    estimator = LogisticRegression().fit(X, y)
    rows = X.head(10).to_dict(orient="records")
    envelope = over_the_wire(
        seal(estimator, model_name="m", version=1, flavor="sklearn", signer=SIGNER, golden_inputs=rows[:5])
    )
    assert (envelope.flavor, envelope.format, envelope.feature_names) == ("sklearn", "skops", ("f0", "f1", "f2"))
    assert "scikit-learn" in envelope.runtime
    verdict = assess(envelope, POLICY)
    assert verdict.acceptable, verdict.reason
    model = load_model(verdict)
    assert isinstance(model, SklearnModel) and model.estimator is not estimator
    for index, row in enumerate(rows):
        frame = X.iloc[[index]]
        assert model.predict_one(row) == estimator.predict(frame)[0]
        expected = dict(zip(estimator.classes_.tolist(), estimator.predict_proba(frame)[0].tolist(), strict=True))
        assert model.predict_proba_one(row) == pytest.approx(expected, rel=1e-12)


def test_a_sklearn_payload_swap_fails_its_golden_examples(sklearn_data: tuple[pd.DataFrame, np.ndarray]) -> None:
    X, y = sklearn_data
    rows = X.head(5).to_dict(orient="records")
    good = seal(LogisticRegression().fit(X, y), model_name="m", version=1, flavor="sklearn", signer=SIGNER,
                golden_inputs=rows)
    other = seal(LogisticRegression().fit(X, 1 - y), model_name="m", version=1, flavor="sklearn")
    swapped = resign(good, payload=other.payload, sha256=other.sha256, payload_size=other.payload_size)
    with pytest.raises(EnvelopeError, match="golden example 0"):
        load_model(assess(swapped, POLICY))


def test_a_sklearn_model_fit_without_feature_names_cannot_be_sealed(
    sklearn_data: tuple[pd.DataFrame, np.ndarray],
) -> None:
    X, y = sklearn_data
    with pytest.raises(EnvelopeError, match="needs feature names"):
        seal(LogisticRegression().fit(X.to_numpy(), y), model_name="m", version=1, flavor="sklearn")


def test_a_verdict_remembers_the_policy_it_was_assessed_with() -> None:
    verdict = assess(sealed(RaisesAfterLoad(), golden_inputs=()), ALLOW_RAISES)
    assert isinstance(verdict, Verdict) and verdict.policy is ALLOW_RAISES
    # the same envelope assessed with the default policy refuses the user class at load time
    with pytest.raises(UnsafePayloadError):
        load_model(assess(verdict.envelope, POLICY))
