"""What a failed, killed or concurrent deploy action leaves behind (issue 13 §4, §5, §6).

Each table is (what breaks, where) -> what must still hold:

* the exit code says exactly what is true: 9 only when everything was put back and `stable`
  serves again; 8 when the server was sent nothing; 13 when the undo itself failed;
* `models.config` and the repository (what a restarted server reads) always match the deploy
  log, even when the server cannot be reached;
* an unfinished action is shown by `tfship status` and finished by the next action;
* promote and rollback move a label only to an intact version of the right pipeline;
* a damaged deploy log never stops status or rollback;
* concurrent actions are serialised by the repository lease; a restore touches only what its
  own action changed;
* credentials inside URLs never reach deploy.json, the deploy log or stderr.

The model server is the TF Serving stand-in (or TFSHIP_MODEL_SERVER), started once per module.
"The server goes down" is simulated on tfship's side: from the chosen call on, the client talks
to a closed port (a real connection refusal) while the server keeps what it had, which is what
a network partition or a crashed server looks like to tfship; `Outage.end()` brings it back.
These tests only use names the old code also had, so each case fails on the old code.
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import requests

from tests.integration import serving_exports as se
from tests.tfserving_standin.fixture import REPO_ROOT, start_model_server
from tfship.config import load_config
from tfship.errors import ExitCode, TfshipError
from tfship.rundir import RunDir
from tfship.serving import golden
from tfship.serving.client import ServingClient
from tfship.serving.deploy import run_deploy, run_promote, run_rollback
from tfship.serving.status import run_status
from tfship.serving.target import resolve

pytestmark = [pytest.mark.integration, pytest.mark.slow]
_names = itertools.count()


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    with start_model_server(
        tmp_path_factory.mktemp("server"),
        model_config_text="model_config_list {}\n",
        extra_flags=["--file_system_poll_wait_seconds=1", "--max_num_load_retries=0"],
    ) as handle:
        yield handle


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, RunDir]:
    root = tmp_path_factory.mktemp("exports")
    v1 = se.export_good(root, 1, seed=1)
    return {
        "v1": v1,
        "v2": se.export_variant(v1, root, 2, seed=2),
        "v3": se.export_variant(v1, root, 3, seed=3),
        "nan3": se.export_nan_outputs(v1, root, 3),
    }


class Repo:
    """One test's model: its config, repository and helpers to look at both."""

    def __init__(self, server, tmp_path: Path, **extra: object) -> None:
        self.model = f"f{next(_names)}"
        self.root = tmp_path / "repo"
        self.server = server
        sets = {
            "project.model_name": self.model,
            "serving.model_repository": self.root,
            "serving.rest_url": server.rest_url,
            "serving.grpc_target": server.grpc_target,
            "serving.load_deadline_seconds": 30,
            "serving.poll_interval_seconds": 0.1,
            "serving.allow_ungated": True,
            "serving.connect_retries": 1,
            "serving.retry_backoff_seconds": 0.05,
            "serving.request_timeout_seconds": 5,
            **extra,
        }
        self.cfg = load_config(None, overrides=[f"{k}={v}" for k, v in sets.items()])

    @property
    def config_text(self) -> str | None:
        path = self.root / "models.config"
        return path.read_text() if path.exists() else None

    def on_disk(self) -> list[int]:
        d = self.root / self.model
        return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) if d.is_dir() else []

    def answers_like(self, where: str, run_dir: RunDir) -> bool:
        manifest = golden.read_manifest(golden.latest_export(run_dir.export))
        body = {"inputs": {k: v.tolist() for k, v in golden.golden_inputs(manifest).items()}}
        url = f"{self.server.rest_url}/v1/models/{self.model}/{where}:predict"
        r = requests.post(url, json=body, timeout=10)
        if r.status_code != 200:
            return False
        got = np.asarray(r.json()["outputs"]["probabilities"])
        return bool(np.allclose(got, manifest["golden"]["outputs"]["probabilities"], atol=1e-4))

    def served_versions(self) -> dict[int, str]:
        r = requests.get(f"{self.server.rest_url}/v1/models/{self.model}", timeout=10)
        return {int(v["version"]): v["state"] for v in r.json().get("model_version_status", [])}


