"""The model repository: atomic, verified, idempotent publish; retention-safe deletes; the log."""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

import pytest

from tests.helpers.moto import AWS_TEST_ENV, moto_fixture
from tfship.errors import ExitCode, InfraError
from tfship.serving.deploy_log import log_record
from tfship.serving.repository import (
    READY_FILE,
    VersionConflict,
    local_manifest,
    manifest_digest,
    tree_digest,
)
from tfship.serving.repository_local import LocalRepository
from tfship.serving.repository_s3 import S3Repository


def fake_savedmodel(path: Path, seed: int = 0, mb: float = 0.2) -> Path:
    """Files shaped like a SavedModel; the repository only cares about bytes."""
    (path / "variables").mkdir(parents=True)
    (path / "assets.extra").mkdir()
    size = int(mb * (1 << 20))
    data = bytes([seed % 256]) * size
    (path / "variables" / "variables.data-00000-of-00001").write_bytes(data)
    (path / "variables" / "variables.index").write_bytes(b"index%d" % seed)
    (path / "assets.extra" / "tfship-manifest.json").write_text(f'{{"seed": {seed}}}')
    (path / READY_FILE).write_bytes(b"graph%d" % seed)
    return path


def rec(n: int, **more) -> dict:
    """A deploy-log record as tfship writes one (the log refuses anything else)."""
    return log_record("deploy", "digits", status="ok", id=f"op{n}", n=n, **more)


def test_publish_makes_the_version_visible_with_identical_files(tmp_path: Path) -> None:
    src = fake_savedmodel(tmp_path / "export" / "1")
    repo = LocalRepository(tmp_path / "repo")
    result = repo.publish("digits", 1, src)
    assert result.status == "published" and result.files == 4
    assert repo.versions("digits") == [1]
    assert local_manifest(tmp_path / "repo" / "digits" / "1") == local_manifest(src)
    assert repo.leftovers("digits") == []  # no temporary copy left
    assert repo.version_record("digits", 1) == (local_manifest(src), [])


def test_files_changed_after_the_callers_reading_are_refused_not_published(
    tmp_path: Path,
) -> None:
    # Deploy hashes the export once and binds the gate, the verification record and the copy
    # to that reading: bytes that changed since must not reach the repository.
    src = fake_savedmodel(tmp_path / "export" / "1")
    read = local_manifest(src)
    (src / "variables" / "variables.index").write_bytes(b"tampered")
    repo = LocalRepository(tmp_path / "repo")
    with pytest.raises(InfraError, match="does not match"):
        repo.publish("digits", 1, src, expected=read)
    assert repo.versions("digits") == [] and repo.leftovers("digits") == []


def test_the_tree_digest_of_a_reading_is_the_digest_of_the_directory(tmp_path: Path) -> None:
    src = fake_savedmodel(tmp_path / "export" / "1")
    (src / "a-b").write_text("sorts differently as a name than as a path")
    (src / "a").mkdir()
    (src / "a" / "z").write_text("x")
    # Digests already recorded in gate.json and verification records must keep matching.
    pinned = "90cf3a10d6998b97035d31f15c10fc21f3a10bcd9ca109965652002f323ecf9e"
    assert manifest_digest(local_manifest(src)) == tree_digest(src) == pinned


def test_republishing_the_same_model_is_a_no_op(tmp_path: Path) -> None:
    src = fake_savedmodel(tmp_path / "e")
    repo = LocalRepository(tmp_path / "repo")
    repo.publish("digits", 1, src)
    mtime = (tmp_path / "repo" / "digits" / "1" / READY_FILE).stat().st_mtime_ns
    assert repo.publish("digits", 1, src).status == "unchanged"
    assert (tmp_path / "repo" / "digits" / "1" / READY_FILE).stat().st_mtime_ns == mtime


def test_a_different_model_under_an_existing_version_is_refused(tmp_path: Path) -> None:
    repo = LocalRepository(tmp_path / "repo")
    repo.publish("digits", 1, fake_savedmodel(tmp_path / "a", seed=1))
    with pytest.raises(VersionConflict, match="already holds a different model") as err:
        repo.publish("digits", 1, fake_savedmodel(tmp_path / "b", seed=2))
    assert "new version number" in str(err.value)
    assert (tmp_path / "repo" / "digits" / "1" / READY_FILE).read_bytes() == b"graph1"


def test_an_incomplete_leftover_version_is_replaced_not_trusted(tmp_path: Path) -> None:
    repo = LocalRepository(tmp_path / "repo")
    (tmp_path / "repo" / "digits" / "1" / "variables").mkdir(parents=True)  # no saved_model.pb
    repo.publish("digits", 1, fake_savedmodel(tmp_path / "a"))
    assert repo.is_complete("digits", 1) and repo.versions("digits") == [1]


