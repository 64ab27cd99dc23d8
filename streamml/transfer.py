"""Model payloads larger than one Kafka record: chunks under a signed manifest.

Apache Kafka refuses records over ``message.max.bytes`` (about 1 MB by
default), and a Hoeffding tree or a random forest grows past that. Such a
payload is cut into :class:`ModelChunk` records, sent in index order to the
models topic's one partition, followed by the manifest: the ordinary model
envelope with an empty inline payload, listing the sha256 and size of every
chunk (and of the whole payload) and signed like any envelope. So the chunks
need no signature of their own: the manifest vouches for each of them.

Chosen over a claim check in an external store because the models topic is
then still the one registry and the one delivery channel: no second system to
secure, back up and keep consistent with the topic.

:class:`Reassembler` is the consumer side. A manifest is completed only when
its transfer's chunks arrived whole, in order, before it, each matching its
listed digest, from the same model and version: a partial, corrupted,
reordered or mixed transfer is refused with the reason, never activated.
Buffered chunks are bounded in bytes; the oldest incomplete transfers are
dropped first.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import uuid
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field

from streamml.envelope import ModelEnvelope
from streamml.errors import EnvelopeError
from streamml.records import MODEL_CHUNK_SCHEMA
from streamml.serde import AvroSerde, Headers, bundled_schema

__all__ = ["ModelChunk", "new_transfer_id", "split_payload", "chunk_envelope", "chunk_serde", "Reassembler"]

logger = logging.getLogger(__name__)

@functools.cache
def chunk_serde() -> AvroSerde:
    """The Avro codec of chunk records (its headers tell them from envelopes on the topic)."""
    return AvroSerde(bundled_schema(MODEL_CHUNK_SCHEMA))


@dataclass(frozen=True)
class ModelChunk:
    """One piece of a payload: ``index`` of ``count`` pieces of transfer ``transfer_id``."""

    model_name: str
    version: int
    transfer_id: str
    index: int
    count: int
    data: bytes = field(repr=False)

    def encode(self) -> bytes:
        return chunk_serde().encode(
            {
                "model_name": self.model_name,
                "version": self.version,
                "transfer_id": self.transfer_id,
                "index": self.index,
                "count": self.count,
                "data": self.data,
            }
        )

    @classmethod
    def decode(cls, value: bytes | None, headers: Headers) -> ModelChunk:
        """Decode a chunk record; :class:`DecodeError` if it is not one."""
        return cls(**chunk_serde().decode(value, headers))


def new_transfer_id() -> str:
    return uuid.uuid4().hex


def split_payload(payload: bytes, chunk_size: int) -> list[bytes]:
    """Cut ``payload`` into pieces of at most ``chunk_size`` bytes (at least one piece)."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    return [payload[i : i + chunk_size] for i in range(0, len(payload), chunk_size)] or [b""]


def chunk_envelope(envelope: ModelEnvelope, chunk_size: int) -> tuple[list[ModelChunk], ModelEnvelope]:
    """Cut an envelope's payload into chunks; return them and the manifest (unsigned: sign it last).

    Send the chunks in order, then the signed manifest, to the one partition
    of the models topic.
    """
    pieces = split_payload(envelope.payload, chunk_size)
    transfer_id = new_transfer_id()
    chunks = [
        ModelChunk(envelope.model_name, envelope.version, transfer_id, index, len(pieces), piece)
        for index, piece in enumerate(pieces)
    ]
    manifest = dataclasses.replace(
        envelope,
        payload=b"",
        chunks=tuple((digest(p), len(p)) for p in pieces),
        transfer_id=transfer_id,
        key_id=None,
        signature=None,
    )
    return chunks, manifest


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class _Transfer:
    model_name: str
    version: int
    count: int
    pieces: list[bytes] = field(default_factory=list)
    size: int = 0
    #: Why the transfer cannot complete (first problem seen), ``None`` while it is fine.
    broken: str | None = None


