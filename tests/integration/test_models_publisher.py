"""ModelPublisher and streamml.registry on a real broker."""

from __future__ import annotations

import dataclasses
import json

import pytest
from click.testing import CliRunner

from model_publisher import catalog
from model_publisher.publisher import ModelPublisher
from streamml.cluster import Cluster
from streamml.config import Settings
from streamml.envelope import encode_envelope, envelope_headers
from streamml.errors import ModelTooLargeError
from streamml.kafka import make_producer
from streamml.registry import read_versions
from streamml.topics import Topics
from streamml_cli import cli

pytestmark = pytest.mark.integration


def _trained(n: int = 50) -> object:
    model = catalog.build("logistic")
    for i in range(n):
        model.learn_one({"a": float(i % 7)}, i % 2 == 0)
    return model


def _publish(publisher: ModelPublisher, n_learned: int) -> int:
    envelope = publisher.publish(
        _trained(),
        metrics={"accuracy": 0.5, "rolling_accuracy": 0.6},
        n_learned=n_learned,
        input_offsets={"f[0]": n_learned},
    )
    return envelope.version


def test_three_versions_are_published_and_read_back_in_order(settings: Settings, topics: Topics) -> None:
    publisher = ModelPublisher(settings)
    assert publisher.start() == 1
    assert [_publish(publisher, n) for n in (10, 20, 30)] == [1, 2, 3]
    publisher.close()
    records = read_versions(Cluster(settings))
    assert [(r.version, r.status, r.summary["n_learned"]) for r in records] == [
        (1, "ok", 10),
        (2, "ok", 20),
        (3, "ok", 30),
    ]
    # Each version is one transaction: its commit marker takes the next offset
    # and is never delivered, and the topic ends in one (read to its end all the same).
    assert [r.offset for r in records] == [0, 2, 4]
    assert records[2].summary["metrics"]["rolling_accuracy"] == 0.6


def test_a_restarted_publisher_continues_the_sequence_and_resumes_the_model(settings: Settings, topics: Topics) -> None:
    first = ModelPublisher(settings)
    first.start()
    _publish(first, 10)
    _publish(first, 20)
    first.close()
    second = ModelPublisher(settings)
    assert second.start() == 3
    model, envelope = second.newest_model()
    assert envelope.version == 2 and envelope.input_offsets == {"f[0]": 20}
    assert model.predict_one({"a": 1.0}) == _trained().predict_one({"a": 1.0})
    assert _publish(second, 30) == 3
    second.close()


def test_forged_or_corrupt_records_do_not_move_the_sequence(settings: Settings, topics: Topics) -> None:
    publisher = ModelPublisher(settings)
    publisher.start()
    good = publisher.publish(_trained(), metrics={}, n_learned=1, input_offsets={})
    corrupt = dataclasses.replace(good, version=99, payload=good.payload[:-1] + bytes([good.payload[-1] ^ 1]))
    producer = make_producer(settings)
    producer.produce(topics.models, key=b"demo-classifier", value=encode_envelope(corrupt), headers=envelope_headers())
    producer.produce(topics.models, key=b"demo-classifier", value=b"not avro at all", headers=envelope_headers())
    assert producer.flush(10) == 0
    restarted = ModelPublisher(settings)
    assert restarted.start() == 2
    records = read_versions(Cluster(settings), model_name="demo-classifier")
    assert [r.status for r in records] == ["ok", "refused", "refused"]
    # The signature is checked first: a changed field (version) and payload break it.
    assert "signature" in records[1].reason and "not a model envelope" in records[2].reason


def test_a_model_over_the_total_limit_is_refused_before_it_reaches_the_broker(
    settings: Settings, topics: Topics
) -> None:
    small = dataclasses.replace(settings, max_model_total_bytes=2000)
    publisher = ModelPublisher(small)
    publisher.start()
    big = catalog.build("hoeffding")
    for i in range(3000):
        big.learn_one({"a": float(i % 97), "b": float(i % 13)}, i % 3 == 0)
    with pytest.raises(ModelTooLargeError):
        publisher.publish(big, metrics={}, n_learned=3000, input_offsets={})
    assert publisher.next_version == 1  # the number was not used
    publisher.close()
    assert read_versions(Cluster(settings)) == []


def test_models_list_prints_versions_as_table_and_json(settings: Settings, topics: Topics) -> None:
    publisher = ModelPublisher(settings)
    publisher.start()
    _publish(publisher, 10)
    _publish(publisher, 20)
    publisher.close()
    args = ["--bootstrap-servers", settings.bootstrap_servers, "--namespace", settings.namespace]
    runner = CliRunner()
    as_json = runner.invoke(cli, ["models", "list", "--json", *args])
    assert as_json.exit_code == 0, as_json.output
    document = json.loads(as_json.output)
    listed = document["versions"]
    assert [(v["version"], v["status"], v["envelope"]["n_learned"]) for v in listed] == [(1, "ok", 10), (2, "ok", 20)]
    assert document["serving"] == {"demo-classifier": {"version": 2, "mode": "latest"}}
    table = runner.invoke(cli, ["models", "list", *args], env={"COLUMNS": "160"})
    assert table.exit_code == 0, table.output
    assert "0.600" in table.output and listed[1]["envelope"]["key_id"] in table.output
    assert "serving" in table.output and "consumers serve v2 (latest)" in table.output