def test_delete_hides_the_version_before_removing_it(tmp_path: Path) -> None:
    repo = LocalRepository(tmp_path / "repo")
    repo.publish("digits", 1, fake_savedmodel(tmp_path / "a"))
    repo.delete_version("digits", 1)
    assert repo.versions("digits") == []
    assert [p.name for p in (tmp_path / "repo" / "digits").iterdir()] == [".tfship"]
    assert repo.version_record("digits", 1)[0] is None  # its publish record went with it


def test_deploy_log_is_append_only_json_lines(tmp_path: Path) -> None:
    repo = LocalRepository(tmp_path / "repo")
    threads = [
        threading.Thread(target=repo.append_log, args=("digits", rec(i, pad="x" * 5000)))
        for i in range(20)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r["n"] for r in repo.read_log("digits")) == list(range(20))


def _watch_for_partial_versions(list_versions, check_complete, stop: threading.Event) -> list[str]:
    """Poll like TF Serving does: every numeric name seen must already be complete."""
    seen_bad: list[str] = []
    while not stop.is_set():
        for v in list_versions():
            if not check_complete(v):
                seen_bad.append(str(v))
    return seen_bad


def test_a_poller_never_sees_a_partial_version_while_publishing_concurrently(
    tmp_path: Path,
) -> None:
    src = fake_savedmodel(tmp_path / "src", mb=2)
    expected = local_manifest(src)
    repo = LocalRepository(tmp_path / "repo")
    model_dir = tmp_path / "repo" / "digits"
    model_dir.mkdir(parents=True)

    def complete(v: int) -> bool:
        try:
            return local_manifest(model_dir / str(v)) == expected
        except FileNotFoundError:  # deleted between listing and reading: not a partial view
            return True

    stop = threading.Event()
    bad: list[str] = []
    poller = threading.Thread(
        target=lambda: bad.extend(
            _watch_for_partial_versions(
                lambda: [int(p.name) for p in model_dir.iterdir() if p.name.isdigit()],
                complete,
                stop,
            )
        )
    )
    poller.start()
    errors: list[BaseException] = []

    def publish_many(offset: int) -> None:
        try:
            for v in range(offset, offset + 15):
                repo.publish("digits", v, src)
                repo.publish("digits", v, src)  # a concurrent idempotent retry
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    publishers = [threading.Thread(target=publish_many, args=(1 + 15 * i,)) for i in range(2)]
    same_version = [
        threading.Thread(target=repo.publish, args=("digits", 99, src)) for _ in range(3)
    ]  # racing publishers of one version
    for t in publishers + same_version:
        t.start()
    for t in publishers + same_version:
        t.join()
    stop.set()
    poller.join()
    assert not errors
    assert bad == []
    assert repo.versions("digits") == [*range(1, 31), 99]
    assert repo.leftovers("digits") == []


# ---- S3 (moto_server on 127.0.0.1) -----------------------------------------------------------


moto_endpoint = pytest.fixture(scope="module", name="moto_endpoint")(moto_fixture)


@pytest.fixture()
def s3_repo(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch, request) -> S3Repository:
    import boto3

    for k, v in AWS_TEST_ENV.items():
        monkeypatch.setenv(k, v)
    bucket = request.node.name.replace("_", "-")[:50].lower()
    boto3.client("s3", endpoint_url=moto_endpoint).create_bucket(Bucket=bucket)
    return S3Repository(f"s3://{bucket}/serving", endpoint_url=moto_endpoint)


@pytest.mark.integration
def test_s3_publish_is_verified_and_idempotent(s3_repo: S3Repository, tmp_path: Path) -> None:
    src = fake_savedmodel(tmp_path / "a", seed=1)
    assert s3_repo.publish("digits", 1, src).status == "published"
    assert s3_repo.versions("digits") == [1]
    assert s3_repo.version_manifest("digits", 1) == local_manifest(src)
    assert s3_repo.publish("digits", 1, src).status == "unchanged"
    with pytest.raises(VersionConflict):
        s3_repo.publish("digits", 1, fake_savedmodel(tmp_path / "b", seed=2))
    s3_repo.append_log("digits", rec(1))
    s3_repo.append_log("digits", rec(2))
    assert [r["n"] for r in s3_repo.read_log("digits")] == [1, 2]
    s3_repo.write_text("models.config", "x")
    assert s3_repo.read_text("models.config") == "x"
    s3_repo.delete_version("digits", 1)
    assert s3_repo.versions("digits") == []


