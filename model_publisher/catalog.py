"""Model specs: the online models the learner can train.

A spec (``STREAMML_MODEL_SPEC`` or ``streamml learn --model-spec``) is either

a catalog name
    mapped to a factory returning a fresh, untrained river estimator:
    classifiers ``logistic``, ``perceptron``, ``naive_bayes``, ``hoeffding``,
    ``hoeffding_adaptive``, ``adaptive_forest``; regressors
    ``linear_regression``, ``hoeffding_regressor``, ``adaptive_forest_regressor``
    (:func:`spec_names`). Models with randomness are seeded, so one spec always
    builds the same model;
an import path ``package.module:factory``
    a zero-argument callable (importable by the learner) returning a fresh
    river classifier or regressor, a pipeline included, e.g.
    ``mypkg.models:price_model``. Consumers load it through the restricted
    unpickler (:mod:`streamml.safe_pickle`): it must be built from river
    classes (or from what ``STREAMML_MODEL_PICKLE_ALLOW`` lists on the
    consumers), not from the user's own classes or functions.

Every catalog spec is held to the contract suite in
``tests/unit/test_catalog_contract.py``: it must predict (not crash) before
learning, leave its input untouched, survive a pickle round trip and the
restricted unpickler, and fit on the models topic or fail loudly.
:func:`task` tells a regressor from a classifier: the learner reports MAE and
RMSE for the one and accuracy and log loss for the other.
"""

from __future__ import annotations

import importlib
import logging
import pickle
import re
from collections.abc import Callable
from typing import Any, Literal

from river import base, forest, linear_model, naive_bayes, preprocessing, tree

from streamml.errors import ConfigError, EnvelopeError

__all__ = [
    "FLAVOR",
    "DEFAULT_SPEC",
    "Task",
    "spec_names",
    "build",
    "describe",
    "matches",
    "task",
    "is_import_path",
]

logger = logging.getLogger(__name__)

#: Envelope flavor of every model built here (the envelope checks river's version).
FLAVOR = "river"
DEFAULT_SPEC = "logistic"
#: Trees in each adaptive random forest: river's default is 10; 5 halves the
#: learning time and the envelope size for a small loss of accuracy.
FOREST_MODELS = 5
#: Seed of every model with randomness (bagging, feature subsets).
SEED = 42

Task = Literal["classification", "regression"]


def _logistic() -> Any:
    # Scaling first: raw features span 0..1.5e6 and plain SGD diverges on them.
    return preprocessing.StandardScaler() | linear_model.LogisticRegression()


def _hoeffding() -> Any:
    # The tree grows with the stream: its envelope can outgrow the topic's
    # message limit, which the publisher then refuses (ModelTooLargeError).
    return tree.HoeffdingTreeClassifier()


def _hoeffding_adaptive() -> Any:
    # Replaces a branch whose error rises (ADWIN per node): adapts to drift.
    return tree.HoeffdingAdaptiveTreeClassifier(seed=SEED)


def _adaptive_forest() -> Any:
    # Large: each tree keeps drift and warning detectors, so versions of a few
    # MB travel in chunks (STREAMML_MAX_MODEL_BYTES).
    return forest.ARFClassifier(n_models=FOREST_MODELS, seed=SEED)


def _naive_bayes() -> Any:
    return naive_bayes.GaussianNB()  # type: ignore[no-untyped-call]  # river leaves GaussianNB.__init__ unannotated


def _perceptron() -> Any:
    return preprocessing.StandardScaler() | linear_model.Perceptron()


def _linear_regression() -> Any:
    return preprocessing.StandardScaler() | linear_model.LinearRegression()


def _hoeffding_regressor() -> Any:
    return tree.HoeffdingTreeRegressor()


def _adaptive_forest_regressor() -> Any:
    # About ten times slower to learn than the other regressors (~1k events/s).
    return forest.ARFRegressor(n_models=FOREST_MODELS, seed=SEED)


_SPECS: dict[str, Callable[[], Any]] = {
    "logistic": _logistic,
    "hoeffding": _hoeffding,
    "hoeffding_adaptive": _hoeffding_adaptive,
    "adaptive_forest": _adaptive_forest,
    "naive_bayes": _naive_bayes,
    "perceptron": _perceptron,
    "linear_regression": _linear_regression,
    "hoeffding_regressor": _hoeffding_regressor,
    "adaptive_forest_regressor": _adaptive_forest_regressor,
}

_DOTTED = r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*"
_IMPORT_PATH = re.compile(rf"({_DOTTED}):({_DOTTED})")
#: Import-path specs already checked against the default allowlist in this process (one warning each).
_checked_paths: set[str] = set()


def spec_names() -> list[str]:
    """Return every catalog spec name, sorted (import paths are accepted too, see :func:`build`)."""
    return sorted(_SPECS)


