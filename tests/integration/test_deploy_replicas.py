"""A file-driven deploy to several replicas (`serving.replicas`, issue 15; docs/deploy.md,
"Kubernetes"), against TF Serving stand-ins (or TFSHIP_MODEL_SERVER).

Two servers read the same `models.config` (as two pods do, each from its synced copy) and
re-read it every second (`--model_config_file_poll_wait_seconds=1`); a third reads a stale
copy that never changes, like a pod whose sync sidecar is stuck. tfship must send no
HandleReloadConfigRequest, return only once every replica serves the version and the label,
and undo (previous config written, every replica back on it) when one replica never does.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests

from tests.integration import serving_exports as se
from tests.tfserving_standin.fixture import start_model_server
from tfship.config import load_config
from tfship.errors import DeployFailed, ExitCode
from tfship.serving import golden, models_config
from tfship.serving.client import ServingClient
from tfship.serving.deploy import run_deploy

pytestmark = pytest.mark.integration
EMPTY = "model_config_list {}\n"
FLAGS = [
    "--model_config_file_poll_wait_seconds=1",
    "--file_system_poll_wait_seconds=1",
    "--max_num_load_retries=0",
]


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("exports")
    v1 = se.export_good(root, 1, seed=1)
    return {"v1": v1, "v2": se.export_variant(v1, root, 2, seed=2)}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory):
    """(repository, [replica a, replica b], stale replica, its config file)."""
    tmp = tmp_path_factory.mktemp("replicas")
    repo, stale = tmp / "repo", tmp / "stale" / "models.config"
    repo.mkdir()
    stale.parent.mkdir()
    (repo / "models.config").write_text(EMPTY)
    stale.write_text(EMPTY)

    def start(name: str, config: Path):
        return start_model_server(
            tmp / name,
            model_config_text=EMPTY,
            extra_flags=[*FLAGS, f"--model_config_file={config}"],  # the last one counts
        )

    with ThreadPoolExecutor(3) as pool:
        futures = [
            pool.submit(start, n, c)
            for n, c in (("a", repo / "models.config"), ("b", repo / "models.config"), ("c", stale))
        ]
        servers = [f.result() for f in futures]
    try:
        yield repo, servers[:2], servers[2], stale
    finally:
        with ThreadPoolExecutor(3) as pool:
            list(pool.map(lambda s: s.stop(), servers))


def _cfg(repo: Path, model: str, urls: list[str], deadline: float):
    return load_config(
        None,
        overrides=[
            f"project.model_name={model}",
            f"serving.model_repository={repo}",
            f"serving.replicas=[{', '.join(urls)}]",
            f"serving.load_deadline_seconds={deadline}",
            "serving.poll_interval_seconds=0.2",
            "serving.allow_ungated=true",
            "serving.retry_backoff_seconds=0.05",
            "serving.connect_retries=1",
        ],
    )


@pytest.fixture(autouse=True)
def no_grpc_reload(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self, config) -> None:
        raise AssertionError("a file-driven deploy sent HandleReloadConfigRequest")

    monkeypatch.setattr(ServingClient, "reload_config", refuse)


def _on(url: str, model: str) -> tuple[dict[int, str], dict[str, int | None]]:
    client = ServingClient(model, rest_url=url, retries=0)
    versions = {s.version: s.state for s in client.status()}
    return versions, {label: client.label_version(label) for label in ("stable", "canary")}


def _answers_like(url: str, model: str, where: str, run_dir) -> bool:
    m = golden.read_manifest(golden.latest_export(run_dir.export))
    body = {"inputs": {k: v.tolist() for k, v in golden.golden_inputs(m).items()}}
    r = requests.post(f"{url}/v1/models/{model}/{where}:predict", json=body, timeout=10)
    r.raise_for_status()
    got = np.asarray(r.json()["outputs"]["probabilities"])
    return bool(np.allclose(got, m["golden"]["outputs"]["probabilities"], atol=1e-4))


def test_deploy_returns_once_every_replica_serves_the_version_and_label(fleet, exports) -> None:
    repo, (a, b), _, _ = fleet
    cfg = _cfg(repo, "fleet", [a.rest_url, b.rest_url], 30)
    first = run_deploy(cfg, exports["v1"], reason="first")
    assert first.labels_after == {"canary": 1, "stable": 1} and first.golden.ok
    assert first.mode == "server"
    for url in (a.rest_url, b.rest_url):  # checked at once: deploy waited for both
        assert _on(url, "fleet") == ({1: "AVAILABLE"}, {"stable": 1, "canary": 1})

    second = run_deploy(cfg, exports["v2"], reason="canary")
    assert second.labels_after == {"canary": 2, "stable": 1}
    for url in (a.rest_url, b.rest_url):
        versions, labels = _on(url, "fleet")
        assert versions == {1: "AVAILABLE", 2: "AVAILABLE"} and labels == {"stable": 1, "canary": 2}
        assert _answers_like(url, "fleet", "labels/canary", exports["v2"])
        assert _answers_like(url, "fleet", "labels/stable", exports["v1"])
    text = (repo / "models.config").read_text()
    assert 'name: "fleet"' in text and "canary" in text


def test_a_replica_that_never_picks_it_up_fails_the_deploy_and_it_is_undone(fleet, exports) -> None:
    repo, (a, b), c, stale = fleet
    good = [a.rest_url, b.rest_url]
    run_deploy(_cfg(repo, "lagged", good, 30), exports["v1"], reason="first")
    # The third replica got the repository once (v1 stable), then its sync stopped. Like
    # tfship, the copy names the version before its labels: a server refuses a config whose
    # label points at a version it has not loaded yet.
    cfg1 = models_config.parse((repo / "models.config").read_text(), origin="models.config")
    state = models_config.model_state(cfg1, "lagged")
    for step, label in ((state.with_labels({}), None), (state, 1)):
        stale.write_text(models_config.render(models_config.with_model(None, step)))
        deadline = time.monotonic() + 15
        while _on(c.rest_url, "lagged") != ({1: "AVAILABLE"}, {"stable": label, "canary": label}):
            assert time.monotonic() < deadline, "the stale replica never loaded the config"
            time.sleep(0.2)
    config_before = (repo / "models.config").read_text()

    cfg = _cfg(repo, "lagged", [*good, c.rest_url], 4)
    with pytest.raises(DeployFailed) as err:
        run_deploy(cfg, exports["v2"], reason="never reaches c")
    message = err.value.message
    assert err.value.exit_code == ExitCode.DEPLOY_FAILED
    assert "1 of 3 replica(s)" in message
    assert f"{c.rest_url}: reports {{1: 'AVAILABLE'}}" in message
    assert "previous config and labels restored" in message and "stable still serves 1" in message
    # The repository says what it said before; every replica is back on it; v2 un-published.
    assert (repo / "models.config").read_text() == config_before
    assert not (repo / "lagged" / "2").exists()
    for url in (*good, c.rest_url):
        versions, labels = _on(url, "lagged")
        assert versions.get(1) == "AVAILABLE" and versions.get(2) in (None, "END", "UNLOADING")
        assert labels == {"stable": 1, "canary": 1}
    record = json.loads(exports["v2"].deploy_json.read_text())["record"]
    assert record["status"] == "failed" and c.rest_url in record["error"]
