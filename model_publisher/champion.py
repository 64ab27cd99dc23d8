"""Gated publishing for the online learner: hold a candidate, shadow-score it, then publish the decision.

When a version is due and a champion is being served, the learner freezes a
copy of its model as the candidate and keeps learning. The next
``gate_events`` labelled events (which neither the frozen candidate nor the
older champion has learned) are predicted by both; then the candidate is
published with the gate's decision in its lineage. A refused candidate is
still published (withheld: the registry records the numbers, and the learner
may resume from it), and consumers keep the champion. A promoted one becomes
the champion.

The candidate's ``input_offsets`` are the ones frozen with it, so the offsets
stored after its publish are exactly what it learned: the gate window is
learned again after a crash, never lost.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from model_publisher.gate import GateDecision, QualityGate

__all__ = ["Candidate", "GatedPublishing"]


@dataclass
class Candidate:
    """A frozen model and what its envelope will say."""

    model: Any
    metrics: dict[str, float]
    n_learned: int
    input_offsets: dict[str, int]
    feature_names: list[str]
    events: list[tuple[dict[str, float], Any]] = field(default_factory=list)


class GatedPublishing:
    """The champion, the candidate waiting for its gate window, and the gate.

    ``gate`` ``None`` turns gating off: every candidate is published at once
    and nothing is written into its lineage.
    """

    def __init__(self, gate: QualityGate | None, *, window: int) -> None:
        self.gate = gate
        self.window = window
        self.champion: Any | None = None
        self.champion_name: str | None = None
        self.champion_version: int | None = None
        self.pending: Candidate | None = None

    @property
    def enabled(self) -> bool:
        return self.gate is not None and self.window > 0

    def crown(self, model: Any, name: str, version: int) -> None:
        """Make ``model`` (``name`` ``version``) the champion candidates are compared with."""
        self.champion, self.champion_name, self.champion_version = model, name, version

    def freeze(
        self,
        model: Any,
        *,
        metrics: Mapping[str, float],
        n_learned: int,
        input_offsets: Mapping[str, int],
        feature_names: list[str],
    ) -> Candidate:
        """A copy of the learner's state now (the live model keeps learning)."""
        return Candidate(copy.deepcopy(model), dict(metrics), n_learned, dict(input_offsets), list(feature_names))

    def needs_window(self) -> bool:
        """Whether a new candidate must wait for its gate window (there is a champion to beat)."""
        return self.enabled and self.champion is not None

    def hold(self, candidate: Candidate) -> None:
        self.pending = candidate

    def observe(self, x: Mapping[str, float], y: Any) -> bool:
        """Add one labelled event to the pending candidate's window; ``True`` when the window is full."""
        pending = self.pending
        if pending is None or y is None:
            return False
        pending.events.append((dict(x), y))
        return len(pending.events) >= self.window

    def decide(self, candidate: Candidate) -> GateDecision | None:
        """The gate's decision for ``candidate`` on its window (``None`` when gating is off)."""
        if not self.enabled:
            return None
        assert self.gate is not None
        return self.gate.judge(
            candidate.model,
            self.champion,
            candidate.events,
            champion_name=self.champion_name,
            champion_version=self.champion_version,
        )

    def take_pending(self) -> Candidate | None:
        pending, self.pending = self.pending, None
        return pending
