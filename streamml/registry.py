"""Model versions as recorded on the models topic.

The models topic is an append log of :class:`~streamml.envelope.ModelEnvelope`
records keyed by model name (compacted on real Kafka, so only the newest
versions may survive there). This module reads it to its end and says, for
every record, what it is and whether a subscriber would accept it. Both the
publisher (to continue the version sequence) and ``streamml models list``
use it, so they agree on what "a version" is.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from streamml.cluster import Cluster
from streamml.envelope import ModelEnvelope, TrustPolicy, Verdict, assess, decode_envelope
from streamml.errors import EnvelopeError
from streamml.kafka import format_record
from streamml.reader import read_to_end

__all__ = ["VersionRecord", "classify", "read_versions", "next_version", "newest_authentic"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class VersionRecord:
    """One record of the models topic.

    ``reason`` is ``None`` when the envelope passes every check a subscriber
    makes (format, checksum, signature, runtime); otherwise it says why it
    would be refused. ``authentic`` is narrower: the record decodes and its
    checksum and signature hold, whatever runtime wrote it. Only authentic
    records count towards the version sequence, so a forged record cannot
    push the numbering around.
    """

    offset: int
    model_name: str | None
    version: int | None
    summary: dict[str, Any] | None
    reason: str | None
    authentic: bool
    envelope: ModelEnvelope | None = field(default=None, repr=False, compare=False)
    #: The envelope's verdict (``None`` when the record is not an envelope).
    verdict: Verdict | None = field(default=None, repr=False, compare=False)

    @property
    def status(self) -> str:
        """``"ok"`` or ``"refused"``."""
        return "ok" if self.reason is None else "refused"

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready view (no payload)."""
        return {
            "offset": self.offset,
            "model_name": self.model_name,
            "version": self.version,
            "status": self.status,
            "reason": self.reason,
            "authentic": self.authentic,
            "envelope": self.summary,
        }


def classify(offset: int, key: bytes | None, value: bytes | None, headers: Any, policy: TrustPolicy) -> VersionRecord:
    """Decode and assess one models-topic record without unpickling its payload."""
    key_name = key.decode("utf-8", errors="replace") if key is not None else None
    try:
        envelope = decode_envelope(value, headers)
    except EnvelopeError as exc:
        return VersionRecord(offset, key_name, None, None, str(exc), authentic=False)
    verdict = assess(envelope, policy)
    return VersionRecord(
        offset, envelope.model_name, envelope.version, envelope.summary(), verdict.reason, verdict.authentic,
        envelope, verdict,
    )


def read_versions(
    cluster: Cluster,
    *,
    model_name: str | None = None,
    policy: TrustPolicy | None = None,
    timeout: float = 30.0,
) -> list[VersionRecord]:
    """Return every record of the models topic, in topic order.

    With ``model_name``, only that model's records are returned (an
    undecodable record is kept when its key names the model, or it has no key).
    Payloads are assessed with ``policy`` (default: the cluster settings'
    signing key) but never deserialized. A missing models topic reads as empty.
    """
    topic = cluster.topics.models
    policy = policy or TrustPolicy.from_settings(cluster.settings)
    records: list[VersionRecord] = []
    for message in read_to_end(cluster, topic, timeout=timeout):
        partition, offset = message.partition(), message.offset()
        assert partition is not None and offset is not None  # read_to_end yields consumed records only
        record = classify(offset, message.key(), message.value(), message.headers(), policy)
        if record.reason is not None:
            logger.debug("%s: %s", format_record(topic, partition, offset), record.reason)
        if model_name is None or record.model_name in (model_name, None):
            records.append(record)
    return records


def next_version(records: list[VersionRecord], model_name: str) -> int:
    """Return the version number the next publish of ``model_name`` should use.

    One more than the highest authentic version, so numbering is monotonic
    across publisher restarts; 1 when there is none.
    """
    versions = [r.version for r in records if r.authentic and r.model_name == model_name and r.version is not None]
    return max(versions, default=0) + 1


def newest_authentic(records: list[VersionRecord], model_name: str) -> list[VersionRecord]:
    """Return ``model_name``'s acceptable records (``status == "ok"``), newest version first."""
    ok = [r for r in records if r.reason is None and r.model_name == model_name and r.verdict is not None]
    return sorted(ok, key=lambda r: (r.version or 0, r.offset), reverse=True)
