"""Who may change the verdict (issue 13 §1, §5): tables of (who, what they set, where) -> what
must still hold.

In CI, a field that decides whether a model ships comes only from the committed pipeline.yaml,
unless a person started the job (then it is recorded with who); every YAML tfship reads is
refused when it hides something (aliases, duplicate keys, ...); every number is bounded; names
that become paths are plain. Each row fails on the code before this change (a silent accept, a
traceback, or a message without the fragment asserted).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, get_args

import pytest
from pydantic import BaseModel

from tfship import cli
from tfship.config import PipelineConfig, load_config
from tfship.errors import ConfigError, ExitCode

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="needs the git binary")

GITLAB_PUSH = {
    "CI": "true",
    "GITLAB_CI": "true",
    "CI_PIPELINE_SOURCE": "push",
    "GITLAB_USER_LOGIN": "mallory",
    "CI_JOB_ID": "77",
}
GITLAB_MANUAL = {**GITLAB_PUSH, "CI_JOB_MANUAL": "true", "GITLAB_USER_LOGIN": "alice"}
GITHUB_PUSH = {
    "CI": "true",
    "GITHUB_ACTIONS": "true",
    "GITHUB_EVENT_NAME": "push",
    "GITHUB_ACTOR": "bob",
    "GITHUB_RUN_ID": "9",
}

# A value for every verdict field, as a CI/CD variable would carry it (each one loosens or
# redirects the verdict). test_every_verdict_field_is_in_the_refusal_table keeps it complete.
VERDICT_SAMPLES = {
    "project.model_name": "other-model",
    "data.test_fraction": "0.01",
    "data.limit": "10",
    "data.label": "leaky_feature",
    "data.features": "{leaky_feature: numeric}",
    "data.loader": "attacker.module:load",
    "data.stream": "{hash_key: id, max_eval_examples: 1}",
    "task.type": "regression",
    "task.options": "{threshold: 0.01}",
    "export.golden_requests": "1",
    "export.tolerance": "1.0",
    "serving.tolerance": "1.0",
    "serving.allow_ungated": "true",
    "gate.run_mode": "disabled",
    "gate.absolute": "{accuracy: {min: 0}}",
    "gate.change": "{}",
    "gate.slices": "[]",
    "gate.data": "{drift: report, bounds: {mean_shift: 1000}}",
    "gate.champion_label": "canary",
    "gate.first_run": "true",
    "scan.fail_on_config": "CRITICAL",
    "scan.enabled": "false",
    "scan.fail_on": "CRITICAL",
    "scan.allowlist": "/tmp/allow-everything.yaml",
    "scan.offline": "true",
    "scan.scanners": "[secret]",
    "scan.ignore_unfixed": "true",
    "scan.skip_dirs": "[src]",
}


def var(field: str) -> str:
    return "TFSHIP_" + field.replace(".", "_").upper()


def refused(env: dict[str, str], overrides: list[str] = (), path: Path | None = None) -> str:
    with pytest.raises(ConfigError) as exc:
        load_config(path, env=env, overrides=list(overrides))
    assert exc.value.exit_code is ExitCode.CONFIG
    return str(exc.value)


def git(root: Path, *args: str) -> str:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    proc = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args],
        cwd=root,
        env=clean,
        capture_output=True,
        text=True,
        check=True,
    )
    return proc.stdout.strip()


def checkout(root: Path, files: dict[str, str]) -> str:
    """A git repository at `root` with `files` committed; returns the commit."""
    root.mkdir(parents=True, exist_ok=True)
    git(root, "init", "-q", "-b", "main")
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "snapshot")
    return git(root, "rev-parse", "HEAD")


COMMITTED = "gate:\n  absolute:\n    accuracy: {min: 0.9}\n"


# --- 1. the classification is complete --------------------------------------------------------


def test_every_config_field_is_classified_as_deciding_the_verdict_or_not() -> None:
    from tfship.config.fields import FIELDS

    names = {"version"}
    for section, info in PipelineConfig.model_fields.items():
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
            names |= {f"{section}.{f}" for f in info.annotation.model_fields}
    assert set(FIELDS) == names, "classify the new field in tfship/config/fields.py"
    assert all(why.strip() for _, why in FIELDS.values())


def test_every_verdict_field_is_in_the_refusal_table() -> None:
    from tfship.config.fields import VERDICT_FIELDS

    assert set(VERDICT_SAMPLES) == VERDICT_FIELDS


# --- 2. in CI, verdict fields only from the committed file -------------------------------------


@pytest.mark.parametrize("via", ["variable", "--set"])
@pytest.mark.parametrize("field", sorted(VERDICT_SAMPLES))
def test_a_verdict_field_set_outside_the_committed_file_in_an_automatic_ci_job_is_refused(
    field: str, via: str
) -> None:
    value = VERDICT_SAMPLES[field]
    if via == "variable":
        msg = refused({**GITLAB_PUSH, var(field): value})
        assert var(field) in msg
    else:
        msg = refused(GITHUB_PUSH, [f"{field}={value}"])
        assert f"--set {field}" in msg
    assert f"{field}:" in msg and "committed pipeline.yaml" in msg and "merge request" in msg


@pytest.mark.parametrize(
    "override",
    [
        "gate.absolute.accuracy.min=0",  # one bound inside the committed mapping
        "gate.absolute.accuracy={max: 1}",
        "gate.change.accuracy.max_regression=1",
        "serving.allow_ungated=yes",
        "gate.run_mode=enabled",  # even a value that changes nothing: it is not reviewed
    ],
)
def test_a_deeper_or_harmless_looking_set_of_a_verdict_field_is_refused_too(override: str) -> None:
    msg = refused(GITLAB_PUSH, [override])
    assert override.split("=")[0].rsplit(".", 0)[0].split(".")[0] in msg


# (who started what) -> allowed and recorded with who, or refused
CONTEXTS = [
    ("gitlab_push", GITLAB_PUSH, None),
    ("gitlab_schedule", {**GITLAB_PUSH, "CI_PIPELINE_SOURCE": "schedule"}, None),
    ("gitlab_run_pipeline_form", {**GITLAB_PUSH, "CI_PIPELINE_SOURCE": "web"}, None),
    ("gitlab_trigger", {**GITLAB_PUSH, "CI_PIPELINE_SOURCE": "trigger"}, None),
    ("gitlab_child_pipeline", {**GITLAB_PUSH, "CI_PIPELINE_SOURCE": "parent_pipeline"}, None),
    ("gitlab_manual_job_without_a_login", {"CI": "true", "CI_JOB_MANUAL": "true"}, None),
    ("gitlab_ci_cleared_but_gitlab_ci_set", {"CI": "", "GITLAB_CI": "true"}, None),
    ("github_push", GITHUB_PUSH, None),
    ("github_schedule", {**GITHUB_PUSH, "GITHUB_EVENT_NAME": "schedule"}, None),
    (
        "github_pull_request_target",
        {**GITHUB_PUSH, "GITHUB_EVENT_NAME": "pull_request_target"},
        None,
    ),
    (
        "github_repository_dispatch",
        {**GITHUB_PUSH, "GITHUB_EVENT_NAME": "repository_dispatch"},
        None,
    ),
    ("training_container_without_CI", {"GITHUB_ACTIONS": "true", "GITHUB_RUN_ID": "9"}, None),
    ("gitlab_manual_job", GITLAB_MANUAL, "job started by alice"),
    (
        "github_workflow_dispatch",
        {**GITHUB_PUSH, "GITHUB_EVENT_NAME": "workflow_dispatch"},
        "job started by bob",
    ),
    (
        "gitlab_merge_request",
        {**GITLAB_PUSH, "CI_PIPELINE_SOURCE": "merge_request_event", "CI_MERGE_REQUEST_IID": "3"},
        "merge-request pipeline by mallory; its verdict is never deployed",
    ),
    # A project variable shadowing GitLab's predefined CI_PIPELINE_SOURCE: a real MR pipeline
    # has an MR iid and never runs on a protected ref.
    (
        "gitlab_pipeline_source_spoofed_without_an_mr",
        {**GITLAB_PUSH, "CI_PIPELINE_SOURCE": "merge_request_event"},
        None,
    ),
    (
        "gitlab_pipeline_source_spoofed_on_a_protected_ref",
        {
            **GITLAB_PUSH,
            "CI_PIPELINE_SOURCE": "merge_request_event",
            "CI_MERGE_REQUEST_IID": "3",
            "CI_COMMIT_REF_PROTECTED": "true",
        },
        None,
    ),
    (
        "github_pull_request",
        {**GITHUB_PUSH, "GITHUB_EVENT_NAME": "pull_request"},
        "merge-request pipeline by bob; its verdict is never deployed",
    ),
    ("local_run", {"GITLAB_USER_LOGIN": "dev"}, "local run by dev"),
]


@pytest.mark.parametrize(
    ("env", "recorded"), [c[1:] for c in CONTEXTS], ids=[c[0] for c in CONTEXTS]
)
def test_who_started_the_job_decides_whether_a_threshold_variable_counts(
    env: dict[str, str], recorded: str | None
) -> None:
    env = {**env, "TFSHIP_GATE_ABSOLUTE": "{accuracy: {min: 0}}"}
    if recorded is None:
        assert "TFSHIP_GATE_ABSOLUTE" in refused(env)
        return
    cfg = load_config(None, env=env)
    assert cfg.gate.absolute["accuracy"].min == 0
    assert cfg.sources.of("gate.absolute.accuracy.min") == (
        f"environment variable TFSHIP_GATE_ABSOLUTE ({recorded})"
    )


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("TFSHIP_TRAIN_EPOCHS", "1"),
        ("TFSHIP_DATA_PATH", "s3://bucket/data"),
        ("TFSHIP_SERVING_MODEL_REPOSITORY", "s3://bucket/models"),
        ("TFSHIP_SERVING_REST_URL", "http://tfs:8501"),
        ("TFSHIP_GATE_CHAMPION_REPOSITORY", "s3://bucket/models"),
        ("TFSHIP_GATE_LATENCY_RUNS", "5"),
        ("TFSHIP_CHECKPOINT_DIR", "/mnt/ckpt"),
    ],
)
def test_where_and_how_variables_still_work_in_automatic_jobs_and_are_recorded(
    variable: str, value: str
) -> None:
    cfg = load_config(None, env={**GITLAB_PUSH, variable: value})
    key = variable.removeprefix("TFSHIP_").lower().replace("_", ".", 1)
    assert cfg.sources.of(key) == f"environment variable {variable} (CI job no person started)"


# --- 3. the config file must be the committed one ----------------------------------------------


def _no_git(monkeypatch: pytest.MonkeyPatch) -> None:
    from tfship.config import committed

    monkeypatch.setattr(committed.shutil, "which", lambda _: None)  # TF's images ship no git


FILE_CASES = [
    # (id, how the job's config file came to be, git binary present, refusal fragment or None)
    ("committed", "committed", True, None),
    ("committed_read_without_git", "committed", False, None),
    ("rewritten_after_checkout", "modified", True, "differs from the file committed"),
    ("rewritten_without_git", "modified", False, "differs from the file committed"),
    ("artifact_in_the_checkout", "untracked", True, "not tracked by git"),
    ("artifact_without_git", "untracked", False, "not tracked by git"),
    ("file_variable_in_tmp", "outside", True, "outside the checked-out repository"),
    ("symlink_to_tmp", "symlink", True, "outside the checked-out repository"),
    ("git_dir_variable_points_at_a_repo_holding_it", "git_dir", True, "not tracked by git"),
    ("index_variable_points_at_another_index", "git_index", True, "not tracked by git"),
    ("no_checkout_at_all", "no_repo", True, "not in a git checkout"),
    # Committed, reviewed, unchanged, but not the project's config: an example project's or a
    # test fixture's pipeline.yaml (looser thresholds, another model), or a nested checkout's.
    ("another_committed_config", "other_committed", True, "not the project's pipeline.yaml"),
    ("another_committed_config_without_git", "other_committed", False, "not the project's"),
    ("a_nested_repositorys_pipeline_yaml", "nested_repo", True, "not the project's pipeline"),
]


def _config_file(kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    repo = tmp_path / "checkout"
    checkout(repo, {"pipeline.yaml": COMMITTED, ".gitignore": "runs/\n"})
    evil = "gate:\n  run_mode: disabled\n  absolute:\n    accuracy: {min: 0}\n"
    if kind == "committed":
        return repo, repo / "pipeline.yaml"
    if kind == "modified":
        (repo / "pipeline.yaml").write_text(evil)
        return repo, repo / "pipeline.yaml"
    if kind == "untracked":
        (repo / "runs" / "x").mkdir(parents=True)
        (repo / "runs" / "x" / "config.yaml").write_text(evil)
        return repo, repo / "runs" / "x" / "config.yaml"
    outside = tmp_path / "tmp" / "evil.yaml"
    outside.parent.mkdir()
    outside.write_text(evil)
    if kind == "symlink":
        (repo / "ci.yaml").symlink_to(outside)
        return repo, repo / "ci.yaml"
    if kind in ("git_dir", "git_index"):
        other = tmp_path / "other"
        checkout(other, {"runs/x/config.yaml": evil})
        (repo / "runs" / "x").mkdir(parents=True)
        (repo / "runs" / "x" / "config.yaml").write_text(evil)
        if kind == "git_dir":
            monkeypatch.setenv("GIT_DIR", str(other / ".git"))
        else:
            monkeypatch.setenv("GIT_INDEX_FILE", str(other / ".git" / "index"))
        return repo, repo / "runs" / "x" / "config.yaml"
    if kind == "no_repo":
        return outside.parent, outside
    if kind == "other_committed":
        checkout(repo, {"examples/regression/pipeline.yaml": evil})
        return repo, repo / "examples" / "regression" / "pipeline.yaml"
    if kind == "nested_repo":
        checkout(repo / "vendor" / "other", {"pipeline.yaml": evil})
        return repo, repo / "vendor" / "other" / "pipeline.yaml"
    return repo, outside  # "outside": a GitLab File variable lives in a temp directory


@needs_git
@pytest.mark.parametrize(
    ("kind", "has_git", "fragment"), [c[1:] for c in FILE_CASES], ids=[c[0] for c in FILE_CASES]
)
def test_in_ci_verdict_fields_come_only_from_the_committed_config_file(
    kind: str, has_git: bool, fragment: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo, path = _config_file(kind, tmp_path, monkeypatch)
    if not has_git:
        _no_git(monkeypatch)
    env = {**GITLAB_PUSH, "CI_PROJECT_DIR": str(repo)}
    if fragment is not None:
        msg = refused(env, path=path)
        assert fragment in msg and "gate." in msg
        return
    cfg = load_config(path, env=env)
    commit = git(repo, "rev-parse", "HEAD")
    assert cfg.sources.of("gate.absolute.accuracy.min") == f"pipeline.yaml@{commit[:12]}"
    assert cfg.sources.file.blob == git(repo, "rev-parse", "HEAD:pipeline.yaml")


# --- 4. the CLI end to end: the attack from the issue ------------------------------------------


def _metrics(accuracy: float) -> dict[str, Any]:
    per = {"precision": 0.2, "recall": 0.2, "f1": 0.2, "support": 10}
    model = {
        "path": "/runs/x/export/3",
        "version": 3,
        "manifest": None,
        "metrics": {
            "accuracy": accuracy,
            "macro_f1": 0.2,
            "min_class_f1": 0.1,
            "min_class_recall": 0.1,
            "loss": 2.0,
            "p50_latency_ms": 1.0,
            "p95_latency_ms": 2.0,
            "p50_latency_ms_batch32": 3.0,
            "p95_latency_ms_batch32": 4.0,
        },
        "per_class": {"0": per, "1": per},
        "confusion": [[2, 8], [8, 2]],
        "latency_ms": {"1": {"p50": 1.0, "p95": 2.0}, "32": {"p50": 3.0, "p95": 4.0}},
    }
    return {
        "schema": "tfship-metrics/1",
        "test_examples": 20,
        "data_fingerprint": "ab" * 32,
        "class_names": ["0", "1"],
        "candidate": model,
        "champion": None,
        "champion_note": "first run: no champion",
        "machine": {"cpus": 2},
    }


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A checked-out project whose committed gate needs 0.9, and a 0.19-accuracy candidate."""
    monkeypatch.setattr(cli, "COMMANDS", ("config", "evaluate", "gate", "report"))
    repo = tmp_path / "project"
    checkout(repo, {"pipeline.yaml": COMMITTED})
    (repo / "run" / "evaluation").mkdir(parents=True)
    (repo / "run" / "evaluation" / "metrics.json").write_text(json.dumps(_metrics(0.19)))
    monkeypatch.chdir(repo)
    return repo