@pytest.mark.integration
def test_s3_poller_never_sees_a_loadable_partial_version(
    s3_repo: S3Repository, tmp_path: Path
) -> None:
    """On S3 a version is loadable once saved_model.pb exists: it must be copied last."""
    src = fake_savedmodel(tmp_path / "src", mb=0.5)
    expected = local_manifest(src)
    stop = threading.Event()

    def loadable_and_complete(v: int) -> bool:
        objs = s3_repo._objects(s3_repo._key("digits", str(v)))
        if READY_FILE not in objs:
            return True  # not loadable yet: TF Serving would retry, never serve a partial
        return objs == {k: size for k, (size, _) in expected.items()}

    bad: list[str] = []
    poller = threading.Thread(
        target=lambda: bad.extend(
            _watch_for_partial_versions(
                lambda: s3_repo.versions("digits"), loadable_and_complete, stop
            )
        )
    )
    poller.start()
    for v in range(1, 6):
        s3_repo.publish("digits", v, src)
    stop.set()
    poller.join()
    assert bad == []
    assert s3_repo.versions("digits") == [1, 2, 3, 4, 5]
    keys = s3_repo._objects(s3_repo._key("digits"))
    assert not [k for k in keys if k.startswith(".tfship-tmp-")]


@pytest.mark.integration
def test_s3_errors_become_infra_errors_naming_the_bucket_and_key(
    moto_endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for k, v in AWS_TEST_ENV.items():
        monkeypatch.setenv(k, v)
    repo = S3Repository("s3://no-such-bucket/serving", endpoint_url=moto_endpoint)
    for call in (
        lambda: repo.read_text("models.config"),
        lambda: repo.publish("digits", 1, fake_savedmodel(tmp_path / "a")),
    ):
        with pytest.raises(InfraError, match="no-such-bucket") as err:
            call()
        assert err.value.exit_code == ExitCode.INFRA
        assert "does not exist" in str(err.value)


class _Refusing:
    """An S3 client whose every object request is refused, as with wrong credentials."""

    def __getattr__(self, name: str):
        from botocore.exceptions import ClientError

        def refuse(**kwargs):
            raise ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, name)

        return refuse

    def get_paginator(self, _name: str):
        class Pages:
            def paginate(self, **kwargs):
                return [{"Contents": [{"Key": f"{kwargs['Prefix']}1.json", "Size": 2}]}]

        return Pages()


@pytest.mark.parametrize(
    "call",
    [
        lambda r: r._sha256("serving/digits/1/saved_model.pb"),
        lambda r: r.read_text("models.config"),
        lambda r: r.read_log("digits"),
        lambda r: r.append_log("digits", rec(1)),
    ],
    ids=["sha256", "read_text", "read_log", "append_log"],
)
def test_a_refused_s3_request_is_exit_8_with_the_key_and_what_to_check(call) -> None:
    repo = S3Repository("s3://models-bucket/serving", client=_Refusing())
    with pytest.raises(InfraError) as err:
        call(repo)
    assert err.value.exit_code == ExitCode.INFRA
    assert "s3://models-bucket/serving/" in str(err.value) and "AccessDenied" in str(err.value)
    assert "credentials" in str(err.value)


def test_open_repository_rejects_unknown_schemes() -> None:
    from tfship.serving.repository import open_repository

    with pytest.raises(InfraError, match="unsupported scheme"):
        open_repository("gs://bucket/models")
    assert isinstance(open_repository("models"), LocalRepository)


# ---- what a killed or concurrent writer leaves (issue 13 §4) ---------------------------------


def test_a_record_appended_after_a_torn_line_starts_on_its_own_line(tmp_path: Path) -> None:
    repo = LocalRepository(tmp_path / "repo")
    repo.append_log("digits", rec(1))
    log = tmp_path / "repo" / "digits" / ".tfship" / "deploy-log.jsonl"
    with log.open("ab") as fh:  # a writer killed in the middle of its write()
        fh.write(b'{"action": "deploy", "model": "dig')
    repo.append_log("digits", rec(2))
    records, problems = repo.read_log_checked("digits")
    assert [r["n"] for r in records] == [1, 2]
    assert len(problems) == 1 and "deploy-log.jsonl:2" in problems[0]


@pytest.mark.parametrize(
    ("name", "counted"),
    [("12", True), ("١٢", False), ("9" * 20, False), ("-5", False), ("0012", True)],
    ids=["ascii digits", "arabic-indic digits", "beyond int64", "negative", "leading zeros"],
)
def test_only_names_tf_serving_takes_for_versions_are_versions(
    tmp_path: Path, name: str, counted: bool
) -> None:
    repo = LocalRepository(tmp_path / "repo")
    (tmp_path / "repo" / "digits" / name).mkdir(parents=True)
    assert repo.versions("digits") == ([12] if counted else [])


