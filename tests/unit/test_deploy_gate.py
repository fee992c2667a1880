"""Deploy refuses a model the gate did not pass or did not judge, fails safe without a gate,
records every action inside its transaction, and keeps history. Offline (no server): fast."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tfship.config import load_config
from tfship.errors import DeployFailed, GateFailed, InfraError
from tfship.rundir import RunDir
from tfship.serving import actions
from tfship.serving.deploy import run_promote, stable_history
from tfship.serving.deploy_gate import check_gate
from tfship.serving.models_config import ModelState
from tfship.serving.repository import tree_digest
from tfship.serving.repository_local import LocalRepository
from tfship.serving.target import resolve


def _run(tmp_path: Path, gate: dict | None) -> RunDir:
    rd = RunDir(tmp_path)
    if gate is not None:
        rd.evaluation.mkdir(parents=True, exist_ok=True)
        (rd.evaluation / "gate.json").write_text(json.dumps(gate))
    return rd


def _export(rd: RunDir, version: int, created_at: str = "2025-01-01T00:00:00Z") -> Path:
    path = rd.export / str(version)
    (path / "assets.extra").mkdir(parents=True)
    (path / "saved_model.pb").write_bytes(b"graph %d %s" % (version, created_at.encode()))
    manifest = {"version": version, "signature": {}, "golden": {}, "created_at": created_at}
    (path / "assets.extra" / "tfship-manifest.json").write_text(json.dumps(manifest))
    return path


def _gate_for(export_dir: Path, verdict: str = "passed") -> dict:
    manifest = json.loads((export_dir / "assets.extra" / "tfship-manifest.json").read_text())
    return {
        "verdict": verdict,
        "override": None,
        "candidate": {
            "path": str(export_dir),
            "version": int(export_dir.name),
            "digest": tree_digest(export_dir),
            "manifest": manifest,
        },
    }


def test_no_gate_json_means_no_gate_ran_and_is_refused(tmp_path: Path) -> None:
    with pytest.raises(GateFailed, match="no evaluation gate ran") as err:
        check_gate(load_config(None), _run(tmp_path, None), allow_ungated=False)
    assert "--allow-ungated" in str(err.value)


def test_allow_ungated_lets_a_model_without_gate_through(tmp_path: Path) -> None:
    assert check_gate(load_config(None), _run(tmp_path, None), True) == "ungated (allowed)"
    cfg = load_config(None, overrides=["serving.allow_ungated=true"])
    assert check_gate(cfg, _run(tmp_path, None), False) == "ungated (allowed)"


@pytest.mark.parametrize("verdict", ["failed", "dry_run_failed", "disabled"])
def test_a_gate_that_did_not_pass_is_refused(tmp_path: Path, verdict: str) -> None:
    with pytest.raises(GateFailed, match=verdict):
        check_gate(load_config(None), _run(tmp_path, {"verdict": verdict, "override": None}), False)


@pytest.mark.parametrize("verdict", ["failed", "dry_run_failed", "disabled"])
def test_an_override_record_that_was_not_applied_does_not_make_a_gate_deployable(
    tmp_path: Path, verdict: str
) -> None:
    # gate.json records a given reason even when it did not apply (dry run, disabled, ...).
    override = {"reason": "ship it", "approver": "lead", "applied": False}
    gate = {"verdict": verdict, "run_mode": "dry_run", "override": override}
    with pytest.raises(GateFailed, match=f"'{verdict}'.*was not applied"):
        check_gate(load_config(None), _run(tmp_path, gate), False)


def test_only_passed_and_passed_with_override_are_deployable(tmp_path: Path) -> None:
    rd = _run(tmp_path, None)
    export_dir = _export(rd, 3)
    for verdict in ("passed", "passed_with_override"):
        _run(tmp_path, _gate_for(export_dir, verdict))
        assert check_gate(load_config(None), rd, False, export_dir, 3) == verdict


def test_a_gate_about_another_version_does_not_let_this_export_out(tmp_path: Path) -> None:
    rd = _run(tmp_path, None)
    judged = _export(rd, 3)
    _run(tmp_path, _gate_for(judged))
    newer = _export(rd, 4)
    with pytest.raises(GateFailed, match=r"judged .*version 3, not version 4"):
        check_gate(load_config(None), rd, False, newer, 4)


def test_a_gate_about_other_files_under_the_same_version_is_refused(tmp_path: Path) -> None:
    elsewhere = _export(RunDir(tmp_path / "other"), 3, created_at="2025-02-02T00:00:00Z")
    rd = _run(tmp_path / "run", _gate_for(elsewhere))
    here = _export(rd, 3)
    with pytest.raises(GateFailed, match="different files"):
        check_gate(load_config(None), rd, False, here, 3)
    gate = _gate_for(elsewhere)
    del gate["candidate"]["digest"]  # an older gate.json: the manifest still tells them apart
    _run(tmp_path / "run", gate)
    with pytest.raises(GateFailed, match="different manifest"):
        check_gate(load_config(None), rd, False, here, 3)


def test_stable_history_pushes_promotions_and_pops_rollbacks() -> None:
    def rec(action: str, before: int | None, after: int, status: str = "ok") -> dict:
        return {
            "action": action,
            "status": status,
            "labels_before": {"stable": before} if before else {},
            "labels_after": {"stable": after},
        }

    log = [
        rec("deploy", None, 1),
        rec("promote", 1, 2),
        rec("promote", 2, 3),
        rec("promote", 3, 4, status="failed"),
        rec("rollback", 3, 2),
    ]
    assert stable_history(log) == [1, 2]


# ---- records inside the transaction, retention after it (offline promote: no server) ----


def published(repo: LocalRepository, tmp_path: Path, version: int) -> None:
    """A version in the repository as publish leaves it: files, manifest, publish record."""
    src = tmp_path / "src" / str(version)
    (src / "assets.extra").mkdir(parents=True)
    (src / "saved_model.pb").write_bytes(b"graph %d" % version)
    golden = {"inputs": {"pixels": [[0.0]]}, "outputs": {"probabilities": [[1.0]]}}
    manifest = {"version": version, "signature": {}, "golden": golden}
    (src / "assets.extra" / "tfship-manifest.json").write_text(json.dumps(manifest))
    repo.publish("digits", version, src)


@pytest.fixture()
def canary_pending(tmp_path: Path):
    """An offline repository with stable 1 and an unpromoted canary 2 in models.config."""
    cfg = load_config(None, overrides=[f"serving.model_repository={tmp_path / 'repo'}"])
    target = resolve(cfg)
    for v in (1, 2):
        published(target.repository, tmp_path, v)
    target.apply(None, ModelState("digits", target.base_path, (1, 2), {"stable": 1, "canary": 2}))
    return cfg, RunDir(tmp_path / "run")


def _labels(cfg) -> dict:
    return dict(resolve(cfg).read()[1].labels)


def test_a_deploy_log_that_cannot_take_the_outcome_undoes_the_label_move(
    canary_pending, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg, rd = canary_pending
    append = LocalRepository.append_log

    def ok_records_fail(self, model, record):
        if record["status"] == "ok":
            raise InfraError("the deploy log is read-only")
        append(self, model, record)

    monkeypatch.setattr(LocalRepository, "append_log", ok_records_fail)
    with pytest.raises(DeployFailed, match=r"read-only.*stable still serves 1"):
        run_promote(cfg, rd, reason="looks fine", version=2)
    assert _labels(cfg) == {"canary": 2, "stable": 1}  # no record, so no move
    records = resolve(cfg).repository.read_log("digits")
    assert [(r["action"], r["status"]) for r in records] == [
        ("promote", "started"),
        ("promote", "failed"),
    ]
    assert records[0]["id"] == records[1]["id"]
    assert json.loads(rd.deploy_json.read_text())["status"] == "failed"


def test_a_deploy_log_that_cannot_be_written_stops_before_any_change(
    canary_pending, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg, rd = canary_pending

    def unwritable(self, model, record):
        raise InfraError("the deploy log is read-only")

    monkeypatch.setattr(LocalRepository, "append_log", unwritable)
    with pytest.raises(InfraError, match="read-only"):
        run_promote(cfg, rd, version=2)
    assert _labels(cfg) == {"canary": 2, "stable": 1}


def test_a_retention_failure_after_a_promote_is_a_warning_not_a_failed_promote(
    canary_pending, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg, rd = canary_pending

    def broken_retention(*args, **kwargs):
        raise InfraError("object store timed out")

    monkeypatch.setattr(actions, "apply_retention", broken_retention)
    result = run_promote(cfg, rd, reason="canary healthy", version=2)
    assert result.status == "ok" and _labels(cfg) == {"canary": 2, "stable": 2}
    assert len(result.warnings) == 1 and "object store timed out" in result.warnings[0]
    assert "WARNING" in result.render_text()
    doc = json.loads(rd.deploy_json.read_text())
    assert doc["status"] == "ok" and doc["warnings"] == result.warnings
    log = resolve(cfg).repository.read_log("digits")
    assert [(r["action"], r["status"]) for r in log] == [("promote", "started"), ("promote", "ok")]


def test_serving_image_is_pinned_identically_everywhere(repo_root: Path) -> None:
    from tfship.validate import TF_SERVING_IMAGE

    assert ":" in TF_SERVING_IMAGE and not TF_SERVING_IMAGE.endswith(":latest")
    for f in ("docker/serving/compose.yaml", "docker/serving/k8s/deployment.yaml"):
        text = (repo_root / f).read_text()
        assert f"image: {TF_SERVING_IMAGE}" in text, f
