"""The one owner of model trust: may this process load this envelope, and is the model it holds sound?

A consumer loads a model only after, in this order:

1. **authenticity**: the envelope is of a version and format this code knows,
   its version is in 1..``MAX_VERSION``, its payload's sha256 (and size)
   match, and its Ed25519 signature verifies against a key of the consumer's
   keyring. An unsigned envelope is authentic only in development mode
   (``STREAMML_DEVELOPMENT_MODE``); a key the consumer does not trust makes
   it inauthentic whatever it claims, so it cannot move the version sequence;
2. **runtime**: the Python and model-library versions that wrote it equal
   this process's (major.minor), unless the policy allows a mismatch;
3. **loading**, only then: river payloads through the restricted unpickler
   (:mod:`streamml.safe_pickle`), scikit-learn payloads through skops's
   trusted-types check (:mod:`streamml.sklearn_format`); a payload that names
   anything not allowed is refused before it runs;
4. **golden examples**: the loaded model must reproduce the answers the
   publisher recorded for real inputs, without raising. This catches a model
   that raises, a library mismatch that loads into a different model and a
   corrupted payload that still loads.

:func:`assess` does 1 and 2 once per envelope and returns a :class:`Verdict`
that the registry, the publisher, the subscriber and the serving slot all act
on; :func:`load_model` does 3 and 4 for an acceptable verdict.

A version that passes 1 and 2 but whose signed lineage says the quality gate
refused it (``lineage["gate"] == "refused"``, see
:mod:`model_publisher.gate`) is *withheld*: authentic (it counts in the
version sequence, and its learner may resume from it) but never served.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
from dataclasses import dataclass, field
from typing import Any

from streamml.config import Settings
from streamml.envelope import (
    ENVELOPE_VERSION,
    FLAVOR_FORMATS,
    FLAVOR_PACKAGES,
    MAX_VERSION,
    ModelEnvelope,
    probability_method,
    runtime_info,
    serving_model,
    signed_bytes,
)
from streamml.errors import EnvelopeError
from streamml.signing import Keyring

__all__ = [
    "GATE_KEY",
    "TrustPolicy",
    "Verdict",
    "assess",
    "refused",
    "manifest_problem",
    "load_model",
    "check_golden",
    "unwithheld",
]

#: Lineage key holding the quality gate's decision: ``promoted`` or ``refused``.
GATE_KEY = "gate"

_HEX_DIGEST = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class TrustPolicy:
    """What a reader of the models topic requires before it loads an envelope.

    ``keyring``: the public keys whose signatures are trusted.
    ``development_mode``: unsigned envelopes are accepted too (never in production).
    ``allow_runtime_mismatch``: load payloads written by another Python or
    library minor version (for migrations and tests only).
    ``pickle_allowed`` / ``skops_trusted``: extra globals the restricted
    unpickler may resolve, extra types skops may build.
    """

    keyring: Keyring = field(default_factory=Keyring)
    development_mode: bool = False
    allow_runtime_mismatch: bool = False
    pickle_allowed: tuple[str, ...] = ()
    skops_trusted: tuple[str, ...] = ()
    #: Relative and absolute tolerance when a golden probability is compared.
    golden_tolerance: float = 1e-9

    @classmethod
    def from_settings(cls, settings: Settings, *, allow_runtime_mismatch: bool = False) -> TrustPolicy:
        """The policy the settings describe (reads the trusted public key files)."""
        from streamml.signing import trusted_keyring

        return cls(
            keyring=trusted_keyring(settings),
            development_mode=settings.development_mode,
            allow_runtime_mismatch=allow_runtime_mismatch,
            pickle_allowed=tuple(settings.list_of("model_pickle_allow")),
            skops_trusted=tuple(settings.list_of("model_skops_trusted")),
        )


@dataclass(frozen=True)
class Verdict:
    """The outcome of checking one envelope against a :class:`TrustPolicy`.

    ``authentic``: well formed, checksum and signature hold (whatever runtime
    wrote it); only authentic versions count in the version sequence.
    ``acceptable``: authentic and loadable by this process. ``reason`` says
    why not (``None`` when acceptable).
    """

    envelope: ModelEnvelope = field(repr=False)
    authentic: bool
    acceptable: bool
    reason: str | None
    policy: TrustPolicy = field(repr=False, compare=False, default_factory=TrustPolicy)
    #: Authentic and loadable, but the quality gate refused it: never served.
    withheld: bool = False

    @property
    def version(self) -> int:
        return self.envelope.version

    @property
    def model_name(self) -> str:
        return self.envelope.model_name


def refused(envelope: ModelEnvelope, reason: str, policy: TrustPolicy | None = None) -> Verdict:
    """An inauthentic verdict with ``reason`` (e.g. a chunked transfer that did not complete)."""
    return Verdict(envelope, authentic=False, acceptable=False, reason=reason, policy=policy or TrustPolicy())


def assess(envelope: ModelEnvelope, policy: TrustPolicy) -> Verdict:
    """Check authenticity and runtime once; never deserializes the payload."""
    problem = _authenticity_problem(envelope, policy)
    if problem is not None:
        return Verdict(envelope, authentic=False, acceptable=False, reason=problem, policy=policy)
    if not policy.allow_runtime_mismatch:
        problem = _runtime_problem(envelope)
        if problem is not None:
            return Verdict(envelope, authentic=True, acceptable=False, reason=problem, policy=policy)
    if envelope.lineage.get(GATE_KEY) == "refused":
        why = envelope.lineage.get("gate_reason", "no reason recorded")
        return Verdict(
            envelope,
            authentic=True,
            acceptable=False,
            reason=f"{envelope.model_name} v{envelope.version}: withheld by the quality gate: {why}",
            policy=policy,
            withheld=True,
        )
    return Verdict(envelope, authentic=True, acceptable=True, reason=None, policy=policy)


def unwithheld(verdict: Verdict) -> Verdict:
    """A withheld verdict made loadable (for the learner resuming its own state; never for serving)."""
    if not verdict.withheld:
        return verdict
    return Verdict(verdict.envelope, authentic=True, acceptable=True, reason=None, policy=verdict.policy)


def manifest_problem(envelope: ModelEnvelope, policy: TrustPolicy) -> str | None:
    """Why a chunked manifest's own fields are not authentic (``None``: reassembling is worth it)."""
    return _authenticity_problem(envelope, policy, check_payload=False)


