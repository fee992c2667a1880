"""Checkpoint backup overhead: `tfship train` on the demo with backup off vs on (target <= 5 %),
and the time to restore the demo's checkpoints from object storage on a fresh runner.

Each run is a fresh process following the CLI's path: the backup agent starts before TensorFlow
is imported (its start-up overlaps that import), then `run_train` trains and closes it. Two
figures, each the median of the per-repeat on/off ratios: `run_train`'s wall time (training
alone: waiting for the agent's restore answer, competing with it for the cores, and the final
flush, since `run_train` returns only after `backup.close()`), and the whole process's wall time
(TensorFlow's import and the agent's start-up included), which is what the CI job takes.

The store is moto_server (S3 stand-in) on 127.0.0.1, so network latency is near zero and the
figures isolate tfship's own cost. moto_server's own CPU also lands on these cores here (it is
remote in production) and is reported apart. Runs alternate off/on so a busy machine hurts both
equally.

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
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for tests.helpers (run as a script from anywhere)

from tests.helpers.moto import moto_server  # noqa: E402

BUCKET = "tfship-bench"
AWS = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
}

# Runs inside a fresh interpreter, the way `tfship train` does (tfship.commands.train): the
# backup agent starts before TensorFlow is imported, then run_train trains and closes it.
TRAIN = """
import argparse, json, resource, sys, time
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
# Attribute the fixed costs (starting the agent, waiting for its restore answer, waiting for
# the last upload).
backup.open_training_backup = timed("open", backup.open_training_backup)
backup.BackupAgent.restore = timed("restore", backup.BackupAgent.restore)
backup.BackupAgent.close = timed("final_flush", backup.BackupAgent.close)
from tfship.commands.train import _handle
c0 = time.process_time()
result = _handle(argparse.Namespace(config="pipeline.yaml", overrides=sys.argv[2:],
                                    run_dir=sys.argv[1]))
child = resource.getrusage(resource.RUSAGE_CHILDREN)  # the agent, waited for by close()
print(json.dumps({"seconds": result.wall_seconds, "cpu": time.process_time() - c0,
                  "agent_cpu": child.ru_utime + child.ru_stime, "parts": parts}))
"""


def train(run_dir: Path, sets: list[str], env: dict[str, str]) -> dict[str, Any]:
    """`tfship train` in a fresh process: run_train's wall seconds, the process's CPU seconds
    (TensorFlow's import included), the agent's CPU seconds, the whole process's wall seconds
    and the fixed costs of the backup."""
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
    return {
        "parts": out["parts"],
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
        off: list[dict[str, Any]] = []
        on: list[dict[str, Any]] = []
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

    def med(runs: list[dict[str, Any]], key: str) -> float:
        return statistics.median(r[key] for r in runs)

    def overhead(key: str) -> float:
        # Each repeat runs off and on back to back, so the median of the per-repeat ratios
        # follows the machine's load drift less than the ratio of the two medians.
        ratios = [b[key] / a[key] for a, b in zip(off, on, strict=True)]
        return (statistics.median(ratios) - 1) * 100

    def verdict(pct: float) -> str:
        return f"{pct:+.1f} %   target <= 5 %   {'OK' if pct <= 5 else 'OVER'}"

    c_off, c_on, agent = med(off, "cpu"), med(on, "cpu"), med(on, "agent_cpu")
    n = args.repeats
    print(f"medians of {n} repeats, demo config", *args.sets)
    print(f"run_train wall:     off {med(off, 'wall'):6.2f} s   on {med(on, 'wall'):6.2f} s")
    print(f"  overhead (median of per-repeat ratios): {verdict(overhead('wall'))}")
    print(f"whole process wall: off {med(off, 'process'):6.2f} s   on {med(on, 'process'):6.2f} s")
    print(f"  overhead (median of per-repeat ratios): {verdict(overhead('process'))}")
    print(
        f"trainer process CPU (TensorFlow's import included): off {c_off:.2f} s, on {c_on:.2f} s "
        f"({(c_on - c_off) / c_off * 100:+.1f} %); agent process {agent:.2f} s CPU; moto_server "
        f"(the store, on the same cores here, remote in production) {moto_cpu / n:.2f} s CPU"
    )
    fixed = {k: statistics.median(r["parts"][k] for r in on) for k in on[0]["parts"]}
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
