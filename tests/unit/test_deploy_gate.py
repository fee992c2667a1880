"""Deploy refuses a model the gate did not pass, fails safe without a gate, and keeps history."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tfship.config import load_config
from tfship.errors import GateFailed
from tfship.rundir import RunDir
from tfship.serving.deploy import check_gate, stable_history


def _run(tmp_path: Path, gate: dict | None) -> RunDir:
    rd = RunDir(tmp_path)
    if gate is not None:
        rd.evaluation.mkdir(parents=True, exist_ok=True)
        (rd.evaluation / "gate.json").write_text(json.dumps(gate))
    return rd


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


def test_a_recorded_override_lets_a_failed_gate_deploy(tmp_path: Path) -> None:
    gate = {"verdict": "failed", "override": {"reason": "new label set", "approver": "lead"}}
    assert check_gate(load_config(None), _run(tmp_path, gate), False) == "override"
    ok = {"verdict": "passed_with_override", "override": {"reason": "x"}}
    assert check_gate(load_config(None), _run(tmp_path, ok), False) == "passed_with_override"


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


def test_serving_image_is_pinned_identically_everywhere(repo_root: Path) -> None:
    from tfship.validate import TF_SERVING_IMAGE

    assert ":" in TF_SERVING_IMAGE and not TF_SERVING_IMAGE.endswith(":latest")
    for f in ("docker/serving/compose.yaml", "docker/serving/k8s/deployment.yaml"):
        text = (repo_root / f).read_text()
        assert f"image: {TF_SERVING_IMAGE}" in text, f
