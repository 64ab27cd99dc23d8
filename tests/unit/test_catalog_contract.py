"""The contract every catalog model must keep (in the spirit of river's checks)."""

from __future__ import annotations

import copy
import pickle

import pytest
from river import datasets

from model_publisher import catalog
from streamml.config import load_settings
from streamml.envelope import encode_envelope, seal
from streamml.errors import ConfigError, ModelTooLargeError

SPECS = catalog.spec_names()
N_ROWS = 50_000


def _rows(n: int, seed: int = 7) -> list[tuple[dict[str, float], int]]:
    # The Agrawal loan stream is what the demo learns from.
    return [({k: float(v) for k, v in x.items()}, y) for x, y in datasets.synth.Agrawal(seed=seed).take(n)]


@pytest.fixture(scope="module")
def trained() -> dict[str, object]:
    """Each catalog model trained on 50k rows (trained once for the module)."""
    rows = _rows(N_ROWS)
    models = {}
    for spec in SPECS:
        model = catalog.build(spec)
        for x, y in rows:
            model.learn_one(x, y)
        models[spec] = model
    return models


def test_catalog_lists_the_documented_specs() -> None:
    assert {"logistic", "hoeffding", "naive_bayes"} <= set(SPECS)


def test_unknown_spec_is_a_config_error_listing_the_choices() -> None:
    with pytest.raises(ConfigError) as info:
        catalog.build("forest")
    for name in SPECS:
        assert name in str(info.value)


def test_default_spec_is_a_scaled_logistic_regression() -> None:
    assert catalog.describe(catalog.build(catalog.DEFAULT_SPEC)) == "StandardScaler | LogisticRegression"


@pytest.mark.parametrize("spec", SPECS)
def test_build_returns_a_fresh_model_each_time(spec: str) -> None:
    first, second = catalog.build(spec), catalog.build(spec)
    assert first is not second
    x, y = _rows(1)[0]
    first.learn_one(x, y)
    assert pickle.dumps(second) == pickle.dumps(catalog.build(spec))


@pytest.mark.parametrize("spec", SPECS)
def test_predicts_before_learning_without_crashing(spec: str) -> None:
    model = catalog.build(spec)
    x, _ = _rows(1)[0]
    model.predict_one(x)  # any answer (even None) is allowed; an exception is not
    assert isinstance(model.predict_proba_one(x), dict)


@pytest.mark.parametrize("spec", SPECS)
def test_learning_does_not_mutate_the_input(spec: str) -> None:
    model = catalog.build(spec)
    for x, y in _rows(300):
        before = copy.deepcopy(x)
        model.predict_one(x)
        model.learn_one(x, y)
        assert x == before


@pytest.mark.parametrize("spec", SPECS)
def test_pickle_round_trip_predicts_the_same(spec: str, trained: dict[str, object]) -> None:
    model = trained[spec]
    clone = pickle.loads(pickle.dumps(model))
    probe = _rows(500, seed=99)
    assert [clone.predict_one(x) for x, _ in probe] == [model.predict_one(x) for x, _ in probe]
    assert [clone.predict_proba_one(x) for x, _ in probe[:50]] == [model.predict_proba_one(x) for x, _ in probe[:50]]


@pytest.mark.parametrize("spec", SPECS)
def test_trained_model_learned_something(spec: str, trained: dict[str, object]) -> None:
    probe = _rows(2000, seed=123)
    accuracy = sum(trained[spec].predict_one(x) == y for x, y in probe) / len(probe)
    assert accuracy > 0.6, f"{spec}: {accuracy:.3f}"


@pytest.mark.parametrize("spec", SPECS)
def test_envelope_after_50k_rows_fits_the_limit_or_is_refused(spec: str, trained: dict[str, object]) -> None:
    limit = load_settings(env={}).max_model_bytes
    model = trained[spec]
    size = len(encode_envelope(seal(model, model_name="m", version=1, flavor=catalog.FLAVOR)))
    if size > limit:
        with pytest.raises(ModelTooLargeError):
            seal(model, model_name="m", version=1, flavor=catalog.FLAVOR, max_bytes=limit)
    else:
        envelope = seal(model, model_name="m", version=1, flavor=catalog.FLAVOR, max_bytes=limit)
        assert len(encode_envelope(envelope)) == size <= limit


def test_the_limit_is_enforced_on_the_client_for_a_grown_tree(trained: dict[str, object]) -> None:
    # The embedded broker accepts 15 MB records, so only the client can keep a
    # model within Apache Kafka's limits: a limit just under the tree's size must refuse it.
    tree = trained["hoeffding"]
    size = len(encode_envelope(seal(tree, model_name="m", version=1, flavor=catalog.FLAVOR)))
    with pytest.raises(ModelTooLargeError, match=str(size - 1)):
        seal(tree, model_name="m", version=1, flavor=catalog.FLAVOR, max_bytes=size - 1)
    assert seal(tree, model_name="m", version=1, flavor=catalog.FLAVOR, max_bytes=size).version == 1