def is_import_path(spec: str) -> bool:
    """Tell whether ``spec`` names a factory by import path (``package.module:factory``)."""
    return ":" in spec


def build(spec: str) -> Any:
    """Return a fresh, untrained estimator for ``spec``: a catalog name or ``package.module:factory``.

    Raises :class:`ConfigError` naming the valid choices for an unknown name,
    and with one line saying what is wrong for an import path that does not
    import, is not a zero-argument callable or does not return a river
    classifier or regressor.

    >>> describe(build("logistic"))
    'StandardScaler | LogisticRegression'
    >>> describe(build("river.tree:HoeffdingTreeRegressor"))  # a class is a zero-argument factory too
    'HoeffdingTreeRegressor'
    """
    if is_import_path(spec):
        return _build_import_path(spec)
    try:
        factory = _SPECS[spec]
    except KeyError:
        raise ConfigError(
            f"model_spec: unknown model spec {spec!r}; choose one of {', '.join(spec_names())}, "
            "or name a factory as package.module:function"
        ) from None
    return factory()


def call_factory(spec: str, where: str) -> tuple[Any, str]:
    """Import ``package.module:factory`` and call it; ``(what it returned, the factory's name)``.

    Every problem is one :class:`ConfigError` line starting with ``where``.
    Used by the online catalog and by the batch one
    (:mod:`model_publisher.batch_catalog`).
    """
    match = _IMPORT_PATH.fullmatch(spec)
    if match is None:
        raise ConfigError(f"{where}: an import path is package.module:function (dotted names, one colon)")
    module_name, attribute = match.groups()
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or whatever the module raises on import
        raise ConfigError(f"{where}: cannot import {module_name}: {type(exc).__name__}: {exc}") from exc
    factory: Any = module
    for part in attribute.split("."):
        factory = getattr(factory, part, None)
        if factory is None:
            raise ConfigError(f"{where}: {module_name} has no attribute {attribute}")
    if not callable(factory):
        raise ConfigError(f"{where}: {attribute} is a {type(factory).__name__}, not a function returning a model")
    try:
        return factory(), attribute
    except Exception as exc:  # noqa: BLE001 - the user's factory: say what it raised, in one line
        raise ConfigError(f"{where}: calling {attribute}() raised {type(exc).__name__}: {exc}") from exc


def _build_import_path(spec: str) -> Any:
    where = f"model_spec {spec!r}"
    model, attribute = call_factory(spec, where)
    missing = [m for m in ("learn_one", "predict_one") if not callable(getattr(model, m, None))]
    if missing or _river_task(model) is None:
        what = f"has no {' or '.join(missing)}()" if missing else "is neither a river classifier nor a regressor"
        raise ConfigError(f"{where}: {attribute}() returned a {type(model).__name__}, which {what}")
    _warn_if_unloadable(spec, model)
    return model


def _warn_if_unloadable(spec: str, model: Any) -> None:
    """Warn (once per spec) when consumers with the default allowlist would refuse ``model``.

    Only a warning: the allowlist that counts is each consumer's
    (``STREAMML_MODEL_PICKLE_ALLOW``), which this process cannot know. A
    fresh model names fewer globals than a trained one (a tree's nodes come
    later), so passing here is no promise.
    """
    if spec in _checked_paths:
        return
    _checked_paths.add(spec)
    from streamml.safe_pickle import safe_loads

    try:
        safe_loads(pickle.dumps(model, protocol=5))
    except EnvelopeError as exc:
        logger.warning(
            "model spec %s: consumers with the default allowlist will refuse its versions (%s); "
            "build it from river classes, or list what it needs in the consumers' STREAMML_MODEL_PICKLE_ALLOW",
            spec, exc,
        )


def _river_task(model: Any) -> Task | None:
    # river >= 0.22 sees through pipelines in isinstance(); older ones need the last step.
    final = getattr(model, "_last_step", model)
    if isinstance(model, base.Regressor) or isinstance(final, base.Regressor):
        return "regression"
    if isinstance(model, base.Classifier) or isinstance(final, base.Classifier):
        return "classification"
    return None


def task(model: Any) -> Task:
    """Return ``"regression"`` for a river regressor (pipelines included), ``"classification"`` otherwise.

    A model that is not a river estimator counts as a classifier, as the
    learner has always treated one.

    >>> task(build("linear_regression")), task(build("hoeffding"))
    ('regression', 'classification')
    """
    return _river_task(model) or "classification"


def describe(model: Any) -> str:
    """Return the model's structure as river prints it, e.g. ``StandardScaler | LogisticRegression``."""
    return str(model)


def matches(model: Any, spec: str) -> bool:
    """Tell whether ``model`` has the structure ``spec`` builds (used before resuming a model).

    Structure only (steps and their classes, as :func:`describe` prints
    them), for catalog names and import paths alike.
    """
    return describe(model) == describe(build(spec))