class Outage:
    """From the `nth` call (0-based) of ServingClient.`method` on, every call of tfship's
    clients goes to a closed port, until `end()`. The server itself keeps running."""

    METHODS = ("reload_config", "wait_available", "predict", "status")

    def __init__(self, monkeypatch: pytest.MonkeyPatch, method: str, nth: int) -> None:
        self.method, self.nth, self.calls, self.dark = method, nth, 0, False
        self.saved: dict[int, tuple] = {}
        dead = _dead_port()
        for name in self.METHODS:
            orig = getattr(ServingClient, name)

            def wrapper(client, *a, _orig=orig, _name=name, **kw):
                if _name == self.method and not self.dark:
                    if self.calls == self.nth:
                        self.dark = True
                    self.calls += 1
                if self.dark and id(client) not in self.saved:
                    self.saved[id(client)] = (client, client.rest_url, client.grpc_target)
                    client.rest_url = f"http://127.0.0.1:{dead}"
                    client.grpc_target = f"127.0.0.1:{dead}"
                    client._channel = None
                return _orig(client, *a, **kw)

            monkeypatch.setattr(ServingClient, name, wrapper)
        self.monkeypatch = monkeypatch

    def end(self) -> None:
        self.monkeypatch.undo()


def _exit_code(call) -> int:
    try:
        call()
    except TfshipError as err:
        return int(err.exit_code)
    return 0


# ---- 1. the server goes down at each step ------------------------------------------------------

# (action, ClientMethod call at which the server goes away, expected exit code)
DOWN_AT = [
    ("deploy", "reload_config", 0, ExitCode.INFRA),  # nothing reached the server
    ("deploy", "wait_available", 0, 13),
    ("deploy", "predict", 0, 13),  # golden /versions/2
    ("deploy", "reload_config", 1, 13),  # labels
    ("deploy", "wait_available", 1, 13),
    ("deploy", "predict", 1, 13),  # golden /labels/canary
    ("promote", "wait_available", 0, ExitCode.INFRA),
    ("promote", "predict", 0, ExitCode.INFRA),
    ("promote", "reload_config", 0, ExitCode.INFRA),
    ("promote", "wait_available", 1, 13),
    ("rollback", "reload_config", 0, ExitCode.INFRA),
    ("rollback", "wait_available", 0, 13),
    ("rollback", "predict", 0, 13),
    ("rollback", "reload_config", 1, 13),
    ("rollback", "wait_available", 1, 13),
]


@pytest.mark.parametrize(
    ("action", "method", "nth", "code"),
    DOWN_AT,
    ids=[f"{a}-{m}-{n}" for a, m, n, _ in DOWN_AT],
)
def test_a_server_lost_mid_action_gets_a_truthful_exit_code_and_its_files_put_back(
    server, exports, tmp_path: Path, monkeypatch, action: str, method: str, nth: int, code: int
) -> None:
    r = Repo(server, tmp_path)
    run_deploy(r.cfg, exports["v1"])
    run_deploy(r.cfg, exports["v2"])
    if action == "rollback":
        run_promote(r.cfg, exports["v2"])
    config_before, disk_before = r.config_text, r.on_disk()
    act = {
        "deploy": lambda: run_deploy(r.cfg, exports["v3"]),
        "promote": lambda: run_promote(r.cfg, exports["v2"]),
        "rollback": lambda: run_rollback(r.cfg, exports["v2"]),
    }[action]

    outage = Outage(monkeypatch, method, nth)
    assert _exit_code(act) == code
    # What a restarted server would read is the state before the action, whatever the server.
    assert r.config_text == config_before
    assert r.on_disk() == disk_before
    unfinished = run_status(r.cfg).unfinished
    assert (unfinished is not None) == (code == 13)

    outage.end()  # the server is reachable again: the next action finishes the undo first
    retried = act()
    assert retried.status == "ok"
    assert bool(retried.recovered) == (code == 13)
    assert run_status(r.cfg).unfinished is None
    stable = {"deploy": "v1", "promote": "v2", "rollback": "v1"}[action]
    assert r.answers_like("labels/stable", exports[stable])


