"""scikit-learn models as skops payloads: round trip, trust check, per-record serving."""

from __future__ import annotations

import builtins
import os
from typing import Any

import numpy as np
import pandas as pd
import pytest
import skops.io
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from streamml.errors import EnvelopeError
from streamml.sklearn_format import (
    SklearnModel,
    UntrustedTypesError,
    dump_sklearn,
    feature_names,
    load_sklearn,
    untrusted_types,
)

TREE = "sklearn.tree._tree.Tree"
FEATURES = ["f0", "f1", "f2", "f3"]
ROWS = 12  # rows compared one by one through predict_one / predict_proba_one


def _data() -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(200, len(FEATURES))), columns=FEATURES)
    label = (X["f0"] + 0.5 * X["f1"] - X["f2"] + 0.3 * rng.normal(size=200) > 0).astype(int).to_numpy()
    target = (2.0 * X["f0"] - X["f3"] + 0.1 * rng.normal(size=200)).to_numpy()
    return X, label, target


X, LABEL, TARGET = _data()

# (name, estimator factory, is a classifier, types skops 0.16 does not trust by default)
CASES: list[tuple[str, Any, bool, list[str]]] = [
    ("logistic", lambda: LogisticRegression(), True, []),
    ("forest", lambda: RandomForestClassifier(n_estimators=10, random_state=0), True, [TREE]),
    ("pipeline", lambda: make_pipeline(StandardScaler(), LogisticRegression()), True, []),
    ("boosting", lambda: GradientBoostingClassifier(n_estimators=10, random_state=0), True, [TREE]),
    ("linear", lambda: LinearRegression(), False, []),
]


def _fitted(factory: Any, classifier: bool) -> Any:
    return factory().fit(X, LABEL if classifier else TARGET)


def _double(values: Any) -> Any:
    return values * 2.0


class Tripwire(ClassifierMixin, BaseEstimator):
    """A custom estimator that records every time skops reconstructs it."""

    loaded: list[str] = []

    def fit(self, X: Any, y: Any) -> Tripwire:
        self.classes_ = np.unique(y)
        return self

    def predict(self, X: Any) -> np.ndarray:
        return np.full(len(X), self.classes_[0])

    def __setstate__(self, state: dict[str, Any]) -> None:
        Tripwire.loaded.append("setstate")
        super().__setstate__(state)


@pytest.mark.parametrize(("name", "factory", "classifier", "expected_untrusted"), CASES, ids=[c[0] for c in CASES])
def test_round_trip_serves_the_same_predictions(
    name: str, factory: Any, classifier: bool, expected_untrusted: list[str]
) -> None:
    estimator = _fitted(factory, classifier)
    data = dump_sklearn(estimator)
    assert untrusted_types(data) == expected_untrusted
    if expected_untrusted:
        with pytest.raises(UntrustedTypesError) as info:
            load_sklearn(data)
        assert info.value.types == expected_untrusted
    loaded = load_sklearn(data, extra_trusted=expected_untrusted)
    assert type(loaded) is type(estimator)
    assert feature_names(loaded) == FEATURES

    model = SklearnModel(loaded, feature_names(loaded) or [])
    head = X.iloc[:ROWS]
    want = estimator.predict(head)
    for i in range(ROWS):
        x = {k: float(v) for k, v in head.iloc[i].items()}
        got = model.predict_one(x)
        assert type(got) is (int if classifier else float)
        if classifier:
            assert got == want[i]
        else:
            assert got == pytest.approx(want[i], abs=1e-12, rel=0)
        proba = model.predict_proba_one(x)
        if classifier:
            expected = dict(zip(estimator.classes_.tolist(), estimator.predict_proba(head)[i].tolist(), strict=True))
            assert proba.keys() == expected.keys()
            assert all(type(k) is int and type(p) is float for k, p in proba.items())
            assert all(abs(proba[k] - expected[k]) <= 1e-12 for k in expected)
        else:
            assert proba == {}
    many = model.predict_many(X)
    assert many == pytest.approx(estimator.predict(X).tolist(), abs=1e-12, rel=0)


def test_feature_names_is_none_without_named_columns() -> None:
    assert feature_names(LogisticRegression().fit(X.to_numpy(), LABEL)) is None


