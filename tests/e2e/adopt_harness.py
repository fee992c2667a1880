"""Adopt the template the way docs/adopt.md says, for tests/e2e/test_adopt.py and
benchmarks/adopt_pipelines.py: a new git repository from the files docs/ci.md says to copy plus
the team's own files (tests/e2e/adopt_project), run with the copied `ci/gitlab-local`.

Also a stand-in of the k8s `model-sync` sidecar (S3 -> the TF Serving stand-in's directory;
stock TF Serving cannot read s3://) and the `tfship train` process a test preempts.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
TEAM_FILES = Path(__file__).resolve().parent / "adopt_project"
GCL_BIN = REPO_ROOT / "build" / "tools" / "node_modules" / ".bin" / "gitlab-ci-local"
VENV_BIN = Path(sys.executable).parent

# docs/ci.md "What to copy into your project", GitLab rows (test_adopt checks the table says
# exactly this). `ci/` holds ci/gitlab/.
TEMPLATE_FILES = (
    "pipeline.yaml",
    "ci",
    "docker/train.Dockerfile",
    "docker/test.Dockerfile",
    ".dockerignore",
    ".gitlab-ci.yml",
    ".yamllint",
    ".hadolint.yaml",
    "requirements.lock",
    "requirements-cpu.lock",
    "requirements-dev.lock",
    "requirements-runtime-cpu.lock",
    "requirements-serving-api.txt",
)
MODEL = "shapes"
NOTES_TOKEN = "glpat-adopt-report-token"
# Settings > CI/CD > Variables for every pipeline (docs/adopt.md, 5): tfship in the job image.
PROJECT_VARIABLES = {
    "TFSHIP_SKIP_INSTALL": "true",
    "SMOKE_MAX_STEPS": "30",
    "SMOKE_DATA_LIMIT": "300",
}
# Protected pipelines on this CPU box: no image build/scan (no Docker daemon), no GPU.
PROTECTED_RUNNER = {
    "CI_COMMIT_BRANCH": "main",
    "CONFIG_SCAN_DISABLED": "true",
    "BUILD_IMAGE_DISABLED": "true",
    "SCAN_IMAGE_DISABLED": "true",
    "EXPECTED_GPUS": "0",
    "TRAIN_IMAGE_REF": "registry.example.invalid/team/shapes/train@sha256:" + "0" * 64,
    "TFSHIP_TRAIN_MAX_STEPS": "40",
    "TFSHIP_TRAIN_EPOCHS": "3",
    "TFSHIP_GATE_LATENCY_RUNS": "20",  # the fewest a p95 gate accepts
}
PREEMPT_VARIABLES = {  # long enough to be preempted mid-way; a backup every second
    # the same pipeline and job on both attempts: GitLab's retry keeps both
    "CI_PIPELINE_ID": "91500",
    "TFSHIP_TRAIN_MAX_STEPS": "1500",
    "TFSHIP_TRAIN_EPOCHS": "500",
    "TFSHIP_BACKUP_EVERY_SECONDS": "1",
}
DOCUMENTED_ROWS = re.compile(r"^\| (?P<cell>[^|]*) \|", re.MULTILINE)


def documented_copy_list(platform: str = "GitLab", ci_md: Path = REPO_ROOT / "docs" / "ci.md"):
    """The files docs/ci.md's "What to copy into your project" table names for `platform`."""
    text = ci_md.read_text(encoding="utf-8")
    section = text.split("## What to copy into your project", 1)[1].split("\n\n", 2)[1]
    other = "GitHub" if platform == "GitLab" else "GitLab"
    names: set[str] = set()
    for match in DOCUMENTED_ROWS.finditer(section):
        cell = match.group("cell")
        if not cell.startswith((other, "copy", "---")):
            names.update(n.rstrip("/") for n in re.findall(r"`([^`]+)`", cell))
    return names - {"ci/gitlab"}  # inside ci/


