"""The pipeline's Trivy scans run concurrently (the project's config + secret scan, one Trivy
process, from the start of the export stage; the export's secret scan alongside it), and a scan
that fails in the background is never lost: it is raised, with exit code 11, once every scan has
finished. A fake `trivy` stands in for the binary: with FAKE_TRIVY_CONCURRENT set, the project
scan waits until the export's scan has started, so scans run one after the other would fail."""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path

import pytest

from tfship import pipeline
from tfship.config import load_config
from tfship.errors import ExitCode, ModelError, ScannerError
from tfship.rundir import RunDir
from tfship.scan import run_scan_for_pipeline
from tfship.scan.stage import start_tree_scans

FAKE_TRIVY = """#!{python}
import json, os, sys, time
from pathlib import Path
args = sys.argv[1:]
if args[:1] == ["--version"]:
    print(json.dumps({{"Version": "0.0.0-fake"}}))
    sys.exit(0)
out = Path(args[args.index("--output") + 1])
fmt = args[args.index("--format") + 1]
kind, target = args[0], args[-1]
scanners = args[args.index("--scanners") + 1] if "--scanners" in args else ""
marks = Path(os.environ["FAKE_TRIVY_MARKS"])
project = Path(os.environ["FAKE_TRIVY_PROJECT"]).resolve()
name = "tree" if Path(target).resolve() == project else "export"
with open(marks / "calls", "a") as calls:
    print(kind, name, fmt, scanners, file=calls)
if fmt == "json":
    (marks / name).touch()
if name == "tree" and fmt == "json" and os.environ.get("FAKE_TRIVY_CONCURRENT"):
    for _ in range(600):  # the export's scan must be running at the same time
        if (marks / "export").exists():
            break
        time.sleep(0.05)
    else:
        print("FATAL tree: the export scan never started", file=sys.stderr)
        sys.exit(4)
if name in os.environ.get("FAKE_TRIVY_FAIL", "").split(","):
    print(f"FATAL {{name}} broke", file=sys.stderr)
    sys.exit(3)
results = []
if name == "tree":  # one misconfiguration (config scan) and one secret (secret scan)
    results = [
        {{"Target": "Dockerfile", "Class": "config", "Type": "dockerfile",
          "Misconfigurations": [{{"ID": "DS002", "AVDID": "AVD-DS-0002", "Title": "root user",
                                  "Severity": "LOW", "Status": "FAIL"}}]}},
        {{"Target": "app.env", "Class": "secret",
          "Secrets": [{{"RuleID": "aws-access-key-id", "Category": "AWS", "Severity": "LOW",
                        "Title": "AWS Access Key ID", "StartLine": 1, "EndLine": 1}}]}},
    ]
if fmt == "json":
    out.write_text(json.dumps({{"SchemaVersion": 2, "ArtifactName": target, "Results": results}}))
else:
    out.write_text(json.dumps({{"bomFormat": "CycloneDX", "specVersion": "1.5", "components": []}}))
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    fake = tmp_path / "bin" / "trivy"
    fake.parent.mkdir()
    fake.write_text(FAKE_TRIVY.format(python=sys.executable))
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    marks = tmp_path / "marks"
    marks.mkdir()
    project = tmp_path / "project"
    project.mkdir()
    (project / "pipeline.yaml").write_text("version: 1\n")
    monkeypatch.setenv("TFSHIP_TRIVY", str(fake))
    monkeypatch.setenv("FAKE_TRIVY_MARKS", str(marks))
    monkeypatch.setenv("FAKE_TRIVY_PROJECT", str(project))
    monkeypatch.delenv("FAKE_TRIVY_FAIL", raising=False)
    monkeypatch.delenv("FAKE_TRIVY_CONCURRENT", raising=False)
    monkeypatch.chdir(project)
    return project


def _cfg(*overrides: str):
    return load_config(None, env={}, overrides=["scan.offline=true", *overrides])


def _run_dir(root: Path) -> RunDir:
    run_dir = RunDir(root).ensure()
    (run_dir.export / "1").mkdir(parents=True)
    (run_dir.export / "1" / "saved_model.pb").write_bytes(b"\0")
    return run_dir


def test_the_project_scans_run_concurrently_and_every_result_is_collected(
    project, tmp_path, monkeypatch
):
    monkeypatch.setenv("FAKE_TRIVY_CONCURRENT", "1")
    run_dir = _run_dir(tmp_path / "run")
    result = run_scan_for_pipeline(_cfg(), run_dir, project)
    assert [s.name for s in result.scans] == ["config", "secrets", "export-secrets"]
    assert result.passed  # LOW findings, below the default fail_on
    summary = (run_dir.root / "scan" / "summary.md").read_text()
    assert all(f"`{name}`" in summary for name in ("config", "secrets", "export-secrets"))


def test_one_trivy_process_scans_the_tree_and_its_report_is_split(project, tmp_path):
    run_dir = _run_dir(tmp_path / "run")
    result = run_scan_for_pipeline(_cfg(), run_dir, project)
    config, secrets, _ = result.scans
    calls = (tmp_path / "marks" / "calls").read_text().splitlines()
    tree_scans = [c for c in calls if " tree json" in c]
    assert tree_scans == ["fs tree json misconfig,secret"]  # no separate `trivy config` run
    assert config.counts["LOW"] == 1 and secrets.counts["LOW"] == 1  # one finding each
    assert config.kind == "config" and secrets.kind == "fs"
    scan = run_dir.root / "scan"
    raw = json.loads((scan / "config.trivy.json").read_text())
    assert [r["Target"] for r in raw["Results"]] == ["Dockerfile"]
    raw = json.loads((scan / "secrets.trivy.json").read_text())
    assert [r["Target"] for r in raw["Results"]] == ["app.env"]
    assert (scan / "secrets.cdx.json").is_file() and not (scan / "tree.trivy.json").exists()


def test_scans_started_before_training_are_collected_by_the_scan_stage(
    project, tmp_path, monkeypatch
):
    monkeypatch.setenv("FAKE_TRIVY_CONCURRENT", "1")
    run_dir = _run_dir(tmp_path / "run")
    tree = start_tree_scans(_cfg(), run_dir, project)
    assert tree is not None
    result = run_scan_for_pipeline(_cfg(), run_dir, project, tree=tree)
    assert [s.name for s in result.scans] == ["config", "secrets", "export-secrets"]


def test_a_failed_background_scan_is_raised_after_every_scan_finished(
    project, tmp_path, monkeypatch
):
    monkeypatch.setenv("FAKE_TRIVY_FAIL", "tree")
    run_dir = _run_dir(tmp_path / "run")
    tree = start_tree_scans(_cfg(), run_dir, project)
    with pytest.raises(ScannerError, match="tree broke") as err:
        run_scan_for_pipeline(_cfg(), run_dir, project, tree=tree)
    assert err.value.exit_code == ExitCode.SCANNER == 11
    scan = run_dir.root / "scan"
    for name in ("config", "secrets"):  # the one process's failure, recorded under both names
        assert "tree broke" in json.loads((scan / f"{name}.result.json").read_text())["error"]
    assert json.loads((scan / "export-secrets.result.json").read_text())["passed"] is True


def test_an_export_scan_failure_still_waits_for_the_tree_scan(project, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_TRIVY_FAIL", "export")
    run_dir = _run_dir(tmp_path / "run")
    with pytest.raises(ScannerError, match="export broke"):
        run_scan_for_pipeline(_cfg(), run_dir, project)
    scan = run_dir.root / "scan"
    assert json.loads((scan / "config.result.json").read_text())["passed"] is True


def test_the_scan_stage_of_a_run_raises_the_background_failure(project, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_TRIVY_FAIL", "tree")
    run_dir = _run_dir(tmp_path / "run")
    skip = frozenset(name for name, _ in pipeline.STAGES if name != "scan")
    with pytest.raises(ScannerError, match="tree broke") as err:
        pipeline.run_pipeline(_cfg(), run_dir, skip=skip)
    assert err.value.exit_code == 11


@pytest.mark.parametrize("failing", ["train", "export"])
def test_a_run_that_fails_before_its_scan_stage_still_waits_for_the_scans(
    project, tmp_path, monkeypatch, failing
):
    import tfship.export
    import tfship.train

    def boom(cfg, run_dir, splits=None):
        raise ModelError(f"{failing} failed")

    # The project scans start with the train stage (or the export, when training is skipped);
    # this stage fails before the scan stage.
    module = tfship.train if failing == "train" else tfship.export
    monkeypatch.setattr(module, f"run_{failing}", boom)
    stages = [(name, stage) for name, stage in pipeline.STAGES if name in (failing, "scan")]
    monkeypatch.setattr(pipeline, "STAGES", stages)
    run_dir = _run_dir(tmp_path / "run")
    with pytest.raises(ModelError, match=f"{failing} failed"):
        pipeline.run_pipeline(_cfg(), run_dir)
    scan = run_dir.root / "scan"  # both finished (and recorded) before the run returned
    assert (scan / "config.result.json").is_file() and (scan / "secrets.result.json").is_file()


@pytest.mark.parametrize(
    ("where", "early"),
    [("outside", True), ("runs/local", True), ("out/local", False), (".", False)],
)
def test_project_scans_start_early_only_where_they_cannot_see_the_run(
    project, tmp_path, where, early
):
    root = tmp_path / "elsewhere" if where == "outside" else project / where
    tree = start_tree_scans(_cfg(), RunDir(root), project)
    assert (tree is not None) is early
    if tree is not None:
        tree.wait()


def test_no_early_scans_when_scanning_is_disabled(project, tmp_path):
    assert start_tree_scans(_cfg("scan.enabled=false"), RunDir(tmp_path / "run"), project) is None
