"""Deploy, canary, promote, rollback against a model server (the stand-in by default).

The server the module starts comes from `tests.tfserving_standin.fixture.start_model_server`:
TFSHIP_MODEL_SERVER (a tensorflow_model_server path or command line) or, unset, the stand-in,
`python -m tests.tfserving_standin`. One server is shared by the module; each test uses its own
model name and model repository.

The canary -> promote -> rollback test also runs against an already running, real TF Serving
(marker `real_server`) when these are set; otherwise that case is skipped and says why:

* TFSHIP_TEST_SERVING_URL: its REST URL, e.g. http://127.0.0.1:8501;
* TFSHIP_TEST_SERVING_GRPC: its gRPC host:port, e.g. 127.0.0.1:8500 (config reloads);
* TFSHIP_TEST_MODEL_REPOSITORY: a directory this test writes models and models.config to and
  the server can read;
* TFSHIP_TEST_SERVER_MODEL_REPOSITORY (optional): that directory as the server sees it, e.g.
  /models when it is mounted into a container; default: the same path.

Use a dedicated server: each test replaces its whole config (HandleReloadConfigRequest). For
example::

    mkdir -p /tmp/tfs-repo && docker run -d -p 8500:8500 -p 8501:8501 \
        -v /tmp/tfs-repo:/models tensorflow/serving:2.21.0 \
        --model_config_file=/models/empty.config --file_system_poll_wait_seconds=1
    # with /tmp/tfs-repo/empty.config containing `model_config_list {}`
    TFSHIP_TEST_SERVING_URL=http://127.0.0.1:8501 TFSHIP_TEST_SERVING_GRPC=127.0.0.1:8500 \
    TFSHIP_TEST_MODEL_REPOSITORY=/tmp/tfs-repo TFSHIP_TEST_SERVER_MODEL_REPOSITORY=/models \
        pytest -m real_server tests/integration/test_deploy.py

The variables are read when the module is imported, before tests/conftest.py clears TFSHIP_*
from each test's environment.
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import requests

from tests.integration import serving_exports as se
from tests.tfserving_standin.fixture import start_model_server
from tfship.config import load_config
from tfship.errors import DeployFailed, ExitCode, InfraError
from tfship.rundir import RunDir
from tfship.serving import golden
from tfship.serving.deploy import run_deploy, run_promote, run_rollback
from tfship.serving.status import run_status

pytestmark = pytest.mark.integration
_names = itertools.count()
REAL_SERVER = {
    name: os.environ.get(name, "").strip()
    for name in (
        "TFSHIP_TEST_SERVING_URL",
        "TFSHIP_TEST_SERVING_GRPC",
        "TFSHIP_TEST_MODEL_REPOSITORY",
        "TFSHIP_TEST_SERVER_MODEL_REPOSITORY",
    )
}


@dataclass(frozen=True)
class Serving:
    """A model server and where its model repositories live (as tfship and as it sees them)."""

    rest_url: str
    grpc_target: str
    repositories: Path | None = None  # None: each test's own tmp_path/repo
    server_repositories: str | None = None

    def repository(self, tmp_path: Path) -> tuple[str, str | None]:
        if self.repositories is None:
            return str(tmp_path / "repo"), None
        name = f"tfship-test-{uuid.uuid4().hex[:8]}"
        server = (
            f"{self.server_repositories.rstrip('/')}/{name}" if self.server_repositories else None
        )
        return str(self.repositories / name), server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    """A model server with no models; deploys add theirs with HandleReloadConfigRequest."""
    with start_model_server(
        tmp_path_factory.mktemp("server"),
        model_config_text="model_config_list {}\n",
        extra_flags=["--file_system_poll_wait_seconds=1", "--max_num_load_retries=0"],
    ) as handle:
        yield Serving(handle.rest_url, handle.grpc_target)


@pytest.fixture(scope="module")
def real_server() -> Serving:
    missing = [
        k for k, v in REAL_SERVER.items() if not v and k != "TFSHIP_TEST_SERVER_MODEL_REPOSITORY"
    ]
    if missing:
        pytest.skip(
            f"no real TF Serving given: set {', '.join(missing)} (see this module's docstring)"
        )
    return Serving(
        REAL_SERVER["TFSHIP_TEST_SERVING_URL"],
        REAL_SERVER["TFSHIP_TEST_SERVING_GRPC"],
        Path(REAL_SERVER["TFSHIP_TEST_MODEL_REPOSITORY"]),
        REAL_SERVER["TFSHIP_TEST_SERVER_MODEL_REPOSITORY"] or None,
    )


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, RunDir]:
    root = tmp_path_factory.mktemp("exports")
    v1 = se.export_good(root, 1, seed=1)
    return {
        "v1": v1,
        "v2": se.export_variant(v1, root, 2, seed=2),
        "v3": se.export_variant(v1, root, 3, seed=3),
        "missing variables": se.export_missing_variables(v1, root, 4),
        "wrong signature": se.export_wrong_signature(v1, root, 5),
        "NaN outputs": se.export_nan_outputs(v1, root, 6),
    }


def _cfg_maker(serving: Serving, tmp_path: Path):
    model = f"m{next(_names)}"
    repository, server_repository = serving.repository(tmp_path)

    def make(**extra: object):
        sets = {
            "project.model_name": model,
            "serving.model_repository": repository,
            "serving.rest_url": serving.rest_url,
            "serving.grpc_target": serving.grpc_target,
            "serving.load_deadline_seconds": 60,
            "serving.poll_interval_seconds": 0.1,
            "serving.allow_ungated": True,
            "serving.retry_backoff_seconds": 0.05,
            **extra,
        }
        if server_repository:
            sets["serving.server_model_repository"] = server_repository
        return load_config(None, overrides=[f"{k}={v}" for k, v in sets.items()])

    return make


@pytest.fixture()
def cfg_for(server: Serving, tmp_path: Path):
    return _cfg_maker(server, tmp_path)


@pytest.fixture(params=["started", pytest.param("real", marks=pytest.mark.real_server)])
def any_server(request: pytest.FixtureRequest) -> Serving:
    """The module's server, then (opt-in) a real TF Serving that is already running."""
    return request.getfixturevalue("server" if request.param == "started" else "real_server")


