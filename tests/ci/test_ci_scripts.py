"""The ci/ scripts the workflows call, run for real against stand-in `gh` and `tfship`
executables on PATH (named stand-ins: they print canned answers, nothing leaves the machine)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

CI = Path(__file__).resolve().parents[2] / "ci"
REPO = "owner/model"


def _stand_in(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text("#!/usr/bin/env bash\n" + body)
    path.chmod(0o755)


def _train_run(**changes: object) -> dict:
    run = {
        "path": ".github/workflows/train.yml",
        "event": "push",
        "head_repository": {"full_name": REPO},
        "repository": {"full_name": REPO},
        "head_branch": "main",
        "status": "completed",
        "conclusion": "success",
    }
    run.update(changes)
    return run


def check_train_run(
    tmp_path: Path, run: dict, run_id: str = "42", protected: bool = False, override: str = ""
) -> subprocess.CompletedProcess[str]:
    """ci/check-train-run against a stand-in `gh api` serving this run and repository."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (tmp_path / "run.json").write_text(json.dumps(run))
    (tmp_path / "repo.json").write_text(json.dumps({"default_branch": "main"}))
    (tmp_path / "branch.json").write_text(json.dumps({"protected": protected}))
    _stand_in(
        bin_dir,
        "gh",
        f"""case "$2" in
  repos/{REPO}/actions/runs/42) cat {tmp_path}/run.json ;;
  repos/{REPO}) cat {tmp_path}/repo.json ;;
  repos/{REPO}/branches/*) cat {tmp_path}/branch.json ;;
  *) echo "HTTP 404: Not Found" >&2; exit 1 ;;
esac
""",
    )
    environ = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "REPO": REPO,
        "RUN_ID": run_id,
        "GATE_OVERRIDE_REASON": override,
    }
    return subprocess.run(
        [str(CI / "check-train-run")], env=environ, capture_output=True, text=True, check=False
    )


TRUSTED = [
    ("a default-branch push", _train_run(), {}),
    ("a schedule", _train_run(event="schedule"), {}),
    ("an API trigger", _train_run(event="repository_dispatch"), {}),
    ("a manual dispatch", _train_run(event="workflow_dispatch"), {}),
    ("a protected release branch", _train_run(head_branch="release/1.0"), {"protected": True}),
    (
        "a workflow path in owner/repo/...@ref form",
        _train_run(path=f"{REPO}/.github/workflows/train.yml@refs/heads/main"),
        {},
    ),
    (
        "a failed gate a person overrides",
        _train_run(conclusion="failure"),
        {"override": "recall regression is a labelling artefact"},
    ),
]

REFUSED = [
    ("a pull request run", _train_run(event="pull_request"), {}, 3),
    ("a fork's code", _train_run(head_repository={"full_name": "mallory/model"}), {}, 3),
    ("another workflow", _train_run(path=".github/workflows/ci.yml"), {}, 3),
    ("an unprotected feature branch", _train_run(head_branch="feature/x"), {}, 3),
    ("an unprotected release branch", _train_run(head_branch="release/1.0"), {}, 3),
    ("a failed run without an override", _train_run(conclusion="failure"), {}, 3),
    ("a cancelled run, override or not", _train_run(conclusion="cancelled"), {"override": "x"}, 3),
    ("a run still in progress", _train_run(status="in_progress", conclusion=None), {}, 3),
    ("a run id that is not a number", _train_run(), {"run_id": "42/../../x"}, 3),
    ("a run the API does not know", _train_run(), {"run_id": "7"}, 8),
]


@pytest.mark.parametrize(("run", "kwargs"), [pytest.param(*r[1:], id=r[0]) for r in TRUSTED])
def test_check_train_run_trusts_this_repositorys_train_runs_on_protected_branches(
    tmp_path: Path, run: dict, kwargs: dict
) -> None:
    result = check_train_run(tmp_path, run, **kwargs)
    assert result.returncode == 0, result.stderr
    assert "trusted" in result.stdout


@pytest.mark.parametrize(
    ("run", "kwargs", "code"), [pytest.param(*r[1:], id=r[0]) for r in REFUSED]
)
def test_check_train_run_refuses_runs_that_could_carry_a_forged_model(
    tmp_path: Path, run: dict, kwargs: dict, code: int
) -> None:
    result = check_train_run(tmp_path, run, **kwargs)
    assert result.returncode == code
    assert "ci/check-train-run: run " in result.stderr
    assert "expected" in result.stderr


@pytest.mark.parametrize(("exit_code", "verdict"), [(0, "passed"), (7, "failed")])
def test_gate_verdict_reports_tfships_exit_code_and_verdict_and_keeps_the_exit_code(
    tmp_path: Path, exit_code: int, verdict: str
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _stand_in(
        bin_dir,
        "tfship",
        f"""mkdir -p runs/gh-1/evaluation
echo '{{"verdict": "{verdict}"}}' > runs/gh-1/evaluation/gate.json
exit {exit_code}
""",
    )
    output = tmp_path / "github_output"
    result = subprocess.run(
        [str(CI / "gate-verdict")],
        cwd=tmp_path,
        env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "GITHUB_OUTPUT": str(output)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == exit_code, result.stderr
    assert output.read_text().splitlines() == [f"exit-code={exit_code}", f"verdict={verdict}"]


def test_deploy_step_leaves_publishing_to_tfship_deploy() -> None:
    # `tfship deploy` publishes and un-publishes a version TF Serving rejects; a separate
    # `tfship publish` first would make the version look published already
    commands = [
        line.strip()
        for line in (CI / "deploy-step").read_text().splitlines()
        if line.strip().startswith("tfship ")
    ]
    assert 'tfship deploy --to "$target"' in commands
    assert not [c for c in commands if c.startswith("tfship publish")]
