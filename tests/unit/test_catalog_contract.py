"""The contract every catalog model must keep (in the spirit of river's checks), and import-path specs."""

from __future__ import annotations

import copy
import math
import pickle
import statistics
from typing import Any

import pytest
from river import cluster, compose, datasets, linear_model, optim, preprocessing

from model_publisher import catalog
from streamml.config import load_settings
from streamml.envelope import encode_envelope, seal
from streamml.errors import ConfigError, ModelTooLargeError
from streamml.safe_pickle import safe_loads

SPECS = catalog.spec_names()
#: What each catalog spec learns: a new spec must be added here, so its task is a decision, not an accident.
TASKS = {
    "logistic": "classification",
    "perceptron": "classification",
    "naive_bayes": "classification",
    "hoeffding": "classification",
    "hoeffding_adaptive": "classification",
    "adaptive_forest": "classification",
    "linear_regression": "regression",
    "hoeffding_regressor": "regression",
    "adaptive_forest_regressor": "regression",
}
REGRESSORS = [spec for spec in SPECS if TASKS.get(spec) == "regression"]
N_ROWS = 50_000
#: The forests learn ~10x slower than the rest: fewer rows keep this file fast (and they still learn).
TRAINING_ROWS = {"adaptive_forest": 10_000, "adaptive_forest_regressor": 5_000}
Row = tuple[dict[str, float], Any]


def _classification_rows(n: int, seed: int = 7) -> list[Row]:
    # The Agrawal loan stream is what the demo learns from.
    return [({k: float(v) for k, v in x.items()}, y) for x, y in datasets.synth.Agrawal(seed=seed).take(n)]


def _regression_rows(n: int, seed: int = 7) -> list[Row]:
    # Friedman #1: ten uniform features (five of them noise), a float target; named x0..x9 as Avro maps need.
    return [({f"x{k}": float(v) for k, v in x.items()}, y) for x, y in datasets.synth.Friedman(seed=seed).take(n)]


def _rows(spec: str, n: int, seed: int = 7) -> list[Row]:
    return _regression_rows(n, seed) if spec in REGRESSORS else _classification_rows(n, seed)


@pytest.fixture(scope="module")
def trained() -> dict[str, Any]:
    """Each catalog model trained once for the module (50k rows, fewer for the forests)."""
    models = {}
    for spec in SPECS:
        model = catalog.build(spec)
        for x, y in _rows(spec, TRAINING_ROWS.get(spec, N_ROWS)):
            model.learn_one(x, y)
        models[spec] = model
    return models


def test_catalog_lists_the_documented_specs() -> None:
    assert set(SPECS) == set(TASKS)
    assert len(REGRESSORS) >= 1


@pytest.mark.parametrize("spec", SPECS)
def test_task_tells_a_regressor_from_a_classifier(spec: str) -> None:
    assert catalog.task(catalog.build(spec)) == TASKS[spec]


def test_unknown_spec_is_a_config_error_listing_the_choices() -> None:
    with pytest.raises(ConfigError) as info:
        catalog.build("forest")
    for name in SPECS:
        assert name in str(info.value)
    assert "package.module:function" in str(info.value)


def test_default_spec_is_a_scaled_logistic_regression() -> None:
    assert catalog.describe(catalog.build(catalog.DEFAULT_SPEC)) == "StandardScaler | LogisticRegression"


@pytest.mark.parametrize("spec", SPECS)
def test_build_returns_a_fresh_model_each_time(spec: str) -> None:
    first, second = catalog.build(spec), catalog.build(spec)
    assert first is not second
    x, y = _rows(spec, 1)[0]
    first.learn_one(x, y)
    assert pickle.dumps(second) == pickle.dumps(catalog.build(spec))


@pytest.mark.parametrize("spec", SPECS)
def test_predicts_before_learning_without_crashing(spec: str) -> None:
    model = catalog.build(spec)
    x, _ = _rows(spec, 1)[0]
    prediction = model.predict_one(x)  # a classifier may answer anything (even None); an exception is not allowed
    if spec in REGRESSORS:
        assert isinstance(prediction, float) and math.isfinite(prediction)
    else:
        assert isinstance(model.predict_proba_one(x), dict)