def test_a_function_from_this_module_is_refused_until_trusted() -> None:
    estimator = make_pipeline(FunctionTransformer(func=_double), LogisticRegression()).fit(X, LABEL)
    data = dump_sklearn(estimator)
    name = f"{__name__}._double"
    assert untrusted_types(data) == [name]
    with pytest.raises(UntrustedTypesError, match="_double") as info:
        load_sklearn(data)
    assert info.value.types == [name]
    assert isinstance(info.value, EnvelopeError)
    loaded = load_sklearn(data, extra_trusted=[name, "unrelated.Type"])
    assert loaded.steps[0][1].func is _double
    assert SklearnModel(loaded, FEATURES).predict_many(X) == estimator.predict(X).tolist()


def test_a_custom_estimator_is_refused_and_nothing_is_constructed() -> None:
    data = dump_sklearn(Tripwire().fit(X, LABEL))
    name = f"{__name__}.Tripwire"
    Tripwire.loaded.clear()
    with pytest.raises(UntrustedTypesError) as info:
        load_sklearn(data)
    assert info.value.types == [name]
    assert Tripwire.loaded == []
    loaded = load_sklearn(data, extra_trusted=[name])
    assert isinstance(loaded, Tripwire) and Tripwire.loaded == ["setstate"]
    assert SklearnModel(loaded, FEATURES).predict_proba_one(dict.fromkeys(FEATURES, 0.0)) == {}


@pytest.mark.parametrize("func", [os.system, builtins.eval], ids=["os.system", "builtins.eval"])
def test_a_dangerous_function_is_refused_before_skops_loads_anything(
    func: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = skops.io.dumps(make_pipeline(FunctionTransformer(func=func), LogisticRegression()))
    name = f"{func.__module__}.{func.__name__}"  # posix.system on Linux, builtins.eval
    assert untrusted_types(data) == [name]

    def must_not_run(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("skops.io.loads was called on an untrusted payload")

    monkeypatch.setattr(skops.io, "loads", must_not_run)
    with pytest.raises(UntrustedTypesError) as info:
        load_sklearn(data, extra_trusted=["os.system", "eval"])  # near-miss names trust nothing
    assert info.value.types == [name]
    assert name in str(info.value)


@pytest.mark.parametrize("data", [b"", b"not a zip file", dump_sklearn(LinearRegression())[:100]])
def test_corrupt_bytes_raise_envelope_error(data: bytes) -> None:
    with pytest.raises(EnvelopeError, match="payload does not load"):
        load_sklearn(data)
    with pytest.raises(EnvelopeError, match="payload does not load"):
        untrusted_types(data)


def test_a_missing_feature_is_named() -> None:
    model = SklearnModel(LogisticRegression().fit(X, LABEL), FEATURES)
    record = {"f0": 1.0, "f2": 0.5, "extra": 9.0}
    with pytest.raises(ValueError, match=r"\['f1', 'f3'\]"):
        model.predict_one(record)
    with pytest.raises(ValueError, match="f1"):
        model.predict_proba_one(record)
    with pytest.raises(ValueError, match="f3"):
        model.predict_many(X.drop(columns=["f3"]))


def test_features_are_passed_by_name_not_by_record_order() -> None:
    estimator = LogisticRegression().fit(X, LABEL)
    model = SklearnModel(estimator, FEATURES)
    row = {k: float(v) for k, v in X.iloc[0].items()}
    shuffled = dict(reversed(list(row.items())))
    assert model.predict_proba_one(shuffled) == model.predict_proba_one(row)


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError):
        SklearnModel(LinearRegression(), [])
    with pytest.raises(ValueError, match="duplicates"):
        SklearnModel(LinearRegression(), ["a", "a"])
    with pytest.raises(TypeError):
        load_sklearn(dump_sklearn(LinearRegression()), extra_trusted="sklearn.tree._tree.Tree")


def test_an_absent_one_hot_feature_is_zero_as_in_training() -> None:
    frame = X.assign(**{"car=1": (X["f0"] > 0).astype(float)})
    estimator = LogisticRegression().fit(frame, LABEL)
    model = SklearnModel(estimator, [*FEATURES, "car=1"])
    row = {k: float(v) for k, v in X.iloc[0].items()}
    assert model.predict_proba_one(row) == model.predict_proba_one({**row, "car=1": 0.0})
    assert model.predict_proba_one(row) != model.predict_proba_one({**row, "car=1": 1.0})
    assert model.predict_many(X.iloc[:3]) == model.predict_many(frame.iloc[:3].assign(**{"car=1": 0.0}))
