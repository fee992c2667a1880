"""Wall time of `tfship run` on the demo data (target: <= 90 s on a 2-core CPU after install).

Prints the total and each stage's share, next to a plain baseline: `python -c "import
tensorflow"` (the fixed start-up cost every stage-running process pays).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def timed(cmd: list[str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", TF_ENABLE_ONEDNN_OPTS="0")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    return time.perf_counter() - t0, proc


def main() -> int:
    baseline, _ = timed([sys.executable, "-c", "import tensorflow"])
    with tempfile.TemporaryDirectory() as tmp:
        total, proc = timed(
            [sys.executable, "-m", "tfship", "run", "--run-dir", f"{tmp}/run", "--output", "json"]
        )
    if proc.returncode != 0:
        print(proc.stderr[-3000:], file=sys.stderr)
        return proc.returncode
    stages = json.loads(proc.stdout)["stages"]
    print(f"import tensorflow (baseline): {baseline:6.1f} s")
    print(
        f"tfship run (demo), total:     {total:6.1f} s   target <= 90 s   "
        f"{'OK' if total <= 90 else 'OVER'}"
    )
    for s in stages:
        print(f"  {s['name']:<10} {s['seconds']:6.1f} s  ({s['seconds'] / total:5.1%})")
    print(f"ratio total / import baseline: {total / baseline:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
