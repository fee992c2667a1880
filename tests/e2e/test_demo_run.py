"""`tfship run` on the built-in demo data, end to end, as the quick start runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tfship.config.trust import CI_MARKERS

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def tfship(repo_root: Path, *args: str, timeout: float = 900) -> dict:
    """Run the CLI as a user would (fresh process, no ambient TFSHIP/CI variables)."""
    # A module-scoped fixture runs before conftest's per-test cleanup: drop the CI markers too,
    # or `.ci/run` (CI=true) would make this a CI job with CI's stricter rules.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("TFSHIP_", "CI_", "GITHUB_")) and k not in CI_MARKERS
    }
    proc = subprocess.run(
        [sys.executable, "-m", "tfship", *args, "--config", "pipeline.yaml", "--output", "json"],
        cwd=repo_root,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout)


def exported_version(run_dir: Path) -> str:
    (version,) = [p.name for p in (run_dir / "export").iterdir() if p.name.isdigit()]
    return version


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory, repo_root: Path) -> tuple[Path, Path, dict]:
    tmp = tmp_path_factory.mktemp("demo")
    run_dir, models = tmp / "run", tmp / "models"
    result = tfship(
        repo_root, "run", "--run-dir", str(run_dir), "--set", f"serving.model_repository={models}"
    )
    return run_dir, models, result


def test_run_writes_the_run_directory_described_in_the_design(
    demo_run: tuple[Path, Path, dict],
) -> None:
    run_dir, _, result = demo_run
    for name in ("config.resolved.yaml", "data.json", "train.json", "checkpoints", "tensorboard"):
        assert (run_dir / name).exists(), name
    assert list((run_dir / "tensorboard").rglob("events.out.tfevents.*"))
    versions = [p for p in (run_dir / "export").iterdir() if p.name.isdigit()]
    assert len(versions) == 1
    extra = versions[0] / "assets.extra"
    assert (versions[0] / "saved_model.pb").is_file()
    assert (extra / "tfship-manifest.json").is_file()
    assert (extra / "tfship-data-manifest.json").is_file()
    assert (extra / "tf_serving_warmup_requests").is_file()
    for name in ("gate.json", "metrics.json", "report.md", "confusion.png"):
        assert (run_dir / "evaluation" / name).is_file(), name
    assert (run_dir / "deploy.json").is_file()
    stages = [s["name"] for s in result["stages"]]
    assert stages == ["data", "train", "export", "scan", "evaluate", "deploy"]


def test_the_gate_passes_and_the_model_is_published_as_stable(
    demo_run: tuple[Path, Path, dict],
) -> None:
    run_dir, models, _ = demo_run
    gate = json.loads((run_dir / "evaluation" / "gate.json").read_text())
    assert gate["verdict"] == "passed"
    version = exported_version(run_dir)
    assert (models / "digits" / version / "saved_model.pb").is_file()
    config = (models / "models.config").read_text()
    assert 'key: "stable"' in config and f"value: {version}" in config


def test_exported_model_reaches_the_demo_accuracy_target(
    demo_run: tuple[Path, Path, dict],
) -> None:
    import tensorflow as tf

    from tfship.config import load_config
    from tfship.data import load_splits

    run_dir, _, _ = demo_run
    cfg = load_config(run_dir / "config.resolved.yaml", env={})
    splits = load_splits(cfg)
    export = run_dir / "export" / exported_version(run_dir)
    serve = tf.saved_model.load(str(export)).signatures["serving_default"]
    out = serve(pixels=tf.constant(splits.x_test["pixels"]))
    accuracy = float(np.mean(out["class_id"].numpy() == splits.y_test))
    assert accuracy >= 0.95, accuracy
    np.testing.assert_allclose(out["probabilities"].numpy().sum(axis=1), 1.0, atol=1e-5)


def test_the_task_seam_left_the_digits_demo_outputs_unchanged(
    demo_run: tuple[Path, Path, dict], repo_root: Path
) -> None:
    # Recorded by the last tfship before the task seam, same config and seed: the same golden
    # rows, the same probabilities and classes (bit-identical on the machine that recorded it;
    # a small tolerance allows another CPU's float rounding).
    before = json.loads(
        (repo_root / "tests" / "fixtures" / "digits_golden_before_task_seam.json").read_text()
    )
    run_dir, _, _ = demo_run
    export = run_dir / "export" / exported_version(run_dir)
    golden = json.loads((export / "assets.extra" / "tfship-manifest.json").read_text())["golden"]
    assert golden["inputs"] == before["inputs"]
    assert golden["outputs"]["class_id"] == before["outputs"]["class_id"]
    np.testing.assert_allclose(
        golden["outputs"]["probabilities"], before["outputs"]["probabilities"], atol=1e-5
    )
    assert golden["outputs"]["class_name"] == [str(c) for c in before["outputs"]["class_id"]]


def test_a_second_train_resumes_instead_of_retraining(
    demo_run: tuple[Path, Path, dict], repo_root: Path
) -> None:
    run_dir, _, _ = demo_run
    before = json.loads((run_dir / "train.json").read_text())
    tfship(repo_root, "train", "--run-dir", str(run_dir), timeout=600)
    after = json.loads((run_dir / "train.json").read_text())
    assert after["steps"] == before["steps"]
    assert after["resumed_from_step"] == before["steps"]