def _cli(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], *argv: str) -> int:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    config = [] if "--config" in argv else ["--config", "pipeline.yaml"]
    return cli.main([*argv, *config, "--run-dir", "run"])


@needs_git
@pytest.mark.parametrize(
    ("env", "argv"),
    [
        ({"TFSHIP_GATE_ABSOLUTE": "{accuracy: {min: 0}}"}, ()),
        ({"TFSHIP_GATE_RUN_MODE": "dry_run"}, ()),
        ({}, ("--set", "gate.absolute.accuracy.min=0")),
        ({}, ("--override-reason", "expanded from a CI/CD variable")),
        ({}, ("--config", "{outside}")),
    ],
    ids=["threshold_variable", "run_mode_variable", "set_flag", "override_flag", "config_in_tmp"],
)
def test_the_gate_of_a_bad_model_is_never_loosened_by_a_ci_variable(
    project: Path, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], argv: tuple[str, ...]
) -> None:
    outside = project.parent / "lowered.yaml"  # e.g. a GitLab "File" variable
    outside.write_text("gate:\n  absolute:\n    accuracy: {min: 0}\n")
    argv = tuple(a.format(outside=outside) for a in argv)
    env = {**GITLAB_PUSH, "CI_PROJECT_DIR": str(project), **env}
    assert _cli(monkeypatch, env, "gate", *argv) == ExitCode.CONFIG
    assert not (project / "run" / "evaluation" / "gate.json").exists()


