"""The HTTP scoring service over a model slot (no broker: the slot is offered envelopes directly)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from consumers.http_service import MAX_INSTANCES, ModelServer
from consumers.swap import ModelSlot
from streamml.envelope import ModelEnvelope, seal
from streamml.signing import Keyring, SigningKey
from streamml.trust import TrustPolicy, assess

SIGNER = SigningKey.generate()
#: Trusts SIGNER; the test models live in this module, so the restricted unpickler must allow it.
POLICY = TrustPolicy(keyring=Keyring().with_key(SIGNER.public_key), pickle_allowed=(f"{__name__}.*",))


class Threshold:
    """A tiny picklable model: 1 if x > cut, with probabilities."""

    def __init__(self, cut: float) -> None:
        self.cut = cut

    def predict_one(self, x: dict[str, float]) -> int:
        return int(x["x"] > self.cut)

    def predict_proba_one(self, x: dict[str, float]) -> dict[int, float]:
        p = 1.0 if x["x"] > self.cut else 0.0
        return {0: 1 - p, 1: p}


def sealed(cut: float, version: int) -> ModelEnvelope:
    return seal(
        Threshold(cut), model_name="m", version=version, flavor="river", signer=SIGNER,
        golden_inputs=[{"x": 0.0}, {"x": 1.0}],
    )


def call(url: str, body: Any = None, *, raw: bytes | None = None) -> tuple[int, dict[str, Any], dict[str, str]]:
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read()), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()), dict(exc.headers)


@pytest.fixture
def slot() -> ModelSlot:
    return ModelSlot("m", POLICY)


@pytest.fixture
def server(slot: ModelSlot) -> Iterator[ModelServer]:
    with ModelServer(slot, port=0) as running:
        yield running


def test_not_ready_is_503_never_a_default_answer(server: ModelServer) -> None:
    status, body, headers = call(f"{server.url}/predict", {"features": {"x": 1.0}})
    assert status == 503 and body["ready"] is False and headers["Retry-After"] == "1"
    assert call(f"{server.url}/readyz")[0] == 503
    assert call(f"{server.url}/healthz")[:2] == (200, {"status": "ok"})


def test_predictions_name_the_version_that_made_them(server: ModelServer, slot: ModelSlot) -> None:
    assert slot.offer(sealed(0.5, 3))
    status, body, _ = call(f"{server.url}/predict", {"features": {"x": 0.9}})
    assert status == 200 and body == {"model_version": 3, "prediction": 1, "probabilities": {"0": 0.0, "1": 1.0}}
    status, body, _ = call(f"{server.url}/predict", {"instances": [{"x": 0.1}, {"x": 0.7}]})
    assert status == 200 and [p["prediction"] for p in body["predictions"]] == [0, 1] and body["model_version"] == 3
    assert call(f"{server.url}/readyz")[:2] == (200, {"ready": True, "model_version": 3})
    status, model, _ = call(f"{server.url}/model")
    assert status == 200 and model["version"] == 3 and "payload" not in model
    assert model["serving_mode"] == "latest" and model["signed"] is True and model["key_id"] == SIGNER.key_id


def test_model_says_why_its_version_serves(server: ModelServer, slot: ModelSlot) -> None:
    assert slot.offer(sealed(0.5, 2))
    assert slot.install(assess(sealed(0.8, 1), POLICY), mode="pinned")  # what a signed pin does
    status, model, _ = call(f"{server.url}/model")
    assert status == 200 and model["version"] == 1 and model["serving_mode"] == "pinned"
    assert call(f"{server.url}/predict", {"features": {"x": 0.7}})[1]["model_version"] == 1
    slot.set_mode("rolled_back")
    assert call(f"{server.url}/model")[1]["serving_mode"] == "rolled_back"
    assert call(f"{server.url}/readyz")[:2] == (200, {"ready": True, "model_version": 1})


def test_an_unsigned_model_never_serves(server: ModelServer, slot: ModelSlot) -> None:
    assert not slot.offer(seal(Threshold(0.5), model_name="m", version=1, flavor="river"))
    assert call(f"{server.url}/predict", {"features": {"x": 1.0}})[0] == 503
    assert call(f"{server.url}/model")[0] == 503
    assert [r.kind for r in slot.refused] == ["unsigned"]


def test_a_swap_changes_the_answers(server: ModelServer, slot: ModelSlot) -> None:
    assert slot.offer(sealed(0.5, 1))
    assert call(f"{server.url}/predict", {"features": {"x": 0.7}})[1]["prediction"] == 1
    assert slot.offer(sealed(0.8, 2))
    assert call(f"{server.url}/predict", {"features": {"x": 0.7}})[1] == {
        "model_version": 2, "prediction": 0, "probabilities": {"0": 1.0, "1": 0.0},
    }


@pytest.mark.parametrize(
    ("body", "raw", "status", "fragment"),
    [
        (None, b"{not json", 400, "not JSON"),
        ([1, 2], None, 400, "JSON object"),
        ({"nothing": 1}, None, 400, "send {'features'"),
        ({"features": {}}, None, 400, "non-empty object"),
        ({"features": {"x": "high"}}, None, 400, "finite number"),
        ({"features": {"x": True}}, None, 400, "finite number"),
        ({"instances": []}, None, 400, "list of 1 to"),
        ({"instances": [{"x": 1.0}] * (MAX_INSTANCES + 1)}, None, 400, "list of 1 to"),
        ({"instances": [{"x": 1.0}, {"y": 2.0}]}, None, 422, "cannot score"),
    ],
)
def test_bad_requests_get_a_clear_error(
    server: ModelServer, slot: ModelSlot, body: Any, raw: bytes | None, status: int, fragment: str
) -> None:
    assert slot.offer(sealed(0.5, 1))
    got, answer, _ = call(f"{server.url}/predict", body, raw=raw)
    assert got == status and fragment in answer["error"]


def test_unknown_paths_are_404(server: ModelServer) -> None:
    assert call(f"{server.url}/nope")[0] == 404
    assert call(f"{server.url}/nope", {"features": {"x": 1}})[0] == 404


def named(version: int, golden: list[dict[str, float]], names: list[str]) -> ModelEnvelope:
    return seal(
        Threshold(0.5), model_name="m", version=version, flavor="river", signer=SIGNER,
        golden_inputs=golden, feature_names=names,
    )


def test_unknown_and_missing_feature_names_are_422_naming_them(server: ModelServer, slot: ModelSlot) -> None:
    # Learned from x, y and a one-hot car=4 / car=5: x and y are in every row, car=... in some.
    golden = [{"x": 0.0, "y": 1.0, "car=4": 1.0}, {"x": 1.0, "y": 2.0, "car=5": 1.0}]
    assert slot.offer(named(2, golden, ["car=4", "car=5", "x", "y"]))

    status, body, _ = call(f"{server.url}/predict", {"features": {"x": 0.9, "y": 1.0, "salary": 5.0}})
    assert status == 422 and "unknown feature(s) salary" in body["error"] and "learned from: car=4" in body["error"]

    status, body, _ = call(f"{server.url}/predict", {"features": {"x": 0.9}})
    assert status == 422 and "missing feature(s) y" in body["error"]

    status, body, _ = call(f"{server.url}/predict", {"instances": [{"x": 0.9, "y": 1.0}, {"x": 0.1, "z": 1.0}]})
    assert status == 422 and body["error"].startswith("instances[1]: unknown feature(s) z")

    # A one-hot name seen in only some rows is known but never required.
    status, body, _ = call(f"{server.url}/predict", {"features": {"x": 0.9, "y": 1.0, "car=5": 1.0}})
    assert (status, body["model_version"], body["prediction"]) == (200, 2, 1)


def test_extra_features_can_be_allowed(slot: ModelSlot) -> None:
    assert slot.offer(named(2, [{"x": 0.0}], ["x"]))
    with ModelServer(slot, port=0, allow_extra_features=True) as server:
        status, body, _ = call(f"{server.url}/predict", {"features": {"x": 0.9, "salary": 5.0}})
    assert (status, body["prediction"]) == (200, 1)


def test_a_model_without_feature_names_accepts_any(server: ModelServer, slot: ModelSlot) -> None:
    assert slot.offer(sealed(0.5, 1))  # an envelope that names no features (published before they were recorded)
    assert call(f"{server.url}/predict", {"features": {"x": 0.9, "anything": 1.0}})[0] == 200


def test_a_taken_port_is_a_usage_error_naming_it(slot: ModelSlot) -> None:
    import socket

    from streamml.errors import PortInUseError

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(PortInUseError, match=f"port {port} on 127.0.0.1 is already in use") as caught:
            ModelServer(slot, port=port)
    assert caught.value.exit_code == 2


def test_without_golden_rows_every_name_but_one_hot_ones_is_required(server: ModelServer, slot: ModelSlot) -> None:
    assert slot.offer(named(4, [], ["car=4", "x", "y"]))
    status, body, _ = call(f"{server.url}/predict", {"features": {"x": 0.9}})
    assert status == 422 and "missing feature(s) y" in body["error"] and "car=4" not in body["error"].split(";")[-1]
    assert call(f"{server.url}/predict", {"features": {"x": 0.9, "y": 1.0}})[0] == 200
