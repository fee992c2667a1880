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
    # GitHub: a push filter with only `tags` (release.yml) never runs for a branch push
    return not ("tags" in spec or "tags-ignore" in spec)


_TOKEN = re.compile(
    r"\s*(?:(?P<str>'[^']*')|(?P<op>==|!=|&&|\|\||!|\(|\)|,)"
    r"|(?P<num>\d+)|(?P<name>[A-Za-z_][\w.-]*))"
)


def evaluate(expression: str, context: dict[str, object]) -> object:
    """A GitHub Actions `if:` expression, for the subset our callers use.

    Literals, `==`/`!=`/`&&`/`||`/`!`, parentheses, dotted context names (missing = ''), and
    the status functions cancelled()/failure() (False: nothing failed in these tables) and
    always(). Anything else raises, so a new construct cannot be silently mis-evaluated.
    """
    source = expression.strip()
    if source.startswith("${{") and source.endswith("}}"):
        source = source[3:-2]
    out: list[str] = []
    pos = 0
    while pos < len(source.rstrip()):
        m = _TOKEN.match(source, pos)
        if not m:
            raise ValueError(f"cannot evaluate {expression!r} at {source[pos:]!r}")
        pos = m.end()
        if m["str"] is not None:
            out.append(repr(m["str"][1:-1]))
        elif m["num"] is not None:
            out.append(m["num"])
        elif m["op"]:
            out.append({"&&": " and ", "||": " or ", "!": " not "}.get(m["op"], m["op"]))
        elif source[pos:].lstrip().startswith("("):
            func = m["name"]
            if func not in ("cancelled", "failure", "always", "success"):
                raise ValueError(f"unsupported function {func} in {expression!r}")
            out.append(f"_{func}")
        elif m["name"] in ("true", "false"):
            out.append("True" if m["name"] == "true" else "False")
        else:
            out.append(repr(context.get(m["name"], "")))
    funcs = {"_cancelled": lambda: False, "_failure": lambda: False, "_always": lambda: True,
             "_success": lambda: context.get("__success__", True)}  # fmt: skip
    # only the tokens above reach eval, with no builtins
    return eval("".join(out), {"__builtins__": {}}, funcs)


def caller_jobs(
    doc: dict, event: str, data_changed: bool | None, gate_exit: str = "0", protected: bool = True
) -> dict[str, dict]:
    """The jobs of a caller workflow that run for `event`, evaluating their `if:` in order.

    `data_changed`: what the data check reports (tfship data changed: exit 0 -> True, 12 -> False).
    `gate_exit`: the exit code `tfship evaluate` reports when `train` ran (its gate-exit-code).
    `protected`: github.ref_protected, whether the ref is a protected branch.
    A job without `if:` runs when every job it needs ran (implicit success()).
    """
    ran: dict[str, bool] = {}
    context: dict[str, object] = {
        "github.event_name": event,
        "github.repository_owner": "owner",
        "github.ref_protected": protected,
    }
    jobs = doc["jobs"]
    pending = list(jobs)
    while pending:
        name = next(n for n in pending if all(d in ran for d in _needs(jobs[n])))
        pending.remove(name)
        job = jobs[name]
        needs = _needs(job)
        context["__success__"] = all(ran[d] for d in needs)
        for dep in needs:
            context[f"needs.{dep}.result"] = "success" if ran[dep] else "skipped"
        context["needs.train.outputs.gate-exit-code"] = gate_exit if ran.get("train") else ""
        if "needs.data-check.outputs.changed" not in context or data_changed is not None:
            context["needs.data-check.outputs.changed"] = (
                "" if data_changed is None else str(data_changed).lower()
            )
        condition = job.get("if")
        ran[name] = (
            bool(evaluate(str(condition), context)) if condition else all(ran[d] for d in needs)
        )
    return {name: jobs[name] for name, did in ran.items() if did}


def _needs(job: dict) -> list[str]:
    needs = job.get("needs", [])
    return [needs] if isinstance(needs, str) else list(needs)


def expand(
    path: Path,
    event: str,
    prefix: str = "",
    data_changed: bool | None = None,
    gate_exit: str = "0",
    protected: bool = True,
) -> dict[str, dict]:
    """Jobs that run for `event`, reusable workflows expanded to `<caller>/<job>`."""
    out: dict[str, dict] = {}
    doc = load(path)
    jobs = (
        doc["jobs"]
        if path.name.startswith("_")
        else caller_jobs(doc, event, data_changed, gate_exit, protected)
    )
    for name, job in jobs.items():
        uses = job.get("uses", "")
        if uses.startswith("./.github/workflows/"):
            out.update(expand(WORKFLOWS / Path(uses).name, event, f"{prefix}{name}/"))
        else:
            out[f"{prefix}{name}"] = job
    return out


