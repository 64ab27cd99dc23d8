"""The feedback guard: records that carry a model version are told apart from feature vectors, without a broker."""

from __future__ import annotations

import dataclasses

import pytest

from model_publisher.learning_loop import ALLOW_SETTING, MODEL_VERSION_FIELD, model_version_marker
from streamml.config import load_settings
from streamml.errors import ConfigError
from streamml.records import FeatureVector, Prediction, RecordCodec

FEATURE = FeatureVector(
    key="c1", event_id="e1", event_time=1, features={"a": 1.0}, label=True,
    source_topic="events.raw.v1", source_partition=0, source_offset=0,
)
PREDICTION = Prediction(
    key="c1", event_id="e1", event_time=1, model_name="m", model_version=7, prediction=True,
    probabilities={"True": 0.9, "False": 0.1}, label=True, scored_at=2,
)


def test_the_field_the_guard_looks_for_is_the_one_a_prediction_names_its_version_in() -> None:
    assert MODEL_VERSION_FIELD in {f.name for f in dataclasses.fields(Prediction)}
    assert MODEL_VERSION_FIELD not in {f.name for f in dataclasses.fields(FeatureVector)}


def test_a_feature_vector_carries_no_model_version() -> None:
    codec = RecordCodec(FeatureVector)
    assert model_version_marker(codec.encode(FEATURE), codec.headers) is None


def test_a_prediction_record_is_recognised_with_its_version() -> None:
    codec = RecordCodec(Prediction)
    assert model_version_marker(codec.encode(PREDICTION), codec.headers) == "a Prediction record (model_version 7)"


def test_a_truncated_prediction_record_is_still_a_prediction() -> None:
    codec = RecordCodec(Prediction)
    found = model_version_marker(codec.encode(PREDICTION)[:5], codec.headers)
    assert found == "a Prediction record (model_version unreadable)"


@pytest.mark.parametrize(
    "header", ["model_version", "streamml.model.version", "x-model-version", "Model_Version"]
)
def test_a_model_version_header_marks_any_record(header: str) -> None:
    codec = RecordCodec(FeatureVector)
    headers = [*codec.headers, (header, b"3")]
    assert model_version_marker(codec.encode(FEATURE), headers) == f"header {header}=3"


@pytest.mark.parametrize("header", ["model", "version", "model_versions_seen", "streamml.schema"])
def test_headers_merely_like_it_do_not(header: str) -> None:
    codec = RecordCodec(FeatureVector)
    assert model_version_marker(codec.encode(FEATURE), [*codec.headers, (header, b"3")]) is None


def test_every_prediction_keeps_the_version_that_made_it_on_the_wire() -> None:
    codec = RecordCodec(Prediction)
    assert codec.decode(codec.encode(PREDICTION), codec.headers).model_version == 7


def test_the_setting_is_off_by_default_and_parsed_strictly() -> None:
    assert load_settings(env={}).learner_allow_prediction_source is False
    assert load_settings(env={ALLOW_SETTING: "true"}).learner_allow_prediction_source is True
    with pytest.raises(ConfigError, match=ALLOW_SETTING):
        load_settings(env={ALLOW_SETTING: "maybe"})
