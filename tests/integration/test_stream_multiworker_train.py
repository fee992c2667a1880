"""`tfship train` on streamed shards with two MultiWorkerMirroredStrategy worker processes on
127.0.0.1 (issue 16: sharding under tf.distribute, resume): FILE sharding when there are at
least as many shards as input pipelines, DATA otherwise; both workers run the same steps and end
with the same weights; and a run preempted by SIGTERM (sent to one worker: the flag travels to
the other through the loop's all-reduce) and relaunched ends bit-identical to an uninterrupted
one, which it can only do if it trained on the same batches in the same order.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import stream_shards
from tests.integration.test_training import free_port, latest_step

pytestmark = [pytest.mark.slow, pytest.mark.integration]

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 120

CONFIG = """
version: 1
project: {{name: mw, model_name: mw}}
data:
  source: tfrecord
  path: {path}
  label: y
  features: {{v: {{kind: numeric, shape: [3]}}}}
  stream: {{hash_key: id, hash_key_dtype: int64, cycle_length: 4}}
  shuffle_buffer: 64
model: {{builder: "tests.integration.test_stream_training:small_model"}}
train: {{epochs: 3, per_replica_batch_size: 8, steps_per_execution: 1, progress: none}}
checkpoint: {{every_steps: 2, keep: 2{extra}}}
"""


def _start(config: Path, run_dirs: list[Path], workers: list[str]) -> list[subprocess.Popen]:
    procs = []
    for index, run_dir in enumerate(run_dirs):
        env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
        env.update(
            TF_CPP_MIN_LOG_LEVEL="3",
            TF_ENABLE_ONEDNN_OPTS="0",
            PYTHONUNBUFFERED="1",
            PYTHONFAULTHANDLER="1",  # SIGABRT on a hang prints every thread's stack
            TF_CONFIG=json.dumps(
                {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
            ),
        )
        cmd = [sys.executable, "-m", "tfship", "train", "--config", str(config)]
        cmd += ["--run-dir", str(run_dir), "--output", "json"]
        # Logs go to files: a pipe nobody drains while waiting on the other worker would fill
        # and block this one, and a blocked worker stalls the other's collectives.
        with open(f"{run_dir}.out", "w") as out, open(f"{run_dir}.err", "w") as err:
            procs.append(subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=err))
    return procs


def _logs(proc: subprocess.Popen) -> tuple[str, str]:
    run_dir = proc.args[proc.args.index("--run-dir") + 1]
    return Path(f"{run_dir}.out").read_text(), Path(f"{run_dir}.err").read_text()


def _finish(procs: list[subprocess.Popen]) -> list[tuple[int, str, str]]:
    """Every worker's (exit code, stdout, stderr); a worker still running after TIMEOUT fails
    the test with every worker's log (a hang is a failure, not a wait)."""
    deadline = time.monotonic() + TIMEOUT
    while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
        time.sleep(0.05)
    hung = [i for i, p in enumerate(procs) if p.poll() is None]
    for i in hung:
        procs[i].send_signal(signal.SIGABRT)  # faulthandler: the stacks, then the process ends
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    out = [(p.returncode, *_logs(p)) for p in procs]
    if hung:
        logs = "\n".join(
            f"--- worker {i} (exit {c}):\n{err[-2500:]}" for i, (c, _, err) in enumerate(out)
        )
        pytest.fail(f"worker(s) {hung} still running after {TIMEOUT} s:\n{logs}")
    return out


def _train(config: Path, run_dirs: list[Path]) -> list[dict]:
    """Train to the end; each worker's result, with its log under "stderr"."""
    workers = [f"127.0.0.1:{free_port()}" for _ in run_dirs]
    results = []
    for code, stdout, stderr in _finish(_start(config, run_dirs, workers)):
        assert code == 0, stderr[-3000:]
        results.append({**json.loads(stdout), "stderr": stderr})
    return results


def _config(tmp_path: Path, shards: Path, name: str, checkpoints: Path | None = None) -> Path:
    """`checkpoints`: a checkpoint.dir every worker reads (what resuming needs); None: each
    worker's own run directory (only the chief's holds checkpoints)."""
    path = tmp_path / f"{name}.yaml"
    extra = f", dir: {checkpoints}" if checkpoints else ""
    path.write_text(CONFIG.format(path=str(shards / "part-*.tfrecord"), extra=extra))
    return path


def _wait_for_checkpoint(procs: list[subprocess.Popen], checkpoints: Path) -> None:
    """Until the chief has saved a checkpoint at step >= 2: both workers are in the loop."""
    deadline = time.monotonic() + TIMEOUT
    while (latest_step(checkpoints) or 0) < 2:
        if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
            for p in procs:
                p.kill()
            pytest.fail(f"no checkpoint before the workers ended: {_finish(procs)}")
        time.sleep(0.02)