def test_a_model_that_fails_golden_and_a_server_lost_during_the_undo_is_exit_13_not_9(
    server, exports, tmp_path: Path, monkeypatch
) -> None:
    r = Repo(server, tmp_path)
    run_deploy(r.cfg, exports["v1"])
    config_before = r.config_text
    outage = Outage(monkeypatch, "reload_config", 1)  # the undo's reload
    assert _exit_code(lambda: run_deploy(r.cfg, exports["nan3"])) == 13
    assert r.config_text == config_before and r.on_disk() == [1]
    outage.end()
    following = run_deploy(r.cfg, exports["v2"])  # finishes the undo first
    assert following.recovered and following.labels_after == {"canary": 2, "stable": 1}
    assert r.served_versions().get(3) in (None, "END")  # the NaN model is gone
    assert r.answers_like("labels/stable", exports["v1"])


def test_a_repository_that_fails_during_the_undo_is_exit_13_and_the_next_action_repairs_it(
    server, exports, tmp_path: Path, monkeypatch
) -> None:
    from tfship.serving.repository_local import LocalRepository

    r = Repo(server, tmp_path)
    run_deploy(r.cfg, exports["v1"])
    failing = threading.Event()
    write = LocalRepository.write_text

    def write_text(self, relpath, text):
        if failing.is_set() and relpath == "models.config":
            raise OSError(30, "Read-only file system")
        return write(self, relpath, text)

    orig = ServingClient.predict

    def predict(client, *a, **kw):
        failing.set()  # the golden check fails, and the undo cannot write models.config
        return {"probabilities": np.zeros((4, 10)), "class_id": np.zeros(4)}

    monkeypatch.setattr(LocalRepository, "write_text", write_text)
    monkeypatch.setattr(ServingClient, "predict", predict)
    assert _exit_code(lambda: run_deploy(r.cfg, exports["v2"])) == 13
    monkeypatch.setattr(ServingClient, "predict", orig)
    monkeypatch.setattr(LocalRepository, "write_text", write)
    assert run_status(r.cfg).unfinished is not None
    following = run_deploy(r.cfg, exports["v3"])
    assert following.recovered and following.labels_after == {"canary": 3, "stable": 1}
    assert 2 not in run_status(r.cfg).on_disk


def test_a_restarted_server_serves_stable_after_a_restore_that_could_not_reach_it(
    exports, tmp_path: Path, monkeypatch
) -> None:
    """The server really dies mid-deploy; restarted from models.config it serves stable."""
    flags = [
        "--file_system_poll_wait_seconds=1",
        "--max_num_load_retries=0",
        "--allow_version_labels_for_unavailable_models=true",
    ]
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "models.config").write_text("model_config_list {}\n")
    srv = start_model_server(
        tmp_path / "s1",
        model_config_text="model_config_list {}\n",
        extra_flags=[*flags, f"--model_config_file={tmp_path / 'repo' / 'models.config'}"],
    )
    try:
        r = Repo(srv, tmp_path)
        run_deploy(r.cfg, exports["v1"])
        orig = ServingClient.predict

        def die_then_predict(client, *a, **kw):
            srv.stop()
            return orig(client, *a, **kw)

        monkeypatch.setattr(ServingClient, "predict", die_then_predict)
        assert _exit_code(lambda: run_deploy(r.cfg, exports["v2"])) == 13
    finally:
        srv.stop()
    monkeypatch.undo()
    with start_model_server(
        tmp_path / "s2",
        model_config_text=(tmp_path / "repo" / "models.config").read_text(),
        extra_flags=flags,
    ) as again:
        r.server = again
        assert r.answers_like("labels/stable", exports["v1"])
        assert r.served_versions().get(2) in (None, "END")


# ---- 2. kill -9 at each step ---------------------------------------------------------------

