"""GitHub workflows as tables: (event, branch) -> the exact set of jobs, plus the security
properties every workflow must keep (pinning, permissions, credentials, untrusted input)."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

import pytest
import yaml

WORKFLOWS = Path(__file__).resolve().parents[2] / ".github" / "workflows"
FILES = sorted(WORKFLOWS.glob("*.yml"))
SHA_PIN = re.compile(r"^\s*-?\s*uses:\s*([\w.-]+/[\w./-]+)@([0-9a-f]{40}) # (v\d+\.\d+\.\d+)\s*$")


def load(path: Path) -> dict:
    doc = yaml.safe_load(path.read_text())
    doc["on"] = doc.pop(True, doc.get("on"))  # YAML 1.1 reads the key `on` as a boolean
    return doc


def triggers(doc: dict) -> dict:
    on = doc["on"]
    return {on: {}} if isinstance(on, str) else {k: (v or {}) for k, v in on.items()}


def runs_for(doc: dict, event: str, branch: str | None) -> bool:
    spec = triggers(doc).get(event)
    if spec is None:
        return False
    if branch is None or event not in ("push", "pull_request"):
        return True
    if "branches" in spec:
        return any(fnmatch.fnmatch(branch, p) for p in spec["branches"])
    if "branches-ignore" in spec:
        return not any(fnmatch.fnmatch(branch, p) for p in spec["branches-ignore"])
    return True


def job_runs(job: dict, event: str) -> bool:
    # The only event-dependent `if:` in our callers; anything else must not mention the event.
    condition = str(job.get("if", ""))
    if "github.event_name == 'pull_request'" in condition:
        return event == "pull_request"
    return True


def expand(path: Path, event: str, prefix: str = "") -> dict[str, dict]:
    """Jobs that run for `event`, reusable workflows expanded to `<caller>/<job>`."""
    out: dict[str, dict] = {}
    for name, job in load(path)["jobs"].items():
        if not job_runs(job, event):
            continue
        uses = job.get("uses", "")
        if uses.startswith("./.github/workflows/"):
            out.update(expand(WORKFLOWS / Path(uses).name, event, f"{prefix}{name}/"))
        else:
            out[f"{prefix}{name}"] = job
    return out


def pipeline(event: str, branch: str | None) -> dict[str, dict]:
    jobs: dict[str, dict] = {}
    for path in FILES:
        if not path.name.startswith("_") and runs_for(load(path), event, branch):
            jobs.update({f"{path.stem}:{k}": v for k, v in expand(path, event).items()})
    return jobs


CHECKS = {"checks/lint", "checks/unit-tests"}
SMOKE = {"smoke/smoke-train", "smoke/smoke-validate", "smoke/smoke-report"}
TRAIN = {"train/build-image", "train/scan-image", "train/train", "train/evaluate", "train/validate"}

TABLE = [
    (
        "pull request (forks included)",
        "pull_request",
        "feature/x",
        {f"ci:{j}" for j in CHECKS | SMOKE},
    ),
    ("push to an unprotected branch", "push", "feature/x", {f"ci:{j}" for j in CHECKS}),
    (
        "push to the default branch",
        "push",
        "main",
        {f"train:{j}" for j in CHECKS | TRAIN | {"deploy-staging/deploy"}},
    ),
    (
        "push to a release branch",
        "push",
        "release/1.0",
        {f"train:{j}" for j in CHECKS | TRAIN | {"deploy-staging/deploy"}},
    ),
    (
        "schedule (continuous training)",
        "schedule",
        None,
        {f"train:{j}" for j in CHECKS | TRAIN | {"deploy-staging/deploy"}},
    ),
    (
        "API trigger (repository_dispatch)",
        "repository_dispatch",
        None,
        {f"train:{j}" for j in CHECKS | TRAIN | {"deploy-staging/deploy"}},
    ),
    (
        "manual dispatch",
        "workflow_dispatch",
        None,
        {f"train:{j}" for j in CHECKS | TRAIN | {"deploy-staging/deploy"}}
        | {"deploy:deploy/deploy"},
    ),
]


@pytest.mark.parametrize(
    ("event", "branch", "expected"), [pytest.param(*r[1:], id=r[0]) for r in TABLE]
)
def test_event_runs_exactly_the_expected_jobs(
    event: str, branch: str | None, expected: set
) -> None:
    assert set(pipeline(event, branch)) == expected


def test_pull_requests_never_reach_a_gpu_runner_an_environment_or_a_secret() -> None:
    jobs = pipeline("pull_request", "feature/x")
    for name, job in jobs.items():
        assert "environment" not in job, name
        assert "self-hosted" not in str(job["runs-on"]) and "inputs." not in str(job["runs-on"]), (
            name
        )
        assert "secrets." not in yaml.safe_dump(job), f"{name} reads a secret"
        assert job.get("permissions", {}).get("packages") in (None, "read"), name
    for path in (WORKFLOWS / "ci.yml", WORKFLOWS / "_checks.yml", WORKFLOWS / "_smoke.yml"):
        assert "secrets" not in path.read_text().replace("no secrets", ""), path.name


def test_only_deploy_jobs_hold_an_environment_and_production_needs_a_person() -> None:
    environments = {
        name: job["environment"]
        for event in ("push", "workflow_dispatch")
        for name, job in pipeline(event, "main").items()
        if "environment" in job
    }
    assert set(environments) == {"train:deploy-staging/deploy", "deploy:deploy/deploy"}
    deploy = load(WORKFLOWS / "deploy.yml")
    assert set(triggers(deploy)) == {"workflow_dispatch"}  # production is never automatic
    assert deploy["jobs"]["deploy"]["with"]["environment"] == "${{ inputs.environment }}"
    assert (
        load(WORKFLOWS / "train.yml")["jobs"]["deploy-staging"]["with"]["environment"] == "staging"
    )
    assert deploy["concurrency"] == {
        "group": "deploy-${{ inputs.environment }}",
        "cancel-in-progress": False,
    }


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_every_action_is_pinned_by_commit_sha_with_a_version_comment(path: Path) -> None:
    for line in path.read_text().splitlines():
        if re.match(r"^\s*-?\s*uses:", line) and "./.github/workflows/" not in line:
            assert SHA_PIN.match(line), (
                f"{path.name}: not pinned by SHA + '# vX.Y.Z': {line.strip()}"
            )


def test_one_action_is_pinned_to_one_sha_everywhere() -> None:
    pins: dict[str, set[tuple[str, str]]] = {}
    for path in FILES:
        for line in path.read_text().splitlines():
            if m := SHA_PIN.match(line):
                pins.setdefault(m[1], set()).add((m[2], m[3]))
    assert pins, "no pinned actions found"
    assert {action: len(v) for action, v in pins.items()} == dict.fromkeys(pins, 1)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_workflow_token_is_read_only_and_every_raise_says_why(path: Path) -> None:
    doc = load(path)
    assert doc["permissions"] == {"contents": "read"}
    raises = re.compile(r"^\s{6}([a-z-]+: write|actions: read|packages: read)\b")
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if raises.match(line):
            assert re.search(r"\S\s+#\s*\S", line), (
                f"{path.name}:{number}: a raise without a reason"
            )
    for name, job in doc["jobs"].items():
        assert job.get("permissions") not in ("write-all", "read-all"), name


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_no_dangerous_trigger_no_inherited_secrets_no_persisted_credentials(path: Path) -> None:
    doc = load(path)
    text = path.read_text()
    assert "pull_request_target" not in triggers(doc)
    assert "workflow_run" not in triggers(doc)
    assert "secrets: inherit" not in text
    for job in doc["jobs"].values():
        for step in job.get("steps", []):
            if step.get("uses", "").startswith("actions/checkout@"):
                assert step["with"]["persist-credentials"] is False


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_untrusted_values_reach_shell_steps_only_through_env(path: Path) -> None:
    for name, job in load(path)["jobs"].items():
        for step in job.get("steps", []):
            assert "${{" not in step.get("run", ""), f"{path.name}:{name}: expression inside run:"


@pytest.mark.parametrize(
    "path", [p for p in FILES if not p.name.startswith("_")], ids=lambda p: p.name
)
def test_concurrency_groups_start_with_a_literal_prefix(path: Path) -> None:
    group = load(path)["concurrency"]["group"]
    assert re.match(r"^[a-z]+-\$\{\{", group), group


def test_reusable_workflows_take_typed_inputs() -> None:
    for path in WORKFLOWS.glob("_*.yml"):
        spec = triggers(load(path))
        assert set(spec) == {"workflow_call"}, path.name
        for name, inp in spec["workflow_call"].get("inputs", {}).items():
            assert inp["type"] in ("string", "number", "boolean"), f"{path.name}: {name}"


def test_preempted_gpu_training_is_relaunched_and_the_gpu_runner_is_configurable() -> None:
    train = load(WORKFLOWS / "_train.yml")["jobs"]["train"]
    assert train["runs-on"] == "${{ fromJSON(inputs.gpu-runner-labels) }}"
    script = (WORKFLOWS.parents[1] / "ci" / "train-in-container").read_text()
    assert "-ne 75" in script and "ci/gpu-preflight" in script