@pytest.mark.parametrize(
    "damage",
    ["not json", '{"format": "tfship-version-record/1"}', "the record of another version"],
)
def test_a_damaged_publish_record_is_reported_never_trusted(tmp_path: Path, damage: str) -> None:
    repo = LocalRepository(tmp_path / "repo")
    repo.publish("digits", 1, fake_savedmodel(tmp_path / "a"))
    repo.publish("digits", 2, fake_savedmodel(tmp_path / "b", seed=2))
    record = tmp_path / "repo" / "digits" / ".tfship" / "versions" / "1.json"
    if damage == "the record of another version":
        record.write_bytes(record.with_name("2.json").read_bytes())
    else:
        record.write_text(damage)
    manifest, problems = repo.version_record("digits", 1)
    assert manifest is None and problems


# ---- the repository lease ------------------------------------------------------------------


def _hand_written_lease(root: Path, **changes) -> None:
    import json
    import time

    doc = {
        "format": "tfship-lease/1",
        "id": "0123456789abcdef",
        "action": "deploy",
        "model": "digits",
        "version": 7,
        "acquired_at": time.time() - 10,
        "expires_at": time.time() + 600,
        "holder": {"who": "alice", "machine": "elsewhere", "pid": 1, "pipeline_url": None},
    }
    holder = changes.pop("holder", {})
    doc.update(changes)
    doc["holder"].update(holder)
    (root / ".tfship").mkdir(parents=True, exist_ok=True)
    (root / ".tfship" / "lease.json").write_text(json.dumps(doc))


def _dead_pid() -> int:
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# (what an earlier holder left) -> may a new action take the lease at once?
LEFT_LEASES = [
    ("expired lease of another machine", lambda: {"expires_at": 1.0}, True),
    (
        "lease of a process on this machine that was killed",
        lambda: {"holder": {"pid": _dead_pid()}},
        True,
    ),
    ("released lease", lambda: {"released": True}, True),
    ("damaged lease file", None, True),
    ("live lease of another machine", lambda: {}, False),
    ("live lease of a running process here", lambda: {"holder": {"pid": os.getpid()}}, False),
]


@pytest.mark.parametrize(("left", "changes", "free"), LEFT_LEASES, ids=[x[0] for x in LEFT_LEASES])
def test_a_stale_lease_is_taken_over_and_a_live_one_is_respected(
    tmp_path: Path, left: str, changes, free: bool
) -> None:
    from tfship.errors import Locked
    from tfship.serving import lease

    root = tmp_path / "repo"
    if changes is None:
        (root / ".tfship").mkdir(parents=True)
        (root / ".tfship" / "lease.json").write_text('{"format": "tfship-lea')
    else:
        extra = changes()
        if "holder" in extra and extra["holder"].get("pid"):
            extra["holder"]["machine"] = lease.machine_id()
        _hand_written_lease(root, **extra)
    repo = LocalRepository(root)
    if free:
        held = lease.acquire(repo, action="rollback", model="digits", version=1, wait=0)
        assert lease.read(repo).state == "held"
        held.release()
        assert lease.read(repo).state == "released"
    else:
        with pytest.raises(Locked) as err:
            lease.acquire(repo, action="rollback", model="digits", version=1, wait=0.2)
        assert err.value.exit_code == ExitCode.LOCKED and "alice" in str(err.value)


def test_a_holder_that_lost_its_lease_stops_and_never_overwrites_the_next_holder(
    tmp_path: Path,
) -> None:
    import time

    from tfship.errors import Locked
    from tfship.serving import lease

    repo = LocalRepository(tmp_path / "repo")
    stalled = lease.acquire(repo, action="deploy", model="digits", version=2, wait=0, ttl=0.3)
    stalled._stop.set()  # its heartbeat stops, as in a process paused for too long
    time.sleep(0.5)
    successor = lease.acquire(repo, action="rollback", model="digits", version=1, wait=0)
    with pytest.raises(Locked, match="lost"):
        stalled.check()
    assert not stalled.renew()
    stalled.release()  # must not release the successor's lease
    assert lease.read(repo).state == "held" and successor.doc["action"] == "rollback"
    successor.release()


