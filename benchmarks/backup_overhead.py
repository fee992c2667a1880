"""Checkpoint backup overhead: `run_train` on the demo with backup off vs on (target <= 5 %),
and the time to restore the demo's checkpoints from object storage on a fresh runner.

The store is moto_server (S3 stand-in) on 127.0.0.1, so network latency is near zero and the
figure isolates tfship's own cost: staging, hashing, the uploader thread competing for CPU, and
the final flush (included: `run_train` returns only after `backup.close()`). Runs alternate
off/on so a busy machine hurts both equally; medians are reported.

    .venv/bin/python benchmarks/backup_overhead.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for tests.helpers (run as a script from anywhere)

from tests.helpers.moto import moto_server  # noqa: E402

BUCKET = "tfship-bench"
AWS = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
}

# Runs inside a fresh interpreter: TensorFlow's import is outside the timed region.
TRAIN = """
import json, sys, time
from tfship.config import load_config
from tfship.rundir import RunDir
from tfship.train import run_train
import tfship.backup as backup
parts = {"open": 0.0, "restore": 0.0, "final_flush": 0.0}
def timed(name, fn):
    def wrapper(*args, **kwargs):
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            parts[name] += time.perf_counter() - t
    return wrapper
# Attribute the fixed costs (client + listing at start, waiting for the last upload at the end).
backup.open_training_backup = timed("open", backup.open_training_backup)
backup.TrainingBackup.restore = timed("restore", backup.TrainingBackup.restore)
backup.TrainingBackup.close = timed("final_flush", backup.TrainingBackup.close)
cfg = load_config("pipeline.yaml", overrides=sys.argv[2:])
t0, c0 = time.perf_counter(), time.process_time()
run_train(cfg, RunDir(__import__("pathlib").Path(sys.argv[1])))
print(json.dumps({"seconds": time.perf_counter() - t0, "cpu": time.process_time() - c0,
                  "parts": parts}))
"""


PARTS: list[dict[str, float]] = []


def train(run_dir: Path, sets: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of run_train in a fresh process."""
    proc = subprocess.run(
        [sys.executable, "-c", TRAIN, str(run_dir), *sets],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    PARTS.append(out["parts"])
    return float(out["seconds"]), float(out["cpu"])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="SECTION.FIELD=VALUE",
        help="config override for both runs, e.g. train.epochs=45 (a longer, more typical run)",
    )
    args = ap.parse_args()
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", TF_ENABLE_ONEDNN_OPTS="0", **AWS)
    os.environ.update(AWS)
    with moto_server() as moto:
        import boto3

        endpoint = moto.url
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=BUCKET)
        off: list[tuple[float, float]] = []
        on: list[tuple[float, float]] = []
        moto_cpu = 0.0
        with tempfile.TemporaryDirectory() as tmp:
            for i in range(args.repeats):
                off.append(train(Path(tmp, f"off-{i}"), args.sets, env))
                c0 = cpu_seconds(moto.pid)
                on.append(
                    train(
                        Path(tmp, f"on-{i}"),
                        [
                            *args.sets,
                            "backup.enabled=true",
                            f"backup.url=s3://{BUCKET}/bench",
                            f"backup.endpoint_url={endpoint}",
                            f"backup.prefix=run-{i}",
                        ],
                        env,
                    )
                )
                moto_cpu += cpu_seconds(moto.pid) - c0
                print(
                    f"  repeat {i + 1}: off {off[-1][0]:6.2f} s wall {off[-1][1]:6.2f} s CPU   "
                    f"on {on[-1][0]:6.2f} s wall {on[-1][1]:6.2f} s CPU",
                    flush=True,
                )
            from tfship.backup import open_store, restore_latest

            store = open_store(f"s3://{BUCKET}/bench/run-0", endpoint_url=endpoint)
            objects = store.list()
            size = sum(objects.values())
            restores = []
            for i in range(5):
                t0 = time.perf_counter()
                step = restore_latest(Path(tmp, f"fresh-{i}", "checkpoints"), store)
                restores.append(time.perf_counter() - t0)
    # min: on a shared machine the fastest run is the one least disturbed by other load.
    w_off, w_on = min(w for w, _ in off), min(w for w, _ in on)
    c_off, c_on = statistics.median(c for _, c in off), statistics.median(c for _, c in on)
    overhead = (w_on - w_off) / w_off * 100
    print(
        f"run_train, demo, backup off: wall {w_off:6.2f} s (min of {args.repeats}), "
        f"CPU {c_off:6.2f} s (median)"
    )
    print(
        f"run_train, demo, backup on:  wall {w_on:6.2f} s (min of {args.repeats}), "
        f"CPU {c_on:6.2f} s (median)"
    )
    print(f"wall overhead: {overhead:+.1f} %   target <= 5 %   {'OK' if overhead <= 5 else 'OVER'}")
    print(
        f"trainer CPU overhead: {(c_on - c_off) / c_off * 100:+.1f} %; moto_server (the store, "
        f"on the same cores here, remote in production) used {moto_cpu / args.repeats:.2f} s "
        "CPU per run"
    )
    on_parts = PARTS[1::2]
    fixed = {k: statistics.median(p[k] for p in on_parts) for k in on_parts[0]}
    print(
        "fixed costs with backup on (median): "
        + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in fixed.items())
    )
    print(
        f"remote after training: {len(objects)} objects, {size / 1e6:.2f} MB "
        f"(latest generations + best/)"
    )
    print(
        f"restore_latest on an empty dir (step {step}): median "
        f"{statistics.median(restores) * 1000:.0f} ms over 5"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