@needs_git
def test_the_committed_gate_fails_the_bad_model_and_gate_json_names_the_commit(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {**GITLAB_PUSH, "CI_PROJECT_DIR": str(project)}
    assert _cli(monkeypatch, env, "gate") == ExitCode.GATE_FAILED
    doc = json.loads((project / "run" / "evaluation" / "gate.json").read_text())
    commit = git(project, "rev-parse", "HEAD")
    assert [c["source"] for c in doc["checks"]] == [f"pipeline.yaml@{commit[:12]}"]
    assert doc["run_mode_source"] == "default"
    assert doc["config_sources"]["file"]["commit"] == commit
    assert doc["config_sources"]["file"]["committed"] is True


@needs_git
def test_a_person_who_starts_the_job_may_lower_the_bar_and_is_named_in_gate_json(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {
        **GITLAB_MANUAL,
        "CI_PROJECT_DIR": str(project),
        "TFSHIP_GATE_ABSOLUTE": "{accuracy: {min: 0.1}}",
    }
    assert _cli(monkeypatch, env, "gate") == ExitCode.OK
    doc = json.loads((project / "run" / "evaluation" / "gate.json").read_text())
    assert doc["verdict"] == "passed"
    assert doc["checks"][0]["source"] == (
        "environment variable TFSHIP_GATE_ABSOLUTE (job started by alice)"
    )
    assert "TFSHIP_GATE_ABSOLUTE" in doc["config_sources"]["fields"]["gate.absolute"]


@pytest.mark.parametrize(
    "env",
    [GITLAB_PUSH, {**GITLAB_PUSH, "CI_PIPELINE_SOURCE": "merge_request_event"}],
    ids=["automatic_job", "merge_request_pipeline"],
)
def test_an_override_reason_flag_needs_a_person_too(env: dict[str, str]) -> None:
    from tfship.config import GateConfig
    from tfship.gate import decide

    gate = GateConfig.model_validate({"absolute": {"accuracy": {"min": 0.9}}})
    with pytest.raises(ConfigError, match="--override-reason is set in a CI job no person"):
        decide(gate, {"accuracy": 0.19}, None, override_reason="from a variable", environ=env)


def test_a_champion_flag_in_an_automatic_job_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli, "COMMANDS", ("evaluate",))
    (tmp_path / "weak").mkdir()
    rc = _cli(monkeypatch, GITLAB_PUSH, "evaluate", "--champion", str(tmp_path / "weak"))
    assert rc == ExitCode.CONFIG


# --- 5. YAML that hides something --------------------------------------------------------------

# Billion laughs under a field that takes any mapping: nine levels of nine aliases, ~2 GB of
# "lol"s once expanded. The strict loader stops at the first anchor, before any expansion.
BOMB = "model:\n  options:\n    a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"    {c}: &{c} [{', '.join(['*' + p] * 9)}]\n"
    for p, c in zip("abcdefgh", "bcdefghi", strict=True)
)
YAML_CASES = [
    # (id, pipeline.yaml bytes, fragments the error must name)
    ("alias_bomb", BOMB.encode(), ["pipeline.yaml:3:8", "anchor &a"]),
    (
        "alias_reuses_thresholds",
        b"gate:\n  change:\n    accuracy: &c {max_regression: 0.5}\n    macro_f1: *c\n",
        ["pipeline.yaml:3:15", "anchor &c"],
    ),
    (
        "merge_key",
        b"gate:\n  <<: {run_mode: disabled}\n  absolute: {accuracy: {min: 0.9}}\n",
        ["pipeline.yaml:2:3", "merge key"],
    ),
    (
        "second_gate_section",
        b"gate:\n  absolute: {accuracy: {min: 0.9}}\ngate:\n  run_mode: dry_run\n",
        ["pipeline.yaml:3:1", "duplicate key 'gate'", "first at line 1"],
    ),
    (
        "duplicate_bound",
        b"gate:\n  absolute:\n    accuracy: {min: 0.9, min: 0}\n",
        ["pipeline.yaml:3:", "duplicate key 'min'"],
    ),
    (
        "duplicate_in_a_list_item",
        b"scan:\n  skip_dirs: [a]\nmodel:\n  options: {x: 1, x: 2}\n",
        ["pipeline.yaml:4:", "duplicate key 'x'"],
    ),
    ("yes_no_key", b"model:\n  options: {on: 1}\n", ["pipeline.yaml:2:", "not a name"]),
    ("integer_key", b"1: x\n", ["pipeline.yaml:1:1", "not a name"]),
    ("binary_tag", b"project:\n  name: !!binary ZGlnaXRz\n", ["tag", "binary"]),
    ("set_tag", b"scan:\n  skip_dirs: !!set {src: null}\n", ["tag", "set"]),
    ("latin1", "project:\n  name: d\xe9mo\n".encode("latin-1"), ["pipeline.yaml:2:", "UTF-8"]),
    ("utf16", "gate: {}\n".encode("utf-16"), ["pipeline.yaml:1:", "UTF-8"]),
    ("oversized", b"version: 1\n" + b"#" * 300_000 + b"\n", ["larger than 262144 bytes"]),
    (
        "deep_nesting",
        b"model:\n  options: {x: " + b"[" * 500 + b"]" * 500 + b"}\n",
        ["nested deeper"],
    ),
]


