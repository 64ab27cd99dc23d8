"""Model versions and serving directives as recorded on the models topic.

The models topic is the registry: an append log, history kept, of model
envelopes (inline or as a manifest after its chunks) and signed serving
directives, read in order through :class:`~streamml.models_topic.ModelsTopicFolder`.
This module reads it to its end and says, for every record, what it is and
whether a subscriber would accept it, and which version consumers are told to
serve. The publisher (to continue the version sequence), ``streamml models
list|show|rollback|pin`` and the tests use it, so they agree on what "a
version" is.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from streamml.cluster import Cluster
from streamml.envelope import ModelEnvelope
from streamml.errors import ConfigError
from streamml.kafka import format_record, record_headers
from streamml.model_control import ControlRecord, ServingState
from streamml.models_topic import ControlEvent, ModelsTopicFolder, RecordRefused, VersionEvent
from streamml.reader import read_to_end
from streamml.trust import TrustPolicy, Verdict, unwithheld

__all__ = [
    "VersionRecord",
    "DirectiveRecord",
    "ModelHistory",
    "read_history",
    "read_versions",
    "next_version",
    "newest_authentic",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class VersionRecord:
    """One model version (or one undecodable record) of the models topic.

    ``reason`` is ``None`` when the envelope passes every check a subscriber
    makes before loading (signature, checksum, runtime); otherwise it says why
    it would be refused. ``authentic`` is narrower: the signature (by a
    trusted key) and checksum hold, whatever runtime wrote it. Only authentic
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
    verdict: Verdict | None = field(default=None, repr=False, compare=False)
    #: Offset of the version's first record (its first chunk when chunked).
    start_offset: int | None = None

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


@dataclass(frozen=True)
class DirectiveRecord:
    """A rollback, pin or unpin on the models topic, and why it is not obeyed (if it is not)."""

    offset: int
    record: ControlRecord
    problem: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "offset": self.offset,
            "model_name": self.record.model_name,
            "action": self.record.action,
            "version": self.record.version,
            "sequence": self.record.sequence,
            "issued_at": self.record.issued_at,
            "reason": self.record.reason,
            "key_id": self.record.key_id,
            "obeyed": self.problem is None,
            "problem": self.problem,
        }


@dataclass
class ModelHistory:
    """Everything on the models topic, in order, and the serving state of each model."""

    versions: list[VersionRecord] = field(default_factory=list)
    directives: list[DirectiveRecord] = field(default_factory=list)
    states: dict[str, ServingState] = field(default_factory=lambda: defaultdict(ServingState))

    def acceptable(self, model_name: str) -> set[int]:
        return {r.version for r in self.versions if r.model_name == model_name and r.reason is None and r.version}

    def served(self, model_name: str) -> int | None:
        """The version consumers of ``model_name`` are told to serve (``None`` when none is acceptable)."""
        return self.states[model_name].choose(self.acceptable(model_name))

    def model_names(self) -> list[str]:
        """The names of every model with at least one version on the topic, sorted."""
        return sorted({r.model_name for r in self.versions if r.model_name and r.version is not None})

    def require_model(self, model_name: str, topic: str) -> None:
        """Raise :class:`ConfigError` (with a "did you mean") unless ``model_name`` has a version.

        Read the history without a ``model_name`` filter first, or every
        other model is invisible and no suggestion can be made.
        """
        names = self.model_names()
        if model_name in names:
            return
        if not names:
            raise ConfigError(f"no model {model_name!r} on {topic}: it holds no versions yet; run 'streamml learn'")
        close = difflib.get_close_matches(model_name, names, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ConfigError(f"no model {model_name!r} on {topic}{hint}; models: {', '.join(names)}")


def read_history(
    cluster: Cluster,
    *,
    model_name: str | None = None,
    policy: TrustPolicy | None = None,
    timeout: float = 30.0,
) -> ModelHistory:
    """Read the models topic to its end (a missing topic reads as empty).

    Payloads are assessed with ``policy`` (default: from the cluster's
    settings) but never deserialized. Directives are applied to each model's
    :class:`ServingState` in topic order, as a subscriber applies them.
    """
    topic = cluster.topics.models
    policy = policy or TrustPolicy.from_settings(cluster.settings)
    folder = ModelsTopicFolder(policy, model_name=model_name, max_bytes=cluster.settings.max_model_total_bytes)
    history = ModelHistory()
    for message in read_to_end(cluster, topic, timeout=timeout):
        offset = message.offset()
        assert offset is not None  # read_to_end yields consumed records only
        event = folder.feed(offset, message.key(), message.value(), record_headers(message))
        if isinstance(event, RecordRefused):
            logger.debug("%s: %s", format_record(topic, 0, offset), event.reason)
            history.versions.append(VersionRecord(offset, event.model_name, None, None, event.reason, False))
        elif isinstance(event, VersionEvent):
            verdict = event.verdict
            envelope = verdict.envelope
            history.versions.append(
                VersionRecord(
                    offset, envelope.model_name, envelope.version, envelope.summary(), verdict.reason,
                    verdict.authentic, envelope, verdict, event.start_offset,
                )
            )
            if verdict.authentic:
                history.states[envelope.model_name].saw_version(envelope.version)
        elif isinstance(event, ControlEvent):
            name = event.record.model_name
            problem = event.problem or history.states[name].apply(event.record, history.acceptable(name))
            history.directives.append(DirectiveRecord(offset, event.record, problem))
    return history


def read_versions(
    cluster: Cluster,
    *,
    model_name: str | None = None,
    policy: TrustPolicy | None = None,
    timeout: float = 30.0,
) -> list[VersionRecord]:
    """Return every version record of the models topic, in topic order (see :func:`read_history`)."""
    return read_history(cluster, model_name=model_name, policy=policy, timeout=timeout).versions


def next_version(records: list[VersionRecord], model_name: str) -> int:
    """Return the version number the next publish of ``model_name`` should use.

    One more than the highest authentic version, so numbering is monotonic
    across publisher restarts; 1 when there is none. Unverified records never count.
    """
    versions = [r.version for r in records if r.authentic and r.model_name == model_name and r.version is not None]
    return max(versions, default=0) + 1


def newest_authentic(records: list[VersionRecord], model_name: str) -> list[VersionRecord]:
    """Return ``model_name``'s resumable records, newest version first.

    Those are the acceptable ones (``status == "ok"``) and the ones only the
    quality gate withheld from serving (loadable here: their learner may
    continue from them); their verdicts are made loadable
    (:func:`~streamml.trust.unwithheld`).
    """
    ok = [
        dataclasses.replace(r, verdict=unwithheld(r.verdict))
        for r in records
        if r.model_name == model_name and r.verdict is not None and (r.reason is None or r.verdict.withheld)
    ]
    return sorted(ok, key=lambda r: (r.version or 0, r.offset), reverse=True)
