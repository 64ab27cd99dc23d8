"""``streamml score-batch`` as a user runs it: the real executable against the session broker."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas
import pytest

from model_publisher.publisher import ModelPublisher
from streamml.cluster import Cluster
from streamml.config import Settings
from streamml.kafka import make_producer, produce
from streamml.records import FeatureVector, RecordCodec
from streamml.topics import Topics
from tests.integration.conftest import small_model

pytestmark = pytest.mark.integration

STREAMML = str(Path(sys.executable).with_name("streamml"))


def run(settings: Settings, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``streamml`` on this test's namespace (keys come from the environment the fixtures set)."""
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMML_") or "KEY" in k}
    env.update(
        STREAMML_BOOTSTRAP_SERVERS=settings.bootstrap_servers,
        STREAMML_NAMESPACE=settings.namespace,
        STREAMML_HOME=str(settings.home),
    )
    return subprocess.run([STREAMML, *args], env=env, capture_output=True, text=True, timeout=120, cwd=cwd)


def inputs(n: int) -> pandas.DataFrame:
    return pandas.DataFrame(
        {
            "id": [f"row-{i}" for i in range(n)],
            "a": [float(i % 5) for i in range(n)],
            "b": [i % 3 - 1.0 for i in range(n)],
        }
    )


def expected(model: Any, frame: pandas.DataFrame) -> list[Any]:
    return [model.predict_one({"a": a, "b": b}) for a, b in zip(frame["a"], frame["b"], strict=True)]


def publish(publisher: ModelPublisher, n: int) -> int:
    envelope = publisher.publish(
        small_model(n), metrics={"accuracy": 0.9}, n_learned=n, input_offsets={}, feature_names=["a", "b"],
        golden_inputs=inputs(3)[["a", "b"]].to_dict("records"),
    )
    return envelope.version


@pytest.fixture
def two_versions(publisher: ModelPublisher) -> None:
    assert publish(publisher, 4) == 1
    assert publish(publisher, 60) == 2


