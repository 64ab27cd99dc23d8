"""Model consumers: the subscription and hot-swap SDK, the stream scorer and the HTTP service.

Apps import :class:`ModelSubscriber` to keep the newest trustworthy model
version loaded while they serve; ``streamml score`` runs :class:`StreamScorer`
and ``streamml serve`` runs :class:`ModelServer`.
"""

from consumers.http_service import ModelServer
from consumers.scorer import ScoreReport, StreamScorer
from consumers.subscriber import ModelSubscriber
from consumers.swap import ModelSlot, Refusal, ServingModel

__all__ = ["ModelSubscriber", "ModelSlot", "ServingModel", "Refusal", "StreamScorer", "ScoreReport", "ModelServer"]