def _authenticity_problem(envelope: ModelEnvelope, policy: TrustPolicy, *, check_payload: bool = True) -> str | None:
    name = f"{envelope.model_name} v{envelope.version}"
    if envelope.envelope_version != ENVELOPE_VERSION:
        return f"{name}: envelope version {envelope.envelope_version} is not supported"
    if FLAVOR_FORMATS.get(envelope.flavor) != envelope.format:
        return f"{name}: flavor {envelope.flavor!r} with format {envelope.format!r} is not supported"
    if not 1 <= envelope.version <= MAX_VERSION:
        return f"{name}: version is outside 1..{MAX_VERSION}"
    # Avro strings may hold any Unicode, and hmac.compare_digest raises TypeError
    # on non-ASCII str: check the shape first, then compare bytes.
    if not _HEX_DIGEST.fullmatch(envelope.sha256):
        return f"{name}: sha256 {envelope.sha256[:16]!r} is not 64 lowercase hex digits"
    # The signature first: nothing else an unvouched-for record says is worth reading.
    if envelope.signature is None and envelope.key_id is None:
        if not policy.development_mode:
            return (
                f"{name}: unsigned; consumers accept only envelopes signed by a trusted key "
                "(STREAMML_MODEL_TRUSTED_KEYS), or unsigned ones with STREAMML_DEVELOPMENT_MODE=true"
            )
    else:
        problem = policy.keyring.verify(envelope.key_id, envelope.signature, signed_bytes(envelope))
        if problem is not None:
            return f"{name}: {problem}"
    if not check_payload:
        return None
    if len(envelope.payload) != envelope.payload_size:
        return f"{name}: payload is {len(envelope.payload)} bytes, the envelope says {envelope.payload_size}"
    actual = hashlib.sha256(envelope.payload).hexdigest()
    if not hmac.compare_digest(actual.encode("ascii"), envelope.sha256.encode("ascii")):
        return f"{name}: payload sha256 {actual[:12]}… does not match the envelope's {envelope.sha256[:12]}…"
    return None


