"""Model consumers: the subscription and hot-swap SDK, the stream scorer and the HTTP service.

Apps import :class:`ModelSubscriber` to keep the newest trustworthy model
version loaded while they serve; ``streamml score`` runs :class:`StreamScorer`
and ``streamml serve`` runs :class:`ModelServer`. :class:`ServingFeatures`
turns a raw event into the feature vector the stream processor would build
(with the windowed features from its :class:`WindowView`).
"""

from consumers.http_service import ModelServer
from consumers.scorer import ScoreReport, StreamScorer
from consumers.serving_features import ServingFeatures
from consumers.subscriber import ModelSubscriber
from consumers.swap import ModelSlot, Refusal, ServingModel
from consumers.window_view import WindowView

__all__ = [
    "ModelSubscriber", "ModelSlot", "ServingModel", "Refusal", "StreamScorer", "ScoreReport", "ModelServer",
    "ServingFeatures", "WindowView",
]
