"""Checkpoint backup overhead: `run_train` on the demo with backup off vs on (target <= 5 %),
and the time to restore the demo's checkpoints from object storage on a fresh runner.

The store is moto_server (S3 stand-in) on 127.0.0.1, so network latency is near zero and the
figure isolates tfship's own cost: the agent process (tfship.backup.agent: boto3 start-up,
staging, hashing, uploads) competing for the 2 cores, and the final flush (included:
`run_train` returns only after `backup.close()`). moto_server's own CPU also lands on these
cores here (it is remote in production) and is reported apart. Runs alternate off/on so a busy
machine hurts both equally; medians are reported, for `run_train` and for the whole process
(TensorFlow's import included).

    .venv/bin/python benchmarks/backup_overhead.py [--repeats 7]
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
import resource
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
backup.BackupAgent.restore = timed("restore", backup.BackupAgent.restore)
backup.BackupAgent.close = timed("final_flush", backup.BackupAgent.close)
cfg = load_config("pipeline.yaml", overrides=sys.argv[2:])
t0, c0 = time.perf_counter(), time.process_time()
run_train(cfg, RunDir(__import__("pathlib").Path(sys.argv[1])))
child = resource.getrusage(resource.RUSAGE_CHILDREN)  # the agent, waited for by close()
print(json.dumps({"seconds": time.perf_counter() - t0, "cpu": time.process_time() - c0,
                  "agent_cpu": child.ru_utime + child.ru_stime, "parts": parts}))
"""


PARTS: list[dict[str, float]] = []


def train(run_dir: Path, sets: list[str], env: dict[str, str]) -> dict[str, float]:
    """run_train in a fresh process: its wall and CPU seconds, the agent's CPU seconds and
    the whole process's wall seconds."""
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", TRAIN, str(run_dir), *sets],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    process = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    PARTS.append(out["parts"])
    return {
        "wall": float(out["seconds"]),
        "cpu": float(out["cpu"]),
        "agent_cpu": float(out["agent_cpu"]),
        "process": process,
    }


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=7)
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
        off: list[dict[str, float]] = []
        on: list[dict[str, float]] = []
        moto_cpu = 0.0
        with tempfile.TemporaryDirectory() as tmp:
            for i in range(args.repeats):
                backup_on = [
                    *args.sets,
                    "backup.enabled=true",
                    f"backup.url=s3://{BUCKET}/bench",
                    f"backup.endpoint_url={endpoint}",
                    f"backup.prefix=run-{i}",
                ]
                # Alternate which goes first, so a load spike does not always hit one of them.
                for which in ("off", "on") if i % 2 == 0 else ("on", "off"):
                    if which == "off":
                        off.append(train(Path(tmp, f"off-{i}"), args.sets, env))
                    else:
                        c0 = cpu_seconds(moto.pid)
                        on.append(train(Path(tmp, f"on-{i}"), backup_on, env))
                        moto_cpu += cpu_seconds(moto.pid) - c0
                print(
                    f"  repeat {i + 1}: off {off[-1]['wall']:6.2f} s wall {off[-1]['cpu']:6.2f} s "
                    f"CPU   on {on[-1]['wall']:6.2f} s wall {on[-1]['cpu']:6.2f} s CPU "
                    f"(+ agent {on[-1]['agent_cpu']:.2f} s CPU)",
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

    def med(runs: list[dict[str, float]], key: str) -> float:
        return statistics.median(r[key] for r in runs)

    w_off, w_on = med(off, "wall"), med(on, "wall")
    # Each repeat runs off and on back to back, so the median of the per-repeat ratios follows
    # the machine's load drift less than the ratio of the two medians.
    ratios = [b["wall"] / a["wall"] for a, b in zip(off, on, strict=True)]
    overhead = (statistics.median(ratios) - 1) * 100
    p_off, p_on = med(off, "process"), med(on, "process")
    c_off, c_on, agent = med(off, "cpu"), med(on, "cpu"), med(on, "agent_cpu")
    n = args.repeats
    print(f"run_train, demo, backup off: wall {w_off:6.2f} s, CPU {c_off:6.2f} s (medians of {n})")
    print(
        f"run_train, demo, backup on:  wall {w_on:6.2f} s, CPU {c_on:6.2f} s "
        f"+ agent process {agent:.2f} s CPU"
    )
    print(
        f"wall overhead (median of the per-repeat ratios): {overhead:+.1f} %   target <= 5 %   "
        f"{'OK' if overhead <= 5 else 'OVER'}"
    )
    print(
        f"whole process (TF import included): off {p_off:.2f} s, on {p_on:.2f} s, "
        f"{(p_on - p_off) / p_off * 100:+.1f} %"
    )
    print(
        f"trainer CPU overhead: {(c_on - c_off) / c_off * 100:+.1f} %; moto_server (the store, "
        f"on the same cores here, remote in production) used {moto_cpu / n:.2f} s CPU per run"
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