_ignore = shutil.ignore_patterns("__pycache__", ".pytest_cache", "*.pyc")


# the GitHub rows of the same table
GITHUB_TEMPLATE_FILES = (
    *(f for f in TEMPLATE_FILES if f != ".gitlab-ci.yml"),
    ".github/workflows",
    ".github/zizmor.yml",
)


def create_project(root: Path, per_class: int = 100, files: Sequence[str] = TEMPLATE_FILES) -> Path:
    """docs/adopt.md steps 1-3: copy the template files, add the team's own, commit."""
    root.mkdir(parents=True)
    for rel in files:
        src, dst = REPO_ROOT / rel, root / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=_ignore)
        else:
            shutil.copy2(src, dst)
    # the team's model at the root, its data generator, its unit test and its pipeline.yaml
    # (the template's file, edited: replaces the copy)
    shutil.copytree(TEAM_FILES, root, dirs_exist_ok=True, ignore=_ignore)
    (root / ".gitignore").write_text("runs/\nmodels/\n__pycache__/\n.gitlab-ci-local/\n")
    subprocess.run(
        [sys.executable, "make_data.py", "data/shapes", str(per_class)], cwd=root, check=True
    )
    git = ["git", "-C", str(root), "-c", "user.name=Team", "-c", "user.email=team@example.com"]
    subprocess.run([*git, "init", "-q", "-b", "main"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "Adopt tfship's GitLab pipeline"], check=True)
    return root


def _env(extra: Mapping[str, str]) -> dict[str, str]:
    # Nothing from the caller's own CI/tfship environment may reach the pipeline.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("TFSHIP_", "CI_", "GITLAB_", "GCL_", "AWS_"))
    }
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def gitlab_local_argv(
    project: Path,
    variables: Mapping[str, str],
    args: Sequence[str] = (),
    variables_file: Path | None = None,
    sandbox: Path | None = None,
) -> list[str]:
    """The project's own ci/gitlab-local (copied from the template) with `--variable`s."""
    argv = [str(project / "ci" / "gitlab-local"), "--shell-isolation", "--concurrency", "2"]
    for key, value in variables.items():
        argv += ["--variable", f"{key}={value}"]
    if variables_file is not None:
        # gitlab-ci-local reads it relative to its working directory, the sandbox
        argv += ["--variables-file", os.path.relpath(variables_file, sandbox)]
    return [*argv, *args]


def gitlab_local_env(sandbox: Path, pipeline: str) -> dict[str, str]:
    return _env(
        {
            "CI_LOCAL_BIN": str(GCL_BIN),
            "CI_LOCAL_SANDBOX": str(sandbox),
            "CI_LOCAL_PIPELINE": pipeline,
        }
    )