def pipeline(
    event: str,
    branch: str | None,
    data_changed: bool | None = None,
    gate_exit: str = "0",
    protected: bool = True,
) -> dict[str, dict]:
    """Jobs of every workflow `event` on `branch` starts; `protected`: github.ref_protected."""
    jobs: dict[str, dict] = {}
    for path in FILES:
        if not path.name.startswith("_") and runs_for(load(path), event, branch):
            expanded = expand(path, event, "", data_changed, gate_exit, protected)
            jobs.update({f"{path.stem}:{k}": v for k, v in expanded.items()})
    return jobs


CHECKS = {"checks/lint", "checks/unit-tests", "checks/config-scan"}
SMOKE = {"smoke/smoke-train", "smoke/smoke-validate", "smoke/smoke-report"}
TRAIN = {"train/build-image", "train/scan-image", "train/train", "train/evaluate", "train/validate"}

TRAIN_ALL = {f"train:{j}" for j in CHECKS | TRAIN | {"deploy-staging/deploy"}}
DATA_CHECK = {"train:data-check/data-check"}
CHECKS_ONLY = {f"train:{j}" for j in CHECKS}

# (id, event, branch, data changed? (None: no data check in that pipeline), expected jobs)
TABLE = [
    (
        "pull request (forks included)",
        "pull_request",
        "feature/x",
        None,
        {f"ci:{j}" for j in CHECKS | SMOKE},
    ),
    ("push to an unprotected branch", "push", "feature/x", None, {f"ci:{j}" for j in CHECKS}),
    ("push to the default branch trains whatever the data", "push", "main", None, TRAIN_ALL),
    ("push to a release branch", "push", "release/1.0", None, TRAIN_ALL),
    ("schedule with changed data retrains", "schedule", None, True, TRAIN_ALL | DATA_CHECK),
    (
        "schedule with unchanged data trains nothing",
        "schedule",
        None,
        False,
        CHECKS_ONLY | DATA_CHECK,
    ),
    (
        "API trigger (repository_dispatch) with new data retrains",
        "repository_dispatch",
        None,
        True,
        TRAIN_ALL | DATA_CHECK,
    ),
    (
        "API trigger (repository_dispatch) for data already trained on trains nothing",
        "repository_dispatch",
        None,
        False,
        CHECKS_ONLY | DATA_CHECK,
    ),
    (
        "manual dispatch always trains",
        "workflow_dispatch",
        None,
        None,
        TRAIN_ALL | {"deploy:inputs", "deploy:deploy/deploy"},
    ),
]


@pytest.mark.parametrize(
    ("event", "branch", "data_changed", "expected"),
    [pytest.param(*r[1:], id=r[0]) for r in TABLE],
)
def test_event_runs_exactly_the_expected_jobs(
    event: str, branch: str | None, data_changed: bool | None, expected: set
) -> None:
    # the branches this table trains on (main, release/1.0, the default) are protected; the
    # unprotected ones are tests/security/test_pipelines.py's
    protected = not (branch or "").startswith("feature/")
    assert set(pipeline(event, branch, data_changed, protected=protected)) == expected


def test_data_check_maps_exit_codes_and_fails_on_anything_else() -> None:
    step = load(WORKFLOWS / "_data-check.yml")["jobs"]["data-check"]["steps"][-1]
    script = step["run"]
    assert 'tfship data changed --since "$SINCE"' in script
    assert re.search(r"^\s*0\) echo \"changed=true\"", script, flags=re.MULTILINE)
    assert re.search(r"^\s*12\) echo \"changed=false\"", script, flags=re.MULTILINE)
    assert re.search(r"^\s*\*\)\n(.*\n)*\s*exit \"\$rc\"", script, flags=re.MULTILINE)
    train = load(WORKFLOWS / "train.yml")["jobs"]["train"]
    assert "data-check" in train["needs"]
    # a failed data check must not look like "unchanged": train then skips and the run is red
    assert "!failure()" in train["if"]


def test_expression_evaluator_understands_what_the_callers_use() -> None:
    ctx = {"needs.data-check.result": "skipped", "github.event_name": "push"}
    assert evaluate("${{ !cancelled() && needs.data-check.result == 'skipped' }}", ctx) is True
    assert evaluate("${{ github.event_name == 'schedule' || vars.X != '' }}", ctx) is False
    with pytest.raises(ValueError):
        evaluate("${{ contains(github.ref, 'main') }}", ctx)