def _runtime_problem(envelope: ModelEnvelope) -> str | None:
    name = f"{envelope.model_name} v{envelope.version}"
    here = runtime_info(envelope.flavor)
    # Loop over what this process requires, not over what the envelope chose
    # to declare: an envelope that omits a version is refused.
    for package in ("python", FLAVOR_PACKAGES[envelope.flavor]):
        theirs = envelope.runtime.get(package)
        ours = here.get(package)
        if theirs is None:
            return f"{name}: envelope does not say which {package} version wrote it"
        if ours is None:
            return f"{name}: written with {package} {theirs}, which is not installed here"
        if tuple(ours.split(".")[:2]) != tuple(theirs.split(".")[:2]):
            return (
                f"{name}: written with {package} {theirs}, this process has {ours}; "
                "serialized models are not portable across versions"
            )
    return None


def load_model(verdict: Verdict) -> Any:
    """Deserialize an acceptable verdict's payload, replay its golden examples, return the model.

    The returned object answers ``predict_one`` (a scikit-learn estimator is
    wrapped). Raises :class:`EnvelopeError` for a verdict that is not
    acceptable (the payload is never touched then), a payload that names
    anything the policy does not allow, one that does not load, a model
    without ``predict_one``, or one that does not reproduce its golden examples.
    """
    envelope, policy = verdict.envelope, verdict.policy
    name = f"{envelope.model_name} v{envelope.version}"
    if not verdict.acceptable:
        raise EnvelopeError(verdict.reason or f"{name}: refused")
    if envelope.flavor == "river":
        from streamml.safe_pickle import safe_loads

        model = safe_loads(envelope.payload, extra_allowed=policy.pickle_allowed)
    else:
        from streamml.sklearn_format import load_sklearn

        model = load_sklearn(envelope.payload, extra_trusted=policy.skops_trusted)
    model = serving_model(model, envelope.flavor, envelope.feature_names)
    if not callable(getattr(model, "predict_one", None)):
        raise EnvelopeError(f"{name}: {envelope.model_class} has no predict_one()")
    check_golden(model, envelope, tolerance=policy.golden_tolerance)
    return model


def check_golden(model: Any, envelope: ModelEnvelope, *, tolerance: float = 1e-9) -> None:
    """Raise :class:`EnvelopeError` unless ``model`` reproduces every golden example of ``envelope``."""
    name = f"{envelope.model_name} v{envelope.version}"
    proba = probability_method(model)
    for index, example in enumerate(envelope.golden):
        try:
            prediction = model.predict_one(dict(example.features))
            probabilities = proba(dict(example.features)) if proba is not None and example.probabilities else {}
        except Exception as exc:
            raise EnvelopeError(
                f"{name}: golden example {index} raised {type(exc).__name__}: {exc}; the model is not activated"
            ) from exc
        if not _same_label(prediction, example.prediction):
            raise EnvelopeError(
                f"{name}: golden example {index} predicted {prediction!r}, the publisher recorded "
                f"{example.prediction!r} (different library, corrupted or replaced payload)"
            )
        got = {str(k): float(v) for k, v in dict(probabilities).items()}
        for label, expected in example.probabilities.items():
            actual = got.get(label)
            if actual is None or not math.isclose(actual, expected, rel_tol=tolerance, abs_tol=tolerance):
                raise EnvelopeError(
                    f"{name}: golden example {index} gave P({label})={actual}, the publisher recorded {expected}"
                )


def _same_label(actual: Any, expected: Any) -> bool:
    from streamml.records import avro_label

    value = avro_label(actual)
    if isinstance(value, float) and isinstance(expected, float):
        both_nan = math.isnan(value) and math.isnan(expected)
        return both_nan or math.isclose(value, expected, rel_tol=1e-9, abs_tol=1e-12)
    return bool(value == expected)
