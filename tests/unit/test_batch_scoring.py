"""Batch scoring without a broker: batch answers equal per-row serving answers; inputs, outputs, errors."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas
import pytest

from consumers.batch_scoring import (
    BatchWriter,
    file_format,
    read_file_batches,
    score_batches,
    score_frame,
)
from consumers.swap import FeatureContract, ServingModel
from streamml.envelope import seal
from streamml.errors import ConfigError
from streamml.reader import parse_offsets
from streamml.trust import TrustPolicy, assess, load_model

#: Unsigned envelopes are accepted in development mode: the trust path itself is tested elsewhere.
POLICY = TrustPolicy(development_mode=True)


def serving(model: Any, *, flavor: str = "river", feature_names: list[str] | None = None, golden: Any = ()) -> Any:
    """``model`` sealed, assessed and loaded exactly as a subscriber loads it."""
    envelope = seal(model, model_name="m", version=3, flavor=flavor, feature_names=feature_names, golden_inputs=golden)
    verdict = assess(envelope, POLICY)
    assert verdict.acceptable, verdict.reason
    return ServingModel(load_model(verdict), 3, envelope.summary(), "latest", FeatureContract.of(envelope))


def rows(n: int) -> pandas.DataFrame:
    """``n`` rows of features ``a``, ``b``, a one-hot ``c=x`` and an ``id`` that is no feature."""
    return pandas.DataFrame(
        {
            "id": [f"r{i}" for i in range(n)],
            "a": [float(i % 7) - 3.0 for i in range(n)],
            "b": [float(i % 4) * 0.5 for i in range(n)],
            "c=x": [1.0 if i % 3 == 0 else 0.0 for i in range(n)],
        }
    )


def river_logistic() -> Any:
    from river import linear_model, preprocessing

    model = preprocessing.StandardScaler() | linear_model.LogisticRegression()
    for x in rows(200).drop(columns="id").to_dict("records"):
        model.learn_one(x, x["a"] + x["b"] > 0)
    return model


def river_regressor() -> Any:
    from river import linear_model, preprocessing

    model = preprocessing.StandardScaler() | linear_model.LinearRegression()
    for x in rows(200).drop(columns="id").to_dict("records"):
        model.learn_one(x, 2 * x["a"] - x["b"])
    return model


def river_tree() -> Any:
    from river import tree

    model = tree.HoeffdingTreeClassifier()
    for x in rows(200).drop(columns="id").to_dict("records"):
        model.learn_one(x, x["a"] > 0)
    return model


def sklearn_logistic() -> Any:
    from sklearn.linear_model import LogisticRegression

    frame = rows(200).drop(columns="id")
    return LogisticRegression().fit(frame, (frame["a"] + frame["b"] > 0).astype(int))


def per_row(model: ServingModel, frame: pandas.DataFrame) -> tuple[list[Any], list[dict[Any, float]]]:
    """What serving answers, one request per row (an empty cell is a key not sent)."""
    xs = [
        {k: v for k, v in row.items() if k != "id" and not (isinstance(v, float) and math.isnan(v))}
        for row in frame.to_dict("records")
    ]
    return [model.predict_one(x) for x in xs], [model.predict_proba_one(x) for x in xs]


def assert_same_as_serving(model: ServingModel, frame: pandas.DataFrame, out: pandas.DataFrame) -> None:
    predictions, probabilities = per_row(model, frame)
    if all(isinstance(p, float) for p in predictions):  # a regressor: numpy sums in another order
        assert out["prediction"].tolist() == pytest.approx(predictions, rel=1e-12)
    else:
        assert out["prediction"].tolist() == predictions
    for label in {label for p in probabilities for label in p}:
        assert out[f"proba_{label}"].tolist() == pytest.approx([p[label] for p in probabilities], rel=1e-12)
    assert (out["model_version"] == 3).all()


NAMES = ["a", "b", "c=x"]


@pytest.mark.parametrize(
    ("make", "flavor", "batched"),
    [
        (river_logistic, "river", True),
        (river_regressor, "river", True),
        (sklearn_logistic, "sklearn", True),
        (river_tree, "river", False),  # no predict_many: one row at a time
    ],
    ids=["river-logistic-pipeline", "river-linear-regression", "sklearn-logistic", "river-tree"],
)
def test_batch_scoring_answers_exactly_what_serving_answers_row_by_row(make: Any, flavor: str, batched: bool) -> None:
    frame = rows(57)
    golden = frame.drop(columns="id").head(3).to_dict("records")  # loading replays them, as serving does
    model = serving(make(), flavor=flavor, feature_names=NAMES, golden=golden)
    out, n_batched = score_frame(model, frame)
    assert n_batched == (len(frame) if batched else 0)
    assert_same_as_serving(model, frame, out)


def test_classifier_rows_get_a_probability_column_per_class_and_regressors_none() -> None:
    classifier, _ = score_frame(serving(river_logistic(), feature_names=NAMES), rows(5))
    assert {"proba_False", "proba_True"} <= set(classifier.columns)
    assert classifier[["proba_False", "proba_True"]].sum(axis=1).tolist() == pytest.approx([1.0] * 5)
    regressor, _ = score_frame(serving(river_regressor(), feature_names=NAMES), rows(5))
    assert not [c for c in regressor.columns if c.startswith("proba_")]


def test_every_input_column_passes_through_in_order() -> None:
    frame = rows(4).assign(note=["x", "y", "z", "w"])
    out, _ = score_frame(serving(sklearn_logistic(), flavor="sklearn"), frame)
    assert list(out.columns[: len(frame.columns)]) == list(frame.columns)
    assert out["id"].tolist() == ["r0", "r1", "r2", "r3"] and out["note"].tolist() == ["x", "y", "z", "w"]


def test_a_missing_required_column_is_an_error_naming_it() -> None:
    model = serving(sklearn_logistic(), flavor="sklearn")
    with pytest.raises(ConfigError, match=r"input has no column b: v3 needs it"):
        score_frame(model, rows(3).drop(columns="b"))


def test_an_empty_required_cell_is_an_error_naming_the_column_and_row() -> None:
    frame = rows(5)
    frame.loc[3, "a"] = float("nan")
    with pytest.raises(ConfigError, match=r"column 'a' is empty in row 4"):
        score_frame(serving(sklearn_logistic(), flavor="sklearn"), frame)


def test_an_absent_one_hot_feature_is_zero_for_sklearn_as_in_serving() -> None:
    frame = rows(6)
    model = serving(sklearn_logistic(), flavor="sklearn")
    without, _ = score_frame(model, frame.drop(columns="c=x"))
    zeroed, _ = score_frame(model, frame.assign(**{"c=x": 0.0}))
    assert without["proba_1"].tolist() == zeroed["proba_1"].tolist()
    assert_same_as_serving(model, frame.drop(columns="c=x"), without)


def test_river_rows_with_an_empty_one_hot_cell_are_scored_without_the_key() -> None:
    frame = rows(9)
    frame.loc[[1, 4], "c=x"] = float("nan")  # the processor leaves a category out when it does not apply
    model = serving(river_logistic(), feature_names=NAMES)
    out, n_batched = score_frame(model, frame)
    assert n_batched == 7
    assert_same_as_serving(model, frame, out)


def test_a_feature_column_that_is_not_numeric_is_an_error_naming_it() -> None:
    frame = rows(3).assign(a=["1", "two", "3"])
    with pytest.raises(ConfigError, match=r"column 'a' is a feature but not numeric"):
        score_frame(serving(river_logistic(), feature_names=NAMES), frame)


def test_without_feature_names_every_numeric_column_is_a_feature() -> None:
    model = serving(river_logistic())  # published without feature_names
    frame = rows(8)
    out, _ = score_frame(model, frame)
    assert_same_as_serving(model, frame, out)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_files_are_read_and_written_in_batches_with_row_numbers_of_the_whole_input(tmp_path: Path, suffix: str) -> None:
    source, target = tmp_path / f"in{suffix}", tmp_path / f"out{suffix}"
    frame = rows(25)
    frame.to_csv(source, index=False) if suffix == ".csv" else frame.to_parquet(source, index=False)
    model = serving(river_logistic(), feature_names=NAMES)
    seen: list[int] = []
    report = score_batches(model, read_file_batches(source, 10), target, on_progress=seen.append)
    assert (report.rows, report.version, report.batched_rows, seen) == (25, 3, 25, [10, 10, 5])
    out = pandas.read_csv(target) if suffix == ".csv" else pandas.read_parquet(target)
    assert out["id"].tolist() == frame["id"].tolist()
    assert_same_as_serving(model, frame, out)

    broken = frame.copy()
    broken.loc[17, "a"] = float("nan")
    broken.to_csv(source, index=False) if suffix == ".csv" else broken.to_parquet(source, index=False)
    with pytest.raises(ConfigError, match=r"column 'a' is empty in row 18"):
        score_batches(serving(sklearn_logistic(), flavor="sklearn"), read_file_batches(source, 10), tmp_path / "x.csv")
    assert not (tmp_path / "x.csv").exists() and not list(tmp_path.glob(".x.csv*"))  # a failed run leaves nothing


def test_input_problems_are_config_errors_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown format '\.xlsx'"):
        file_format(tmp_path / "in.xlsx")
    with pytest.raises(ConfigError, match=r"in\.csv: no such file"):
        list(read_file_batches(tmp_path / "in.csv", 10))
    (tmp_path / "bad.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(ConfigError, match=r"bad\.parquet: cannot read it as parquet"):
        list(read_file_batches(tmp_path / "bad.parquet", 10))
    with pytest.raises(ConfigError, match=r"does not exist"):
        BatchWriter(tmp_path / "missing" / "out.csv")


def test_offsets_parse_like_train_batch() -> None:
    assert parse_offsets("0:120, 1:0") == {0: 120, 1: 0}
    assert parse_offsets("") is None and parse_offsets(None) is None
    with pytest.raises(ConfigError, match=r"'0-1' is not PARTITION:OFFSET"):
        parse_offsets("0-1")
