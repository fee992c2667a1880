"""The TF Serving client: timeouts, bounded retries on connection errors, clear errors."""

from __future__ import annotations

import json
import socket
import threading
import time
import typing
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tfship.errors import InfraError
from tfship.serving.client import ServerAnswered, ServingClient


class _Handler(BaseHTTPRequestHandler):
    script: typing.ClassVar[
        list[tuple[float, int, dict]]
    ] = []  # (delay, status, body) per request; last repeats
    hits = 0
    seen: typing.ClassVar[list[tuple[str, str, object]]] = []  # (method, path, JSON body)

    def _answer(self) -> None:
        cls = type(self)
        size = int(self.headers.get("Content-Length") or 0)
        body_in = json.loads(self.rfile.read(size)) if size else None
        cls.seen.append((self.command, self.path, body_in))
        delay, status, body = cls.script[min(cls.hits, len(cls.script) - 1)]
        cls.hits += 1
        time.sleep(delay)
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = _answer
    do_POST = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def fake_server() -> Iterator[tuple[str, type[_Handler]]]:
    handler = type("H", (_Handler,), {"script": [], "hits": 0, "seen": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()


def _client(url: str, **kw: float) -> ServingClient:
    opts = {"timeout": 0.5, "retries": 2, "backoff": 0.05, **kw}
    return ServingClient("digits", rest_url=url, **opts)  # type: ignore[arg-type]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _status(*versions: tuple[int, str]) -> dict:
    return {
        "model_version_status": [
            {"version": str(v), "state": st, "status": {"error_code": "OK", "error_message": ""}}
            for v, st in versions
        ]
    }


def test_a_server_that_is_down_fails_after_bounded_retries_naming_the_url() -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    t0 = time.monotonic()
    with pytest.raises(InfraError) as err:
        _client(url).status()
    assert time.monotonic() - t0 < 5
    text = str(err.value)
    assert url in text and "3 attempt(s)" in text and "--rest_api_port" in text


def test_a_slow_server_times_out_and_is_retried_a_bounded_number_of_times(fake_server) -> None:
    url, h = fake_server
    h.script = [(2.0, 200, _status((1, "AVAILABLE")))]
    with pytest.raises(InfraError, match="Timeout"):
        _client(url, timeout=0.2, retries=1).status()
    assert h.hits == 2


def test_a_transient_503_is_retried_then_succeeds(fake_server) -> None:
    url, h = fake_server
    h.script = [(0, 503, {"error": "restarting"}), (0, 200, _status((1, "AVAILABLE")))]
    assert [s.state for s in _client(url).status()] == ["AVAILABLE"]
    assert h.hits == 2


def test_an_error_answer_is_not_retried_and_carries_the_servers_message(fake_server) -> None:
    url, h = fake_server
    h.script = [(0, 400, {"error": "Servable not found for request: Specific(digits, 9)"})]
    with pytest.raises(ServerAnswered) as err:
        _client(url).predict({"pixels": [[[[0.0]]]]}, version=9)
    assert h.hits == 1
    assert err.value.status == 400 and "Servable not found" in err.value.error
    assert f"{url}/v1/models/digits/versions/9:predict" in str(err.value)


def test_an_unknown_model_has_no_versions(fake_server) -> None:
    url, h = fake_server
    h.script = [(0, 404, {"error": "Could not find any versions of model digits"})]
    assert _client(url).status() == []


def test_waiting_for_available_gives_up_at_the_deadline_with_what_it_saw(fake_server) -> None:
    url, h = fake_server
    h.script = [(0, 200, _status((1, "AVAILABLE"), (2, "LOADING")))]
    with pytest.raises(InfraError, match=r"not AVAILABLE after .*2: 'LOADING'"):
        _client(url).wait_available([2], deadline=0.3, poll=0.05)


def test_waiting_fails_fast_when_the_server_gave_up_loading(fake_server) -> None:
    url, h = fake_server
    body = _status((2, "END"))
    body["model_version_status"][0]["status"] = {
        "error_code": "NOT_FOUND",
        "error_message": "Could not find variables",
    }
    h.script = [(0, 200, body)]
    with pytest.raises(ServerAnswered, match="could not load digits version 2"):
        _client(url).wait_available([2], deadline=30, poll=0.05)
    assert h.hits == 1


def test_columnar_predict_returns_arrays_per_output(fake_server) -> None:
    url, h = fake_server
    h.script = [(0, 200, {"outputs": {"class_id": [3], "probabilities": [[0.1, 0.9]]}})]
    out = _client(url).predict({"pixels": [[[[1.0]]]]}, label="stable")
    assert out["class_id"].tolist() == [3] and out["probabilities"].shape == (1, 2)


def test_reload_without_a_grpc_target_says_which_setting_is_missing() -> None:
    from tensorflow_serving.config import model_server_config_pb2

    with pytest.raises(InfraError, match=r"serving\.grpc_target"):
        _client("http://127.0.0.1:1").reload_config(model_server_config_pb2.ModelServerConfig())


def test_grpc_reload_against_a_dead_port_is_retried_then_fails_clearly() -> None:
    from tensorflow_serving.config import model_server_config_pb2

    target = f"127.0.0.1:{_closed_port()}"
    c = ServingClient(
        "digits", rest_url="http://x", grpc_target=target, timeout=0.5, retries=1, backoff=0.05
    )
    with pytest.raises(InfraError, match=rf"HandleReloadConfigRequest at {target} failed after 2"):
        c.reload_config(model_server_config_pb2.ModelServerConfig())


def test_predict_sends_named_inputs_with_json_per_dtype(fake_server) -> None:
    import numpy as np

    url, h = fake_server
    h.script = [(0, 200, {"outputs": {"probability": [0.25, 0.5]}})]
    inputs = {
        "amount": np.array([1.5, 2.0], np.float32),
        "count": np.array([3, 4], np.int64),
        "country": np.array(["d\u00e9", b"\xff\xfe"], dtype=object),
    }
    out = _client(url).predict(inputs, version=7)
    method, path, body = h.seen[0]
    assert (method, path) == ("POST", "/v1/models/digits/versions/7:predict")
    assert body == {
        "signature_name": "serving_default",
        "inputs": {
            "amount": [1.5, 2.0],
            "count": [3, 4],
            "country": ["d\u00e9", {"b64": "//4="}],  # not UTF-8: TF Serving's b64 object
        },
    }
    assert out["probability"].tolist() == [0.25, 0.5]


def test_classify_sends_tf_servings_examples_and_parses_label_score_pairs(fake_server) -> None:
    url, h = fake_server
    h.script = [(0, 200, {"results": [[["legit", 0.75], ["fraud", 0.25]]]})]
    got = _client(url).classify(
        [{"amount": 7.0, "count": 3, "note": b"\xff"}], label="stable", context={"c": "x"}
    )
    assert got == [[("legit", 0.75), ("fraud", 0.25)]]
    _, path, body = h.seen[0]
    assert path == "/v1/models/digits/labels/stable:classify"
    assert body == {
        "signature_name": "classify",
        "examples": [{"amount": 7.0, "count": 3, "note": {"b64": "/w=="}}],
        "context": {"c": "x"},
    }


def test_regress_parses_results_and_a_400_carries_tf_servings_error(fake_server) -> None:
    url, h = fake_server
    h.script = [(0, 200, {"results": [0.5, 1.25]}), (0, 400, {"error": "Input is empty."})]
    c = _client(url)
    assert c.regress([{"x": [1.0, 2.0]}, {"x": [0.0, 0.0]}], version=1) == [0.5, 1.25]
    assert h.seen[0][2]["signature_name"] == "regress"
    with pytest.raises(ServerAnswered) as err:
        c.regress([{"x": 1.0}], version=1)
    assert (err.value.status, err.value.error) == (400, "Input is empty.")
    assert h.hits == 2  # an answered error is not retried


def test_an_answer_without_results_is_an_infra_error(fake_server) -> None:
    url, h = fake_server
    h.script = [(0, 200, {"outputs": [1.0]})]
    with pytest.raises(InfraError, match="without a 'results' list"):
        _client(url).regress([{"x": 1.0}])
