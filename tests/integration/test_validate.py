"""`tfship validate`: the export served by a model server before anything is pushed.

The binary launcher runs TFSHIP_MODEL_SERVER. When it is not set (the usual case here), each
test points it at a two-line shell script that starts the TF Serving stand-in from the
repository root, so validate starts it exactly as it would start a real
``tensorflow_model_server``: a path, followed by the real binary's flags. Docker is kept out of
the way (DOCKER_HOST points at nothing) so `--launcher auto` never picks an engine that happens
to be around.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
from pathlib import Path

import pytest

from tests.integration import serving_exports as se
from tests.tfserving_standin.fixture import REPO_ROOT, start_model_server
from tfship.cli import main
from tfship.config import load_config
from tfship.errors import ExitCode, InfraError, ModelError
from tfship.rundir import RunDir
from tfship.serving import golden
from tfship.validate import run_validate

pytestmark = pytest.mark.integration
OVERRIDES = {
    "serving.latency_requests": 20,
    "serving.load_deadline_seconds": 120,
    "serving.poll_interval_seconds": 0.1,
    "serving.connect_retries": 1,
    "serving.retry_backoff_seconds": 0.05,
}


def _cfg(**extra: object):
    sets = {**OVERRIDES, **extra}
    return load_config(None, overrides=[f"{k}={v}" for k, v in sets.items()])


@pytest.fixture(scope="module")
def model_server_binary(tmp_path_factory: pytest.TempPathFactory) -> str:
    """TFSHIP_MODEL_SERVER as given, else an executable that runs the stand-in."""
    configured = os.environ.get("TFSHIP_MODEL_SERVER", "").strip()
    if configured:
        return configured
    script = tmp_path_factory.mktemp("bin") / "tensorflow_model_server"
    script.write_text(
        "#!/bin/sh\n"
        "# The TF Serving stand-in (a test double), started like the real binary.\n"
        f"cd {shlex.quote(str(REPO_ROOT))} || exit 1\n"
        f'exec {shlex.quote(sys.executable)} -m tests.tfserving_standin "$@"\n'
    )
    script.chmod(0o755)
    return str(script)


@pytest.fixture(autouse=True)
def _no_docker(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, RunDir]:
    root = tmp_path_factory.mktemp("exports")
    good = se.export_good(root, 1, seed=1)
    return {
        "good": good,
        "missing variables": se.export_missing_variables(good, root, 4),
        "NaN outputs": se.export_nan_outputs(good, root, 6),
    }


def _copy_run(run_dir: RunDir, tmp_path: Path) -> RunDir:
    """Each test writes validation.json into its own copy of the run directory."""
    copy = RunDir(tmp_path / "run")
    shutil.copytree(run_dir.export, copy.export)
    return copy


def test_validate_starts_the_binary_waits_available_and_records_cold_start_and_latency(
    exports, model_server_binary: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TFSHIP_MODEL_SERVER", model_server_binary)
    run_dir = _copy_run(exports["good"], tmp_path)

    result = run_validate(_cfg(), run_dir)  # auto: no Docker engine -> the binary

    assert (result.mode, result.status, result.version) == ("binary", "passed", 1)
    assert result.server.startswith(model_server_binary)
    assert 0 < result.cold_start_seconds < 120
    assert result.warmup_requests >= 1  # replayed over gRPC from assets.extra
    assert result.golden.ok and result.golden.max_abs_diff <= result.golden.tolerance
    assert 0 < result.latency_ms["p50"] <= result.latency_ms["p95"]
    assert result.latency_ms["requests"] == 20
    written = json.loads(run_dir.validation_json.read_text())
    assert written["status"] == "passed" and written["mode"] == "binary"
    assert written["cold_start_seconds"] == result.cold_start_seconds
    assert written["latency_ms"] == result.latency_ms
    assert written["warmup_requests"] == result.warmup_requests


def test_validate_checks_the_export_on_an_existing_server_url(exports, tmp_path: Path) -> None:
    run_dir = _copy_run(exports["good"], tmp_path)
    cfg = _cfg()
    model = cfg.project.model_name
    base = tmp_path / "served" / model
    shutil.copytree(golden.latest_export(run_dir.export), base / "1")
    with start_model_server(
        tmp_path / "server",
        model_name=model,
        base_path=base,
        extra_flags=["--max_num_load_retries=0"],
    ) as server:
        cfg = _cfg(**{"serving.grpc_target": server.grpc_target})
        result = run_validate(cfg, run_dir, launcher="url", server_url=server.rest_url)

    assert (result.mode, result.server, result.status) == ("url", server.rest_url, "passed")
    assert result.golden.ok and result.warmup_requests >= 1
    assert result.cold_start_seconds is not None and result.latency_ms["p95"] > 0
    assert json.loads(run_dir.validation_json.read_text())["mode"] == "url"


def test_without_any_server_validate_falls_back_to_the_offline_loader_check_and_says_so(
    exports, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("TFSHIP_MODEL_SERVER", raising=False)
    run_dir = _copy_run(exports["good"], tmp_path)

    result = run_validate(_cfg(), run_dir)

    assert (result.mode, result.server, result.status) == ("offline", "none", "passed")
    assert "no model server available" in result.note and "C++ loader" in result.note
    assert result.offline_check.cpp_loader_seconds > 0
    assert result.cold_start_seconds is None and result.latency_ms == {}
    written = json.loads(run_dir.validation_json.read_text())
    assert written["mode"] == "offline" and "no model server available" in written["note"]


def test_asking_for_a_launcher_that_is_not_available_is_an_infra_error(
    exports, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("TFSHIP_MODEL_SERVER", raising=False)
    with pytest.raises(InfraError, match="TFSHIP_MODEL_SERVER is not set"):
        run_validate(_cfg(), _copy_run(exports["good"], tmp_path), launcher="binary")


@pytest.mark.parametrize(
    ("broken", "says"),
    [("missing variables", "could not load the export"), ("NaN outputs", "golden")],
)
def test_a_broken_export_fails_validation_with_the_model_exit_code(
    exports,
    model_server_binary: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    broken: str,
    says: str,
) -> None:
    monkeypatch.setenv("TFSHIP_MODEL_SERVER", model_server_binary)
    monkeypatch.chdir(tmp_path)  # no ./pipeline.yaml: defaults + the flags below
    run_dir = _copy_run(exports[broken], tmp_path)
    sets = [a for k, v in OVERRIDES.items() for a in ("--set", f"{k}={v}")]

    code = main(["validate", "--run-dir", str(run_dir.root), "--launcher", "binary", *sets])

    assert code == ExitCode.MODEL == ModelError.exit_code
    assert says in capsys.readouterr().err
    written = json.loads(run_dir.validation_json.read_text())
    assert written["status"] == "failed" and written["mode"] == "binary"
    if broken == "NaN outputs":
        assert written["golden"]["ok"] is False
    else:
        assert says in written["note"]
