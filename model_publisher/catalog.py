"""Named model specs: the online models the learner can train.

A spec name (``STREAMML_MODEL_SPEC`` or ``streamml learn --model-spec``) maps
to a factory returning a fresh, untrained river estimator. Every spec here is
held to the contract suite in ``tests/unit/test_catalog_contract.py``: it must
predict (not crash) before learning, leave its input untouched, survive a
pickle round trip and fit on the models topic or fail loudly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from river import linear_model, naive_bayes, preprocessing, tree

from streamml.errors import ConfigError

__all__ = ["FLAVOR", "DEFAULT_SPEC", "spec_names", "build", "describe", "matches"]

#: Envelope flavor of every model built here (the envelope checks river's version).
FLAVOR = "river"
DEFAULT_SPEC = "logistic"


def _logistic() -> Any:
    # Scaling first: raw features span 0..1.5e6 and plain SGD diverges on them.
    return preprocessing.StandardScaler() | linear_model.LogisticRegression()


def _hoeffding() -> Any:
    # The tree grows with the stream: its envelope can outgrow the topic's
    # message limit, which the publisher then refuses (ModelTooLargeError).
    return tree.HoeffdingTreeClassifier()


def _naive_bayes() -> Any:
    return naive_bayes.GaussianNB()  # type: ignore[no-untyped-call]  # river leaves GaussianNB.__init__ unannotated


def _perceptron() -> Any:
    return preprocessing.StandardScaler() | linear_model.Perceptron()


_SPECS: dict[str, Callable[[], Any]] = {
    "logistic": _logistic,
    "hoeffding": _hoeffding,
    "naive_bayes": _naive_bayes,
    "perceptron": _perceptron,
}


def spec_names() -> list[str]:
    """Return every spec name the catalog knows, sorted."""
    return sorted(_SPECS)


def build(spec: str) -> Any:
    """Return a fresh, untrained estimator for ``spec``.

    Raises :class:`ConfigError` naming the valid choices for an unknown spec.

    >>> describe(build("logistic"))
    'StandardScaler | LogisticRegression'
    """
    try:
        factory = _SPECS[spec]
    except KeyError:
        raise ConfigError(
            f"model_spec: unknown model spec {spec!r}; choose one of {', '.join(spec_names())}"
        ) from None
    return factory()


def describe(model: Any) -> str:
    """Return the model's structure as river prints it, e.g. ``StandardScaler | LogisticRegression``."""
    return str(model)


def matches(model: Any, spec: str) -> bool:
    """Tell whether ``model`` has the structure ``spec`` builds (used before resuming a model)."""
    return describe(model) == describe(build(spec))