_DRIVER = r"""
import importlib, json, os, shutil, signal, sys
from pathlib import Path
spec = json.loads(sys.argv[1])
from tfship.config import load_config
from tfship.rundir import RunDir
from tfship.serving import repository_local, target

def die(*a, **k):
    os.kill(os.getpid(), signal.SIGKILL)

kill_at = spec["kill_at"]
if kill_at == "mid-upload":
    copied = []
    def copy(src, dst, **kw):
        copied.append(src)
        if len(copied) == 3:
            die()
        return shutil.copy2(src, dst, **kw)
    class Shutil:  # repository_local's view of shutil: copytree copies 2 files, then dies
        def __getattr__(self, name):
            return getattr(shutil, name)
        def copytree(self, src, dst, **kw):
            return shutil.copytree(src, dst, symlinks=False, copy_function=copy)
    repository_local.shutil = Shutil()
elif kill_at == "published":
    orig_vis = repository_local.LocalRepository._make_visible
    def vis(self, *a):
        orig_vis(self, *a); die()
    repository_local.LocalRepository._make_visible = vis
elif kill_at == "sigterm-apply-1":  # a cancelled CI job: SIGTERM after the first reload
    orig_apply = target.Target.apply
    def apply(self, *a, **kw):
        out = orig_apply(self, *a, **kw)
        os.kill(os.getpid(), signal.SIGTERM)
        return out
    target.Target.apply = apply
elif kill_at.startswith("apply-"):
    n = int(kill_at.split("-")[1]); seen = []
    orig_apply = target.Target.apply
    def apply(self, *a, **kw):
        out = orig_apply(self, *a, **kw); seen.append(1)
        if len(seen) == n:
            die()
        return out
    target.Target.apply = apply
elif kill_at == "committed":  # right after its `ok` record reached the deploy log
    orig_append = repository_local.LocalRepository.append_log
    def append(self, model, record):
        orig_append(self, model, record)
        if record.get("status") == "ok" and record.get("action") == spec["action"]:
            die()
    repository_local.LocalRepository.append_log = append
elif kill_at == "retention":
    for name in ("tfship.serving.actions", "tfship.serving.deploy"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if hasattr(module, "apply_retention"):
            module.apply_retention = die

cfg = load_config(None, overrides=spec["overrides"])
from tfship.serving.deploy import run_deploy, run_promote
fn = run_promote if spec["action"] == "promote" else run_deploy
from tfship.errors import TfshipError
try:
    fn(cfg, RunDir(Path(spec["run_dir"])))
except TfshipError as err:
    sys.exit(int(err.exit_code))
"""


