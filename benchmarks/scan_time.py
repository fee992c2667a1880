"""Wall time of the Trivy scans on this repository: `config`, `fs` (secrets) and the SBOM.

For each, prints the median of --repeat runs of `tfship scan ...` next to a plain baseline: the
bare `trivy` command with the same scanners and skip-dirs (what tfship adds on top is
parsing, the allowlist, the gate and the SARIF/summary writes). Offline (no DB download, no
checks-bundle download), with a fresh cache dir, so the figures do not depend on the network.
Vulnerability scanning is not timed: it needs the Trivy DB, which this offline box cannot fetch.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from tfship.config import ScanConfig  # noqa: E402
from tfship.scan.trivy import find_trivy  # noqa: E402


def timed(cmd: list[str]) -> float:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    took = time.perf_counter() - t0
    if proc.returncode not in (0, 10):  # 10: findings, still a completed scan
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return took


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    trivy = str(find_trivy())
    skip = [a for d in ScanConfig().skip_dirs for a in ("--skip-dirs", d)]
    tfship = [sys.executable, "-m", "tfship", "scan"]
    with tempfile.TemporaryDirectory() as tmp:
        cache = ["--cache-dir", f"{tmp}/cache"]
        offline = ["--skip-check-update", "--skip-version-check", "--quiet"]
        cases = {
            "config (misconfig)": (
                [trivy, "config", "-f", "json", "-o", f"{tmp}/b.json", *cache, *offline,
                 *skip, "."],
                [*tfship, "config", ".", "--offline", *cache, "--run-dir", f"{tmp}/run"],
            ),
            "fs (secrets)": (
                [trivy, "fs", "--scanners", "secret", "-f", "json", "-o", f"{tmp}/b.json",
                 *cache, *offline, "--skip-db-update", *skip, "."],
                [*tfship, "fs", ".", "--scanners", "secret", "--no-sbom", "--offline", *cache,
                 "--run-dir", f"{tmp}/run"],
            ),
            "fs (secrets + SBOM)": (
                [trivy, "fs", "--scanners", "secret", "-f", "json", "-o", f"{tmp}/b.json",
                 *cache, *offline, "--skip-db-update", *skip, "."],
                [*tfship, "fs", ".", "--scanners", "secret", "--offline", *cache,
                 "--run-dir", f"{tmp}/run"],
            ),
        }  # fmt: skip
        print(f"trivy scan wall time on {ROOT.name} ({os.cpu_count()} CPUs), median of "
              f"{args.repeat}; baseline = the bare trivy command")  # fmt: skip
        print(f"{'scan':<22} {'trivy':>8} {'tfship':>8} {'ratio':>6}")
        for name, (bare, ours) in cases.items():
            timed(bare)  # warm the page cache and trivy's cache dir once
            b = statistics.median(timed(bare) for _ in range(args.repeat))
            t = statistics.median(timed(ours) for _ in range(args.repeat))
            print(f"{name:<22} {b:7.1f}s {t:7.1f}s {t / b:5.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
