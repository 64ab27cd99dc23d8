"""Reading the models topic: envelopes, chunks and directives, in topic order.

The models topic (one partition, history kept) holds three kinds of record,
told apart by their schema header: model envelopes (:mod:`streamml.envelope`),
payload chunks of large models (:mod:`streamml.transfer`) and serving
directives (:mod:`streamml.model_control`). :class:`ModelsTopicFolder` turns
the records of one model name into events, assessing each envelope once:

- :class:`VersionEvent`: a version (an inline envelope or a completed manifest)
  with its :class:`~streamml.trust.Verdict`;
- :class:`ControlEvent`: a directive, with ``problem`` set when it must not be
  obeyed (bad signature, replayed, ...);
- :class:`RecordRefused`: a record that is none of these.

The registry (``streamml models list``), the publisher and every subscriber
read the topic through it, so they agree on what each record is.
"""

from __future__ import annotations

from dataclasses import dataclass

from streamml.envelope import decode_envelope, envelope_serde
from streamml.errors import DecodeError, EnvelopeError
from streamml.model_control import ControlRecord, control_serde
from streamml.serde import SCHEMA_HEADER, Headers, header_value
from streamml.transfer import ModelChunk, Reassembler, chunk_serde
from streamml.trust import TrustPolicy, Verdict, assess, manifest_problem, refused

__all__ = ["VersionEvent", "ControlEvent", "RecordRefused", "ModelsTopicEvent", "ModelsTopicFolder"]


@dataclass(frozen=True)
class VersionEvent:
    offset: int
    #: Offset of the version's first record (its first chunk, or the envelope itself).
    start_offset: int
    verdict: Verdict


@dataclass(frozen=True)
class ControlEvent:
    offset: int
    record: ControlRecord
    #: Why the directive must not be obeyed; ``None`` when it verified.
    problem: str | None


@dataclass(frozen=True)
class RecordRefused:
    offset: int
    model_name: str | None
    reason: str


ModelsTopicEvent = VersionEvent | ControlEvent | RecordRefused


def _fingerprint(headers: Headers) -> bytes | None:
    return header_value(headers, SCHEMA_HEADER)


class ModelsTopicFolder:
    """Turn models-topic records into events (one instance per reader, fed in topic order).

    ``model_name=None`` keeps every model's records. Chunks are held by a
    :class:`~streamml.transfer.Reassembler` bounded by ``max_bytes``.
    """

    def __init__(self, policy: TrustPolicy, *, model_name: str | None = None, max_bytes: int = 256_000_000) -> None:
        self.policy = policy
        self.model_name = model_name
        self.reassembler = Reassembler(max_bytes)
        self._chunk_starts: dict[str, int] = {}
        self._kinds = {
            envelope_serde().reader.fingerprint.encode(): "envelope",
            chunk_serde().reader.fingerprint.encode(): "chunk",
            control_serde().reader.fingerprint.encode(): "control",
        }

    def _ours(self, name: str | None) -> bool:
        return self.model_name is None or name == self.model_name

    def feed(self, offset: int, key: bytes | None, value: bytes | None, headers: Headers) -> ModelsTopicEvent | None:
        """The event one record makes, or ``None`` (a chunk, or another model's record)."""
        key_name = key.decode("utf-8", errors="replace") if key is not None else None
        kind = self._kinds.get(_fingerprint(headers) or b"")
        try:
            if kind == "chunk":
                chunk = ModelChunk.decode(value, headers)
                if self._ours(chunk.model_name):
                    self._chunk_starts.setdefault(chunk.transfer_id, offset)
                    self.reassembler.add(chunk)
                return None
            if kind == "control":
                record = ControlRecord.decode(value, headers)
                if not self._ours(record.model_name):
                    return None
                return ControlEvent(offset, record, record.problem(self.policy))
            envelope = decode_envelope(value, headers)
        except (EnvelopeError, DecodeError) as exc:
            # Only this model's records (or unkeyed ones) are ours to refuse.
            if key_name is None or self._ours(key_name):
                return RecordRefused(offset, key_name, str(exc))
            return None
        if not self._ours(envelope.model_name):
            return None
        start = offset
        if envelope.chunked:
            start = self._chunk_starts.pop(envelope.transfer_id, offset)
            # Only a manifest whose own fields verify is worth reassembling.
            problem = manifest_problem(envelope, self.policy)
            if problem is not None:
                self.reassembler.discard(envelope.transfer_id)
                return VersionEvent(offset, start, refused(envelope, problem, self.policy))
            try:
                payload = self.reassembler.complete(
                    transfer_id=envelope.transfer_id,
                    model_name=envelope.model_name,
                    version=envelope.version,
                    chunks=list(envelope.chunks),
                    sha256=envelope.sha256,
                )
            except EnvelopeError as exc:
                return VersionEvent(offset, start, refused(envelope, str(exc), self.policy))
            envelope = envelope.with_payload(payload)
        return VersionEvent(offset, start, assess(envelope, self.policy))