@pytest.mark.parametrize(
    ("data", "fragments"), [c[1:] for c in YAML_CASES], ids=[c[0] for c in YAML_CASES]
)
def test_yaml_that_hides_or_breaks_something_is_a_config_error_naming_file_and_line(
    tmp_path: Path, data: bytes, fragments: list[str]
) -> None:
    path = tmp_path / "pipeline.yaml"
    path.write_bytes(data)
    msg = refused({}, path=path)
    for fragment in fragments:
        assert fragment in msg


@pytest.mark.parametrize(
    ("variable", "value", "fragment"),
    [
        ("TFSHIP_GATE_ABSOLUTE", "{accuracy: {min: 0.9}, accuracy: {min: 0}}", "duplicate key"),
        ("TFSHIP_GATE_CHANGE", "{loss: &l {max_regression: 1}, accuracy: *l}", "anchor &l"),
        ("TFSHIP_DATA_LABEL", "lab\udcffel", "not UTF-8"),
        ("TFSHIP_DATA_LABEL", "x" * 70_000, "larger than 65536 bytes"),
    ],
)
def test_a_variable_value_is_read_with_the_same_strict_yaml(
    variable: str, value: str, fragment: str
) -> None:
    msg = refused({variable: value})
    assert variable in msg and fragment in msg


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (
            "vulnerabilities:\n  - id: CVE-1\n    statement: risk accepted\n"
            "    expired_at: 2020-01-01\n    expired_at: 2099-01-01\n",
            "duplicate key 'expired_at'",
        ),
        (
            "vulnerabilities:\n  - &e {id: CVE-1, statement: accepted, expired_at: 2099-01-01}\n"
            "  - *e\n",
            "anchor &e",
        ),
    ],
    ids=["expiry_written_twice", "alias"],
)
def test_the_allowlist_is_read_with_the_same_strict_yaml(
    tmp_path: Path, text: str, fragment: str
) -> None:
    from tfship.scan.allowlist import load_allowlist

    path = tmp_path / ".trivyignore.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=fragment):
        load_allowlist(path)