def test_image_scan_uploads_sarif_to_code_scanning_even_when_findings_fail_it() -> None:
    scan = load(WORKFLOWS / "_train.yml")["jobs"]["scan-image"]
    assert scan["permissions"]["security-events"] == "write"
    steps = scan["steps"]
    names = [s.get("uses", "").split("@")[0] for s in steps]
    assert "github/codeql-action/upload-sarif" in names
    upload = steps[names.index("github/codeql-action/upload-sarif")]
    assert "!cancelled()" in upload["if"]
    assert upload["with"]["sarif_file"].endswith(".sarif")
    assert any(s.get("run", "").startswith("tfship scan image") for s in steps)


def test_gate_override_is_a_manual_dispatch_input_on_protected_branches_only() -> None:
    deploy = load(WORKFLOWS / "deploy.yml")
    assert triggers(deploy)["workflow_dispatch"]["inputs"]["gate-override-reason"]["default"] == ""
    job = deploy["jobs"]["deploy"]
    assert "github.ref_protected" in job["if"]
    assert job["with"]["gate-override-reason"] == "${{ inputs.gate-override-reason }}"
    steps = load(WORKFLOWS / "_deploy.yml")["jobs"]["deploy"]["steps"]
    override = next(s for s in steps if s.get("run") == "ci/gate-override")
    assert override["if"] == "${{ inputs.gate-override-reason != '' }}"
    assert override["env"]["GATE_OVERRIDE_REASON"] == "${{ inputs.gate-override-reason }}"
    script = (WORKFLOWS.parents[1] / "ci" / "gate-override").read_text()
    assert 'tfship gate --override-reason "$GATE_OVERRIDE_REASON"' in script


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
        # the `secrets` context or keyword in any form (`secrets.X`, `secrets[...]`,
        # `secrets: inherit`); the secret scan's report name (`--name secrets`) is no context
        assert not SECRETS_CONTEXT.search(path.read_text()), path.name


SECRETS_CONTEXT = re.compile(r"\bsecrets(?:\.|\[|\s*:)")


def test_only_deploy_jobs_hold_an_environment_and_production_needs_a_person() -> None:
    environments = {
        name: job["environment"]
        for event in ("push", "workflow_dispatch")
        for name, job in pipeline(event, "main").items()
        if "environment" in job
    }
    assert set(environments) == {
        "train:deploy-staging/deploy",
        "deploy:deploy/deploy",
        "train:train/train",  # the backup store's credentials, protected branches only
        "train:train/evaluate",  # read access to the champion's repository, the same
    }
    assert environments["train:train/train"] == "training"
    assert environments["train:train/evaluate"] == "training"
    # a schedule's data check reads the champion's manifest with the same credentials
    assert load(WORKFLOWS / "_data-check.yml")["jobs"]["data-check"]["environment"] == "training"
    deploy = load(WORKFLOWS / "deploy.yml")
    assert set(triggers(deploy)) == {"workflow_dispatch"}  # production is never automatic
    assert deploy["jobs"]["deploy"]["with"]["environment"] == "${{ inputs.environment }}"
    assert (
        load(WORKFLOWS / "train.yml")["jobs"]["deploy-staging"]["with"]["environment"] == "staging"
    )
    # the queue is the deploy job's, so train.yml's staging deploy and deploy.yml share it; the
    # same group at workflow level as well would deadlock. A rollback has a group of its own
    # per run: GitHub cancels an older pending job of a group, never a pending rollback.
    job = load(WORKFLOWS / "_deploy.yml")["jobs"]["deploy"]
    assert job["concurrency"] == {
        "group": "${{ inputs.action == 'rollback' && format('rollback-{0}-{1}', "
        "inputs.environment, github.run_id) || format('deploy-{0}', inputs.environment) }}",
        "cancel-in-progress": False,
    }
    assert "concurrency" not in deploy


@pytest.mark.parametrize(
    ("gate_exit", "deploys"),
    [
        pytest.param("0", True, id="gate passed (exit 0) deploys staging"),
        pytest.param("7", False, id="gate failed (exit 7) stops before staging"),
        pytest.param("", False, id="no gate verdict (evaluate off or not reached) deploys nothing"),
    ],
)
def test_staging_deploys_only_when_the_gate_let_the_model_through(
    gate_exit: str, deploys: bool
) -> None:
    jobs = pipeline("push", "main", gate_exit=gate_exit)
    assert ("train:deploy-staging/deploy" in jobs) is deploys
    assert {f"train:{j}" for j in CHECKS | TRAIN} <= set(jobs)


