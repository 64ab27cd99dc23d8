"""The model envelope: a versioned, verifiable wrapper around a serialized model.

A pickle on a topic lets anyone who can write to that topic run code in every
consumer (faust's codecs module warns about exactly this), and a pickle written
by one library version may load wrongly in another. So a model travels as an
envelope, and a consumer deserializes the payload only after:

1. the envelope decodes and names a format this process supports;
2. the payload's sha256 matches the one in the envelope;
3. when a signing key is configured, the HMAC-SHA256 signature over every
   field but the payload (a canonical JSON of them, which includes the
   payload's checksum) matches, so no field -- input offsets, metrics,
   runtime -- can be altered and a forged version is refused;
4. the writer's Python and model-library versions, which the envelope must
   state, match this process's (major.minor), unless the caller allows a
   mismatch.

This module is the one owner of that decision: :func:`assess` checks an
envelope once against a :class:`TrustPolicy` and returns a :class:`Verdict`
that the registry, the publisher, the subscriber and the serving slot all act
on, and :func:`load_model` deserializes only an acceptable verdict's payload.
The size limit lives here too (:func:`encode_envelope` with ``max_bytes``).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import hmac
import json
import pickle
import platform
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from streamml.config import Settings
from streamml.errors import DecodeError, EnvelopeError, ModelTooLargeError
from streamml.records import MODEL_ENVELOPE_SCHEMA
from streamml.serde import AvroSerde, Headers, bundled_schema

__all__ = [
    "ENVELOPE_VERSION",
    "SUPPORTED_FORMATS",
    "ModelEnvelope",
    "TrustPolicy",
    "Verdict",
    "seal",
    "encode_envelope",
    "decode_envelope",
    "assess",
    "load_model",
    "verify",
    "open_envelope",
    "runtime_info",
    "envelope_headers",
]

ENVELOPE_VERSION = 1
SUPPORTED_FORMATS = frozenset({"pickle"})
_FLAVOR_PACKAGES = {"river": "river", "sklearn": "scikit-learn"}
#: A sha256 digest or HMAC-SHA256 signature as written by :func:`seal`.
_HEX_DIGEST = re.compile(r"[0-9a-f]{64}")

_serde: AvroSerde | None = None


def _envelope_serde() -> AvroSerde:
    global _serde
    if _serde is None:
        _serde = AvroSerde(bundled_schema(MODEL_ENVELOPE_SCHEMA))
    return _serde


@dataclass(frozen=True)
class ModelEnvelope:
    """One model version as it travels on the models topic."""

    model_name: str
    version: int
    created_at: int
    format: str
    flavor: str
    model_class: str
    metrics: dict[str, float]
    n_learned: int
    input_offsets: dict[str, int]
    runtime: dict[str, str]
    sha256: str
    payload: bytes = field(repr=False)
    signature: str | None = None
    envelope_version: int = ENVELOPE_VERSION

    def summary(self) -> dict[str, Any]:
        """Everything but the payload, for listings and logs."""
        return {
            "model_name": self.model_name,
            "version": self.version,
            "created_at": self.created_at,
            "format": self.format,
            "flavor": self.flavor,
            "model_class": self.model_class,
            "metrics": dict(self.metrics),
            "n_learned": self.n_learned,
            "input_offsets": dict(self.input_offsets),
            "runtime": dict(self.runtime),
            "sha256": self.sha256,
            "signed": self.signature is not None,
            "payload_bytes": len(self.payload),
        }


@functools.cache
def _runtime_info(flavor: str) -> tuple[tuple[str, str], ...]:
    # importlib.metadata reads files on every call; versions do not change at runtime.
    info = {"python": platform.python_version()}
    for package in ("streamml", "numpy", _FLAVOR_PACKAGES.get(flavor, flavor)):
        try:
            info[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return tuple(info.items())


def runtime_info(flavor: str) -> dict[str, str]:
    """Return the versions a payload of ``flavor`` depends on in this process."""
    return dict(_runtime_info(flavor))


def _signed_bytes(envelope: ModelEnvelope) -> bytes:
    """The canonical bytes the signature covers: every field but the payload and the signature.

    The payload itself is covered through ``sha256``. Sorted keys, no
    whitespace and ASCII-only output make it byte-for-byte reproducible from
    a decoded envelope (Avro round-trips every value exactly).
    """
    fields = {
        "envelope_version": envelope.envelope_version,
        "model_name": envelope.model_name,
        "version": envelope.version,
        "created_at": envelope.created_at,
        "format": envelope.format,
        "flavor": envelope.flavor,
        "model_class": envelope.model_class,
        "metrics": dict(envelope.metrics),
        "n_learned": envelope.n_learned,
        "input_offsets": dict(envelope.input_offsets),
        "runtime": dict(envelope.runtime),
        "sha256": envelope.sha256,
    }
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def _sign(key: str, data: bytes) -> str:
    return hmac.new(key.encode(), data, hashlib.sha256).hexdigest()


def seal(
    model: Any,
    *,
    model_name: str,
    version: int,
    flavor: str,
    metrics: Mapping[str, float] | None = None,
    n_learned: int = 0,
    input_offsets: Mapping[str, int] | None = None,
    signing_key: str | None = None,
    max_bytes: int | None = None,
    created_at: int | None = None,
) -> ModelEnvelope:
    """Serialize ``model`` into a checksummed (and optionally signed) envelope.

    Raises :class:`ModelTooLargeError` when the encoded envelope would exceed
    ``max_bytes``, so an oversized model fails at the publisher, not at a broker.
    """
    payload = pickle.dumps(model, protocol=5)
    digest = hashlib.sha256(payload).hexdigest()
    created = created_at if created_at is not None else int(time.time() * 1000)
    envelope = ModelEnvelope(
        model_name=model_name,
        version=version,
        created_at=created,
        format="pickle",
        flavor=flavor,
        model_class=f"{type(model).__module__}.{type(model).__qualname__}",
        metrics={k: float(v) for k, v in (metrics or {}).items()},
        n_learned=n_learned,
        input_offsets=dict(input_offsets or {}),
        runtime=runtime_info(flavor),
        sha256=digest,
        payload=payload,
    )
    if signing_key:
        envelope = dataclasses.replace(envelope, signature=_sign(signing_key, _signed_bytes(envelope)))
    if max_bytes is not None:
        encode_envelope(envelope, max_bytes=max_bytes)
    return envelope


def encode_envelope(envelope: ModelEnvelope, *, max_bytes: int | None = None) -> bytes:
    """Encode an envelope as Avro (send it with ``envelope_headers()``).

    With ``max_bytes``, raise :class:`ModelTooLargeError` when the encoded
    record is larger: the one place the models topic's size limit is checked.
    """
    record = envelope.summary()
    for derived in ("signed", "payload_bytes"):
        record.pop(derived)
    record.update(
        envelope_version=envelope.envelope_version,
        signature=envelope.signature,
        payload=envelope.payload,
    )
    value = _envelope_serde().encode(record)
    if max_bytes is not None and len(value) > max_bytes:
        raise ModelTooLargeError(
            model_name=envelope.model_name, version=envelope.version, size=len(value), limit=max_bytes
        )
    return value


def envelope_headers() -> list[tuple[str, bytes]]:
    """Headers that identify the envelope schema on the models topic."""
    return _envelope_serde().headers


def decode_envelope(value: bytes | None, headers: Headers) -> ModelEnvelope:
    """Decode an envelope; raise :class:`EnvelopeError` if it is not one."""
    try:
        record = _envelope_serde().decode(value, headers)
    except DecodeError as exc:
        raise EnvelopeError(f"not a model envelope ({exc.rule}): {exc}") from exc
    return ModelEnvelope(**record)


@dataclass(frozen=True)
class TrustPolicy:
    """What a reader of the models topic requires of an envelope before it loads it.

    ``signing_key`` set: only envelopes signed with it are authentic.
    ``allow_runtime_mismatch``: load payloads written by another Python or
    model-library minor version (unsafe for pickles; for tests and migrations).
    """

    signing_key: str | None = field(default=None, repr=False)
    allow_runtime_mismatch: bool = False

    @classmethod
    def from_settings(cls, settings: Settings, *, allow_runtime_mismatch: bool = False) -> TrustPolicy:
        key = settings.model_signing_key.get() if settings.model_signing_key else None
        return cls(signing_key=key, allow_runtime_mismatch=allow_runtime_mismatch)


@dataclass(frozen=True)
class Verdict:
    """The outcome of checking one envelope against a :class:`TrustPolicy`.

    ``authentic``: the envelope is well formed and its checksum and signature
    hold, whatever runtime wrote it; only authentic versions count in the
    version sequence. ``acceptable``: authentic and loadable by this process
    (runtime versions match, or the policy allows a mismatch). ``reason``
    says why it is not acceptable (``None`` when it is).
    """

    envelope: ModelEnvelope = field(repr=False)
    authentic: bool
    acceptable: bool
    reason: str | None

    @property
    def version(self) -> int:
        return self.envelope.version

    @property
    def model_name(self) -> str:
        return self.envelope.model_name


def assess(envelope: ModelEnvelope, policy: TrustPolicy) -> Verdict:
    """Check format, checksum, signature and runtime once; never deserializes the payload."""
    problem = _authenticity_problem(envelope, policy.signing_key)
    if problem is not None:
        return Verdict(envelope, authentic=False, acceptable=False, reason=problem)
    if not policy.allow_runtime_mismatch:
        problem = _runtime_problem(envelope)
        if problem is not None:
            return Verdict(envelope, authentic=True, acceptable=False, reason=problem)
    return Verdict(envelope, authentic=True, acceptable=True, reason=None)


def _authenticity_problem(envelope: ModelEnvelope, signing_key: str | None) -> str | None:
    name = f"{envelope.model_name} v{envelope.version}"
    if envelope.envelope_version != ENVELOPE_VERSION:
        return f"{name}: envelope version {envelope.envelope_version} is not supported"
    if envelope.format not in SUPPORTED_FORMATS:
        return f"{name}: payload format {envelope.format!r} is not supported"
    if envelope.flavor not in _FLAVOR_PACKAGES:
        return f"{name}: model flavor {envelope.flavor!r} is not supported"
    # Avro strings may hold any Unicode, and hmac.compare_digest raises TypeError
    # on non-ASCII str: check the shape first, then compare bytes.
    if not _is_hex_digest(envelope.sha256):
        return f"{name}: sha256 {envelope.sha256[:16]!r} is not 64 lowercase hex digits"
    if envelope.signature is not None and not _is_hex_digest(envelope.signature):
        return f"{name}: signature {envelope.signature[:16]!r} is not 64 lowercase hex digits"
    actual = hashlib.sha256(envelope.payload).hexdigest()
    if not hmac.compare_digest(actual.encode("ascii"), envelope.sha256.encode("ascii")):
        return f"{name}: payload sha256 {actual[:12]}… does not match the envelope's {envelope.sha256[:12]}…"
    if signing_key:
        if envelope.signature is None:
            return f"{name}: envelope is not signed and a signing key is configured"
        expected = _sign(signing_key, _signed_bytes(envelope))
        if not hmac.compare_digest(expected.encode("ascii"), envelope.signature.encode("ascii")):
            return f"{name}: signature does not match (wrong key or tampered envelope)"
    return None


def _runtime_problem(envelope: ModelEnvelope) -> str | None:
    name = f"{envelope.model_name} v{envelope.version}"
    here = runtime_info(envelope.flavor)
    # Loop over what this process requires, not over what the envelope chose
    # to declare: an envelope that omits a version is refused.
    for package in ("python", _FLAVOR_PACKAGES[envelope.flavor]):
        theirs = envelope.runtime.get(package)
        ours = here.get(package)
        if theirs is None:
            return (
                f"{name}: envelope does not say which {package} version wrote it; "
                "pickled models are not portable across versions"
            )
        if ours is None:
            return f"{name}: written with {package} {theirs}, which is not installed here"
        if _minor(ours) != _minor(theirs):
            return (
                f"{name}: written with {package} {theirs}, this process has {ours}; "
                "pickled models are not portable across versions"
            )
    return None


def verify(envelope: ModelEnvelope, *, signing_key: str | None = None, allow_runtime_mismatch: bool = False) -> None:
    """Raise :class:`EnvelopeError` with the reason unless the envelope is acceptable (see :func:`assess`)."""
    verdict = assess(envelope, TrustPolicy(signing_key, allow_runtime_mismatch))
    if not verdict.acceptable:
        raise EnvelopeError(verdict.reason or "envelope refused")


def _is_hex_digest(value: object) -> bool:
    return isinstance(value, str) and _HEX_DIGEST.fullmatch(value) is not None


def _minor(version: str) -> tuple[str, ...]:
    return tuple(version.split(".")[:2])


def load_model(verdict: Verdict) -> Any:
    """Deserialize the payload of an acceptable verdict and return its model.

    Raises :class:`EnvelopeError` for a verdict that is not acceptable (the
    payload is never touched then), a payload that does not load, or a model
    without ``predict_one``.
    """
    envelope = verdict.envelope
    if not verdict.acceptable:
        raise EnvelopeError(verdict.reason or f"{envelope.model_name} v{envelope.version}: refused")
    try:
        model = pickle.loads(envelope.payload)  # noqa: S301 - checksum and signature verified by assess()
    except Exception as exc:
        raise EnvelopeError(f"{envelope.model_name} v{envelope.version}: payload does not load: {exc}") from exc
    if not callable(getattr(model, "predict_one", None)):
        raise EnvelopeError(
            f"{envelope.model_name} v{envelope.version}: {envelope.model_class} has no predict_one()"
        )
    return model


def open_envelope(
    envelope: ModelEnvelope, *, signing_key: str | None = None, allow_runtime_mismatch: bool = False
) -> Any:
    """Assess the envelope, then deserialize and return its model (see :func:`load_model`)."""
    return load_model(assess(envelope, TrustPolicy(signing_key, allow_runtime_mismatch)))
