"""serving.replicas: config validation, `dns:` resolution and the per-replica wait (issue 15).

The deploy itself, against two TF Serving stand-ins reading one models.config, is in
tests/integration/test_deploy_replicas.py.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tfship.config import load_config
from tfship.errors import ConfigError, InfraError
from tfship.serving import replicas as replicas_mod
from tfship.serving.client import ServingClient
from tfship.serving.replicas import Replicas, resolve_dns
from tfship.serving.target import resolve


def _infos(*addresses: str) -> list[tuple]:
    out = []
    for a in addresses:
        family = socket.AF_INET6 if ":" in a else socket.AF_INET
        sockaddr = (a, 8501, 0, 0) if family == socket.AF_INET6 else (a, 8501)
        out.append((family, socket.SOCK_STREAM, 6, "", sockaddr))
    return out


def test_dns_resolves_every_address_again_on_every_call(monkeypatch: pytest.MonkeyPatch) -> None:
    answers = [
        _infos("10.0.0.2", "10.0.0.1", "10.0.0.2"),  # duplicates (one per socket type) collapse
        _infos("10.0.0.1", "fd00::3"),  # a pod went, another came
    ]
    asked = []

    def fake(host: str, port: int, *args: object, **kw: object) -> list[tuple]:
        asked.append((host, port))
        return answers.pop(0)

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    fleet = Replicas("m", "dns:tfserving-pods.ml.svc.cluster.local:8501")
    assert fleet.urls() == ["http://10.0.0.1:8501", "http://10.0.0.2:8501"]
    assert fleet.urls() == ["http://10.0.0.1:8501", "http://[fd00::3]:8501"]
    assert asked == [("tfserving-pods.ml.svc.cluster.local", 8501)] * 2


def test_dns_with_no_address_or_unknown_name_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: [])
    with pytest.raises(InfraError, match="resolves to no address") as err:
        resolve_dns("dns:tfserving-pods:8501")
    assert "inside the cluster" in (err.value.hint or "")

    def unknown(*a: object, **k: object) -> list:
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", unknown)
    with pytest.raises(InfraError, match="cannot resolve tfserving-pods"):
        resolve_dns("dns:tfserving-pods:8501")


def test_config_replicas_forms_env_override_and_file_driven_rule() -> None:
    urls = load_config(None, overrides=["serving.replicas=[http://a:8501, http://b:8501/]"])
    assert urls.serving.replicas == ("http://a:8501", "http://b:8501/")
    env = load_config(None, env={"TFSHIP_SERVING_REPLICAS": "dns:tfserving-pods:8501"})
    assert env.serving.replicas == "dns:tfserving-pods:8501"
    one = load_config(None, env={"TFSHIP_SERVING_REPLICAS": "http://a:8501"})
    assert one.serving.replicas == ("http://a:8501",)
    for bad in ("dns:tfserving-pods", "dns:x:99999", "tfs:8501", "[http://a:1, http://a:1]"):
        with pytest.raises(ConfigError, match="replicas"):
            load_config(None, overrides=[f"serving.replicas={bad}"])
    for other in ("serving.grpc_target=tfs:8500", "serving.rest_url=http://tfs:8501"):
        with pytest.raises(ConfigError, match="file-driven"):
            load_config(None, overrides=["serving.replicas=dns:tfs:8501", other])
    with pytest.raises(ConfigError, match="file-driven"):
        load_config(
            None,
            overrides=[
                "serving.environments={production: {replicas: 'dns:t:8501', grpc_target: 't:8500'}}"
            ],
        )


def test_resolve_picks_the_environments_replicas_and_serves_from_models(tmp_path) -> None:
    cfg = load_config(
        None,
        overrides=[
            "project.model_name=m",
            "serving.model_repository=s3://bucket/serving",
            "serving.rest_url=http://tfs-staging:8501",
            "serving.grpc_target=tfs-staging:8500",
            "serving.environments={staging: {}, production: {replicas: 'dns:tfserving-pods:8501'}}",
        ],
    )
    prod = resolve(cfg, "production")
    assert prod.replicas is not None and prod.client is prod.replicas
    assert prod.base_path == "/models/m"  # what the sync sidecar mounts; the server reads no s3
    assert "every replica of dns:tfserving-pods:8501" in prod.describe()
    staging = resolve(cfg, "staging")
    assert staging.replicas is None and isinstance(staging.client, ServingClient)
    assert staging.client.grpc_target == "tfs-staging:8500"


class _Replica(BaseHTTPRequestHandler):
    """GET /v1/models/m (status) and /v1/models/m/labels/<l>/metadata from a dict."""

    versions: dict[int, str] = {}  # noqa: RUF012 - replaced per server
    labels: dict[str, int] = {}  # noqa: RUF012

    def do_GET(self) -> None:
        cls = type(self)
        if "/labels/" in self.path:
            label = self.path.split("/labels/")[1].split("/")[0]
            if label in cls.labels:
                status, body = 200, {"model_spec": {"name": "m", "version": str(cls.labels[label])}}
            else:
                status, body = 404, {"error": f"Unknown label: {label}"}
        else:
            status = 200
            body = {
                "model_version_status": [
                    {"version": str(v), "state": s, "status": {"error_code": "OK"}}
                    for v, s in cls.versions.items()
                ]
            }
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def two_replicas() -> Iterator[list[tuple[str, type[_Replica]]]]:
    out, servers = [], []
    for _ in range(2):
        handler = type("R", (_Replica,), {"versions": {}, "labels": {}})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        out.append((f"http://127.0.0.1:{server.server_address[1]}", handler))
    yield out
    for server in servers:
        server.shutdown()
        server.server_close()


def test_wait_needs_every_replica_and_names_the_ones_that_lag(two_replicas) -> None:
    (url_a, a), (url_b, b) = two_replicas
    a.versions, a.labels = {1: "AVAILABLE", 2: "AVAILABLE"}, {"stable": 1, "canary": 2}
    b.versions, b.labels = {1: "AVAILABLE", 2: "LOADING"}, {"stable": 1}
    fleet = Replicas("m", (url_a, url_b), timeout=1, retries=0, backoff=0)
    with pytest.raises(InfraError) as err:
        fleet.wait([1, 2], deadline=0.3, poll=0.05, labels={"stable": 1, "canary": 2})
    assert "1 of 2 replica(s)" in err.value.message
    assert url_b in err.value.message and url_a not in err.value.message.split("within")[1]
    assert "LOADING" in err.value.message
    b.versions[2] = "AVAILABLE"  # loaded, but the label not yet moved
    with pytest.raises(InfraError, match=r"label canary -> none, not 2"):
        fleet.wait([1, 2], deadline=0.2, poll=0.05, labels={"canary": 2})
    b.labels["canary"] = 2
    assert fleet.wait([1, 2], deadline=5, poll=0.05, labels={"stable": 1, "canary": 2}) >= 0
    # a dropped version must be gone from every replica
    a.versions[3] = "AVAILABLE"
    with pytest.raises(InfraError, match=r"reports \{1: 'AVAILABLE', 2: 'AVAILABLE', 3:"):
        fleet.wait([1], deadline=0.2, poll=0.05, gone=[3])
    merged = {s.version: s.state for s in fleet.status()}
    assert merged[1] == "AVAILABLE" and url_b in merged[3] and "absent" in merged[3]


def test_a_replica_that_is_down_is_named(two_replicas, monkeypatch: pytest.MonkeyPatch) -> None:
    (url_a, a), _ = two_replicas
    a.versions = {1: "AVAILABLE"}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        down = f"http://127.0.0.1:{s.getsockname()[1]}"
    fleet = Replicas("m", (url_a, down), timeout=0.5, retries=0, backoff=0)
    with pytest.raises(InfraError) as err:
        fleet.wait([1], deadline=0.2, poll=0.05)
    assert f"{down}: unreachable" in err.value.message
    # the same through dns: (the pods' addresses), one of them down
    monkeypatch.setattr(replicas_mod, "resolve_dns", lambda spec: [url_a, down])
    with pytest.raises(InfraError, match="unreachable"):
        Replicas("m", "dns:pods:8501", retries=0).wait([1], deadline=0.1, poll=0.05)


def test_a_name_with_no_address_changes_nothing(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Resolved before models.config is written: the deploy fails as exit 8, file untouched."""
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: [])
    cfg = load_config(
        None,
        overrides=[
            "project.model_name=m",
            f"serving.model_repository={tmp_path / 'repo'}",
            "serving.replicas=dns:tfserving-pods:8501",
        ],
    )
    target = resolve(cfg)
    cfg0, state = target.read()
    with pytest.raises(InfraError, match="resolves to no address"):
        target.apply(cfg0, state.with_versions({1}))
    assert target.reloads == 0 and target.writes == 0
    assert target.repository.read_text("models.config") is None