def test_gate_outcome_leaves_the_train_workflow_as_outputs_of_the_evaluate_job() -> None:
    train = load(WORKFLOWS / "_train.yml")
    outputs = triggers(train)["workflow_call"]["outputs"]
    assert outputs["gate-exit-code"]["value"] == "${{ jobs.evaluate.outputs.exit-code }}"
    assert outputs["gate-verdict"]["value"] == "${{ jobs.evaluate.outputs.verdict }}"
    evaluate_job = train["jobs"]["evaluate"]
    gate = next(s for s in evaluate_job["steps"] if s.get("id") == "gate")
    assert gate["run"] == "ci/gate-verdict"
    assert evaluate_job["outputs"] == {
        "exit-code": "${{ steps.gate.outputs.exit-code }}",
        "verdict": "${{ steps.gate.outputs.verdict }}",
    }
    staging = load(WORKFLOWS / "train.yml")["jobs"]["deploy-staging"]
    assert staging["if"] == (
        "${{ needs.train.outputs.gate-exit-code == '0' && github.ref_protected }}"
    )


def test_deploy_checks_the_train_runs_provenance_before_downloading_its_artifacts() -> None:
    job = load(WORKFLOWS / "_deploy.yml")["jobs"]["deploy"]
    steps = job["steps"]
    check = next(i for i, s in enumerate(steps) if s.get("run") == "ci/check-train-run")
    downloads = [
        i for i, s in enumerate(steps) if s.get("uses", "").startswith("actions/download-artifact@")
    ]
    assert downloads and check < min(downloads)
    assert steps[check]["if"] == "${{ inputs.run-id != '' }}"
    assert steps[check]["env"]["RUN_ID"] == "${{ inputs.run-id }}"
    assert steps[check]["env"]["REPO"] == "${{ github.repository }}"
    # tfship's run directory is the train run's (gh-<run id>), not this deploy run's
    assert job["env"]["TFSHIP_RUN_RUN_ID"] == "gh-${{ inputs.run-id || github.run_id }}"
    for i in downloads:
        assert steps[i]["with"]["run-id"] == "${{ inputs.run-id || github.run_id }}"


@pytest.mark.parametrize(
    ("action", "run_id", "inputs_fail", "downloads"),
    [
        ("deploy", "4711", False, True),
        ("promote", "4711", False, True),
        ("deploy", "", True, False),  # refused with a message before anything runs
        ("promote", "", True, False),
        ("rollback", "", False, False),  # moves stable back; no run, no artifacts
        ("rollback", "4711", False, False),
    ],
)
def test_manual_deploy_needs_a_train_run_except_to_roll_back(
    action: str, run_id: str, inputs_fail: bool, downloads: bool
) -> None:
    deploy = load(WORKFLOWS / "deploy.yml")
    context = {"inputs.action": action, "inputs.run-id": run_id}
    assert "required" not in triggers(deploy)["workflow_dispatch"]["inputs"]["run-id"]
    check = deploy["jobs"]["inputs"]
    assert deploy["jobs"]["deploy"]["needs"] == "inputs" and check["permissions"] == {}
    (step,) = check["steps"]
    assert bool(evaluate(step["if"], context)) is inputs_fail
    assert "exit 1" in step["run"] and "need run-id" in step["run"]
    if inputs_fail:
        return
    steps = load(WORKFLOWS / "_deploy.yml")["jobs"]["deploy"]["steps"]
    fetches = [s for s in steps if s.get("uses", "").startswith("actions/download-artifact@")]
    assert len(fetches) == 2
    assert all(bool(evaluate(s["if"], context)) is downloads for s in fetches)


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


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_concurrency_groups_start_with_a_literal_prefix(path: Path) -> None:
    doc = load(path)
    groups = [job["concurrency"]["group"] for job in doc["jobs"].values() if "concurrency" in job]
    if "concurrency" in doc:
        groups.append(doc["concurrency"]["group"])
    elif path.name == "deploy.yml":
        groups.append(load(WORKFLOWS / "_deploy.yml")["jobs"]["deploy"]["concurrency"]["group"])
    elif not path.name.startswith("_"):
        pytest.fail(f"{path.name} has no concurrency group")
    for group in groups:
        # a literal prefix, or an expression whose every format() starts with one
        formats = re.findall(r"format\('([^']*)'", group)
        if group.startswith("${{") and formats:
            assert all(re.match(r"^[a-z]+-\{0\}", f) for f in formats), group
        else:
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