def test_a_non_utf8_allowlist_is_a_config_error_not_a_traceback(tmp_path: Path) -> None:
    from tfship.scan.allowlist import load_allowlist

    path = tmp_path / ".trivyignore.yaml"
    path.write_bytes("vulnerabilities:\n  - id: CVE-\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="UTF-8"):
        load_allowlist(path)


# --- 6. every number is bounded, every name is plain ------------------------------------------


def _numeric_fields() -> list[tuple[str, type]]:
    out = []
    for section, info in PipelineConfig.model_fields.items():
        if not (isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel)):
            continue
        for name, field in info.annotation.model_fields.items():
            kinds = {
                a for a in (field.annotation, *get_args(field.annotation)) if a in (int, float)
            }
            if kinds:
                out.append((f"{section}.{name}", max(kinds, key=lambda k: k is float)))
    return out


BIG = "9223372036854775808"  # 2**63: does not fit TF's or TF Serving's int64
NUMBERS = [
    ("train.epochs", BIG),
    ("train.max_steps", BIG),
    ("data.limit", BIG),
    ("export.version", BIG),
    ("data.image_size", "[100000, 8]"),
    ("data.image_size", f"[8, {BIG}]"),
    ("data.shuffle_buffer", "10000001"),
    ("train.per_replica_batch_size", "65537"),
    ("train.learning_rate", "1.0e+309"),
    ("train.learning_rate", "1e19"),
    ("checkpoint.every_seconds", ".inf"),
    ("checkpoint.keep", "1001"),
    ("backup.upload_timeout_seconds", ".inf"),
    ("serving.load_deadline_seconds", ".inf"),
    ("serving.retry_backoff_seconds", ".inf"),
    ("serving.retention", "10001"),
    ("export.tolerance", "1.5"),
    ("serving.tolerance", "2"),
    ("run.seed", "4294967296"),
    ("gate.absolute", "{accuracy: {min: .nan}}"),
    ("gate.absolute", "{loss: {max: .inf}}"),
    ("gate.absolute", "{accuracy: {min: 0.9, max: 0.5}}"),
    ("gate.change", "{loss: {max_regression: 1.0e+13}}"),
    ("gate.change", "{loss: {max_regression: .inf}}"),
    ("model.options", "{width: 1.0e+400}"),
    ("model.options", "{width: 99999999999999999999}"),
]