def run_pipeline(
    project: Path,
    sandbox: Path,
    pipeline: str,
    variables: Mapping[str, str],
    args: Sequence[str] = (),
    variables_file: Path | None = None,
    timeout: float = 1200,
) -> subprocess.CompletedProcess[str]:
    sandbox.mkdir(parents=True, exist_ok=True)
    argv = gitlab_local_argv(project, variables, args, variables_file, sandbox)
    return subprocess.run(
        argv,
        cwd=project,
        env=gitlab_local_env(sandbox, pipeline),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def summary(log: str, verdict: str) -> set[str]:
    """Job names gitlab-ci-local's closing summary lists as PASS / FAIL (a job with
    `coverage:` has its percentage after the name)."""
    pattern = rf"^\s*{verdict}\s+(?:\[[^\]]*\]\s+)?(\S+)(?:\s+[\d.]+% coverage)?\s*$"
    return set(re.findall(pattern, log, flags=re.MULTILINE))


def artifacts(sandbox: Path, job: str, pattern: str) -> list[Path]:
    return sorted((sandbox / ".gitlab-ci-local" / "artifacts" / job).glob(pattern))


def train_pids(workspace: Path) -> list[int]:
    """`tfship train` processes whose working directory is `workspace` (a job's checkout)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().split(b"\0")
            cwd = Path(os.readlink(entry / "cwd"))
        except OSError:
            continue
        if cwd == workspace and any(c.endswith(b"tfship") for c in cmd) and b"train" in cmd:
            pids.append(int(entry.name))
    return pids


class ModelSync(threading.Thread):
    """Stand-in of docker/serving/k8s's `model-sync` sidecar: copies each complete version
    (with saved_model.pb, written last by tfship) of s3://bucket/prefix into `dest` under a
    temporary name renamed into place: the server never sees half a version."""

    def __init__(self, s3, bucket: str, prefix: str, dest: Path, interval: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.s3, self.bucket, self.prefix, self.dest = s3, bucket, prefix.strip("/"), dest
        self.interval, self.errors, self._halt = interval, [], threading.Event()
        dest.mkdir(parents=True, exist_ok=True)

    def run(self) -> None:
        while not self._halt.wait(self.interval):
            try:
                self.sync_once()
            except Exception as exc:  # reported by the test, never kills the loop
                self.errors.append(repr(exc))

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=10)

    def sync_once(self) -> None:
        versions: dict[tuple[str, str], list[str]] = {}
        pages = self.s3.get_paginator("list_objects_v2")
        for page in pages.paginate(Bucket=self.bucket, Prefix=self.prefix + "/"):
            for obj in page.get("Contents", []):
                parts = obj["Key"][len(self.prefix) + 1 :].split("/")
                if len(parts) >= 3 and parts[1].isdigit():
                    versions.setdefault((parts[0], parts[1]), []).append(obj["Key"])
        for (model, version), keys in versions.items():
            target = self.dest / model / version
            ready = f"{self.prefix}/{model}/{version}/saved_model.pb"
            if target.exists() or ready not in keys:
                continue
            staging = self.dest / model / f".sync-{version}"
            shutil.rmtree(staging, ignore_errors=True)
            for key in keys:
                local = staging / key[len(f"{self.prefix}/{model}/{version}/") :]
                local.parent.mkdir(parents=True, exist_ok=True)
                self.s3.download_file(self.bucket, key, str(local))
            staging.rename(target)


@contextlib.contextmanager
def adopted_world(tmp: Path) -> Iterator[dict]:
    """The adopted project plus the stand-ins it runs against: moto (S3), the GitLab notes
    API, TF Serving (empty config) and the model-sync sidecar."""
    import boto3

    from tests.helpers.gitlab_notes_standin import running_notes_standin
    from tests.helpers.moto import AWS_TEST_ENV, moto_server
    from tests.tfserving_standin.fixture import start_model_server

    with (
        moto_server() as moto,
        running_notes_standin({NOTES_TOKEN}) as notes,
        start_model_server(tmp / "serving", model_config_text="model_config_list {}") as server,
    ):
        names = {"aws_access_key_id": "AWS_ACCESS_KEY_ID", "region_name": "AWS_DEFAULT_REGION",
                 "aws_secret_access_key": "AWS_SECRET_ACCESS_KEY"}  # fmt: skip
        s3 = boto3.client(
            "s3", endpoint_url=moto.url, **{k: AWS_TEST_ENV[v] for k, v in names.items()}
        )
        for bucket in ("team-models", "team-checkpoints"):
            s3.create_bucket(Bucket=bucket)
        served = tmp / "served-models"  # what the server reads: the sync sidecar's volume
        sync = ModelSync(s3, "team-models", "staging", served)
        sync.start()
        try:
            yield {
                "tmp": tmp,
                "project": create_project(tmp / "team-repo"),
                "sandbox": tmp / "sandbox",
                "moto": moto.url,
                "aws": AWS_TEST_ENV,
                "s3": s3,
                "notes": notes,
                "server": server,
                "served": served,
                "sync": sync,
            }
        finally:
            sync.stop()


MR_PIPELINE_ID = 9101  # what GitLab would call the MR pipeline (and its report job) below
MR_REPORT_JOB_ID = 70001
REPORT_FILE = "mr-report/report.json"


def mr_variables(world: dict) -> dict[str, str]:
    """docs/adopt.md step 6: the MR pipeline gets NO token (TFSHIP_GITLAB_TOKEN is protected);
    CI_API_V4_URL still points at the notes stand-in, so any call would be seen there."""
    return {
        **PROJECT_VARIABLES,
        "CI_PIPELINE_ID": str(MR_PIPELINE_ID),
        # GitLab's own predefined value, pointed at the notes stand-in
        "CI_API_V4_URL": world["notes"].url,
    }


def serve_mr_pipeline(world: dict, sandbox: Path, iid: int = 1) -> dict[str, Any]:
    """Play GitLab's side of an MR pipeline that ran in `sandbox`: MR !iid is open, its latest
    pipeline is MR_PIPELINE_ID at the commit gitlab-ci-local ran, and its `smoke-report` job
    (MR_REPORT_JOB_ID) has the artifact files that job left. The stand-in serves them through
    the API `tfship mr-reports` reads; what the files say is the job's own output."""
    sha = subprocess.run(
        ["git", "-C", str(sandbox), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    report = artifacts(sandbox, "smoke-report", REPORT_FILE)
    if not report:
        raise AssertionError(f"smoke-report left no {REPORT_FILE}")
    world["notes"].add_merge_request(
        iid,
        project=1000,
        pipeline_id=MR_PIPELINE_ID,
        sha=sha,
        job_id=MR_REPORT_JOB_ID,
        files={REPORT_FILE: report[-1].read_bytes()},
    )
    return {"sha": sha, "report": report[-1]}


def mr_reports_schedule_variables(world: dict) -> dict[str, str]:
    """docs/adopt.md step 6: the schedule on main (TFSHIP_MR_REPORTS=true) and the PROTECTED
    project access token, which only this protected pipeline receives."""
    return {
        **PROJECT_VARIABLES,
        "CI_COMMIT_BRANCH": "main",
        "CI_COMMIT_REF_NAME": "main",
        "TFSHIP_MR_REPORTS": "true",
        "TFSHIP_GITLAB_TOKEN": NOTES_TOKEN,
        "CI_API_V4_URL": world["notes"].url,
        "CI_PROJECT_ID": "1000",
        "CI_PROJECT_URL": "https://gitlab.example.invalid/team/shapes",
    }


def protected_variables(world: dict) -> tuple[dict[str, str], Path]:
    """docs/adopt.md step 7: protected variables, and the staging environment's own (a
    gitlab-ci-local variables file, environment-scoped like GitLab's)."""
    env_file = world["tmp"] / "environment-variables.yml"
    staging = {
        "TFSHIP_SERVING_REST_URL": world["server"].rest_url,
        "TFSHIP_SERVING_GRPC_TARGET": world["server"].grpc_target,
        "TFSHIP_SERVING_MODEL_REPOSITORY": "s3://team-models/staging",
        # the server reads the sync sidecar's copy, never s3:// (docs/deploy.md)
        "TFSHIP_SERVING_SERVER_MODEL_REPOSITORY": str(world["served"]),
    }
    scoped = {k: {"values": {"staging": v}} for k, v in staging.items()}
    env_file.write_text(yaml.safe_dump(scoped))
    variables = {
        **PROJECT_VARIABLES,
        **PROTECTED_RUNNER,
        **world["aws"],
        "TFSHIP_SERVING_S3_ENDPOINT_URL": world["moto"],
        "TFSHIP_BACKUP_URL": "s3://team-checkpoints/tfship",
        "TFSHIP_BACKUP_ENDPOINT_URL": world["moto"],
        "TFSHIP_GATE_CHAMPION_REPOSITORY": "s3://team-models/staging",
    }
    return variables, env_file


def _start(argv: list[str], cwd: Path, env: dict[str, str], out: Path) -> subprocess.Popen:
    # output to a file: a pipe nobody reads while we wait would fill and stall the job
    with out.open("w") as fh:
        return subprocess.Popen(argv, cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT)


def job_log(sandbox: Path, job: str) -> str:
    path = sandbox / ".gitlab-ci-local" / "output" / f"{job}.log"
    return path.read_text(errors="replace") if path.exists() else ""


def preempt_and_retry(world: dict, sandbox: Path) -> dict:
    """Start the train job, SIGTERM tfship once a checkpoint is backed up, wait for it to end,
    empty the job's workspace and run the same job (same CI_PIPELINE_ID) again.

    Returns the two attempts' outputs, the last step the first one logged and the seconds from
    the SIGTERM to the retry's first logged step after its resume."""
    project, s3 = world["project"], world["s3"]
    head = subprocess.run(
        ["git", "-C", str(project), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    # GitLab's retry runs the same commit; ci/gitlab-local snapshots a new one per call
    variables = {**protected_variables(world)[0], **PREEMPT_VARIABLES, "CI_COMMIT_SHA": head}
    sandbox.mkdir(parents=True, exist_ok=True)
    argv = gitlab_local_argv(project, variables, ["train"], sandbox=sandbox)
    env = gitlab_local_env(sandbox, "protected-push")
    workspace = sandbox / ".gitlab-ci-local" / "builds" / "train"
    first = _start(argv, project, env, sandbox.parent / f"{sandbox.name}-first.out")
    deadline, pids = time.monotonic() + 600, []
    while time.monotonic() < deadline and first.poll() is None:
        listed = s3.list_objects_v2(Bucket="team-checkpoints", Prefix="tfship/")
        # this pipeline's own backup (earlier pipelines backed up under the same prefix)
        run_key = f"-{variables['CI_PIPELINE_ID']}-"
        backed_up = any(run_key in o["Key"] for o in listed.get("Contents", []))
        pids = train_pids(workspace)
        if backed_up and pids:
            break
        time.sleep(0.2)
    if first.poll() is not None or not pids:
        raise AssertionError("training ended before it could be preempted")
    for pid in pids:
        os.kill(pid, signal.SIGTERM)
    preempted = time.monotonic()
    first.wait(timeout=300)
    first_log = job_log(sandbox, "train")
    steps = [int(s) for s in re.findall(r"step (\d+)/\d+", first_log)]
    # a clean workspace, as on another runner: nothing of the first attempt is left locally
    shutil.rmtree(workspace)
    shutil.rmtree(sandbox / ".gitlab-ci-local" / "artifacts" / "train", ignore_errors=True)
    retry = _start(argv, project, env, sandbox.parent / f"{sandbox.name}-retry.out")
    first_new_step = None
    while retry.poll() is None and first_new_step is None:
        log = job_log(sandbox, "train")
        resumed = re.search(r"resum\w*[^\n]*step (\d+)", log, flags=re.IGNORECASE)
        if resumed and re.search(r"step \d+/\d+", log[resumed.end() :]):
            first_new_step = time.monotonic()
        time.sleep(0.1)
    retry.wait(timeout=900)
    return {
        "first_exit": first.returncode,
        "first_out": (sandbox.parent / f"{sandbox.name}-first.out").read_text(errors="replace"),
        "first_log": first_log,
        "retry_exit": retry.returncode,
        "retry_out": (sandbox.parent / f"{sandbox.name}-retry.out").read_text(errors="replace"),
        "retry_log": job_log(sandbox, "train"),
        "preempted_at_step": max(steps, default=0),
        "preempt_to_first_new_step_s": None
        if first_new_step is None
        else first_new_step - preempted,
    }
