"""Training in real processes: strategies, multi-worker, kill -9 / SIGTERM / NaN behaviour.

Each test starts `python -m tfship train` in a subprocess: TensorFlow's devices and collectives
can be configured only once per process, and exit codes are part of the contract.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.integration]

# Small but real: the demo digits, a few hundred examples, a handful of steps.
SMALL = ["data.limit=400", "train.progress=log", "train.log_every_steps=1"]
TIMEOUT = 240


def train_cmd(run_dir: Path, *overrides: str) -> list[str]:
    cmd = [sys.executable, "-m", "tfship", "train", "--output", "json", "--run-dir", str(run_dir)]
    for item in (*SMALL, *overrides):
        cmd += ["--set", item]
    return cmd


def child_env(tf_config: dict | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    env.update(TF_CPP_MIN_LOG_LEVEL="3", TF_ENABLE_ONEDNN_OPTS="0", PYTHONUNBUFFERED="1")
    if tf_config is not None:
        env["TF_CONFIG"] = json.dumps(tf_config)
    return env


def run(
    cmd: list[str], cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        cmd, cwd=cwd, env=env or child_env(), capture_output=True, text=True, timeout=TIMEOUT
    )


def latest_step(ckpt_dir: Path) -> int | None:
    state = ckpt_dir / "checkpoint"
    if not state.is_file():
        return None
    for line in state.read_text().splitlines():
        if line.startswith("model_checkpoint_path:"):
            return int(line.split('"')[1].rsplit("-", 1)[1])
    return None


def wait_for_checkpoint(proc: subprocess.Popen, ckpt_dir: Path, at_least: int) -> int:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        step = latest_step(ckpt_dir)
        if step is not None and step >= at_least:
            return step
        if proc.poll() is not None:
            _, err = proc.communicate()
            pytest.fail(f"training ended (exit {proc.returncode}) before step {at_least}:\n{err}")
        time.sleep(0.05)
    proc.kill()
    pytest.fail(f"no checkpoint at step >= {at_least} within {TIMEOUT} s")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_table(path: Path, rows: int = 400) -> Path:
    """A binary table with a number, a category (with gaps) and a short text per row."""
    rng = np.random.default_rng(3)
    amount = rng.gamma(2.0, 40.0, rows)
    country = rng.choice(["de", "fr", "us", ""], rows)
    words = rng.choice(["refund", "gift", "late", "urgent", "card", "thanks"], (rows, 4))
    label = (amount / 80 + (country == "us") + rng.normal(0, 0.5, rows) > 1.5).astype(int)
    lines = ["amount,country,note,label"] + [
        f"{'' if i % 17 == 0 else f'{a:.2f}'},{c},{' '.join(w)},{y}"
        for i, (a, c, w, y) in enumerate(zip(amount, country, words, label, strict=True))
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def data_overrides(kind: str, tmp_path: Path) -> list[str]:
    """Digits (one image input) or a table (named numeric, categorical and text inputs)."""
    if kind == "digits":
        return []
    csv = write_table(tmp_path / "table.csv")
    return ["data.source=csv", f"data.path={csv}", "task.type=binary", "data.limit=null"]


@pytest.mark.parametrize("data", ["digits", "table"])
def test_mirrored_strategy_on_two_logical_cpu_devices_trains_with_two_replicas(tmp_path, data):
    run_dir = tmp_path / "run"
    extra = data_overrides(data, tmp_path)
    cmd = train_cmd(run_dir, "train.cpu_logical_devices=2", "train.max_steps=4", *extra)
    proc = run(cmd, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["strategy"] == "MirroredStrategy"
    assert result["replicas"] == 2
    assert result["global_batch_size"] == 2 * 64
    assert result["steps"] == 4
    assert json.loads((run_dir / "train.json").read_text())["replicas"] == 2


@pytest.mark.parametrize("data", ["digits", "table"])
def test_two_worker_processes_train_in_sync_and_only_the_chief_writes(tmp_path, data):
    workers = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    extra = data_overrides(data, tmp_path)
    procs = []
    for index in range(2):
        cfg = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        cmd = train_cmd(
            tmp_path / f"worker{index}", "train.max_steps=6", "checkpoint.every_steps=2", *extra
        )
        procs.append(
            subprocess.Popen(
                cmd,
                cwd=tmp_path,
                env=child_env(cfg),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    outputs = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=TIMEOUT)
            assert p.returncode == 0, err
            outputs.append(json.loads(out))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    chief, other = outputs
    assert chief["strategy"] == other["strategy"] == "MultiWorkerMirroredStrategy"
    assert chief["replicas"] == other["replicas"] == 2
    assert chief["workers"] == 2
    assert chief["steps"] == other["steps"] == 6
    assert chief["chief"] and not other["chief"]
    # Same all-reduced gradients on both workers: bit-identical final weights.
    assert chief["weights_sha256"] == other["weights_sha256"]
    assert chief["metrics"] == other["metrics"]
    assert latest_step(tmp_path / "worker0" / "checkpoints") == 6
    assert (tmp_path / "worker0" / "train.json").is_file()
    written = list((tmp_path / "worker1").rglob("*")) if (tmp_path / "worker1").exists() else []
    assert written == []


def test_kill_9_then_relaunch_resumes_from_the_last_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    cmd = train_cmd(
        run_dir,
        "data.limit=600",
        "train.per_replica_batch_size=32",
        "train.epochs=20",  # 13 steps per epoch, 260 in all: long enough to kill mid-way
        "checkpoint.every_steps=3",
    )
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        wait_for_checkpoint(proc, run_dir / "checkpoints", at_least=6)
    finally:
        proc.kill()  # SIGKILL: no handler, no final save
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    # The newest complete generation on disk: a kill between writing a generation's index and
    # updating the `checkpoint` state file leaves the state file one generation behind, and
    # resuming rightly takes the newer one.
    from tfship.checkpoint_names import step_of
    from tfship.checkpoints import generations

    newest = generations(run_dir / "checkpoints")
    killed_at = step_of(newest[0]) if newest else None
    assert killed_at is not None and killed_at < 260

    relaunch = run(cmd, cwd=tmp_path)
    assert relaunch.returncode == 0, relaunch.stderr
    result = json.loads(relaunch.stdout)
    assert result["resumed_from_step"] == killed_at
    assert result["resumed_optimizer_iterations"] == killed_at
    assert result["steps"] == result["total_steps"] == 260
    assert result["optimizer_iterations"] == 260

    # The finished model is usable: it loads for export and classifies held-out digits.
    from tfship.checkpoints import restore_for_export
    from tfship.config import load_config
    from tfship.data import load_splits
    from tfship.rundir import RunDir

    cfg = load_config(run_dir / "config.resolved.yaml")
    splits = load_splits(cfg)
    model, info = restore_for_export(cfg, RunDir(run_dir), which="latest", splits=splits)
    assert info["step"] == 260
    predicted = model.predict(splits.x_test["pixels"], verbose=0).argmax(-1)
    accuracy = float((predicted == splits.y_test).mean())
    assert accuracy > 0.8


def test_sigterm_saves_a_checkpoint_and_exits_with_the_resumable_code(tmp_path):
    run_dir = tmp_path / "run"
    cmd = train_cmd(
        run_dir,
        "data.limit=600",
        "train.per_replica_batch_size=32",
        "train.epochs=40",
        "checkpoint.every_steps=5",
    )
    proc = subprocess.Popen(
        cmd,
        cwd=tmp_path,
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_checkpoint(proc, run_dir / "checkpoints", at_least=5)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 75, err
    assert "SIGTERM received: saved a checkpoint at step" in err
    record = json.loads((run_dir / "train.json").read_text())
    assert record["status"] == "preempted"
    # The save happened at the step the loop stopped, not at an earlier periodic one.
    assert latest_step(run_dir / "checkpoints") == record["steps"]


def test_nan_loss_exits_5_and_keeps_the_last_good_checkpoint(tmp_path):
    import tensorflow as tf

    run_dir = tmp_path / "run"
    # Adam moves every weight by ~lr on the first step: 1e18 overflows the next forward pass.
    proc = run(
        train_cmd(run_dir, "train.learning_rate=1e18", "checkpoint.every_steps=1"), cwd=tmp_path
    )
    assert proc.returncode == 5, proc.stderr
    assert "training diverged at step" in proc.stderr
    assert "last good checkpoint (step" in proc.stderr
    record = json.loads((run_dir / "train.json").read_text())
    assert record["status"] == "diverged"
    kept = latest_step(run_dir / "checkpoints")
    assert kept is not None and kept < record["steps"]
    reader = tf.train.load_checkpoint(str(run_dir / "checkpoints" / f"ckpt-{kept}"))
    for name, dtype in reader.get_variable_to_dtype_map().items():
        if dtype.is_floating:
            assert np.isfinite(reader.get_tensor(name)).all(), name
