"""Serving directives on the models topic: rollback, pin and unpin, signed like models.

``streamml models rollback NAME --to V`` and ``streamml models pin NAME V``
write a :class:`ControlRecord` on the models topic; every consumer (the SDK,
the scorer, ``streamml serve``) folds the topic in order into a
:class:`ServingState` and serves what it says:

- **latest** (the default): the newest acceptable version;
- **pinned** to V: exactly V, whatever is published after, until ``unpin``;
- **rolled back** to V: V now; every version published before the rollback
  and newer than V is withdrawn (never served again); versions published
  after the rollback are served as usual.

A control record is obeyed only if its signature verifies against the
consumer's keyring (in development mode an unsigned one is accepted too) and
its ``sequence`` is higher than that of the last one applied for the model,
so a replayed old directive is refused. Because the state is folded from the
topic, a restarted consumer comes back in the same state.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from dataclasses import dataclass, field

from streamml.errors import DecodeError, EnvelopeError
from streamml.records import MODEL_CONTROL_SCHEMA
from streamml.serde import AvroSerde, Headers, bundled_schema
from streamml.signing import SigningKey
from streamml.trust import TrustPolicy

__all__ = ["ACTIONS", "ControlRecord", "control_serde", "ServingState"]

ACTIONS = ("rollback", "pin", "unpin")

@functools.cache
def control_serde() -> AvroSerde:
    return AvroSerde(bundled_schema(MODEL_CONTROL_SCHEMA))


@dataclass(frozen=True)
class ControlRecord:
    """One serving directive for one model name."""

    model_name: str
    action: str
    version: int | None
    sequence: int
    issued_at: int = field(default_factory=lambda: int(time.time() * 1000))
    reason: str = ""
    key_id: str | None = None
    signature: bytes | None = field(default=None, repr=False)

    def signed_bytes(self) -> bytes:
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "signature"}
        return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")

    def signed_by(self, signer: SigningKey) -> ControlRecord:
        keyed = dataclasses.replace(self, key_id=signer.key_id, signature=None)
        return dataclasses.replace(keyed, signature=signer.sign(keyed.signed_bytes()))

    def encode(self) -> bytes:
        return control_serde().encode(dataclasses.asdict(self))

    @classmethod
    def decode(cls, value: bytes | None, headers: Headers) -> ControlRecord:
        """Decode a control record; :class:`EnvelopeError` if it is not one."""
        try:
            return cls(**control_serde().decode(value, headers))
        except DecodeError as exc:
            raise EnvelopeError(f"not a model control record ({exc.rule}): {exc}") from exc

    def describe(self) -> str:
        target = "" if self.version is None else f" v{self.version}"
        return f"{self.action}{target} of {self.model_name} (#{self.sequence})"

    def problem(self, policy: TrustPolicy) -> str | None:
        """Why this record must not be obeyed (shape and signature), ``None`` if it may."""
        if self.action not in ACTIONS:
            return f"{self.describe()}: unknown action (expected one of {ACTIONS})"
        if (self.version is None) != (self.action == "unpin"):
            return f"{self.describe()}: {self.action} {'takes no' if self.action == 'unpin' else 'needs a'} version"
        if self.signature is None and self.key_id is None:
            if policy.development_mode:
                return None
            return f"{self.describe()}: unsigned; only directives signed by a trusted key are obeyed"
        found = policy.keyring.verify(self.key_id, self.signature, self.signed_bytes())
        return None if found is None else f"{self.describe()}: {found}"


@dataclass
class ServingState:
    """Which version consumers of one model should serve, folded from the models topic in order."""

    pinned: int | None = None
    rolled_back_to: int | None = None
    #: Versions withdrawn by a rollback: never served again.
    withdrawn: set[int] = field(default_factory=set)
    #: Authentic versions seen so far, in topic order.
    seen: list[int] = field(default_factory=list)
    last_sequence: int = 0

    def saw_version(self, version: int) -> None:
        """Record an authentic version of the model (acceptable here or not)."""
        self.seen.append(version)

    def apply(self, record: ControlRecord, acceptable: set[int]) -> str | None:
        """Apply a verified directive; return why it is refused (state unchanged) or ``None``.

        ``acceptable`` are the versions this consumer could load: a rollback
        or pin to another version is refused, and the current model keeps serving.
        """
        if record.sequence <= self.last_sequence:
            return f"{record.describe()}: sequence is not after #{self.last_sequence} (replayed directive?)"
        if record.version is not None and record.version not in acceptable:
            return f"{record.describe()}: v{record.version} is not a version this consumer can load"
        self.last_sequence = record.sequence
        if record.action == "pin":
            self.pinned = record.version
        elif record.action == "unpin":
            self.pinned = None
        else:  # rollback
            assert record.version is not None
            self.pinned = None
            self.rolled_back_to = record.version
            self.withdrawn |= {v for v in self.seen if v > record.version}
            self.withdrawn.discard(record.version)
        return None

    def choose(self, acceptable: set[int]) -> int | None:
        """The version to serve among ``acceptable`` ones (``None`` when there is none)."""
        if self.pinned is not None:
            return self.pinned if self.pinned in acceptable else None
        candidates = acceptable - self.withdrawn
        return max(candidates) if candidates else None

    def mode_for(self, serving: int | None) -> str:
        """Why ``serving`` serves: ``pinned``, ``rolled_back`` (it is the rollback target) or ``latest``."""
        if self.pinned is not None:
            return "pinned"
        if self.rolled_back_to is not None and serving == self.rolled_back_to:
            return "rolled_back"
        return "latest"

    def next_sequence(self) -> int:
        return self.last_sequence + 1