@pytest.mark.parametrize(("field", "value"), NUMBERS)
def test_every_number_out_of_its_bounds_is_refused_with_exit_3(field: str, value: str) -> None:
    msg = refused({}, [f"{field}={value}"])
    assert field.split(".")[0] in msg


def _numeric_fields() -> list[tuple[str, bool]]:
    """(section.field, is float) for every int/float field, nested types included."""

    def kinds(annotation: Any) -> set[Any]:
        inner = list(get_args(annotation))
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            inner += [f.annotation for f in annotation.model_fields.values()]
        return ({annotation} & {int, float}) | {k for a in inner for k in kinds(a)}

    out = []
    for section, info in PipelineConfig.model_fields.items():
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
            for name, field in info.annotation.model_fields.items():
                if found := kinds(field.annotation):
                    out.append((f"{section}.{name}", float in found))
    return out


@pytest.mark.parametrize(("field", "is_float"), _numeric_fields())
def test_a_new_numeric_field_cannot_be_added_without_an_upper_bound(
    field: str, is_float: bool
) -> None:
    # The class guard: 2**63 and infinity are refused for every int/float field there is.
    if field == "data.image_size":
        values = [f"[{BIG}, 8]", "[.inf, 8]"]
    elif field in ("gate.absolute", "model.options"):
        values = [f"{{accuracy: {{min: {BIG}}}}}", "{accuracy: {min: .inf}}"]
    elif field == "gate.change":
        values = [f"{{loss: {{max_regression: {BIG}}}}}", "{loss: {max_regression: .inf}}"]
    else:
        values = [BIG, ".inf"] + ([".nan"] if is_float else [])
    for value in values:
        refused({}, [f"{field}={value}"])