def test_two_racing_acquirers_never_both_hold_the_lease(tmp_path: Path) -> None:
    from tfship.errors import Locked
    from tfship.serving import lease

    repo = LocalRepository(tmp_path / "repo")
    _hand_written_lease(tmp_path / "repo", expires_at=1.0)  # stale: both race to take it over
    winners: list[object] = []
    barrier = threading.Barrier(8)

    def race() -> None:
        barrier.wait()
        with contextlib.suppress(Locked):
            winners.append(lease.acquire(repo, action="deploy", model="d", version=1, wait=0))

    threads = [threading.Thread(target=race) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1
    winners[0].release()


@pytest.mark.integration
def test_s3_conditional_writes_give_the_lease_one_holder_at_a_time(s3_repo: S3Repository) -> None:
    """moto 5.2.1 honours PUT If-None-Match: * and If-Match (as AWS S3 and MinIO do)."""
    from tfship.errors import Locked
    from tfship.serving import lease

    token = s3_repo.create_meta(".tfship/x.json", "a")
    assert token and s3_repo.create_meta(".tfship/x.json", "b") is None
    assert s3_repo.replace_meta(".tfship/x.json", "stale-etag", "c") is None
    assert s3_repo.replace_meta(".tfship/x.json", token, "d") is not None
    assert s3_repo.read_meta(".tfship/x.json")[0] == "d"

    first = lease.acquire(s3_repo, action="deploy", model="digits", version=2, wait=0)
    with pytest.raises(Locked):
        lease.acquire(s3_repo, action="deploy", model="digits", version=3, wait=0.2)
    first.release()
    lease.acquire(s3_repo, action="deploy", model="digits", version=3, wait=0).release()


@pytest.mark.integration
def test_s3_a_damaged_deploy_log_object_is_skipped_and_reported(s3_repo: S3Repository) -> None:
    s3_repo.append_log("digits", rec(1))
    key = s3_repo._key("digits", ".tfship", "deploy-log", "00000000000000000001-torn.json")
    s3_repo.s3.put_object(Bucket=s3_repo.bucket, Key=key, Body=b'{"action": "dep')
    s3_repo.append_log("digits", rec(2))
    records, problems = s3_repo.read_log_checked("digits")
    assert [r["n"] for r in records] == [1, 2] and len(problems) == 1


_KILL_MID_COPY = r"""
import json, os, signal, sys
from pathlib import Path
from tfship.config import load_config
from tfship.rundir import RunDir
from tfship.serving import repository_s3

spec = json.loads(sys.argv[1])
copies = []
orig = repository_s3.S3Repository._call

def call(self, what, fn, **kw):
    if what == "copy":
        copies.append(kw["Key"])
        if len(copies) == 3:  # some files of the version copied, saved_model.pb not yet
            os.kill(os.getpid(), signal.SIGKILL)
    return orig(self, what, fn, **kw)

repository_s3.S3Repository._call = call
from tfship.serving.deploy import run_publish
run_publish(load_config(None, overrides=spec["overrides"]), RunDir(Path(spec["run_dir"])))
"""


@pytest.mark.integration
def test_s3_a_publish_killed_mid_copy_is_cleaned_up_by_the_next_action(
    s3_repo: S3Repository, moto_endpoint: str, tmp_path: Path
) -> None:
    import json
    import signal
    import subprocess
    import sys

    from tfship.config import load_config
    from tfship.rundir import RunDir
    from tfship.serving.deploy import run_publish
    from tfship.serving.status import run_status

    run = RunDir(tmp_path / "run")
    export = fake_savedmodel(run.export / "2")
    golden = {"inputs": {"pixels": [[0.0]]}, "outputs": {"probabilities": [[1.0]]}}
    manifest = {"version": 2, "signature": {}, "golden": golden}
    (export / "assets.extra" / "tfship-manifest.json").write_text(json.dumps(manifest))
    overrides = [
        f"serving.model_repository={s3_repo.url}",
        f"serving.s3_endpoint_url={moto_endpoint}",
        "serving.allow_ungated=true",
    ]
    spec = json.dumps({"overrides": overrides, "run_dir": str(run.root)})
    proc = subprocess.run(
        [sys.executable, "-c", _KILL_MID_COPY, spec],
        env={**os.environ, **AWS_TEST_ENV},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    cfg = load_config(None, overrides=overrides)
    assert not s3_repo.is_complete("digits", 2)  # never loadable: saved_model.pb comes last
    status = run_status(cfg)
    assert status.unfinished is not None and status.temporary

    result = run_publish(cfg, run)
    assert result.recovered and result.status == "ok"
    assert s3_repo.version_manifest("digits", 2) == local_manifest(export)
    assert s3_repo.leftovers("digits") == [] and run_status(cfg).unfinished is None
