"""The online learner and model publisher.

Consumes feature vectors, learns online with progressive validation and
publishes versioned, verifiable model envelopes to the models topic. Run it
with ``streamml learn``.
"""

from model_publisher.catalog import build, spec_names
from model_publisher.learner import OnlineLearner
from model_publisher.learning_loop import LearningLoop, LearnReport
from model_publisher.policy import PublishPolicy
from model_publisher.publisher import ModelPublisher

__all__ = [
    "build",
    "spec_names",
    "OnlineLearner",
    "LearningLoop",
    "LearnReport",
    "PublishPolicy",
    "ModelPublisher",
]