def test_a_version_beyond_int64_is_refused_by_the_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "COMMANDS", ("config",))
    rc = cli.main(["config", "--set", "export.version=9223372036854775808"])
    assert rc == ExitCode.CONFIG
    assert cli.main(["config", "--set", f"export.version={2**63 - 1}"]) == ExitCode.OK


NAMES = [  # (field, the value as YAML text)
    ("project.model_name", "models.config"),  # the repository's own file
    ("project.model_name", "MODELS.CONFIG"),
    ("project.model_name", "a..b"),
    ("project.model_name", "x" * 65),
    ("project.model_name", "trailing."),
    ("project.name", "a" * 300),
    ("run.run_id", "ci-1..2"),
    ("run.run_id", "r" * 100),
    ("gate.champion_label", "s" * 65),
    ("backup.prefix", "team/../other-team"),
    ("backup.prefix", "./x"),
    ("serving.environments", "{prod/../staging: {}}"),
    ("serving.environments", "{'': {}}"),
    ("model.options", "{'not an identifier': 1}"),
    ("data.label", "c" * 257),
]


@pytest.mark.parametrize(("field", "value"), NAMES)
def test_a_name_that_would_escape_or_break_the_model_repository_is_refused(
    field: str, value: str
) -> None:
    msg = refused({}, [f"{field}={value}"])
    assert field in msg


@pytest.mark.parametrize("name", ["digits", "my-model_2.v1", "A" * 64])
def test_plain_model_names_are_accepted(name: str) -> None:
    assert load_config(None, env={}, overrides=[f"project.model_name={name}"]).project.model_name


def test_bounds_leave_the_repository_defaults_and_pipeline_yaml_valid(repo_root: Path) -> None:
    cfg = load_config(repo_root / "pipeline.yaml", env={})
    assert math.isfinite(cfg.train.learning_rate)


# --- `tfship deploy --allow-ungated`: the flag loosens *whether*, like a verdict field -------
@pytest.mark.parametrize(
    ("job", "refused"),
    [
        ({"CI": "true", "CI_PIPELINE_SOURCE": "push"}, True),
        ({"GITLAB_CI": "true", "CI_JOB_ID": "7"}, True),
        ({"GITHUB_ACTIONS": "true", "GITHUB_EVENT_NAME": "push", "GITHUB_ACTOR": "bot"}, True),
        ({"CI": "true", "CI_PIPELINE_SOURCE": "merge_request_event"}, True),
        ({"CI": "true", "CI_JOB_MANUAL": "true", "GITLAB_USER_LOGIN": "alice"}, False),
        (
            {
                "GITHUB_ACTIONS": "true",
                "GITHUB_EVENT_NAME": "workflow_dispatch",
                "GITHUB_ACTOR": "alice",
            },
            False,
        ),
        ({}, False),
    ],
)
def test_allow_ungated_flag_needs_a_person_in_ci(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, job: dict[str, str], refused: bool
) -> None:
    from tfship.rundir import RunDir
    from tfship.serving.deploy_gate import check_gate

    for name, value in job.items():
        monkeypatch.setenv(name, value)
    cfg = load_config(None, env={})
    if refused:
        with pytest.raises(ConfigError, match="--allow-ungated was given in a CI job"):
            check_gate(cfg, RunDir(tmp_path), allow_ungated=True)
    else:
        assert check_gate(cfg, RunDir(tmp_path), allow_ungated=True) == "ungated (allowed)"