@pytest.mark.parametrize("spec", SPECS)
def test_learning_does_not_mutate_the_input(spec: str) -> None:
    model = catalog.build(spec)
    for x, y in _rows(spec, 300):
        before = copy.deepcopy(x)
        model.predict_one(x)
        model.learn_one(x, y)
        assert x == before


def _same_answers(spec: str, clone: Any, model: Any) -> None:
    probe = _rows(spec, 500, seed=99)
    assert [clone.predict_one(x) for x, _ in probe] == [model.predict_one(x) for x, _ in probe]
    if spec not in REGRESSORS:
        head = probe[:50]
        assert [clone.predict_proba_one(x) for x, _ in head] == [model.predict_proba_one(x) for x, _ in head]


@pytest.mark.parametrize("spec", SPECS)
def test_pickle_round_trip_predicts_the_same(spec: str, trained: dict[str, Any]) -> None:
    model = trained[spec]
    _same_answers(spec, pickle.loads(pickle.dumps(model)), model)


@pytest.mark.parametrize("spec", SPECS)
def test_trained_model_loads_through_the_restricted_unpickler(spec: str, trained: dict[str, Any]) -> None:
    # What a consumer does with every version: no catalog model may need an allowlist entry.
    model = trained[spec]
    _same_answers(spec, safe_loads(pickle.dumps(model, protocol=5)), model)


@pytest.mark.parametrize("spec", SPECS)
def test_trained_model_learned_something(spec: str, trained: dict[str, Any]) -> None:
    model = trained[spec]
    probe = _rows(spec, 2000, seed=123)
    if spec in REGRESSORS:
        # Better than always answering the training mean, by a clear margin.
        mean = statistics.fmean(y for _, y in _rows(spec, 5000))
        baseline = statistics.fmean(abs(y - mean) for _, y in probe)
        mae = statistics.fmean(abs(y - model.predict_one(x)) for x, y in probe)
        assert mae < 0.75 * baseline, f"{spec}: MAE {mae:.3f} vs {baseline:.3f} for the mean"
    else:
        accuracy = sum(model.predict_one(x) == y for x, y in probe) / len(probe)
        assert accuracy > 0.6, f"{spec}: {accuracy:.3f}"


@pytest.mark.parametrize("spec", SPECS)
def test_trained_envelope_fits_the_limit_or_is_refused(spec: str, trained: dict[str, Any]) -> None:
    limit = load_settings(env={}).max_model_bytes
    model = trained[spec]
    size = len(encode_envelope(seal(model, model_name="m", version=1, flavor=catalog.FLAVOR)))
    if size > limit:
        with pytest.raises(ModelTooLargeError):
            seal(model, model_name="m", version=1, flavor=catalog.FLAVOR, max_bytes=limit)
    else:
        envelope = seal(model, model_name="m", version=1, flavor=catalog.FLAVOR, max_bytes=limit)
        assert len(encode_envelope(envelope)) == size <= limit


def test_the_limit_is_enforced_on_the_client_for_a_grown_tree(trained: dict[str, Any]) -> None:
    # The embedded broker accepts 15 MB records, so only the client can keep a
    # model within Apache Kafka's limits: a limit just under the tree's size must refuse it.
    tree = trained["hoeffding"]
    size = len(encode_envelope(seal(tree, model_name="m", version=1, flavor=catalog.FLAVOR)))
    with pytest.raises(ModelTooLargeError, match=str(size - 1)):
        seal(tree, model_name="m", version=1, flavor=catalog.FLAVOR, max_bytes=size - 1)
    assert seal(tree, model_name="m", version=1, flavor=catalog.FLAVOR, max_bytes=size).version == 1


# --- import-path specs ------------------------------------------------------------------------------------------

