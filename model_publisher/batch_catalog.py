"""Named scikit-learn specs for batch (static) training, or any pipeline factory by import path.

``streamml train-batch --spec NAME`` builds a fresh, unfitted estimator here.
A spec is a catalog name or ``package.module:factory``, a zero-argument
callable returning a scikit-learn estimator (a ``Pipeline`` usually); the
import runs your own code, in the trainer only: consumers load the result
through skops's type check, never by importing the factory.

Tree models (``random_forest``, ``gradient_boosting``) hold types skops does
not trust by default; consumers must list them in
``STREAMML_MODEL_SKOPS_TRUSTED`` (:func:`extra_trusted` says which), or they
refuse the version with that advice. See docs/batch-training.md.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from model_publisher.catalog import call_factory
from streamml.errors import ConfigError

__all__ = ["DEFAULT_BATCH_SPEC", "batch_spec_names", "build_batch", "task_of", "extra_trusted"]

DEFAULT_BATCH_SPEC = "logistic"


def _logistic() -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    # Scaled first, as the online default: raw features span 0..1.5e6.
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))


def _random_forest() -> Any:
    from sklearn.ensemble import RandomForestClassifier

    return RandomForestClassifier(n_estimators=50, max_depth=12, random_state=0, n_jobs=1)


def _gradient_boosting() -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(max_iter=100, random_state=0)


def _ridge() -> Any:
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), Ridge())


_SPECS: dict[str, Callable[[], Any]] = {
    "logistic": _logistic,
    "random_forest": _random_forest,
    "gradient_boosting": _gradient_boosting,
    "ridge": _ridge,
}

#: Types each spec's fitted model needs trusted by consumers (beyond skops's defaults).
_TRUSTED = {
    "random_forest": ("sklearn.tree._tree.Tree",),
    "gradient_boosting": ("sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",),
}


def batch_spec_names() -> list[str]:
    """Every catalog name, sorted (an import path is accepted too)."""
    return sorted(_SPECS)


def build_batch(spec: str) -> Any:
    """A fresh, unfitted estimator for ``spec``; :class:`ConfigError` naming the choices when unknown."""
    if ":" in spec:
        return _from_import_path(spec)
    try:
        factory = _SPECS[spec]
    except KeyError:
        raise ConfigError(
            f"batch spec: unknown spec {spec!r}; choose one of {', '.join(batch_spec_names())} "
            "or give package.module:factory"
        ) from None
    return factory()


def _from_import_path(spec: str) -> Any:
    estimator, _ = call_factory(spec, f"batch spec {spec!r}")
    if not (hasattr(estimator, "fit") and hasattr(estimator, "predict") and hasattr(estimator, "get_params")):
        raise ConfigError(f"batch spec {spec!r}: the factory returned a {type(estimator).__name__}, not an estimator")
    return estimator


def task_of(estimator: Any) -> str:
    """``"regression"`` for a scikit-learn regressor, else ``"classification"``."""
    from sklearn.base import is_regressor

    return "regression" if is_regressor(estimator) else "classification"


def extra_trusted(spec: str) -> tuple[str, ...]:
    """The types consumers must add to ``STREAMML_MODEL_SKOPS_TRUSTED`` for a catalog spec's models."""
    return _TRUSTED.get(spec, ())
