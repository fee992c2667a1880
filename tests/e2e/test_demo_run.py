"""`tfship run` on the built-in demo data, end to end, as the quick start runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory, repo_root: Path) -> tuple[Path, dict]:
    run_dir = tmp_path_factory.mktemp("demo") / "run"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TFSHIP_", "CI_", "GITHUB_"))}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tfship",
            "run",
            "--config",
            "pipeline.yaml",
            "--run-dir",
            str(run_dir),
            "--output",
            "json",
        ],
        cwd=repo_root,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return run_dir, json.loads(proc.stdout)


def test_run_writes_the_run_directory_described_in_the_design(demo_run: tuple[Path, dict]) -> None:
    run_dir, result = demo_run
    for name in ("config.resolved.yaml", "data.json", "train.json", "checkpoints", "tensorboard"):
        assert (run_dir / name).exists(), name
    assert list((run_dir / "tensorboard").rglob("events.out.tfevents.*"))
    versions = [p for p in (run_dir / "export").iterdir() if p.name.isdigit()]
    assert len(versions) == 1
    export = versions[0]
    assert (export / "saved_model.pb").is_file()
    assert (export / "assets.extra" / "tfship-manifest.json").is_file()
    assert (export / "assets.extra" / "tf_serving_warmup_requests").is_file()
    assert [s["name"] for s in result["stages"]][:3] == ["data", "train", "export"]


def test_exported_model_reaches_the_demo_accuracy_target(demo_run: tuple[Path, dict]) -> None:
    import tensorflow as tf

    from tfship.config import load_config
    from tfship.data import load_splits

    run_dir, _ = demo_run
    cfg = load_config(run_dir / "config.resolved.yaml", env={})
    splits = load_splits(cfg)
    export = next(p for p in (run_dir / "export").iterdir() if p.name.isdigit())
    serve = tf.saved_model.load(str(export)).signatures["serving_default"]
    out = serve(pixels=tf.constant(splits.x_test))
    accuracy = float(np.mean(out["class_id"].numpy() == splits.y_test))
    assert accuracy >= 0.95, accuracy
    probs = out["probabilities"].numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_a_second_run_resumes_instead_of_retraining(
    demo_run: tuple[Path, dict], repo_root: Path
) -> None:
    run_dir, _ = demo_run
    before = json.loads((run_dir / "train.json").read_text())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TFSHIP_", "CI_", "GITHUB_"))}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tfship",
            "train",
            "--config",
            "pipeline.yaml",
            "--run-dir",
            str(run_dir),
            "--output",
            "json",
        ],
        cwd=repo_root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    after = json.loads((run_dir / "train.json").read_text())
    assert after["steps"] == before["steps"]
    assert after["resumed_from_step"] == before["steps"]