HERE = __name__  # tests.unit.test_catalog_contract: importable, as a user's module would be


def robust_regressor() -> Any:
    """A user's factory: a river pipeline with non-default parts (what an import-path spec names)."""
    return preprocessing.StandardScaler() | linear_model.LinearRegression(
        optimizer=optim.Adam(0.05), loss=optim.losses.Huber()
    )


def _double(x: dict[str, float]) -> dict[str, float]:
    return {k: 2 * v for k, v in x.items()}


def with_own_function() -> Any:
    """A pipeline holding the user's own function: it pickles, but consumers refuse it by default."""
    return compose.FuncTransformer(_double) | linear_model.LinearRegression()


def a_clusterer() -> Any:
    return cluster.KMeans(seed=1)  # learn_one and predict_one, but no label to learn


def not_a_model() -> Any:
    return {"weights": [1.0]}


def raises() -> Any:
    raise RuntimeError("no GPU here")


NOT_CALLABLE = 3


def test_an_import_path_builds_a_fresh_river_pipeline_that_consumers_can_load() -> None:
    spec = f"{HERE}:robust_regressor"
    model = catalog.build(spec)
    assert model is not catalog.build(spec)
    assert catalog.task(model) == "regression"
    rows = _regression_rows(2000)
    for x, y in rows:
        model.learn_one(x, y)
    loaded = safe_loads(pickle.dumps(model, protocol=5))
    assert [loaded.predict_one(x) for x, _ in rows[-50:]] == [model.predict_one(x) for x, _ in rows[-50:]]


def test_a_river_class_is_a_factory_too() -> None:
    model = catalog.build("river.tree:HoeffdingAdaptiveTreeRegressor")
    assert catalog.describe(model) == "HoeffdingAdaptiveTreeRegressor" and catalog.task(model) == "regression"
    assert catalog.task(catalog.build("river.forest:AMFClassifier")) == "classification"


def test_matches_compares_import_path_models_by_structure() -> None:
    spec = f"{HERE}:robust_regressor"
    trained_model = catalog.build(spec)
    for x, y in _regression_rows(100):
        trained_model.learn_one(x, y)
    assert catalog.matches(trained_model, spec)
    assert not catalog.matches(trained_model, "logistic")
    assert not catalog.matches(catalog.build("logistic"), spec)
    assert not catalog.matches(trained_model, "river.tree:HoeffdingTreeRegressor")


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("no_such_package_xyz.models:make", "cannot import no_such_package_xyz.models: ModuleNotFoundError"),
        (f"{HERE}:missing", "has no attribute missing"),
        (f"{HERE}:NOT_CALLABLE", "NOT_CALLABLE is a int, not a function returning a model"),
        (f"{HERE}:not_a_model", "returned a dict, which has no learn_one or predict_one()"),
        (f"{HERE}:a_clusterer", "returned a KMeans, which is neither a river classifier nor a regressor"),
        (f"{HERE}:raises", "calling raises() raised RuntimeError: no GPU here"),
        ("a:b:c", "an import path is package.module:function"),
        (":make", "an import path is package.module:function"),
        ("my-models:make", "an import path is package.module:function"),
    ],
)
def test_a_bad_import_path_is_one_config_error_line(spec: str, says: str) -> None:
    with pytest.raises(ConfigError) as info:
        catalog.build(spec)
    message = str(info.value)
    assert says in message and repr(spec) in message
    assert "\n" not in message


def test_a_model_consumers_would_refuse_is_warned_about_once(caplog: pytest.LogCaptureFixture) -> None:
    spec = f"{HERE}:with_own_function"
    with caplog.at_level("WARNING", logger="model_publisher.catalog"):
        catalog.build(spec)
        catalog.build(spec)
        catalog.build(f"{HERE}:robust_regressor")  # river classes only: nothing to say
    [record] = caplog.records
    assert f"{HERE}._double" in record.getMessage() and "STREAMML_MODEL_PICKLE_ALLOW" in record.getMessage()
