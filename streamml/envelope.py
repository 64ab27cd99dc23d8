"""The model envelope: one model version as it travels on the models topic.

A model travels in an envelope: name, version, lineage, metrics, the input
offsets it learned up to, the runtime that wrote it, a few golden examples
(real inputs and the answers the model gave for them), the payload's sha256
and an Ed25519 signature over a canonical encoding of every field but the
payload (the digest covers the payload). Whether a consumer may load it is
decided in :mod:`streamml.trust`; how a large payload travels in chunks, in
:mod:`streamml.transfer`.

Payload formats: river models are pickled (protocol 5) and loaded through a
restricted unpickler; scikit-learn models are written with skops. A payload
is never deserialized before the envelope is verified.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import pickle
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from streamml.errors import EnvelopeError, ModelTooLargeError
from streamml.records import MODEL_ENVELOPE_SCHEMA, Label
from streamml.serde import AvroSerde, Headers, bundled_schema
from streamml.signing import SigningKey

__all__ = [
    "ENVELOPE_VERSION",
    "MAX_VERSION",
    "GOLDEN_EXAMPLES",
    "FLAVOR_FORMATS",
    "FLAVOR_PACKAGES",
    "GoldenExample",
    "ModelEnvelope",
    "seal",
    "sign",
    "signed_bytes",
    "encode_envelope",
    "decode_envelope",
    "envelope_headers",
    "envelope_serde",
    "runtime_info",
    "serving_model",
    "probability_method",
]

ENVELOPE_VERSION = 2
#: Highest version number a publisher writes or a consumer accepts: far inside
#: Avro's long, so no arithmetic on versions can ever overflow it.
MAX_VERSION = 2**48
#: Serialization format of each model flavor.
FLAVOR_FORMATS = {"river": "pickle", "sklearn": "skops"}
#: The distribution whose version a payload of each flavor depends on.
FLAVOR_PACKAGES = {"river": "river", "sklearn": "scikit-learn"}
#: Golden examples a publisher records by default.
GOLDEN_EXAMPLES = 8

@functools.cache
def envelope_serde() -> AvroSerde:
    """The Avro codec of envelopes (its headers tell envelopes from other models-topic records)."""
    return AvroSerde(bundled_schema(MODEL_ENVELOPE_SCHEMA))


@dataclass(frozen=True)
class GoldenExample:
    """One real input and what the model answered for it when it was published."""

    features: dict[str, float]
    prediction: Label
    probabilities: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelEnvelope:
    """One model version as it travels on the models topic.

    ``chunks`` is empty when the payload travels inline; otherwise the record
    is a manifest and ``payload`` stays empty until the chunks are
    reassembled (:meth:`with_payload`).
    """

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
    payload_size: int
    payload: bytes = field(repr=False)
    kind: str = "online"
    lineage: dict[str, str] = field(default_factory=dict)
    feature_names: tuple[str, ...] = ()
    golden: tuple[GoldenExample, ...] = ()
    chunks: tuple[tuple[str, int], ...] = ()
    transfer_id: str = ""
    key_id: str | None = None
    signature: bytes | None = field(default=None, repr=False)
    envelope_version: int = ENVELOPE_VERSION

    @property
    def chunked(self) -> bool:
        return bool(self.chunks)

    @property
    def signed(self) -> bool:
        return self.signature is not None

    def with_payload(self, payload: bytes) -> ModelEnvelope:
        """The same envelope carrying ``payload`` (a manifest's reassembled chunks)."""
        return dataclasses.replace(self, payload=payload)

    def summary(self) -> dict[str, Any]:
        """Everything but the payload, JSON-ready, for listings and ``models show``."""
        return {
            "model_name": self.model_name,
            "version": self.version,
            "created_at": self.created_at,
            "kind": self.kind,
            "format": self.format,
            "flavor": self.flavor,
            "model_class": self.model_class,
            "metrics": dict(self.metrics),
            "n_learned": self.n_learned,
            "input_offsets": dict(self.input_offsets),
            "lineage": dict(self.lineage),
            "feature_names": list(self.feature_names),
            "runtime": dict(self.runtime),
            "golden_examples": len(self.golden),
            "sha256": self.sha256,
            "payload_bytes": self.payload_size,
            "chunks": len(self.chunks),
            "signed": self.signed,
            "key_id": self.key_id,
        }


@functools.cache
def _runtime_info(flavor: str) -> tuple[tuple[str, str], ...]:
    # importlib.metadata reads files on every call; versions do not change at runtime.
    info = {"python": platform.python_version()}
    for package in ("streamml", "numpy", FLAVOR_PACKAGES.get(flavor, flavor)):
        try:
            info[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return tuple(info.items())


def runtime_info(flavor: str) -> dict[str, str]:
    """Return the versions a payload of ``flavor`` depends on in this process."""
    return dict(_runtime_info(flavor))


def signed_bytes(envelope: ModelEnvelope) -> bytes:
    """The canonical bytes the signature covers: every field but the payload and the signature.

    The payload is covered through ``sha256`` (and a chunked payload through
    each chunk's digest too). Sorted keys, no whitespace, ASCII-only output:
    byte for byte reproducible from a decoded envelope, since Avro
    round-trips every value exactly.
    """
    fields = {
        f.name: getattr(envelope, f.name)
        for f in dataclasses.fields(envelope)
        if f.name not in ("payload", "signature")
    }
    fields["golden"] = [dataclasses.asdict(g) for g in envelope.golden]
    fields["chunks"] = [list(c) for c in envelope.chunks]
    fields["feature_names"] = list(envelope.feature_names)
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def sign(envelope: ModelEnvelope, signer: SigningKey) -> ModelEnvelope:
    """Return ``envelope`` signed by ``signer`` (its key id written into the envelope first)."""
    keyed = dataclasses.replace(envelope, key_id=signer.key_id, signature=None)
    return dataclasses.replace(keyed, signature=signer.sign(signed_bytes(keyed)))


def serving_model(model: Any, flavor: str, feature_names: Sequence[str]) -> Any:
    """The object that answers ``predict_one``: the model itself, or a scikit-learn adapter."""
    if flavor == "sklearn":
        from streamml.sklearn_format import SklearnModel

        return SklearnModel(model, feature_names)
    return model


def _serialize(model: Any, flavor: str) -> bytes:
    if flavor == "river":
        try:
            return pickle.dumps(model, protocol=5)
        except (pickle.PicklingError, AttributeError, TypeError) as exc:
            raise EnvelopeError(f"the {type(model).__name__} model cannot be serialized: {exc}") from exc
    if flavor == "sklearn":
        from streamml.sklearn_format import dump_sklearn

        return dump_sklearn(model)
    raise EnvelopeError(f"model flavor {flavor!r} is not supported (expected one of {sorted(FLAVOR_FORMATS)})")


def probability_method(model: Any) -> Callable[[dict[str, Any]], Mapping[Any, float]] | None:
    """``model.predict_proba_one`` when it gives probabilities, else ``None`` (a regressor).

    A river pipeline has ``predict_proba_one`` whatever its last step is, and
    raises when that step is a regressor: the last step tells.
    """
    final = getattr(model, "_last_step", model)
    if not callable(getattr(final, "predict_proba_one", None)):
        return None
    method: Callable[[dict[str, Any]], Mapping[Any, float]] | None = getattr(model, "predict_proba_one", None)
    return method if callable(method) else None


def _golden(model: Any, inputs: Sequence[Mapping[str, float]]) -> tuple[GoldenExample, ...]:
    from streamml.records import avro_label

    examples = []
    proba = probability_method(model)
    for x in inputs:
        features = {str(k): float(v) for k, v in x.items()}
        probabilities = {str(k): float(v) for k, v in proba(features).items()} if proba is not None else {}
        examples.append(GoldenExample(features, avro_label(model.predict_one(features)), probabilities))
    return tuple(examples)


def seal(
    model: Any,
    *,
    model_name: str,
    version: int,
    flavor: str,
    metrics: Mapping[str, float] | None = None,
    n_learned: int = 0,
    input_offsets: Mapping[str, int] | None = None,
    signer: SigningKey | None = None,
    golden_inputs: Sequence[Mapping[str, float]] = (),
    kind: str = "online",
    lineage: Mapping[str, str] | None = None,
    feature_names: Sequence[str] | None = None,
    created_at: int | None = None,
    max_bytes: int | None = None,
) -> ModelEnvelope:
    """Serialize ``model`` into a checksummed envelope, signed when ``signer`` is given.

    ``golden_inputs`` are real input rows: the model's answers for them are
    recorded, and a consumer activates the model only if it reproduces them.
    A scikit-learn model's ``feature_names`` default to its
    ``feature_names_in_``; an online model's are every feature name it has
    learned from (``streamml serve`` refuses requests naming others).
    Raises :class:`EnvelopeError` for a version outside 1..:data:`MAX_VERSION`
    and :class:`ModelTooLargeError` when the encoded envelope would exceed
    ``max_bytes``.
    """
    if not 1 <= version <= MAX_VERSION:
        raise EnvelopeError(f"{model_name}: version {version} is outside 1..{MAX_VERSION}")
    payload = _serialize(model, flavor)
    names: tuple[str, ...] = ()
    if flavor == "sklearn":
        from streamml.sklearn_format import feature_names as fitted_names

        found = list(feature_names) if feature_names is not None else fitted_names(model)
        if not found:
            raise EnvelopeError(f"{model_name}: a scikit-learn model needs feature names (fit it on a DataFrame)")
        names = tuple(found)
    elif feature_names is not None:
        # An online model has no fitted columns: the learner names what it has seen.
        names = tuple(feature_names)
    envelope = ModelEnvelope(
        model_name=model_name,
        version=version,
        created_at=created_at if created_at is not None else int(time.time() * 1000),
        format=FLAVOR_FORMATS[flavor],
        flavor=flavor,
        model_class=f"{type(model).__module__}.{type(model).__qualname__}",
        metrics={k: float(v) for k, v in (metrics or {}).items()},
        n_learned=n_learned,
        input_offsets=dict(input_offsets or {}),
        runtime=runtime_info(flavor),
        sha256=hashlib.sha256(payload).hexdigest(),
        payload_size=len(payload),
        payload=payload,
        kind=kind,
        lineage=dict(lineage or {}),
        feature_names=names,
        golden=_golden(serving_model(model, flavor, names), golden_inputs),
    )
    if signer is not None:
        envelope = sign(envelope, signer)
    if max_bytes is not None:
        encode_envelope(envelope, max_bytes=max_bytes)
    return envelope


def encode_envelope(envelope: ModelEnvelope, *, max_bytes: int | None = None) -> bytes:
    """Encode an envelope as Avro (send it with ``envelope_headers()``).

    With ``max_bytes``, raise :class:`ModelTooLargeError` when the encoded
    record is larger: the one place a record's size limit is checked.
    """
    record = {f.name: getattr(envelope, f.name) for f in dataclasses.fields(envelope)}
    record["feature_names"] = list(envelope.feature_names)
    record["golden"] = [dataclasses.asdict(g) for g in envelope.golden]
    record["chunks"] = [{"sha256": d, "size": s} for d, s in envelope.chunks]
    value = envelope_serde().encode(record)
    if max_bytes is not None and len(value) > max_bytes:
        raise ModelTooLargeError(
            model_name=envelope.model_name, version=envelope.version, size=len(value), limit=max_bytes
        )
    return value


def envelope_headers() -> list[tuple[str, bytes]]:
    """Headers that identify the envelope schema on the models topic."""
    return envelope_serde().headers


def decode_envelope(value: bytes | None, headers: Headers) -> ModelEnvelope:
    """Decode an envelope; raise :class:`EnvelopeError` if it is not one."""
    from streamml.errors import DecodeError

    try:
        record = envelope_serde().decode(value, headers)
    except DecodeError as exc:
        raise EnvelopeError(f"not a model envelope ({exc.rule}): {exc}") from exc
    record["feature_names"] = tuple(record["feature_names"])
    record["golden"] = tuple(GoldenExample(**g) for g in record["golden"])
    record["chunks"] = tuple((c["sha256"], c["size"]) for c in record["chunks"])
    return ModelEnvelope(**record)
