"""The serving slot: which model answers, and the rules for replacing it.

Kept apart from the Kafka thread so the swap rules are testable without a
broker. A candidate envelope is verified and deserialized completely off to
the side; only then is the single ``_serving`` reference replaced. A reader
takes that reference once per prediction, so it sees the old model or the
new one, never a half-loaded one, and needs no lock.

On their own, versions only move forward (:meth:`ModelSlot.offer`). An
authentic envelope *older* than the serving one means the publisher's history
was lost (topic recreated, in-memory broker restarted) and it restarted its
numbering: it is refused like any older version, but counted in
``version_regressions`` and logged as a warning saying the sequence went
backwards, so a stale model does not serve silently. Only a signed directive
(a rollback or a pin, see :mod:`streamml.model_control`) moves the slot to
another version, through :meth:`ModelSlot.install`.

Loading includes replaying the envelope's golden examples
(:func:`streamml.trust.load_model`): a model that raises on them or answers
differently is refused before it serves a single request.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from streamml.envelope import ModelEnvelope, probability_method
from streamml.errors import EnvelopeError, ModelNotReadyError
from streamml.trust import TrustPolicy, Verdict, assess, load_model

__all__ = ["FeatureContract", "ServingModel", "Refusal", "ModelSlot", "SwapCallback", "reason_kind"]

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
    #: ``latest``, ``pinned`` or ``rolled_back``: why this version serves.
    mode: str = "latest"
    #: What a request may and must name (empty when the envelope does not say).
    inputs: FeatureContract = field(default_factory=lambda: FeatureContract(frozenset(), frozenset()))
    #: Seconds it took to open this version and install it (0 when it was not loaded by a slot).
    load_seconds: float = 0.0

    def predict_one(self, x: dict[str, Any]) -> Any:
        return self.model.predict_one(x)

    def predict_proba_one(self, x: dict[str, Any]) -> dict[Any, float]:
        """``{class: probability}``; ``{}`` for a regressor (its prediction is the number)."""
        proba = probability_method(self.model)
        return dict(proba(x)) if proba is not None else {}


@dataclass(frozen=True)
class FeatureContract:
    """The feature names a model knows, and those every input it learned from had.

    ``known`` is the envelope's ``feature_names``; ``required`` the names
    common to all its golden examples (real recent inputs) or, without
    golden examples, the names that are not one-hot (``car=4``): one-hot
    names are present in some rows only, so known but never required.
    A scikit-learn model requires every column it was fit on but the one-hot
    ones (absent means 0.0 there too, see :class:`~streamml.sklearn_format.SklearnModel`).
    """

    known: frozenset[str]
    required: frozenset[str]

    @classmethod
    def of(cls, envelope: ModelEnvelope) -> FeatureContract:
        known = frozenset(envelope.feature_names)
        if envelope.flavor == "sklearn":
            return cls(known, frozenset(name for name in known if "=" not in name))
        rows = [frozenset(g.features) for g in envelope.golden]
        if rows:
            return cls(known, frozenset.intersection(*rows) & known)
        # No golden rows (the learner publishes none yet): every name but the
        # processor's one-hot ones (``field=value``, present in some rows only).
        return cls(known, frozenset(name for name in known if "=" not in name))

    def problems(self, names: Iterable[str]) -> tuple[list[str], list[str]]:
        """``(unknown, missing)`` names of a request, each sorted; both empty when it fits or nothing is known."""
        if not self.known:
            return [], []
        given = set(names)
        return sorted(given - self.known), sorted(self.required - given)


class Refusal(NamedTuple):
    """An envelope that was not loaded: where it was, which version it claimed, why."""

    offset: int | None
    version: int | None
    reason: str
    #: A short name for the kind of reason, for counting (see :func:`reason_kind`).
    kind: str = "other"


#: Kinds of refusal, by a phrase their reason contains; the first match wins.
_REASON_KINDS = (
    ("directive refused", "directive"),
    ("unsigned", "unsigned"),
    ("does not trust", "untrusted_key"),
    ("does not match (tampered", "bad_signature"),
    ("signature is", "bad_signature"),
    ("sha256", "checksum"),
    ("payload is", "checksum"),
    ("not portable", "runtime"),
    ("which version wrote it", "runtime"),
    ("not installed here", "runtime"),
    ("refused because", "unsafe_payload"),
    ("untrusted types", "unsafe_payload"),
    ("golden example", "golden_mismatch"),
    ("not newer", "not_newer"),
    ("transfer", "transfer"),
    ("chunk", "transfer"),
    ("not a model envelope", "undecodable"),
    ("not a model control record", "undecodable"),
    ("outside 1..", "version_range"),
    ("does not load", "payload_error"),
    ("could not be opened", "payload_error"),
    ("has no predict_one", "payload_error"),
)


def reason_kind(reason: str) -> str:
    """The kind of a refusal reason, for counting refusals by reason."""
    for phrase, kind in _REASON_KINDS:
        if phrase in reason:
            return kind
    return "other"


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
        #: Refusals so far by kind of reason (see :func:`reason_kind`).
        self.refused_by_kind: Counter[str] = Counter()
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
        """Record (and log, once) that a record was not loaded."""
        kind = reason_kind(reason)
        self.refused.append(Refusal(offset, version, reason, kind))
        self.refused_total += 1
        self.refused_by_kind[kind] += 1
        logger.warning(
            "refused %s v%s at offset %s (%s): %s", self.model_name, version, offset, kind, reason,
            extra={"event": "model_refused", "model": self.model_name, "version": version, "offset": offset,
                   "reason": kind},
        )

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
            installed = self._load_and_install(verdict, offset, "latest")
        return self._notify(*installed) if installed else False

    def install(self, verdict: Verdict, offset: int | None = None, *, mode: str) -> bool:
        """Serve ``verdict``'s model whatever its version (a rollback or a pin told so).

        Loads it off to the side like :meth:`offer`; on failure the current
        model keeps serving and the version is refused with the reason.
        """
        if verdict.envelope.model_name != self.model_name:
            return False
        with self._offer_lock:
            installed = self._load_and_install(verdict, offset, mode)
        return self._notify(*installed) if installed else False

    def set_mode(self, mode: str) -> None:
        """Say why the serving version serves (no reload: the same model, a new label)."""
        with self._offer_lock:
            serving = self._serving
            if serving is not None and serving.mode != mode:
                self._serving = dataclasses.replace(serving, mode=mode)

    def _load_and_install(
        self, verdict: Verdict, offset: int | None, mode: str
    ) -> tuple[int | None, ServingModel] | None:
        """Load and install under the offer lock; ``(old version, new)`` to notify about, or ``None``."""
        envelope = verdict.envelope
        old = self._serving
        started = time.perf_counter()
        try:
            model = load_model(verdict)
        except EnvelopeError as exc:
            self.refuse(offset, envelope.version, str(exc))
            return None
        except Exception as exc:  # a payload that breaks loading must not break the caller
            logger.debug("opening %s v%s failed", self.model_name, envelope.version, exc_info=True)
            self.refuse(offset, envelope.version, f"payload could not be opened: {type(exc).__name__}: {exc}")
            return None
        new = ServingModel(
            model, envelope.version, envelope.summary(), mode, FeatureContract.of(envelope),
            load_seconds=time.perf_counter() - started,
        )
        self._install(new)
        was = None if old is None else old.version
        logger.info(
            "serving %s v%d (%s; was v%s) after %.0f ms", self.model_name, new.version, mode, was,
            new.load_seconds * 1000,
            extra={
                "event": "model_swap", "model": self.model_name, "version": new.version, "previous": was,
                "mode": mode, "seconds": round(new.load_seconds, 6),
            },
        )
        return (None if old is None else old.version), new

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

    def _notify(self, old_version: int | None, new: ServingModel) -> bool:
        """Run the swap callbacks (outside the offer lock); ``True``."""
        for callback in list(self._callbacks):
            try:
                callback(old_version, new.version, new.envelope)
            except Exception:  # a caller's bug must not stop model updates
                logger.exception("on_swap callback %r failed for v%d", callback, new.version)
        return True

    def wait_for(self, predicate: Callable[[ServingModel | None], bool], timeout: float | None) -> bool:
        """Block until ``predicate(serving)`` holds or ``timeout`` passes."""
        with self._changed:
            return self._changed.wait_for(lambda: predicate(self._serving), timeout=timeout)