# --- The scan allowlist decides what is not a finding: committed only, like pipeline.yaml ----
@needs_git
@pytest.mark.parametrize(
    ("change", "job", "refused_with"),
    [
        ("none", GITLAB_PUSH, None),
        ("rewritten_after_checkout", GITLAB_PUSH, "differs from the file committed"),
        ("untracked", GITLAB_PUSH, "not tracked by git"),
        ("rewritten_after_checkout", {**GITLAB_PUSH, "CI_JOB_MANUAL": "true"}, None),
        ("rewritten_after_checkout", {}, None),
    ],
)
def test_in_ci_only_the_committed_allowlist_decides_what_is_not_a_finding(
    change: str,
    job: dict[str, str],
    refused_with: str | None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tfship.scan.allowlist import load_allowlist

    repo = tmp_path / "checkout"
    committed = (
        "vulnerabilities:\n  - id: CVE-2024-0001\n    statement: not reachable\n"
        "    expired_at: 2099-01-01\n"
    )
    name = ".trivyignore.yaml"
    checkout(repo, {name: committed} if change != "untracked" else {"README": "x"})
    if change != "none":
        loosened = (
            committed
            + "  - id: CVE-2024-9999\n    statement: accepted by a rewrite\n"
            + "    expired_at: 2099-01-01\n"
        )
        (repo / name).write_text(loosened)
    for key, value in {**job, "CI_PROJECT_DIR": str(repo)}.items():
        monkeypatch.setenv(key, value)
    if refused_with is None:
        assert load_allowlist(repo / name).entries
        return
    with pytest.raises(ConfigError, match="only the committed allowlist") as exc:
        load_allowlist(repo / name)
    assert refused_with in str(exc.value)


# --- Change thresholds that find no champion fail safe in CI (issue 15: "configured but no
# champion reachable in CI is a failure, with an explicit setting for the first deploy") ----
GITLAB_MR = {
    **GITLAB_PUSH,
    "CI_PIPELINE_SOURCE": "merge_request_event",
    "CI_MERGE_REQUEST_IID": "3",
}


@pytest.mark.parametrize(
    ("job", "lookup", "first_run_set", "refused_with"),
    [
        (GITLAB_PUSH, "no_repository", False, "no model repository"),
        (GITLAB_PUSH, "no_repository", True, "no model repository"),
        (GITLAB_PUSH, "first_run", False, "unless this is the project's first deploy"),
        (GITLAB_PUSH, "first_run", True, None),
        (GITLAB_PUSH, "champion", False, None),
        ({**GITLAB_PUSH, "CI_JOB_MANUAL": "true"}, "first_run", False, "first deploy"),
        (GITLAB_MR, "no_repository", False, None),
        ({}, "first_run", False, None),
    ],
)
def test_change_thresholds_without_a_champion_fail_safe_in_ci(
    tmp_path: Path,
    job: dict[str, str],
    lookup: str,
    first_run_set: bool,
    refused_with: str | None,
) -> None:
    from tests.unit.test_gate import CHAMP, GOOD, metrics_doc
    from tfship.fsutil import atomic_write_json
    from tfship.gate import run_gate
    from tfship.rundir import RunDir

    run_dir = RunDir(tmp_path / "run").ensure()
    doc = metrics_doc(GOOD, CHAMP if lookup == "champion" else None)
    doc["no_repository"] = lookup == "no_repository"
    atomic_write_json(run_dir.evaluation / "metrics.json", doc)
    committed = {
        "gate": {
            "absolute": {"accuracy": {"min": 0.5}},
            "change": {"accuracy": {"max_regression": 0.01}},
            "first_run": first_run_set,
        }
    }
    path = tmp_path / "pipeline.yaml"
    path.write_text(json.dumps(committed))
    cfg = load_config(path, env={})  # as committed; the job context is what varies
    if refused_with is None:
        assert run_gate(cfg, run_dir, environ=job).verdict == "passed"
        return
    with pytest.raises(ConfigError, match=r"gate\.change is configured") as exc:
        run_gate(cfg, run_dir, environ=job)
    assert refused_with in str(exc.value)
    assert not (run_dir.evaluation / "gate.json").exists()  # deploy finds no verdict