def _killed(r: Repo, action: str, run_dir: RunDir, kill_at: str, code: int = -9) -> None:
    overrides = [f"{k}={v}" for k, v in _overrides(r).items()]
    spec = {
        "kill_at": kill_at,
        "overrides": overrides,
        "run_dir": str(run_dir.root),
        "action": action,
    }
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run(
        [sys.executable, "-c", _DRIVER, json.dumps(spec)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == code, proc.stderr[-3000:]


def _overrides(r: Repo) -> dict:
    return {
        "project.model_name": r.model,
        "serving.model_repository": r.root,
        "serving.rest_url": r.server.rest_url,
        "serving.grpc_target": r.server.grpc_target,
        "serving.load_deadline_seconds": 30,
        "serving.poll_interval_seconds": 0.1,
        "serving.allow_ungated": True,
    }


# (action killed, where) -> was it committed (its ok record logged) before it died?
KILLS = [
    ("deploy", "mid-upload", False),
    ("deploy", "published", False),
    ("deploy", "apply-1", False),  # version loaded, no label yet
    ("deploy", "apply-2", False),  # canary labelled on the server and in models.config
    ("deploy", "committed", True),
    ("promote", "apply-1", False),
    ("promote", "retention", True),
]


@pytest.mark.parametrize(
    ("action", "kill_at", "committed"), KILLS, ids=[f"{a}-{k}" for a, k, _ in KILLS]
)
def test_a_killed_action_is_shown_by_status_and_finished_by_the_next_one(
    server, exports, tmp_path: Path, action: str, kill_at: str, committed: bool
) -> None:
    r = Repo(server, tmp_path)
    run_deploy(r.cfg, exports["v1"])
    if action == "promote":
        run_deploy(r.cfg, exports["v2"])
    before = r.config_text
    _killed(r, action, exports["v2"], kill_at)

    status = run_status(r.cfg)
    if kill_at != "retention":
        assert status.unfinished is not None and status.unfinished["action"] == action
    if kill_at == "mid-upload":
        assert status.temporary  # the half copy is visible to a person, not to TF Serving

    after = run_rollback(r.cfg, exports["v1"]) if committed else run_deploy(r.cfg, exports["v3"])
    assert after.recovered or kill_at == "retention"
    status = run_status(r.cfg)
    assert status.unfinished is None and status.temporary == []
    if not committed:
        # The killed action was undone before v3 was deployed: stable never became 2.
        assert status.labels == {"canary": 3, "stable": 1}
    if not committed and action == "deploy":
        assert 2 not in status.config_versions and 2 not in status.on_disk
    assert r.answers_like("labels/stable", exports["v1"])
    assert before is not None


def test_a_cancelled_deploy_sigterm_undoes_itself_before_it_exits(
    server, exports, tmp_path: Path
) -> None:
    r = Repo(server, tmp_path)
    run_deploy(r.cfg, exports["v1"])
    before = r.config_text
    _killed(r, "deploy", exports["v2"], "sigterm-apply-1", code=ExitCode.DEPLOY_FAILED)
    status = run_status(r.cfg)
    assert r.config_text == before and status.on_disk == [1] and status.unfinished is None
    assert r.served_versions().get(2) in (None, "END")
    assert r.answers_like("labels/stable", exports["v1"])


# ---- 3. a damaged version is never the target of a label ----------------------------------------


def _damage(path: Path, how: str) -> None:
    data = path / "variables" / "variables.data-00000-of-00001"
    if how == "truncated variables":
        data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    elif how == "one byte flipped":
        raw = bytearray(data.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        data.write_bytes(bytes(raw))
    elif how == "variables index removed":
        (path / "variables" / "variables.index").unlink()
    elif how == "saved_model.pb removed":
        (path / "saved_model.pb").unlink()
    elif how == "manifest says another version":
        m = path / "assets.extra" / "tfship-manifest.json"
        doc = json.loads(m.read_text())
        doc["version"] = 7
        m.write_text(json.dumps(doc))
    elif how == "extra file":
        (path / "variables" / "planted.bin").write_bytes(b"x")


DAMAGE = [
    "truncated variables",
    "one byte flipped",
    "variables index removed",
    "saved_model.pb removed",
    "manifest says another version",
    "extra file",
]


@pytest.mark.parametrize("how", DAMAGE)
def test_rollback_to_a_damaged_previous_stable_is_refused_before_any_label_moves(
    server, exports, tmp_path: Path, how: str
) -> None:
    r = Repo(server, tmp_path)
    run_deploy(r.cfg, exports["v1"])
    run_deploy(r.cfg, exports["v2"], promote=True)  # v1 still loaded from memory
    _damage(r.root / r.model / "1", how)
    config_before = r.config_text
    assert _exit_code(lambda: run_rollback(r.cfg, exports["v2"])) == ExitCode.MODEL
    assert r.config_text == config_before
    assert run_status(r.cfg).labels == {"canary": 2, "stable": 2}
    assert r.answers_like("labels/stable", exports["v2"])


@pytest.mark.parametrize("how", ["one byte flipped", "saved_model.pb removed"])
def test_promote_of_a_canary_damaged_on_disk_is_refused(
    server, exports, tmp_path: Path, how: str
) -> None:
    r = Repo(server, tmp_path)
    run_deploy(r.cfg, exports["v1"])
    run_deploy(r.cfg, exports["v2"])
    _damage(r.root / r.model / "2", how)
    assert _exit_code(lambda: run_promote(r.cfg, exports["v2"])) != 0
    assert run_status(r.cfg).labels == {"canary": 2, "stable": 1}


# ---- 4. promote ships only its own pipeline's model --------------------------------------------


def _other_bytes_v2(exports, tmp_path: Path) -> RunDir:
    """Another pipeline's export that happens to have the same version number."""
    return se.export_variant(exports["v1"], tmp_path / "other-pipeline", 2, seed=9)


# (whose promote) -> expected exit; the canary is pipeline "v2"'s version 2 in every case
PROMOTE_REFUSED = [
    ("another pipeline's run (its version 3)", lambda ex, tmp: (ex["v3"], None), 9),
    ("same version number, other bytes", lambda ex, tmp: (_other_bytes_v2(ex, tmp), None), 6),
    ("no export in the run dir and no --version", lambda ex, tmp: (RunDir(tmp / "e"), None), 3),
    ("--version naming the stable, not the canary", lambda ex, tmp: (RunDir(tmp / "e"), 1), 9),
]


@pytest.mark.parametrize(
    ("who", "run", "code"), PROMOTE_REFUSED, ids=[w for w, _, _ in PROMOTE_REFUSED]
)
def test_promote_refuses_any_canary_but_its_own_pipelines(
    server, exports, tmp_path: Path, who: str, run, code: int
) -> None:
    r = Repo(server, tmp_path)
    run_deploy(r.cfg, exports["v1"])
    run_deploy(r.cfg, exports["v2"])  # pipeline "v2" deployed the canary
    run_dir, version = run(exports, tmp_path)
    kwargs = {} if version is None else {"version": version}
    assert _exit_code(lambda: run_promote(r.cfg, run_dir, **kwargs)) == code
    assert run_status(r.cfg).labels == {"canary": 2, "stable": 1}
    assert run_promote(r.cfg, exports["v2"]).labels_after == {"canary": 2, "stable": 2}


# ---- 5. a damaged deploy log never stops status or rollback -------------------------------------


def _log(r: Repo) -> Path:
    return r.root / r.model / ".tfship" / "deploy-log.jsonl"


def _tear(path: Path, how: str) -> None:
    lines = path.read_bytes().splitlines(keepends=True)
    if how == "torn last line (writer killed mid-append)":
        path.write_bytes(b"".join(lines) + lines[-1][: len(lines[-1]) // 2].rstrip(b"\n"))
    elif how == "garbage line in the middle":
        path.write_bytes(b"".join([*lines[:2], b"not json at all\n", *lines[2:]]))
    elif how == "a record with the wrong types":
        bad = {"action": "promote", "model": "x", "at": "now", "status": "ok"}
        bad["labels_after"] = {"stable": "two"}
        path.write_bytes(b"".join([*lines, json.dumps(bad).encode() + b"\n"]))
    elif how == "bytes that are not UTF-8":
        path.write_bytes(b"".join([*lines[:1], b"\xff\xfe\x00\n", *lines[1:]]))
    elif how == "the promotion record cut in half":
        lines[3] = lines[3][: len(lines[3]) // 2] + b"\n"
        path.write_bytes(b"".join(lines))


TEARS = [
    "torn last line (writer killed mid-append)",
    "garbage line in the middle",
    "a record with the wrong types",
    "bytes that are not UTF-8",
    "the promotion record cut in half",
]


@pytest.mark.parametrize("how", TEARS)
def test_a_damaged_deploy_log_is_reported_and_rollback_still_works(
    server, exports, tmp_path: Path, how: str
) -> None:
    r = Repo(server, tmp_path)
    run_deploy(r.cfg, exports["v1"])
    run_deploy(r.cfg, exports["v2"], promote=True)
    _tear(_log(r), how)

    assert run_status(r.cfg, last=50).labels == {"canary": 2, "stable": 2}
    rolled = run_rollback(r.cfg, exports["v2"], reason="emergency")
    assert rolled.labels_after == {"canary": 1, "stable": 1}
    assert r.answers_like("labels/stable", exports["v1"])
    assert len(run_status(r.cfg).damaged_records) == 1
    # The records written after the damage are whole records of their own, readable.
    records, problems = resolve(r.cfg).repository.read_log_checked(r.model)
    assert len(problems) == 1
    ok = [x for x in records if x["action"] == "rollback" and x["status"] == "ok"]
    assert len(ok) == 1
    assert any(x.get("id") == ok[0]["id"] and x["status"] == "started" for x in records)


# ---- 6. concurrent actions: serialised, never undoing each other --------------------------------


def test_a_deploy_that_succeeds_is_never_undone_by_a_concurrent_one_that_fails(
    server, exports, tmp_path: Path, monkeypatch
) -> None:
    r = Repo(server, tmp_path)
    run_deploy(r.cfg, exports["v1"])
    paused, go, b_done = threading.Event(), threading.Event(), threading.Event()
    orig = ServingClient.predict

    def predict(client, *a, **kw):
        if threading.current_thread().name == "deploy-a":
            paused.set()
            go.wait(60)
            return {"probabilities": np.zeros((4, 10)), "class_id": np.zeros(4)}  # wrong
        return orig(client, *a, **kw)

    monkeypatch.setattr(ServingClient, "predict", predict)
    outcome: dict[str, object] = {}

    def deploy(name: str, run: str) -> None:
        try:
            outcome[name] = run_deploy(r.cfg, exports[run])
        except TfshipError as err:
            outcome[name] = int(err.exit_code)
        finally:
            if name == "b":
                b_done.set()

    a = threading.Thread(target=deploy, args=("a", "v2"), name="deploy-a")
    b = threading.Thread(target=deploy, args=("b", "v3"), name="deploy-b")
    a.start()
    assert paused.wait(60)
    b.start()
    b_done.wait(8)  # the old code finishes B here; with the lease B waits for A
    go.set()
    a.join(120)
    b.join(120)
    assert outcome["a"] == ExitCode.DEPLOY_FAILED
    assert getattr(outcome["b"], "status", None) == "ok"
    status = run_status(r.cfg, last=50)
    assert status.labels == {"canary": 3, "stable": 1}  # B's success stands
    assert r.answers_like("labels/canary", exports["v3"])


def test_an_action_while_another_holds_the_lease_waits_then_exits_14_changing_nothing(
    server, exports, tmp_path: Path
) -> None:
    from tfship.serving import lease

    r = Repo(server, tmp_path)
    run_deploy(r.cfg, exports["v1"])
    before = r.config_text
    with lease.held(resolve(r.cfg).repository, action="deploy", model="other", version=9, wait=0):
        code = _exit_code(lambda: run_deploy(r.cfg, exports["v2"], lease_wait=0.5))
        status = run_status(r.cfg)
    assert code == 14
    assert r.config_text == before and r.on_disk() == [1]
    assert status.lease and "deploy other v9" in status.lease
    assert run_deploy(r.cfg, exports["v2"]).labels_after == {"canary": 2, "stable": 1}


# ---- 7. an undo touches only what its own action changed ----------------------------------------


def test_an_undo_keeps_another_models_entry_changed_meanwhile(
    server, exports, tmp_path: Path, monkeypatch
) -> None:
    from tfship.serving import models_config
    from tfship.serving.models_config import ModelState

    r = Repo(server, tmp_path)
    run_deploy(r.cfg, exports["v1"])
    orig = ServingClient.predict

    def predict(client, *a, **kw):
        # Meanwhile someone adds another model to models.config (another tool, by hand).
        path = r.root / "models.config"
        cfg = models_config.parse(path.read_text())
        other = ModelState("other", "/models/other")
        path.write_text(models_config.render(models_config.with_model(cfg, other)))
        monkeypatch.setattr(ServingClient, "predict", orig)
        return {"probabilities": np.zeros((4, 10)), "class_id": np.zeros(4)}

    monkeypatch.setattr(ServingClient, "predict", predict)
    assert _exit_code(lambda: run_deploy(r.cfg, exports["v2"])) in (9, 13)
    text = r.config_text
    assert 'name: "other"' in text  # the other entry survived the undo
    assert run_status(r.cfg).labels == {"canary": 1, "stable": 1}


def test_an_undo_never_removes_a_version_that_was_published_before_the_action(
    server, exports, tmp_path: Path
) -> None:
    from tfship.serving.deploy import run_publish

    r = Repo(server, tmp_path)
    run_deploy(r.cfg, exports["v1"])
    run_publish(r.cfg, exports["nan3"])  # published (not loaded) by an earlier job
    assert _exit_code(lambda: run_deploy(r.cfg, exports["nan3"])) == ExitCode.DEPLOY_FAILED
    assert r.on_disk() == [1, 3]


# ---- 8. credentials inside URLs stay out of everything tfship writes -----------------------------

SECRET = "s3cr3t-Pa55word"

# (where the credential is, which command) -> never written anywhere, never on stderr
LEAKS = [
    ("userinfo in the REST URL", "promote", {"rest_url": f"http://deployer:{SECRET}@{{host}}"}),
    ("userinfo in the REST URL", "rollback", {"rest_url": f"http://deployer:{SECRET}@{{host}}"}),
    ("token in the REST URL", "status", {"rest_url": f"http://{{host}}/?token={SECRET}"}),
    (
        "userinfo in the S3 endpoint",
        "deploy",
        {
            "model_repository": "s3://models/serving",
            "s3_endpoint_url": f"http://AKIAIOSFODNN7EXAMPLE:{SECRET}@{{host}}",
        },
    ),
]


@pytest.mark.parametrize(
    ("where", "command", "sets"), LEAKS, ids=[f"{w}, {c}" for w, c, _ in LEAKS]
)
def test_credentials_in_urls_never_reach_deploy_json_the_log_or_stderr(
    server, exports, tmp_path: Path, capsys, where: str, command: str, sets: dict
) -> None:
    import shutil

    from tfship.cli import main

    r = Repo(server, tmp_path)
    run_deploy(r.cfg, exports["v1"])
    run_deploy(r.cfg, exports["v2"], promote=command == "rollback")
    run = tmp_path / "run"
    shutil.copytree(exports["v2"].root, run)
    host = f"127.0.0.1:{_dead_port()}"  # the server is unreachable: errors name the URL
    values = {
        **_overrides(r),
        "serving.grpc_target": host,
        "serving.rest_url": f"http://{host}",
        "serving.connect_retries": 0,
        "serving.request_timeout_seconds": 2,
        **{f"serving.{k}": v.format(host=host) for k, v in sets.items()},
    }
    argv = [command, "--run-dir", str(run)]
    for k, v in values.items():
        argv += ["--set", f"{k}={v}"]
    capsys.readouterr()
    code = main(argv)
    out = capsys.readouterr()
    written = [
        p.read_text(errors="replace")
        for p in tmp_path.rglob("*")
        if p.is_file() and (p.suffix in (".json", ".jsonl") or p.name == "models.config")
    ]
    for text in [out.err, out.out, *written]:
        assert SECRET not in text
    assert code == ExitCode.INFRA


# ---- 9. a tampered manifest or model name never ships -------------------------------------------


def _tampered(exports, tmp_path: Path, run: str, change) -> RunDir:
    import shutil

    src = golden.latest_export(exports[run].export)
    dst_run = RunDir(tmp_path / "tampered")
    dst = dst_run.export / src.name
    shutil.copytree(src, dst)
    path = dst / "assets.extra" / "tfship-manifest.json"
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))  # json writes NaN / Infinity as Python reads them
    return dst_run


def _set(*keys, value):
    def change(doc):
        d = doc
        for k in keys[:-1]:
            d = d[k]
        d[keys[-1]] = value

    return change


TAMPER = [
    ("version -5", "v2", _set("version", value=-5)),
    ("version 0", "v2", _set("version", value=0)),
    ("version beyond int64", "v2", _set("version", value=2**63)),
    ("version as text", "v2", _set("version", value="2")),
    ("version of another directory", "v2", _set("version", value=9)),
    ("NaN model, empty golden outputs", "nan3", _set("golden", "outputs", value={})),
    ("empty golden inputs", "v2", _set("golden", "inputs", value={"pixels": []})),
    (
        "NaN golden outputs",
        "nan3",
        _set("golden", "outputs", "probabilities", value=[[float("nan")] * 10] * 4),
    ),
    ("infinite tolerance", "nan3", _set("golden", "tolerance", value=float("inf"))),
]


@pytest.mark.parametrize(("what", "run", "change"), TAMPER, ids=[w for w, _, _ in TAMPER])
def test_a_tampered_manifest_is_refused_before_anything_is_published(
    server, exports, tmp_path: Path, what: str, run: str, change
) -> None:
    r = Repo(server, tmp_path)
    run_deploy(r.cfg, exports["v1"])
    before = r.config_text
    code = _exit_code(lambda: run_deploy(r.cfg, _tampered(exports, tmp_path, run, change)))
    assert code == ExitCode.MODEL
    assert r.config_text == before and r.on_disk() == [1]
    assert r.answers_like("labels/stable", exports["v1"])


@pytest.mark.parametrize(
    "name",
    ["models.config", "Models.Config", "m" * 256],
    ids=["models.config", "any case", "256 bytes"],
)
def test_a_model_name_the_repository_cannot_hold_is_refused_before_anything_is_written(
    exports, tmp_path: Path, name: str
) -> None:
    def deploy():
        cfg = load_config(
            None,
            overrides=[
                f"project.model_name={name}",
                f"serving.model_repository={tmp_path / 'repo'}",
                "serving.allow_ungated=true",
            ],
        )
        run_deploy(cfg, exports["v1"])

    assert _exit_code(deploy) == ExitCode.CONFIG
    assert not (tmp_path / "repo").exists() or not any((tmp_path / "repo").iterdir())


@pytest.mark.parametrize("flag", ["9223372036854775808", "-5", "0"])
def test_a_version_flag_outside_int64_is_a_usage_error(flag: str, capsys) -> None:
    from tfship.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["promote", f"--version={flag}"])
    assert exc.value.code == ExitCode.USAGE
    assert "version" in capsys.readouterr().err