def test_scores_a_file_with_the_serving_version_or_a_pinned_one(
    settings: Settings, two_versions: None, tmp_path: Path
) -> None:
    frame = inputs(40)
    frame.to_csv(tmp_path / "in.csv", index=False)
    done = run(settings, "score-batch", "--input", "in.csv", "--output", "out.parquet", "--batch-size", "16",
               cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().startswith("scored 40 rows with v2 in ") and done.stdout.strip().endswith("out.parquet")
    out = pandas.read_parquet(tmp_path / "out.parquet")
    assert out["id"].tolist() == frame["id"].tolist()
    assert set(out["model_version"]) == {2}
    assert out["prediction"].tolist() == expected(small_model(60), frame)
    assert {"proba_True", "proba_False"} <= set(out.columns)

    pinned = run(settings, "score-batch", "--input", "in.csv", "--output", "v1.csv", "--version", "1", cwd=tmp_path)
    assert pinned.returncode == 0, pinned.stderr
    assert "with v1 " in pinned.stdout
    out1 = pandas.read_csv(tmp_path / "v1.csv")
    assert set(out1["model_version"]) == {1}
    assert out1["prediction"].tolist() == expected(small_model(4), frame)
    assert expected(small_model(4), frame) != expected(small_model(60), frame)  # the versions really differ here


def test_a_pin_on_the_topic_is_obeyed_without_version(
    settings: Settings, two_versions: None, tmp_path: Path
) -> None:
    from model_publisher.directives import issue_directive

    issue_directive(Cluster(settings), settings.model_name, "pin", 1, reason="test")
    inputs(5).to_csv(tmp_path / "in.csv", index=False)
    done = run(settings, "score-batch", "--input", "in.csv", "--output", "out.csv", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert set(pandas.read_csv(tmp_path / "out.csv")["model_version"]) == {1}


def test_scores_a_range_of_the_features_topic(
    settings: Settings, topics: Topics, two_versions: None, tmp_path: Path
) -> None:
    codec = RecordCodec(FeatureVector)
    producer = make_producer(settings)
    frame = inputs(10)
    for i, (a, b) in enumerate(zip(frame["a"], frame["b"], strict=True)):
        record = FeatureVector(
            key=f"k{i}", event_id=f"e{i}", event_time=1_700_000_000_000 + i, features={"a": a, "b": b},
            label=None, source_topic=topics.raw_events, source_partition=0, source_offset=i,
        )
        produce(producer, topics.features, codec.encode(record), key=b"k", headers=codec.headers, partition=0)
    assert producer.flush(10) == 0

    whole = run(settings, "score-batch", "--from-topic", "--output", "all.csv", cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr
    out = pandas.read_csv(tmp_path / "all.csv").sort_values(["partition", "offset"])
    assert out["event_id"].tolist() == [f"e{i}" for i in range(10)]
    assert out["prediction"].tolist() == expected(small_model(60), frame)

    part = run(settings, "score-batch", "--from-topic", "--from-offsets", "0:2", "--to-offsets", "0:5",
               "--version", "1", "--output", "part.parquet", cwd=tmp_path)
    assert part.returncode == 0, part.stderr
    out = pandas.read_parquet(tmp_path / "part.parquet")
    assert out["offset"].tolist() == [2, 3, 4] and set(out["model_version"]) == {1}
    assert out["prediction"].tolist() == expected(small_model(4), frame.iloc[2:5])


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--input", "absent.csv", "--output", "o.csv"], 2, "absent.csv: no such file"),
        (["--input", "in.xlsx", "--output", "o.csv"], 2, "unknown format '.xlsx'"),
        (["--input", "bad.parquet", "--output", "o.csv"], 2, "bad.parquet: cannot read it as parquet"),
        (["--input", "in.csv", "--output", "o.csv", "--version", "9"], 2, "has no version 9"),
        (["--input", "noa.csv", "--output", "o.csv"], 2, "column 'a' is empty in row 2"),
        (["--output", "o.csv"], 2, "give --input PATH or --from-topic"),
    ],
    ids=["missing-file", "unknown-format", "unreadable", "unknown-version", "missing-feature", "no-input"],
)
def test_failures_are_one_line_and_an_exit_code(
    settings: Settings, two_versions: None, tmp_path: Path, args: list[str], code: int, message: str
) -> None:
    inputs(3).to_csv(tmp_path / "in.csv", index=False)
    (tmp_path / "in.xlsx").write_bytes(b"PK")
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    inputs(3).assign(a=[1.0, None, 2.0]).to_csv(tmp_path / "noa.csv", index=False)
    done = run(settings, "score-batch", *args, cwd=tmp_path)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == code, done.stderr
    assert len(lines) == 1 and message in lines[0], done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "o.csv").exists()


def test_no_model_is_exit_1_and_a_refused_version_says_why(
    settings: Settings, topics: Topics, publisher: ModelPublisher, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inputs(3).to_csv(tmp_path / "in.csv", index=False)
    none = run(settings, "score-batch", "--input", "in.csv", "--output", "o.csv", cwd=tmp_path)
    assert none.returncode == 1, none.stderr
    assert none.stderr.strip().startswith("streamml: error: no version of") and len(none.stderr.splitlines()) == 1

    publish(publisher, 4)
    # A subscriber that trusts another key refuses v1: the reason is the one line.
    other = tmp_path / "other"
    from streamml.signing import generate_key_pair

    generate_key_pair(other, "other")
    monkeypatch.setenv("STREAMML_MODEL_TRUSTED_KEYS", str(other / "other.pub"))
    refused = run(settings, "score-batch", "--input", "in.csv", "--output", "o.csv", "--version", "1", cwd=tmp_path)
    assert refused.returncode == 1, refused.stderr
    assert "v1 is refused:" in refused.stderr and "does not trust" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
