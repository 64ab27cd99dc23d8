"""A regression pipeline seals with golden examples and serves a number with no probabilities."""

from __future__ import annotations

from river import datasets

from consumers.swap import ServingModel
from model_publisher import catalog
from streamml.envelope import probability_method, seal
from streamml.signing import Keyring, SigningKey
from streamml.trust import TrustPolicy, assess, load_model

SIGNER = SigningKey.generate()
POLICY = TrustPolicy(keyring=Keyring().with_key(SIGNER.public_key))
ROWS = [({k: float(v) for k, v in x.items()}, float(y)) for x, y in datasets.synth.Friedman(seed=3).take(200)]


def trained(spec: str) -> object:
    model = catalog.build(spec)
    for x, y in ROWS:
        model.learn_one(x, y if catalog.task(model) == "regression" else y > 14)  # type: ignore[attr-defined]
    return model


def test_a_regression_pipeline_has_no_probability_method_but_a_classifier_pipeline_has() -> None:
    assert probability_method(trained("linear_regression")) is None
    assert probability_method(trained("logistic")) is not None


def test_a_regression_pipeline_seals_with_golden_examples_and_serves_a_float() -> None:
    model = trained("linear_regression")
    inputs = [x for x, _ in ROWS[:8]]
    envelope = seal(model, model_name="r", version=1, flavor="river", signer=SIGNER, golden_inputs=inputs)
    assert len(envelope.golden) == 8 and all(g.probabilities == {} for g in envelope.golden)
    loaded = load_model(assess(envelope, POLICY))  # replays the golden examples
    serving = ServingModel(loaded, 1, envelope.summary())
    assert isinstance(serving.predict_one(inputs[0]), float)
    assert serving.predict_proba_one(inputs[0]) == {}
    classifier = ServingModel(trained("logistic"), 1, {})
    assert set(classifier.predict_proba_one(inputs[0])) == {False, True}
