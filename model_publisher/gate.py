"""The quality gate: a candidate is promoted only if it does not serve worse than the champion.

The champion is the version consumers of a model are served now. A
candidate (a new online version or a batch model) is scored on the *same*
held-back events as the champion: labelled events that come after the point
each of them learned up to, so neither has learned from them (shadow
scoring; an online model's progressive metrics are not comparable between
two models, these are). It is promoted when its metric is not worse than the
champion's by more than the margin:

- classification: accuracy, ``candidate >= champion - margin`` (margin in
  accuracy points, default 0.02);
- regression: mean absolute error, ``candidate <= champion * (1 + margin)``
  (margin as a fraction of the champion's error).

A first version (no champion) is promoted without scoring. A prediction that
raises counts as a miss (classification) or as an infinite error
(regression): a model that fails on live inputs must not win by it.

The decision travels in the candidate's signed envelope (``lineage``, keys
``gate*``), whether it was promoted or refused; :mod:`streamml.trust` refuses
to serve a version whose gate said no, so consumers keep the champion and the
registry shows the numbers. See docs/quality-gate.md.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from streamml.trust import GATE_KEY

__all__ = ["GateDecision", "QualityGate", "GATE_KEY"]

Event = tuple[Mapping[str, float], Any]


def _fmt(value: float | None) -> str:
    return "none" if value is None else f"{value:.6g}"


@dataclass(frozen=True)
class GateDecision:
    """What the gate decided for one candidate, and on which numbers."""

    promoted: bool
    reason: str
    metric: str = "accuracy"
    candidate: float | None = None
    champion: float | None = None
    champion_name: str | None = None
    champion_version: int | None = None
    margin: float = 0.0
    n_events: int = 0

    def lineage(self) -> dict[str, str]:
        """The decision as envelope lineage entries (strings, signed with the envelope)."""
        entries = {
            GATE_KEY: "promoted" if self.promoted else "refused",
            "gate_reason": self.reason,
            "gate_metric": self.metric,
            "gate_candidate": _fmt(self.candidate),
            "gate_champion": _fmt(self.champion),
            "gate_margin": f"{self.margin:g}",
            "gate_events": str(self.n_events),
        }
        if self.champion_version is not None:
            entries["gate_champion_version"] = f"{self.champion_name} v{self.champion_version}"
        return entries


class QualityGate:
    """Score a candidate and the champion on the same events; promote or refuse.

    ``task`` is ``"classification"`` or ``"regression"``; ``min_events`` is the
    fewest held-back events a decision may rest on (fewer: refused as
    unjudged, so consumers never get a model nobody scored).
    """

    def __init__(self, *, margin: float = 0.02, min_events: int = 20, task: str = "classification") -> None:
        if margin < 0:
            raise ValueError(f"gate margin must not be negative, got {margin}")
        if task not in ("classification", "regression"):
            raise ValueError(f"task must be classification or regression, got {task!r}")
        self.margin = margin
        self.min_events = min_events
        self.task = task

    @property
    def metric(self) -> str:
        return "accuracy" if self.task == "classification" else "mae"

    def score(self, model: Any, events: Sequence[Event]) -> float:
        """The gate's metric for ``model`` (anything with ``predict_one``) on ``events``."""
        if not events:
            raise ValueError("no events to score on")
        if self.task == "classification":
            hits = 0
            for x, y in events:
                try:
                    hits += int(model.predict_one(dict(x)) == y)
                except Exception:  # noqa: BLE001 - a model that raises on live input scores a miss
                    continue
            return hits / len(events)
        total = 0.0
        for x, y in events:
            try:
                error = abs(float(model.predict_one(dict(x))) - float(y))
            except Exception:  # noqa: BLE001 - a model that raises on live input scores infinitely badly
                error = math.inf
            total += error if math.isfinite(error) else math.inf
        return total / len(events)

    def judge(
        self,
        candidate: Any,
        champion: Any | None,
        events: Sequence[Event],
        *,
        champion_name: str | None = None,
        champion_version: int | None = None,
    ) -> GateDecision:
        """Decide on ``candidate`` against ``champion`` (``None``: there is none yet)."""
        base = GateDecision(
            True, "", metric=self.metric, margin=self.margin, n_events=len(events),
            champion_name=champion_name, champion_version=champion_version,
        )
        if champion is None:
            return dataclasses.replace(base, reason="first version: no champion to compare with")
        if len(events) < self.min_events:
            return dataclasses.replace(
                base,
                promoted=False,
                reason=f"unjudged: only {len(events)} held-back events (at least {self.min_events} needed)",
            )
        mine, theirs = self.score(candidate, events), self.score(champion, events)
        against = f"{champion_name} v{champion_version}" if champion_version is not None else "the champion"
        if self.task == "classification":
            promoted = mine >= theirs - self.margin
            relation = f"accuracy {mine:.4f} vs {theirs:.4f} of {against} (margin {self.margin:g})"
        else:
            promoted = mine <= theirs * (1 + self.margin)
            relation = f"MAE {mine:.6g} vs {theirs:.6g} of {against} (margin {self.margin:g} of it)"
        verdict = "not worse" if promoted else "worse"
        reason = f"{verdict} than the champion on {len(events)} held-back events: {relation}"
        return dataclasses.replace(base, promoted=promoted, reason=reason, candidate=mine, champion=theirs)