class Reassembler:
    """Collect chunks and complete manifests (consumer side of a chunked transfer).

    ``max_bytes`` bounds the chunk data held at once (and so the largest
    model a consumer accepts); past it the oldest incomplete transfers are
    dropped. Not thread-safe: one reader feeds it in topic order.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._transfers: OrderedDict[str, _Transfer] = OrderedDict()
        self._held = 0

    @property
    def held_bytes(self) -> int:
        return self._held

    def __iter__(self) -> Iterator[str]:
        return iter(self._transfers)

    def add(self, chunk: ModelChunk) -> None:
        """Take one chunk; a chunk that breaks its transfer's order or size marks it broken."""
        transfer = self._transfers.get(chunk.transfer_id)
        if transfer is None:
            transfer = self._transfers[chunk.transfer_id] = _Transfer(chunk.model_name, chunk.version, chunk.count)
        if transfer.broken is not None:
            return
        if (chunk.model_name, chunk.version, chunk.count) != (transfer.model_name, transfer.version, transfer.count):
            transfer.broken = (
                f"chunk {chunk.index} claims {chunk.model_name} v{chunk.version} ({chunk.count} chunks), "
                f"the transfer began as {transfer.model_name} v{transfer.version} ({transfer.count} chunks)"
            )
        elif chunk.index != len(transfer.pieces):
            transfer.broken = f"chunk {chunk.index} arrived where chunk {len(transfer.pieces)} was expected"
        elif transfer.size + len(chunk.data) > self.max_bytes:
            transfer.broken = f"the transfer exceeds the {self.max_bytes}-byte model size limit"
        if transfer.broken is not None:
            self._release(transfer)
            logger.warning("model transfer %s refused: %s", chunk.transfer_id, transfer.broken)
            return
        transfer.pieces.append(chunk.data)
        transfer.size += len(chunk.data)
        self._held += len(chunk.data)
        self._bound(keep=chunk.transfer_id)

    def complete(
        self, *, transfer_id: str, model_name: str, version: int, chunks: list[tuple[str, int]], sha256: str
    ) -> bytes:
        """Return the whole payload a manifest describes, or raise :class:`EnvelopeError` saying why not.

        ``chunks`` are the manifest's ``(sha256, size)`` per chunk. The
        transfer is forgotten either way.
        """
        name = f"{model_name} v{version}"
        transfer = self._transfers.pop(transfer_id, None)
        if transfer is None:
            raise EnvelopeError(
                f"{name}: none of the {len(chunks)} chunks of transfer {transfer_id} arrived before its manifest"
            )
        # Keep the pieces: releasing the transfer's bytes empties its list.
        pieces = transfer.pieces
        self._release(transfer)
        if transfer.broken is not None:
            raise EnvelopeError(f"{name}: transfer {transfer_id} is broken: {transfer.broken}")
        if (transfer.model_name, transfer.version) != (model_name, version):
            raise EnvelopeError(
                f"{name}: transfer {transfer_id} holds chunks of {transfer.model_name} v{transfer.version}"
            )
        if transfer.count != len(chunks) or len(pieces) != len(chunks):
            raise EnvelopeError(f"{name}: {len(pieces)} of {len(chunks)} chunks arrived (partial transfer)")
        for index, (piece, (expected, size)) in enumerate(zip(pieces, chunks, strict=True)):
            if len(piece) != size or digest(piece) != expected:
                raise EnvelopeError(f"{name}: chunk {index} does not match the manifest (corrupted or replaced)")
        payload = b"".join(pieces)
        if digest(payload) != sha256:
            raise EnvelopeError(f"{name}: the reassembled payload does not match the manifest's sha256")
        return payload

    def discard(self, transfer_id: str) -> None:
        """Forget a transfer (its manifest was refused)."""
        transfer = self._transfers.pop(transfer_id, None)
        if transfer is not None:
            self._release(transfer)

    def _release(self, transfer: _Transfer) -> None:
        self._held -= transfer.size
        transfer.pieces = []
        transfer.size = 0

    def _bound(self, keep: str) -> None:
        for transfer_id in list(self._transfers):
            if self._held <= self.max_bytes:
                return
            if transfer_id == keep:
                continue
            dropped = self._transfers.pop(transfer_id)
            self._release(dropped)
            logger.warning(
                "dropped the incomplete transfer %s of %s v%d: buffered chunks exceed %d bytes",
                transfer_id, dropped.model_name, dropped.version, self.max_bytes,
            )