def test_every_secret_is_read_only_by_a_job_bound_to_an_environment() -> None:
    # Repository secrets reach any branch's run whose workflow asks for them; an environment
    # with "Deployment branches: protected branches only" reaches protected branches only.
    for path in FILES:
        for name, job in load(path)["jobs"].items():
            if SECRETS_CONTEXT.search(yaml.safe_dump(job)):
                assert "environment" in job, f"{path.name}:{name} reads a secret outside one"


def test_pull_requests_get_the_config_and_secret_scan_gitlab_runs() -> None:
    job = load(WORKFLOWS / "_checks.yml")["jobs"]["config-scan"]
    assert "permissions" not in job  # the workflow's contents: read
    assert job["if"] == "${{ !inputs.config-scan-disabled }}"
    runs = [s.get("run", "") for s in job["steps"]]
    assert "tfship scan config ." in runs
    assert "tfship scan fs --scanners secret --name secrets ." in runs
    gitlab = (WORKFLOWS.parents[1] / "ci" / "gitlab" / "jobs-checks.yml").read_text()
    assert all(r in gitlab for r in ("tfship scan config .", "--scanners secret --name secrets"))
    assert any("summary.md" in r and "GITHUB_STEP_SUMMARY" in r for r in runs)
    upload = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/upload-art"))
    assert upload["with"]["path"] == "runs/config-scan/scan/" and "!cancelled()" in upload["if"]
    for caller in ("ci.yml", "train.yml"):
        checks = load(WORKFLOWS / caller)["jobs"]["checks"]
        switch = checks["with"]["config-scan-disabled"]
        assert switch == "${{ vars.CONFIG_SCAN_DISABLED == 'true' }}"


def test_unit_test_results_and_coverage_reach_the_job_summary() -> None:
    steps = load(WORKFLOWS / "_checks.yml")["jobs"]["unit-tests"]["steps"]
    runs = [s.get("run", "") for s in steps]
    pytest_step = next(i for i, r in enumerate(runs) if "--junitxml=junit.xml" in r)
    summary = next(i for i, r in enumerate(runs) if r.startswith("ci/test-summary.py"))
    assert pytest_step < summary
    assert runs[summary] == 'ci/test-summary.py junit.xml coverage.xml >> "$GITHUB_STEP_SUMMARY"'
    assert steps[summary]["if"] == "${{ !cancelled() }}"  # failing tests are the ones to show


def test_the_plots_the_pr_comment_points_at_are_uploaded_with_the_run() -> None:
    steps = load(WORKFLOWS / "_smoke.yml")["jobs"]["smoke-report"]["steps"]
    report = next(i for i, s in enumerate(steps) if s.get("run") == "tfship report --post")
    upload = steps[report + 1]
    assert upload["uses"].startswith("actions/upload-artifact@")
    assert upload["with"]["path"] == "runs/*/evaluation/"  # report.md and its *.png
    assert "!cancelled()" in upload["if"]


def test_gpu_training_gets_the_backup_store_and_records_the_image_it_ran_in() -> None:
    job = load(WORKFLOWS / "_train.yml")["jobs"]["train"]
    step = next(s for s in job["steps"] if s.get("run", "").startswith("ci/train-in-container"))
    env = step["env"]
    assert env["TFSHIP_EXPORT_IMAGE_DIGEST"] == "${{ needs.build-image.outputs.image }}"
    assert env["IMAGE"] == env["TFSHIP_EXPORT_IMAGE_DIGEST"]  # the image trained = the recorded
    assert env["TFSHIP_BACKUP_URL"] == "${{ vars.TFSHIP_BACKUP_URL }}"
    assert env["TFSHIP_BACKUP_ENDPOINT_URL"] == "${{ vars.TFSHIP_BACKUP_ENDPOINT_URL }}"
    assert env["AWS_ACCESS_KEY_ID"] == "${{ secrets.AWS_ACCESS_KEY_ID }}"
    assert env["AWS_SECRET_ACCESS_KEY"] == "${{ secrets.AWS_SECRET_ACCESS_KEY }}"
    assert job["environment"] == "training"
    # no other step of the job sees them
    others = [s for s in job["steps"] if s is not step]
    assert not [s for s in others if SECRETS_CONTEXT.search(yaml.safe_dump(s))]
    # ci/train-in-container hands them to the container by name only (never a value in argv)
    script = (WORKFLOWS.parents[1] / "ci" / "train-in-container").read_text()
    assert "TFSHIP_*|" in script and "|AWS_*)" in script and 'env_args+=(-e "$name")' in script