def _expected(run_dir: RunDir) -> dict:
    return golden.read_manifest(golden.latest_export(run_dir.export))


def _answer(rest: str, model: str, where: str, manifest: dict) -> np.ndarray:
    body = {"inputs": {k: v.tolist() for k, v in golden.golden_inputs(manifest).items()}}
    r = requests.post(f"{rest}/v1/models/{model}/{where}:predict", json=body, timeout=10)
    r.raise_for_status()
    return np.asarray(r.json()["outputs"]["probabilities"])


def _answers_like(rest: str, model: str, where: str, run_dir: RunDir) -> bool:
    m = _expected(run_dir)
    got = _answer(rest, model, where, m)
    return bool(np.allclose(got, m["golden"]["outputs"]["probabilities"], atol=1e-4))


class _Hammer(threading.Thread):
    """Sends /labels/stable predictions in a loop and records every failure."""

    def __init__(self, rest: str, model: str, manifest: dict) -> None:
        super().__init__(daemon=True)
        self.url = f"{rest}/v1/models/{model}/labels/stable:predict"
        self.body = {
            "inputs": {k: v[:1].tolist() for k, v in golden.golden_inputs(manifest).items()}
        }
        self.stop, self.ok, self.errors = threading.Event(), 0, []

    def run(self) -> None:
        session = requests.Session()
        while not self.stop.is_set():
            try:
                r = session.post(self.url, json=self.body, timeout=10)
                if r.status_code == 200:
                    self.ok += 1
                else:
                    self.errors.append(f"{r.status_code} {r.text[:200]}")
            except requests.RequestException as exc:
                self.errors.append(repr(exc))


def test_canary_promote_rollback_move_stable_exactly_when_they_should(
    any_server: Serving, exports, tmp_path: Path
) -> None:
    rest = any_server.rest_url
    cfg = _cfg_maker(any_server, tmp_path)()
    model = cfg.project.model_name
    first = run_deploy(cfg, exports["v1"], reason="first model")
    assert first.labels_after == {"canary": 1, "stable": 1} and first.golden.ok
    assert _answers_like(rest, model, "labels/stable", exports["v1"])

    canary = run_deploy(cfg, exports["v2"], reason="new data")
    assert canary.labels_before == {"canary": 1, "stable": 1}
    assert canary.labels_after == {"canary": 2, "stable": 1}
    assert _answers_like(rest, model, "labels/stable", exports["v1"])  # stable not moved
    assert _answers_like(rest, model, "labels/canary", exports["v2"])

    hammer = _Hammer(rest, model, _expected(exports["v1"]))
    hammer.start()
    time.sleep(0.3)
    promoted = run_promote(cfg, exports["v2"], reason="canary healthy")
    assert _answers_like(rest, model, "labels/stable", exports["v2"])
    rolled = run_rollback(cfg, exports["v2"], reason="bad business metric")
    time.sleep(0.3)
    hammer.stop.set()
    hammer.join()
    assert hammer.errors == [] and hammer.ok > 0

    assert promoted.labels_after == {"canary": 2, "stable": 2}
    assert rolled.version == 1 and rolled.labels_after == {"canary": 1, "stable": 1}
    assert _answers_like(rest, model, "labels/stable", exports["v1"])
    status = run_status(cfg, last=50)
    assert status.labels == {"canary": 1, "stable": 1}
    assert status.server[1] == "AVAILABLE"
    # Every action logs `started` before it changes anything and `ok` once recorded; the
    # rollback leaves 2 neither labelled nor previous-stable, so retention unloads it.
    assert [(r["action"], r["status"]) for r in status.last_actions] == [
        ("deploy", "started"),
        ("deploy", "ok"),
        ("deploy", "started"),
        ("deploy", "ok"),
        ("promote", "started"),
        ("promote", "ok"),
        ("rollback", "started"),
        ("rollback", "ok"),
        ("retention", "ok"),
    ]
    assert status.config_versions == [1]
    record = json.loads((exports["v2"].deploy_json).read_text())["record"]
    assert record["action"] == "rollback" and record["why"] == "bad business metric"
    assert record["who"] and record["labels_before"] == {"canary": 2, "stable": 2}


