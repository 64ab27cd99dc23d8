"""Model consumers: the subscription and hot-swap SDK, and the stream scorer.

Apps import :class:`ModelSubscriber` to keep the newest trustworthy model
version loaded while they serve; ``streamml score`` runs :class:`StreamScorer`.
"""

from consumers.scorer import ScoreReport, StreamScorer
from consumers.subscriber import ModelSubscriber
from consumers.swap import ModelSlot, Refusal, ServingModel

__all__ = ["ModelSubscriber", "ModelSlot", "ServingModel", "Refusal", "StreamScorer", "ScoreReport"]
