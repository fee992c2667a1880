"""Checkpoint backup against moto_server (S3 stand-in) on 127.0.0.1: kill, fresh runner, resume.

The trainer is tests/integration/backup_trainer.py, a small TensorFlow loop wired to
tfship.backup exactly as the training stage is (restore, sync after each save, close).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers.checkpoint_files import remote_steps
from tests.helpers.moto import AWS_TEST_ENV, moto_fixture
from tests.integration.backup_trainer import expected_weight
from tfship.backup import remote_prefix, restore_latest
from tfship.backup.store import open_store
from tfship.config import load_config
from tfship.errors import ConfigError
from tfship.rundir import RunDir

REPO = Path(__file__).resolve().parents[2]
BUCKET = "tfship-backup-test"
AWS_ENV = AWS_TEST_ENV


s3_endpoint = pytest.fixture(scope="module", name="s3_endpoint")(moto_fixture)


@pytest.fixture()
def aws_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for k, v in AWS_ENV.items():
        monkeypatch.setenv(k, v)
    return {**os.environ, **AWS_ENV}


@pytest.fixture()
def remote(s3_endpoint: str, aws_env: dict[str, str], request: pytest.FixtureRequest) -> str:
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
        s3.create_bucket(Bucket=BUCKET)
    return f"s3://{BUCKET}/{request.node.name}"


class Trainer:
    def __init__(self, ckpt_dir: Path, url: str, endpoint: str, env: dict[str, str]) -> None:
        self.ckpt_dir, self.url, self.endpoint, self.env = ckpt_dir, url, endpoint, env

    def cmd(self, **opts: object) -> list[str]:
        out = [
            sys.executable,
            "-m",
            "tests.integration.backup_trainer",
            "--ckpt-dir",
            str(self.ckpt_dir),
            "--url",
            self.url,
            "--endpoint-url",
            self.endpoint,
        ]
        for k, v in opts.items():
            out += [f"--{k.replace('_', '-')}", *([str(v)] if v != "" else [])]
        return out

    def run(self, **opts: object) -> list[dict]:
        done = subprocess.run(
            self.cmd(**opts), cwd=REPO, env=self.env, capture_output=True, text=True, timeout=240
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]

    def popen(self, **opts: object) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.cmd(**opts),
            cwd=REPO,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )


def complete_steps(url: str, endpoint: str) -> list[int]:
    """Steps of the complete (marker written) generations at the top level (not best/)."""
    return remote_steps(open_store(url, endpoint_url=endpoint))


@pytest.mark.integration
@pytest.mark.slow
def test_a_fresh_runner_resumes_from_the_last_complete_backed_up_generation(
    tmp_path: Path, remote: str, s3_endpoint: str, aws_env: dict[str, str]
) -> None:
    ckpt = tmp_path / "runner-1" / "checkpoints"
    trainer = Trainer(ckpt, remote, s3_endpoint, aws_env)
    proc = trainer.popen(steps=200, save_every=10, step_seconds=0.01)
    assert proc.stdout is not None
    killed_at = None
    for line in proc.stdout:
        event = json.loads(line)
        # Kill once a few generations are safely remote: like a preempted VM, no goodbye.
        if event.get("step", 0) >= 60 and complete_steps(remote, s3_endpoint):
            proc.send_signal(signal.SIGKILL)
            killed_at = event["step"]
            break
    proc.wait(timeout=30)
    assert killed_at is not None and killed_at < 200, "training ended before the kill"
    backed_up = complete_steps(remote, s3_endpoint)
    # keep=2, plus at most one more when the kill fell between a marker and the retention pass
    assert backed_up and len(backed_up) <= 3

    shutil.rmtree(tmp_path / "runner-1")  # the retried job lands on a new machine
    fresh = Trainer(tmp_path / "runner-2" / "checkpoints", remote, s3_endpoint, aws_env)
    events = fresh.run(steps=200, save_every=10)
    restored = events[0]["restored"]
    assert restored == backed_up[-1] and restored > 0
    start = next(e for e in events if "start" in e)
    assert start["start"] == restored
    assert start["w"] == pytest.approx(expected_weight(restored))
    final = events[-1]
    assert final["done"] == 200
    assert final["w"] == pytest.approx(expected_weight(200))  # as if never interrupted
    assert final["failures"] == 0 and final["pending"] == []
    assert complete_steps(remote, s3_endpoint)[-1] == 200


@pytest.mark.integration
@pytest.mark.slow
def test_generations_cut_off_or_corrupted_remotely_are_skipped_never_loaded(
    tmp_path: Path, remote: str, s3_endpoint: str, aws_env: dict[str, str]
) -> None:
    trainer = Trainer(tmp_path / "a" / "checkpoints", remote, s3_endpoint, aws_env)
    trainer.run(steps=40, save_every=10, keep_remote=4, wait_each="")
    assert complete_steps(remote, s3_endpoint) == [10, 20, 30, 40]
    store = open_store(remote, endpoint_url=s3_endpoint)
    store.delete(["ckpt-40.index"])  # upload cut off before the index
    store.delete(["ckpt-30.data-00000-of-00001"])  # a data shard missing
    size = store.list("ckpt-20.data-00000-of-00001")["ckpt-20.data-00000-of-00001"]
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"\0" * size)  # same size, wrong bytes: only the hash can tell
    store.put_file("ckpt-20.data-00000-of-00001", garbage)

    local = tmp_path / "b" / "checkpoints"
    assert restore_latest(local, store) == 10
    assert sorted(p.name for p in local.iterdir()) == [
        "checkpoint",
        "ckpt-10.data-00000-of-00001",
        "ckpt-10.index",
    ]
    # Only what the marker vouches for was written, and it hashes as recorded.
    assert restore_latest(local, store) is None  # local now has a generation: no restore


@pytest.mark.integration
@pytest.mark.slow
def test_training_keeps_going_while_a_slow_upload_runs_and_ends_complete(
    tmp_path: Path, remote: str, s3_endpoint: str, aws_env: dict[str, str]
) -> None:
    trainer = Trainer(tmp_path / "checkpoints", remote, s3_endpoint, aws_env)
    # Each object takes >= 0.5 s to upload (3 per generation) while a generation is saved
    # every 0.1 s of training: synchronous uploads would stall each save by 1.5 s.
    events = trainer.run(steps=60, save_every=10, step_seconds=0.01, upload_delay=0.5)
    steps = [e for e in events if "step" in e]
    gaps = [b["t"] - a["t"] for a, b in itertools.pairwise(steps)]
    assert max(gaps) < 0.4, f"a training step waited {max(gaps):.2f} s for the uploader"
    assert max(e["sync_seconds"] for e in events if "saved" in e) < 0.2
    final = events[-1]
    assert final["superseded"] > 0  # generations waiting behind a slow upload were coalesced
    assert final["closed"] - final["train_end"] >= 0.5  # close() waited for the last upload
    assert final["failures"] == 0 and final["pending"] == []
    assert complete_steps(remote, s3_endpoint)[-1] == 60
    assert restore_latest(tmp_path / "fresh", remote, endpoint_url=s3_endpoint) == 60


# --- prefix derivation (no server) -------------------------------------------------------


def _prefix(environ: dict[str, str], **sets: str) -> str:
    cfg = load_config(None, env={}, overrides=[f"{k}={v}" for k, v in sets.items()])
    return remote_prefix(cfg, RunDir(Path("runs/local")), environ)


def test_a_retried_gitlab_job_gets_the_same_prefix_and_a_new_pipeline_another() -> None:
    job = {
        "CI_PIPELINE_ID": "4711",
        "CI_JOB_NAME": "train: [gpu]",
        "CI_COMMIT_REF_SLUG": "main",
        "CI_JOB_ID": "1",
    }
    retry = {**job, "CI_JOB_ID": "2"}
    assert _prefix(job) == _prefix(retry) == "digits/main/pipeline-4711-train-gpu"
    assert _prefix({**job, "CI_PIPELINE_ID": "4712"}) != _prefix(job)
    assert _prefix({**job, "CI_JOB_NAME": "train-big"}) != _prefix(job)


def test_a_rerun_github_workflow_gets_the_same_prefix() -> None:
    run = {
        "GITHUB_RUN_ID": "99",
        "GITHUB_RUN_ATTEMPT": "1",
        "GITHUB_JOB": "train",
        "GITHUB_REF_NAME": "feature/New_Model",
    }
    assert _prefix(run) == _prefix({**run, "GITHUB_RUN_ATTEMPT": "2"})
    assert _prefix(run) == "digits/feature-new-model/run-99-train"


def test_the_prefix_can_be_set_in_config() -> None:
    assert _prefix({"CI_PIPELINE_ID": "1"}, **{"backup.prefix": "/team/x/"}) == "team/x"


def test_backup_enabled_without_a_url_is_rejected_naming_the_field() -> None:
    with pytest.raises(ConfigError, match=r"backup.url is required when backup.enabled"):
        load_config(None, env={}, overrides=["backup.enabled=true"])


def test_gcs_without_gcsfs_is_a_config_error_saying_what_to_install() -> None:
    pytest.importorskip("tfship.backup.store")
    try:
        import gcsfs  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match=r"needs fsspec and gcsfs"):
            open_store("gs://bucket/prefix")
    else:
        pytest.skip("gcsfs is installed here")


# --- the real training stage ---------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.slow
def test_tfship_train_flushes_on_sigterm_and_a_fresh_runner_resumes_from_the_store(
    tmp_path: Path, remote: str, s3_endpoint: str, aws_env: dict[str, str]
) -> None:
    prefix = remote.removeprefix(f"s3://{BUCKET}/")
    sets = [
        "train.epochs=15",
        "checkpoint.every_steps=20",
        "train.progress=none",
        "backup.enabled=true",
        "backup.every_seconds=0",  # every save, so a generation is remote before the SIGTERM
        f"backup.url=s3://{BUCKET}",
        f"backup.prefix={prefix}",
        f"backup.endpoint_url={s3_endpoint}",
    ]
    cmd = [sys.executable, "-m", "tfship", "train", "--output", "json"]
    for s in sets:
        cmd += ["--set", s]
    run1 = tmp_path / "runner-1" / "run"
    proc = subprocess.Popen(
        [*cmd, "--run-dir", str(run1)],
        cwd=REPO,
        env=aws_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 240
    while not complete_steps(remote, s3_endpoint):
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "no checkpoint generation reached the store"
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)  # preemption notice: save, flush the backup, exit 75
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 75, err[-3000:]
    saved = json.loads((run1 / "train.json").read_text())["steps"]
    assert complete_steps(remote, s3_endpoint)[-1] == saved  # the preemption save is remote

    shutil.rmtree(tmp_path / "runner-1")
    run2 = tmp_path / "runner-2" / "run"
    done = subprocess.run(
        [*cmd, "--run-dir", str(run2)],
        cwd=REPO,
        env=aws_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    train = json.loads((run2 / "train.json").read_text())
    assert train["resumed_from_step"] == saved
    assert train["status"] == "completed"
    assert (run2 / "checkpoints" / "run.json").is_file()  # restored with the generation
    assert (run2 / "checkpoints" / "best" / "best.json").is_file()