def test_rollback_of_an_unpromoted_canary_drops_it_and_leaves_stable_alone(
    server: Serving, exports, cfg_for
) -> None:
    rest = server.rest_url
    cfg = cfg_for()
    model = cfg.project.model_name
    run_deploy(cfg, exports["v1"])
    run_deploy(cfg, exports["v2"], promote=True)  # stable 2, previous stable 1
    run_deploy(cfg, exports["v3"])  # canary 3, not promoted
    assert run_status(cfg).labels == {"canary": 3, "stable": 2}

    rolled = run_rollback(cfg, exports["v3"], reason="canary answers badly")
    assert rolled.version == 2 and rolled.labels_after == {"canary": 2, "stable": 2}
    assert rolled.removed_versions == [] and rolled.versions_after == [1, 2]
    status = run_status(cfg)
    assert status.labels == {"canary": 2, "stable": 2}
    assert status.stable_history == [1, 2]  # stable never moved, so a later rollback -> 1
    assert 3 not in status.config_versions  # the dropped canary is unloaded
    assert _answers_like(rest, model, "labels/stable", exports["v2"])
    assert _answers_like(rest, model, "labels/canary", exports["v2"])


@pytest.mark.parametrize("broken", ["missing variables", "wrong signature", "NaN outputs"])
def test_a_broken_model_is_rejected_before_any_label_moves(
    server: Serving, exports, cfg_for, broken
) -> None:
    rest = server.rest_url
    cfg = cfg_for()
    model = cfg.project.model_name
    run_deploy(cfg, exports["v1"])
    config_before = (Path(cfg.serving.model_repository) / "models.config").read_text()
    with pytest.raises(DeployFailed) as err:
        run_deploy(cfg, exports[broken], reason="should not pass")
    assert err.value.exit_code == ExitCode.DEPLOY_FAILED
    assert "stable still serves 1" in str(err.value)
    status = run_status(cfg)
    assert status.labels == {"canary": 1, "stable": 1}
    assert status.on_disk == [1]  # the broken version was un-published
    assert (Path(cfg.serving.model_repository) / "models.config").read_text() == config_before
    assert _answers_like(rest, model, "labels/stable", exports["v1"])
    assert status.last_actions[-1]["status"] == "failed"


def test_retention_keeps_labelled_and_previous_stable_versions(server, exports, cfg_for) -> None:
    cfg = cfg_for(**{"serving.retention": 2})
    for name in ("v1", "v2", "v3"):
        run_deploy(cfg, exports[name], promote=True)
    status = run_status(cfg)
    assert status.labels == {"canary": 3, "stable": 3}
    assert status.config_versions == [2, 3]  # 2 is the previous stable: rollback stays instant
    assert status.on_disk == [2, 3]
    assert run_rollback(cfg, exports["v3"]).labels_after == {"canary": 2, "stable": 2}


def test_an_unreachable_server_fails_after_bounded_retries_as_exit_8_and_changes_nothing(
    exports, tmp_path: Path
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = load_config(
        None,
        overrides=[
            f"serving.model_repository={tmp_path / 'repo'}",
            f"serving.rest_url=http://127.0.0.1:{port}",
            f"serving.grpc_target=127.0.0.1:{port}",
            "serving.allow_ungated=true",
            "serving.connect_retries=2",
            "serving.retry_backoff_seconds=0.05",
            "serving.request_timeout_seconds=1",
        ],
    )
    t0 = time.monotonic()
    with pytest.raises(InfraError) as err:
        run_deploy(cfg, exports["v1"])
    assert time.monotonic() - t0 < 30
    # Not 9: nothing is known to serve `stable`; the server was sent nothing.
    assert err.value.exit_code == ExitCode.INFRA
    assert f"127.0.0.1:{port}" in str(err.value) and "3 attempt(s)" in str(err.value)
    assert not (tmp_path / "repo" / "models.config").exists()
    assert not (tmp_path / "repo" / "digits" / "1").exists()
