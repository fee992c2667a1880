"""Pipeline trust boundaries (docs/ci.md, "Trust boundaries"): what an untrusted pipeline (a
merge/pull request, a fork's, a push to an unprotected branch) can reach, on GitLab and GitHub.

* no GPU job, no deploy job, no job that writes an image or cache a protected pipeline trusts;
* the image scanned is the image trained: GitLab passes the pushed digest between jobs;
* the BuildKit cache protected builds import is pushed only with protected credentials;
* GPU jobs refuse to start off a protected ref; deploy jobs take no image from a variable;
* GitHub: environments that hold secrets only from protected branches (`github.ref_protected`),
  and a pending rollback is never cancelled by a deploy's concurrency group.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.ci import gitlab_local
from tests.ci.test_github_workflows import WORKFLOWS, load, pipeline

ROOT = Path(__file__).resolve().parents[2]
ALL_ON = dict.fromkeys(gitlab_local.DISABLE_SWITCHES, "false")
DIGEST = "sha256:" + "ab" * 32


class _Loader(yaml.SafeLoader):
    pass


_Loader.add_constructor("!reference", lambda loader, node: loader.construct_sequence(node))


def _gitlab(name: str) -> dict:
    return yaml.load((ROOT / "ci/gitlab" / name).read_text(), Loader=_Loader)


# ---- GitLab: what an untrusted pipeline contains ---------------------------------------------


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Path:
    gitlab_local.require_binary()
    return tmp_path_factory.mktemp("gitlab-boundaries")


@pytest.fixture(scope="module")
def config(sandbox: Path) -> dict:
    return gitlab_local.preview(sandbox, pipeline="protected-push", variables=ALL_ON)


def _gpu_jobs(config: dict) -> set[str]:
    return {
        name
        for name, job in config.items()
        if isinstance(job, dict) and "$GPU_RUNNER_TAG" in (job.get("tags") or [])
    }


def _deploy_jobs(config: dict) -> set[str]:
    return {n for n, j in config.items() if isinstance(j, dict) and "environment" in j}


def _registry_writers(config: dict) -> set[str]:
    return {
        name
        for name, job in config.items()
        if isinstance(job, dict) and "ci/build-image" in json.dumps(job.get("script", []))
    }


# (id, preset, branch, extra variables)
UNTRUSTED = [
    ("a merge request", "merge-request", "feature/x", {}),
    ("a merge request from a fork, run in the parent project", "fork-merge-request", "x", {}),
    ("a push to an unprotected branch", "push", "feature/x", {}),
    ("a push to an unprotected release branch", "push", "release/9.9", {}),
    (
        "a merge request whose source branch is called main",
        "merge-request",
        "main",
        {"CI_DEFAULT_BRANCH": "main"},
    ),
]


@pytest.mark.integration
@pytest.mark.parametrize(
    ("preset", "branch", "variables"), [pytest.param(*r[1:], id=r[0]) for r in UNTRUSTED]
)
def test_an_untrusted_gitlab_pipeline_has_no_gpu_deploy_or_registry_writing_job(
    sandbox: Path, config: dict, preset: str, branch: str, variables: dict[str, str]
) -> None:
    jobs = set(
        gitlab_local.list_jobs(
            sandbox,
            pipeline=preset,
            variables={**ALL_ON, "CI_COMMIT_BRANCH": branch, **variables},
        )
    )
    trusted_only = _gpu_jobs(config) | _deploy_jobs(config) | _registry_writers(config)
    assert {"train", "deploy-staging", "build-image"} <= trusted_only
    assert not jobs & trusted_only, jobs & trusted_only


@pytest.mark.integration
def test_scan_and_train_take_the_digest_build_image_pushed(config: dict) -> None:
    build = config["build-image"]
    # ci/build-image writes build/train-image.env: the report and the file ci/image-ref checks
    assert build["artifacts"]["reports"]["dotenv"] == "build/train-image.env"
    assert "build/train-image.env" in build["artifacts"]["paths"]
    scan = config["scan-image"]["script"]
    assert scan[0] == "ci/image-ref" and '"$TRAIN_IMAGE_REF"' in scan[-1]
    assert config["train"]["image"]["name"] == "$TRAIN_IMAGE_REF"
    # unconditionally, and with no tag to fall back to
    # (and what it printed becomes the manifest's image_digest; an assignment, so a failing
    # check fails the script under `set -e`, which `export X="$(...)"` would not)
    assert config["train"]["script"][1] == 'image_ref="$(ci/image-ref)"'
    assert config["train"]["script"][2] == 'export TFSHIP_EXPORT_IMAGE_DIGEST="$image_ref"'
    assert _gitlab("variables.yml")["variables"]["TRAIN_IMAGE_REF"] == ""
    for job in ("scan-image", "train"):
        assert "build-image" in {n["job"] for n in config[job]["needs"]}
        # no job takes the training image by a tag any job token can move
        assert "$TRAIN_IMAGE:$CI_COMMIT_SHA" not in json.dumps(config[job].get("script"))


@pytest.mark.integration
def test_every_gpu_job_first_refuses_an_unprotected_ref(config: dict) -> None:
    gpu = _gpu_jobs(config)
    assert gpu
    for name in gpu:
        assert config[name]["script"][0].startswith("ci/require-protected "), name


@pytest.mark.integration
def test_deploy_jobs_take_no_image_from_a_variable_and_retry_only_a_held_lease(
    config: dict,
) -> None:
    for name in _deploy_jobs(config):
        job = config[name]
        image = job["image"]["name"] if isinstance(job["image"], dict) else job["image"]
        assert "$" not in image, f"{name}: image {image} comes from a variable"
        assert job["retry"] == {"max": 2, "exit_codes": [14]}, name
        # protected ref first, then only the hashed runtime lock (never requirements-dev)
        assert job["before_script"] == [
            'ci/require-protected "deploying with the environment\'s credentials"',
            "ci/install-deps --runtime",
        ], name


def test_the_default_build_cache_is_not_in_the_registry_every_job_token_writes() -> None:
    cache = _gitlab("variables.yml")["variables"]["TRAIN_IMAGE_CACHE"]
    assert "$CI_REGISTRY_IMAGE" not in cache and "CI_REGISTRY" not in cache


# ---- ci/build-image: only on protected refs, the cache never where a job token writes -------

FAKE_DOCKER = """#!/usr/bin/env bash
printf '%s\\n' "$*" >> "$DOCKER_LOG"
if [[ "$1" == login ]]; then cat >/dev/null; fi
if [[ "$1 $2" == "buildx build" ]]; then
  while (( $# )); do
    if [[ "$1" == --metadata-file ]]; then
      printf '{\\n  "containerimage.digest": "%s"\\n}\\n' "$FAKE_DIGEST" > "$2"
    fi
    shift
  done
fi
exit 0
"""
PROJECT = "registry.example/group/project"
OUTSIDE = "cache.example/group/train-cache:buildcache"

# (id, variables) -> exit code, registry cache used
BUILD = [
    ("protected ref, cache outside the project registry, protected credentials",
     {"TRAIN_IMAGE_CACHE_USER": "u", "TRAIN_IMAGE_CACHE_PASSWORD": "p"}, OUTSIDE, 0, True),
    ("protected ref, no cache configured: builds without one", {}, "", 0, False),
    ("unprotected ref (a merge-request job calling the script)",
     {"CI_COMMIT_REF_PROTECTED": "false", "TRAIN_IMAGE_CACHE_USER": "u",
      "TRAIN_IMAGE_CACHE_PASSWORD": "p"}, OUTSIDE, 3, False),
    ("cache in the project registry every job token can push to",
     {"TRAIN_IMAGE_CACHE_USER": "u", "TRAIN_IMAGE_CACHE_PASSWORD": "p"},
     f"{PROJECT}/train:buildcache", 3, False),
    ("cache without the protected push credentials", {}, OUTSIDE, 3, False),
]  # fmt: skip


@pytest.mark.parametrize(
    ("variables", "cache", "exit_code", "cached"), [pytest.param(*r[1:], id=r[0]) for r in BUILD]
)
def test_build_image_caches_only_where_protected_pipelines_write_and_records_the_digest(
    tmp_path: Path, variables: dict[str, str], cache: str, exit_code: int, cached: bool
) -> None:
    # a copy of the scripts, so build/train-image.env lands in tmp_path, not in the repository
    (tmp_path / "ci").mkdir()
    for script in ("build-image", "require-protected", "image-ref"):
        (tmp_path / "ci" / script).write_bytes((ROOT / "ci" / script).read_bytes())
        (tmp_path / "ci" / script).chmod(0o755)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    docker = bin_dir / "docker"
    docker.write_text(FAKE_DOCKER)
    docker.chmod(docker.stat().st_mode | stat.S_IXUSR)
    log = tmp_path / "docker.log"
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "DOCKER_LOG": str(log),
        "FAKE_DIGEST": DIGEST,
        "GITLAB_CI": "true",
        "CI_PIPELINE_SOURCE": "push",
        "CI_COMMIT_SHA": "0" * 40,
        "CI_COMMIT_REF_NAME": "main",
        "CI_COMMIT_REF_SLUG": "main",
        "CI_COMMIT_REF_PROTECTED": "true",
        "CI_REGISTRY": "registry.example",
        "CI_REGISTRY_IMAGE": PROJECT,
        "TF_BASE_DIGEST": DIGEST,
        **variables,
    }
    proc = subprocess.run(
        [str(tmp_path / "ci/build-image"), "docker/train.Dockerfile", f"{PROJECT}/train", cache],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == exit_code, proc.stderr
    builds = [
        line
        for line in (log.read_text().splitlines() if log.exists() else [])
        if line.startswith("buildx build")
    ]
    if exit_code:
        assert not builds, "refused, yet it built"
        return
    (build,) = builds
    assert ("--cache-to" in build) is cached and ("--cache-from" in build) is cached
    dotenv = (tmp_path / "build/train-image.env").read_text()
    assert f"TRAIN_IMAGE_REF={PROJECT}/train@{DIGEST}\n" in dotenv


# ---- GitHub: secrets and GPU runners only from protected branches ----------------------------

# (id, event, branch) on a ref that is NOT protected
GITHUB_UNPROTECTED = [
    ("push to an unprotected release/** branch", "push", "release/9.9"),
    ("push to main before the project protected it", "push", "main"),
    ("manual dispatch from an unprotected branch", "workflow_dispatch", None),
]


@pytest.mark.parametrize(
    ("event", "branch"), [pytest.param(*r[1:], id=r[0]) for r in GITHUB_UNPROTECTED]
)
def test_an_unprotected_github_ref_reaches_no_environment_and_no_gpu_runner(
    event: str, branch: str | None
) -> None:
    jobs = pipeline(event, branch, protected=False)
    assert not [n for n, j in jobs.items() if "environment" in j]
    assert not [n for n, j in jobs.items() if "inputs." in str(j.get("runs-on", ""))]
    assert not [n for n, j in jobs.items() if j.get("permissions", {}).get("packages") == "write"]


def test_the_reusable_deploy_job_itself_requires_a_protected_ref() -> None:
    job = load(WORKFLOWS / "_deploy.yml")["jobs"]["deploy"]
    assert "github.ref_protected" in job["if"]


def test_a_rollback_never_shares_a_concurrency_group_with_a_deploy() -> None:
    group = load(WORKFLOWS / "_deploy.yml")["jobs"]["deploy"]["concurrency"]["group"]
    assert "inputs.action == 'rollback'" in group and "github.run_id" in group
    assert (
        load(WORKFLOWS / "_deploy.yml")["jobs"]["deploy"]["concurrency"]["cancel-in-progress"]
        is False
    )


def test_the_github_gpu_job_refuses_an_unprotected_ref_before_it_logs_in_or_trains() -> None:
    steps = load(WORKFLOWS / "_train.yml")["jobs"]["train"]["steps"]
    runs = [s.get("run", "") for s in steps]
    guard = runs.index('ci/require-protected "GPU training"')
    assert guard < min(i for i, r in enumerate(runs) if "docker login" in r or "train-in" in r)
