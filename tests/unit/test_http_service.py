"""The HTTP scoring service over a model slot (no broker: the slot is offered envelopes directly).

Each test talks HTTP to a real uvicorn server on a free loopback port.
"""

from __future__ import annotations

import dataclasses
import json
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from email.message import Message
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumers.http_service import MAX_BODY_BYTES, MAX_INSTANCES, ModelServer
from consumers.swap import ModelSlot, ServingModel
from streamml.envelope import ModelEnvelope, seal
from streamml.errors import EventRejectedError, FeaturesUnavailableError
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


def call(url: str, body: Any = None, *, raw: bytes | None = None) -> tuple[int, dict[str, Any], Message]:
    """``(status, JSON answer, headers)``; the headers are looked up case-insensitively, as HTTP says."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read()), response.headers
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()), exc.headers


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
        (None, b"{not json", 422, "body is not JSON"),
        (None, b"", 422, "body is not JSON"),
        ([1, 2], None, 422, "body must be a JSON object"),
        ({"nothing": 1}, None, 422, "send exactly one of {'features'"),
        ({"features": {"x": 1.0}, "instances": [{"x": 1.0}]}, None, 422, "send exactly one of"),
        ({"features": {}}, None, 422, "features: Dictionary should have at least 1 item"),
        ({"features": {"x": "high"}}, None, 422, "features['x']: Input should be a valid number"),
        ({"features": {"x": True}}, None, 422, "features['x']: Input should be a valid number"),
        (None, b'{"features": {"x": NaN}}', 422, "features['x']: Input should be a finite number"),
        ({"instances": []}, None, 422, "instances: List should have at least 1 item"),
        ({"instances": [{"x": 1.0}] * (MAX_INSTANCES + 1)}, None, 422, f"at most {MAX_INSTANCES} items"),
        ({"instances": [{"x": 1.0}, {"x": "a"}]}, None, 422, "instances[1]['x']: Input should be a valid number"),
        ({"instances": [{"x": 1.0}, {"y": 2.0}]}, None, 422, "cannot score"),
    ],
)
def test_bad_requests_get_a_clear_error(
    server: ModelServer, slot: ModelSlot, body: Any, raw: bytes | None, status: int, fragment: str
) -> None:
    assert slot.offer(sealed(0.5, 1))
    got, answer, _ = call(f"{server.url}/predict", body, raw=raw)
    assert got == status and fragment in answer["error"], answer
    if "detail" in answer:  # pydantic's errors, without the input echoed back
        assert answer["detail"] and all(set(e) == {"loc", "msg", "type"} for e in answer["detail"])


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


# -- raw events, through a featurizer -------------------------------------------------------------


class FakeFeaturizer:
    """Implements EventFeaturizer: ``x`` passes through; a few fields trigger each refusal."""

    def vector(self, event: Mapping[str, Any]) -> dict[str, float]:
        if "warming" in event:
            raise FeaturesUnavailableError(["x_mean_60s"], "window state still loading", retryable=True)
        if "gone" in event:
            raise FeaturesUnavailableError(["x_mean_60s"], "the key was never seen", retryable=False)
        x = event.get("x")
        if isinstance(x, bool) or not isinstance(x, (int, float)):
            raise EventRejectedError([{"field": "x", "rule": "type", "message": "must be a number"}])
        return {"x": float(x)}

    def json_schema(self) -> dict[str, Any]:
        return {
            "type": "object",
            "properties": {"x": {"type": "number"}, "user_id": {"type": "string"},
                           "currency": {"$ref": "#/$defs/Currency"}},
            "required": ["x", "user_id"],
            "$defs": {"Currency": {"type": "string", "enum": ["EUR", "USD"]}},
        }


@pytest.fixture
def featurizing(slot: ModelSlot) -> Iterator[ModelServer]:
    with ModelServer(slot, port=0, featurizer=FakeFeaturizer()) as running:
        yield running


def test_raw_events_are_featurized_then_scored(featurizing: ModelServer, slot: ModelSlot) -> None:
    assert slot.offer(sealed(0.5, 4))
    status, body, _ = call(f"{featurizing.url}/predict", {"event": {"x": 0.9, "user_id": "u1"}})
    assert status == 200 and body == {"model_version": 4, "prediction": 1, "probabilities": {"0": 0.0, "1": 1.0}}
    status, body, _ = call(f"{featurizing.url}/predict", {"events": [{"x": 0.1}, {"x": 0.9}]})
    assert status == 200 and body["model_version"] == 4 and [p["prediction"] for p in body["predictions"]] == [0, 1]


def test_a_rejected_event_is_422_naming_the_broken_rules(featurizing: ModelServer, slot: ModelSlot) -> None:
    assert slot.offer(sealed(0.5, 1))
    status, body, _ = call(f"{featurizing.url}/predict", {"events": [{"x": 0.1}, {"x": "high"}]})
    assert status == 422 and body["error"].startswith("events[1]: the event breaks the data contract: x: must be")
    assert body["violations"] == [{"field": "x", "rule": "type", "message": "must be a number"}]


def test_unavailable_features_are_503_when_retryable_else_422(featurizing: ModelServer, slot: ModelSlot) -> None:
    assert slot.offer(sealed(0.5, 1))
    status, body, headers = call(f"{featurizing.url}/predict", {"event": {"x": 1.0, "warming": True}})
    assert status == 503 and headers["Retry-After"] == "1" and body["features"] == ["x_mean_60s"]
    assert "window state still loading" in body["error"]
    status, body, headers = call(f"{featurizing.url}/predict", {"event": {"x": 1.0, "gone": True}})
    assert status == 422 and "never seen" in body["error"] and "Retry-After" not in headers


def test_readyz_says_whether_raw_events_can_be_featurized_without_gating_on_it(slot: ModelSlot) -> None:
    featurizer = FakeFeaturizer()
    featurizer.ready = False  # type: ignore[attr-defined]  # what ServingFeatures has
    with ModelServer(slot, port=0, featurizer=featurizer) as running:
        assert slot.offer(sealed(0.5, 2))
        assert call(f"{running.url}/readyz")[:2] == (200, {"ready": True, "model_version": 2,
                                                           "raw_events_ready": False})
        featurizer.ready = True  # type: ignore[attr-defined]
        assert call(f"{running.url}/readyz")[1]["raw_events_ready"] is True


def test_without_a_featurizer_raw_events_are_422(server: ModelServer, slot: ModelSlot) -> None:
    assert slot.offer(sealed(0.5, 1))
    status, body, _ = call(f"{server.url}/predict", {"event": {"x": 1.0}})
    assert status == 422
    assert body["error"] == "event: raw events are not enabled on this server; send {'features': {...}}"


def test_the_openapi_schema_shows_the_event_contract(featurizing: ModelServer) -> None:
    status, schema, _ = call(f"{featurizing.url}/openapi.json")
    assert status == 200
    components = schema["components"]["schemas"]
    assert set(components["Event"]["properties"]) == {"x", "user_id", "currency"}
    assert components["Event"]["properties"]["currency"] == {"$ref": "#/components/schemas/Currency"}
    assert components["Currency"]["enum"] == ["EUR", "USD"]
    request = components["PredictRequest"]["properties"]
    assert request["event"]["$ref"] == "#/components/schemas/Event"
    assert request["events"]["items"] == {"$ref": "#/components/schemas/Event"}
    body = schema["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/PredictRequest"}
    with urllib.request.urlopen(f"{featurizing.url}/docs", timeout=10) as docs:
        assert docs.status == 200 and b"swagger" in docs.read().lower()


def test_without_a_featurizer_the_schema_says_any_event_object(server: ModelServer) -> None:
    schema = call(f"{server.url}/openapi.json")[1]
    assert "Event" not in schema["components"]["schemas"]
    assert "features" in schema["components"]["schemas"]["PredictRequest"]["properties"]


# -- one snapshot, limits, lifecycle ---------------------------------------------------------------


class CountingSource:
    """A source that says how often it was asked, and serves a newer version on every ask."""

    def __init__(self, slot: ModelSlot) -> None:
        self.slot = slot
        self.calls = 0

    def current(self) -> ServingModel:
        self.calls += 1
        serving = self.slot.current()
        return dataclasses.replace(serving, version=serving.version + self.calls)


def test_one_request_reads_the_serving_model_once(slot: ModelSlot) -> None:
    assert slot.offer(sealed(0.5, 1))
    source = CountingSource(slot)
    with ModelServer(source, port=0) as server:
        status, body, _ = call(f"{server.url}/predict", {"instances": [{"x": 0.1}] * 50})
    assert status == 200 and source.calls == 1 and body["model_version"] == 2


def test_a_body_over_the_limit_is_413_with_or_without_a_length(server: ModelServer, slot: ModelSlot) -> None:
    assert slot.offer(sealed(0.5, 1))
    # The length alone decides: the server answers before reading a byte of the body. (Sending a
    # real 1 MB body races the early answer: the server may close while the client still writes.)
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(f"POST /predict HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {MAX_BODY_BYTES + 1}\r\n\r\n".encode())
        answer_bytes = b""
        while b"\r\n\r\n" not in answer_bytes or not answer_bytes.endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer_bytes += chunk
    head, _, payload = answer_bytes.partition(b"\r\n\r\n")
    assert head.split(b"\r\n")[0].split()[1] == b"413"
    assert json.loads(payload) == {"error": f"body over {MAX_BODY_BYTES} bytes"}

    def chunked(size: int) -> Iterator[bytes]:
        yield b'{"features": {"x": 0.9}'
        yield b" " * size
        yield b"}"

    with httpx.Client(base_url=server.url, timeout=10) as client:  # a generator body is sent chunked
        assert client.post("/predict", content=chunked(MAX_BODY_BYTES)).status_code == 413
    # A new connection: the server may close the one whose body it did not read to the end.
    with httpx.Client(base_url=server.url, timeout=10) as client:
        answer = client.post("/predict", content=chunked(1000))
    assert answer.status_code == 200 and answer.json()["prediction"] == 1


def test_unknown_paths_and_methods_say_so(server: ModelServer) -> None:
    assert call(f"{server.url}/nope")[:2] == (404, {"error": "no such endpoint: GET /nope"})
    assert call(f"{server.url}/healthz", {"features": {}})[:2] == (405, {"error": "method not allowed: POST /healthz"})


def test_stop_ends_the_thread_closes_idle_connections_and_frees_the_port(slot: ModelSlot) -> None:
    before = set(threading.enumerate())
    server = ModelServer(slot, port=0).start()
    port = int(server.url.rsplit(":", 1)[1])
    with httpx.Client(base_url=server.url, timeout=10) as client:
        assert client.get("/healthz").status_code == 200  # a keep-alive connection stays open during stop()
        server.stop()
        assert set(threading.enumerate()) == before
        with pytest.raises(httpx.TransportError):
            client.get("/healthz")
    with socket.socket() as probe:  # nothing listens any more: the port binds again
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", port))


# -- the service never crashes on input --------------------------------------------------------------

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=5), inner, max_size=5),
    max_leaves=20,
)
#: Bodies shaped like a request (the four keys, feature-like names) reach the deeper checks.
_shaped = st.dictionaries(
    st.sampled_from(["features", "instances", "event", "events", "x"]),
    st.dictionaries(st.sampled_from(["x", "y", "gone", "z"]), _json_values, max_size=3)
    | st.lists(st.dictionaries(st.sampled_from(["x", "y", "gone"]), _json_values, max_size=3), max_size=3)
    | _json_values,
    max_size=3,
)


def test_random_bodies_get_an_answer_never_a_server_error(slot: ModelSlot) -> None:
    golden = [{"x": 0.0, "y": 1.0}, {"x": 1.0, "y": 2.0}]
    assert slot.offer(named(1, golden, ["x", "y"]))
    with ModelServer(slot, port=0, featurizer=FakeFeaturizer()) as server, httpx.Client(
        base_url=server.url, timeout=10
    ) as client:

        @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(body=_shaped.map(lambda b: json.dumps(b).encode()) | _json_values.map(lambda b: json.dumps(b).encode())
               | st.binary(max_size=200))
        def answers(body: bytes) -> None:
            response = client.post("/predict", content=body, headers={"Content-Type": "application/json"})
            assert 200 <= response.status_code < 500, (body, response.status_code, response.text)
            answer = response.json()
            assert "model_version" in answer if response.status_code == 200 else answer["error"]

        answers()
