"""scikit-learn models as skops payloads, served one record at a time.

A scikit-learn model never travels as a pickle: :func:`dump_sklearn` writes the
skops format, and :func:`load_sklearn` loads it only when every type the payload
names is trusted -- by skops by default, or explicitly by the caller through
``extra_trusted`` (fully qualified names as :func:`untrusted_types` reports
them). Tree models (random forests, gradient boosting) name
``sklearn.tree._tree.Tree``, which skops does not trust by default because a
crafted tree can crash the process at predict time; trust it only for payloads
whose signature you have verified.

:class:`SklearnModel` gives a fitted estimator the river-style per-record
interface (``predict_one``, ``predict_proba_one``) that the serving code uses.
sklearn, skops, pandas and numpy are imported only when these functions run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from streamml.errors import EnvelopeError

if TYPE_CHECKING:
    import pandas

__all__ = [
    "UntrustedTypesError",
    "dump_sklearn",
    "untrusted_types",
    "load_sklearn",
    "feature_names",
    "one_hot",
    "SklearnModel",
]


class UntrustedTypesError(EnvelopeError):
    """A skops payload names types that are neither trusted by skops nor by the caller; ``types`` lists them."""

    def __init__(self, types: Sequence[str]) -> None:
        self.types: list[str] = sorted(types)
        super().__init__(
            f"payload names untrusted types {self.types}; "
            "trust the ones you have reviewed with STREAMML_MODEL_SKOPS_TRUSTED"
        )


def dump_sklearn(estimator: Any) -> bytes:
    """Serialize ``estimator`` in the skops format (never pickle)."""
    import skops.io  # type: ignore[import-untyped]

    data: bytes = skops.io.dumps(estimator)
    return data


def untrusted_types(data: bytes) -> list[str]:
    """The sorted fully qualified names of types (and functions) in ``data`` that skops does not trust by default.

    Nothing is imported or constructed from the payload. Raises :class:`EnvelopeError`
    when ``data`` is not a readable skops payload.
    """
    import skops.io

    if not isinstance(data, bytes | bytearray) or not data:
        raise EnvelopeError(f"payload does not load: expected non-empty bytes, got {type(data).__name__}")
    try:
        found: list[str] = skops.io.get_untrusted_types(data=bytes(data))
    except Exception as exc:
        raise EnvelopeError(f"payload does not load: {type(exc).__name__}: {exc}") from exc
    return found


def load_sklearn(data: bytes, *, extra_trusted: Sequence[str] = ()) -> Any:
    """Load a skops payload, trusting skops's defaults plus the names in ``extra_trusted``.

    Raises :class:`UntrustedTypesError` (nothing is constructed) when the payload names
    a type that is in neither, and :class:`EnvelopeError` when it cannot be loaded.
    """
    import skops.io

    if isinstance(extra_trusted, str):
        raise TypeError("extra_trusted must be a sequence of type names, not one string")
    found = untrusted_types(data)
    allowed = set(extra_trusted)
    refused = [name for name in found if name not in allowed]
    if refused:
        raise UntrustedTypesError(refused)
    try:
        return skops.io.loads(bytes(data), trusted=[name for name in found if name in allowed])
    except Exception as exc:
        raise EnvelopeError(f"payload does not load: {type(exc).__name__}: {exc}") from exc


def feature_names(estimator: Any) -> list[str] | None:
    """The column names ``estimator`` was fit with (``feature_names_in_``), or None when fit without names."""
    names = getattr(estimator, "feature_names_in_", None)
    return None if names is None else [str(name) for name in names]


def one_hot(name: str) -> bool:
    """Whether ``name`` is a one-hot feature (``field=value``): absent from a record means 0.0."""
    return "=" in name


def _plain(value: Any) -> Any:
    """A numpy scalar as the equivalent Python value; anything else unchanged."""
    import numpy

    return value.item() if isinstance(value, numpy.generic) else value


class SklearnModel:
    """A fitted estimator served one record at a time, features by name.

    Each record is turned into a one-row DataFrame with columns ``feature_names``
    (in that order), so the estimator sees the names it was fit with; keys of the
    record that are not features are ignored. A one-hot feature (``field=value``,
    the processor's encoding of a category) absent from a record is 0.0, as in
    training (:mod:`model_publisher.snapshot`); any other absent feature is an
    error naming it. Results are plain Python values.
    Batch models are not learned online, so there is no ``learn_one``.
    """

    def __init__(self, estimator: Any, feature_names: Sequence[str]) -> None:
        if isinstance(feature_names, str) or not feature_names:
            raise ValueError("feature_names must be a non-empty sequence of column names")
        if len(set(feature_names)) != len(feature_names):
            raise ValueError(f"feature_names has duplicates: {list(feature_names)}")
        self.estimator = estimator
        self.feature_names: tuple[str, ...] = tuple(feature_names)

    def _missing(self, present: Any) -> None:
        missing = [name for name in self.feature_names if name not in present and not one_hot(name)]
        if missing:
            raise ValueError(f"missing features {missing} (the model needs {list(self.feature_names)})")

    def _row(self, x: Mapping[str, Any]) -> pandas.DataFrame:
        import pandas

        self._missing(x)
        row = [x[name] if name in x else 0.0 for name in self.feature_names]
        return pandas.DataFrame([row], columns=list(self.feature_names))

    def predict_one(self, x: Mapping[str, Any]) -> Any:
        """The estimator's prediction for one record (a class label or a number)."""
        return _plain(self.estimator.predict(self._row(x))[0])

    def predict_proba_one(self, x: Mapping[str, Any]) -> dict[Any, float]:
        """``{class: probability}`` for one record; ``{}`` when the estimator has no ``predict_proba``."""
        if not hasattr(self.estimator, "predict_proba"):
            return {}
        proba = self.estimator.predict_proba(self._row(x))[0]
        return {_plain(label): float(p) for label, p in zip(self.estimator.classes_, proba, strict=True)}

    def predict_many(self, X: pandas.DataFrame) -> list[Any]:
        """Predictions for every row of ``X`` (which must have every feature column), in row order."""
        self._missing(X.columns)
        absent = [name for name in self.feature_names if name not in X.columns]
        if absent:
            X = X.assign(**{name: 0.0 for name in absent})
        return [_plain(value) for value in self.estimator.predict(X[list(self.feature_names)])]

    def __repr__(self) -> str:
        return f"SklearnModel({type(self.estimator).__name__}, features={list(self.feature_names)})"
