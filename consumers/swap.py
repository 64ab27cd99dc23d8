"""The serving slot: which model answers, and the rules for replacing it.

Kept apart from the Kafka thread so the swap rules are testable without a
broker. A candidate envelope is verified and deserialized completely off to
the side; only then is the single ``_serving`` reference replaced. A reader
takes that reference once per prediction, so it sees the old model or the
new one, never a half-loaded one, and needs no lock.

Versions only move forward. An authentic envelope *older* than the serving
one means the publisher's history was lost (topic recreated, in-memory broker
restarted) and it restarted its numbering: it is refused like any older
version, but counted in ``version_regressions`` and logged as a warning
saying the sequence went backwards, so a stale model does not serve silently.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from streamml.envelope import ModelEnvelope, TrustPolicy, Verdict, assess, load_model
from streamml.errors import EnvelopeError, ModelNotReadyError

__all__ = ["ServingModel", "Refusal", "ModelSlot", "SwapCallback"]

logger = logging.getLogger(__name__)

#: ``callback(old_version, new_version, envelope_summary)``, called after a swap.
SwapCallback = Callable[[int | None, int, dict[str, Any]], None]

#: Refusals kept in ``ModelSlot.refused`` (oldest dropped first).
MAX_REFUSALS = 1000


@dataclass(frozen=True)
class ServingModel:
    """A loaded model and the envelope it came from (immutable: safe to share)."""

    model: Any = field(repr=False)
    version: int
    envelope: dict[str, Any] = field(repr=False)

    def predict_one(self, x: dict[str, Any]) -> Any:
        return self.model.predict_one(x)

    def predict_proba_one(self, x: dict[str, Any]) -> dict[Any, float]:
        proba = getattr(self.model, "predict_proba_one", None)
        return dict(proba(x)) if callable(proba) else {}


class Refusal(NamedTuple):
    """An envelope that was not loaded: where it was, which version it claimed, why."""

    offset: int | None
    version: int | None
    reason: str


class ModelSlot:
    """Holds the serving model of one model name and decides on candidates.

    Thread-safe: offers are serialized by a lock; reads take no lock.
    """

    def __init__(self, model_name: str, policy: TrustPolicy | None = None) -> None:
        self.model_name = model_name
        self.policy = policy or TrustPolicy()
        self._serving: ServingModel | None = None
        self._offer_lock = threading.Lock()
        self._changed = threading.Condition()
        self._callbacks: list[SwapCallback] = []
        #: The most recent refusals, at most :data:`MAX_REFUSALS`.
        self.refused: deque[Refusal] = deque(maxlen=MAX_REFUSALS)
        #: Every refusal so far, including those dropped from ``refused``.
        self.refused_total = 0
        #: Authentic envelopes that arrived with a version below the serving one.
        self.version_regressions = 0
        self.swaps = 0

    # -- reading ---------------------------------------------------------
    def current(self) -> ServingModel:
        """Return the serving model, or raise :class:`ModelNotReadyError`."""
        serving = self._serving
        if serving is None:
            raise ModelNotReadyError(f"no version of model {self.model_name!r} has been loaded yet")
        return serving

    @property
    def version(self) -> int | None:
        serving = self._serving
        return None if serving is None else serving.version

    # -- deciding --------------------------------------------------------
    def on_swap(self, callback: SwapCallback) -> None:
        """Register ``callback(old_version, new_version, envelope_summary)``."""
        self._callbacks.append(callback)

    def refuse(self, offset: int | None, version: int | None, reason: str) -> None:
        """Record (and log) that a record was not loaded."""
        self.refused.append(Refusal(offset, version, reason))
        self.refused_total += 1
        logger.warning("refused %s v%s at offset %s: %s", self.model_name, version, offset, reason)

    def offer(self, candidate: ModelEnvelope | Verdict, offset: int | None = None) -> bool:
        """Load the candidate if it is newer than the serving version and acceptable.

        ``candidate`` is a verdict of :func:`streamml.envelope.assess` (the
        subscriber assesses each envelope once), or an envelope, which is then
        assessed here with the slot's policy. Returns ``True`` on a swap. Envelopes of another model name are ignored
        (``False``, not refused: several models may share the topic); any other
        failure is refused with its reason and the current model keeps serving.
        An authentic envelope older than the serving version is also counted
        in ``version_regressions`` (see the module docstring).
        """
        verdict = candidate if isinstance(candidate, Verdict) else assess(candidate, self.policy)
        envelope = verdict.envelope
        if envelope.model_name != self.model_name:
            return False
        with self._offer_lock:
            old = self._serving
            if old is not None and envelope.version <= old.version:
                reason = f"version {envelope.version} is not newer than the serving v{old.version}"
                if envelope.version < old.version and verdict.authentic:
                    self.version_regressions += 1
                    reason += (
                        "; the version sequence went backwards (publisher history lost?), "
                        f"v{old.version} keeps serving until a newer version arrives"
                    )
                self.refuse(offset, envelope.version, reason)
                return False
            try:
                model = load_model(verdict)
            except EnvelopeError as exc:
                self.refuse(offset, envelope.version, str(exc))
                return False
            except Exception as exc:  # a payload that breaks loading must not break the caller
                logger.debug("opening %s v%s failed", self.model_name, envelope.version, exc_info=True)
                self.refuse(offset, envelope.version, f"payload could not be opened: {type(exc).__name__}: {exc}")
                return False
            new = ServingModel(model, envelope.version, envelope.summary())
            self._install(new)
        logger.info("serving %s v%d (was v%s)", self.model_name, new.version, None if old is None else old.version)
        self._notify(None if old is None else old.version, new)
        return True

    def load_newest(self, candidates: Iterable[tuple[int | None, ModelEnvelope | Verdict]]) -> bool:
        """Load the newest candidate that opens, trying older ones if it does not.

        ``candidates`` are ``(offset, envelope)`` pairs in any order. Older
        candidates than the one loaded are superseded, not refused.
        """
        ordered = sorted(candidates, key=lambda c: (c[1].version, c[0] or 0), reverse=True)
        return any(self.offer(candidate, offset) for offset, candidate in ordered)

    def _install(self, new: ServingModel) -> None:
        with self._changed:
            self._serving = new  # the one reference readers take: the swap itself
            self.swaps += 1
            self._changed.notify_all()

    def _notify(self, old_version: int | None, new: ServingModel) -> None:
        for callback in list(self._callbacks):
            try:
                callback(old_version, new.version, new.envelope)
            except Exception:  # a caller's bug must not stop model updates
                logger.exception("on_swap callback %r failed for v%d", callback, new.version)

    def wait_for(self, predicate: Callable[[ServingModel | None], bool], timeout: float | None) -> bool:
        """Block until ``predicate(serving)`` holds or ``timeout`` passes."""
        with self._changed:
            return self._changed.wait_for(lambda: predicate(self._serving), timeout=timeout)