def _preempt(config: Path, run_dirs: list[Path], checkpoints: Path) -> int:
    """Start the workers, SIGTERM the non-chief once a checkpoint exists (the flag reaches the
    chief through the loop's all-reduce); both must exit 75. The step they stopped at."""
    procs = _start(config, run_dirs, [f"127.0.0.1:{free_port()}" for _ in run_dirs])
    _wait_for_checkpoint(procs, checkpoints)
    procs[1].send_signal(signal.SIGTERM)
    stopped = _finish(procs)
    assert [code for code, _, _ in stopped] == [75, 75], [err[-2000:] for _, _, err in stopped]
    stop = latest_step(checkpoints)
    assert stop is not None and stop >= 2
    return stop


def test_two_workers_with_many_shards_shard_by_file_and_resume_exactly(tmp_path: Path) -> None:
    shards = tmp_path / "shards"
    stream_shards.write_tfrecords(shards, 8, 40)  # 320 examples in 8 shards: FILE sharding
    config = _config(tmp_path, shards, "file")

    straight = _train(config, [tmp_path / "straight0", tmp_path / "straight1"])
    chief, other = straight
    assert chief["strategy"] == "MultiWorkerMirroredStrategy" and chief["replicas"] == 2
    assert chief["steps"] == other["steps"]
    assert chief["weights_sha256"] == other["weights_sha256"]
    assert "DATA sharding" not in chief["stderr"] + other["stderr"]
    total = chief["steps"]

    # Preempt, then relaunch both workers on the shared checkpoint directory.
    resume = _config(tmp_path, shards, "resume", checkpoints=tmp_path / "shared")
    run_dirs = [tmp_path / "resumed0", tmp_path / "resumed1"]
    stop = _preempt(resume, run_dirs, tmp_path / "shared" / "local")
    assert stop < total
    resumed = _train(resume, run_dirs)
    assert [r["steps"] for r in resumed] == [total, total]
    assert resumed[0]["resumed_from_step"] == stop
    # The same batches after the resume as without it: the same weights, bit for bit.
    assert resumed[0]["weights_sha256"] == resumed[1]["weights_sha256"] == chief["weights_sha256"]


def test_two_workers_with_one_shard_shard_by_data_and_train_in_sync(tmp_path: Path) -> None:
    shards = tmp_path / "shards"
    stream_shards.write_tfrecords(shards, 1, 160)  # one shard, two input pipelines: DATA
    config = _config(tmp_path, shards, "data")
    chief, other = _train(config, [tmp_path / "w0", tmp_path / "w1"])
    assert chief["replicas"] == other["replicas"] == 2
    assert chief["steps"] == other["steps"] > 0
    assert chief["weights_sha256"] == other["weights_sha256"]
    for worker in (chief, other):  # the warning says why DATA is slower, on every worker
        assert "only 1 file(s) for 2 input pipelines: DATA sharding" in worker["stderr"]


def test_workers_that_restored_different_steps_stop_with_a_clear_error_not_a_hang(
    tmp_path: Path,
) -> None:
    # Each worker's own run directory: only the chief's holds the checkpoint it resumes from,
    # the other worker would start at 0 and wait forever at the chief's first collective.
    shards = tmp_path / "shards"
    stream_shards.write_tfrecords(shards, 8, 40)
    config = _config(tmp_path, shards, "own-disks")
    run_dirs = [tmp_path / "w0", tmp_path / "w1"]
    _preempt(config, run_dirs, run_dirs[0] / "checkpoints")
    workers = [f"127.0.0.1:{free_port()}" for _ in run_dirs]
    done = _finish(_start(config, run_dirs, workers))
    assert [code for code, _, _ in done] == [3, 3], [err[-2000:] for _, _, err in done]
    for _, _, err in done:
        assert "do not all start from the same step" in err
        assert "checkpoint.dir on storage every worker" in err


def test_a_worker_that_dies_stops_the_other_with_an_infra_error_not_a_traceback(
    tmp_path: Path,
) -> None:
    shards = tmp_path / "shards"
    stream_shards.write_tfrecords(shards, 8, 40)
    config = _config(tmp_path, shards, "dies")
    run_dirs = [tmp_path / "w0", tmp_path / "w1"]
    procs = _start(config, run_dirs, [f"127.0.0.1:{free_port()}" for _ in run_dirs])
    _wait_for_checkpoint(procs, run_dirs[0] / "checkpoints")
    procs[1].kill()  # SIGKILL: no chance to save or say goodbye
    (code, _, err), _ = _finish(procs)
    assert code == 8, err[-3000:]
    assert "a collective with the other training workers failed" in err
    assert "Traceback" not in err
