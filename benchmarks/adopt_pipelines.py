"""Wall time of an adopted project's pipelines via gitlab-ci-local on this machine (issue 15).

The project is the one tests/e2e/test_adopt.py builds (docs/adopt.md): the template's files, a
model module at the root, 300 8x8 PNGs in three class folders. Three figures:

* the merge-request pipeline (unit-tests, config-scan, smoke-train, smoke-validate,
  smoke-report leaving the report artifact; no token): target <= 5 min on 2 cores;
* the protected-branch pipeline (unit-tests, train, evaluate, validate, deploy-staging to the
  TF Serving stand-in with an S3 (moto) model repository), first deploy;
* preemption: SIGTERM to `tfship train` inside the train job once a checkpoint is backed up,
  then the same job on an emptied workspace; the time from the SIGTERM to the retry's first
  progress line after "resumed from ..." (includes the first attempt's checkpoint + upload,
  gitlab-ci-local's job start-up, TensorFlow's import and the restore from S3).

Everything runs on this machine: the stand-ins' CPU competes with the jobs', and
`--concurrency 2` runs two jobs at once as two CPU runners would. Sizes are the test's (smoke).

    .venv/bin/python benchmarks/adopt_pipelines.py [--repeats 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for tests.* (run as a script from anywhere)

from tests.e2e import adopt_harness as h  # noqa: E402

MR_TARGET_S = 300.0


def _timed_pipeline(world: dict, name: str, pipeline: str, variables, env_file=None) -> float:
    sandbox = world["sandbox"] / name
    started = time.monotonic()
    proc = h.run_pipeline(world["project"], sandbox, pipeline, variables, variables_file=env_file)
    seconds = time.monotonic() - started
    log = proc.stdout + proc.stderr
    if proc.returncode != 0:
        failed = ", ".join(sorted(h.summary(log, "FAIL"))) or "?"
        raise SystemExit(f"{name} pipeline failed (jobs: {failed}):\n{log[-4000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    if not h.GCL_BIN.exists():
        raise SystemExit(f"{h.GCL_BIN} missing: make ci-local-setup")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    rows: dict[str, list[float]] = {"mr": [], "protected": [], "preempt": []}
    steps: list[int] = []
    for i in range(args.repeats):
        with (
            tempfile.TemporaryDirectory(prefix="adopt-bench-") as tmp,
            h.adopted_world(Path(tmp)) as world,
        ):
            rows["mr"].append(
                _timed_pipeline(world, f"mr{i}", "merge-request", h.mr_variables(world))
            )
            variables, env_file = h.protected_variables(world)
            rows["protected"].append(
                _timed_pipeline(world, f"protected{i}", "protected-push", variables, env_file)
            )
            result = h.preempt_and_retry(world, world["sandbox"] / f"preempt{i}")
            if result["retry_exit"] != 0 or result["preempt_to_first_new_step_s"] is None:
                raise SystemExit(f"the retry did not resume:\n{result['retry_log'][-4000:]}")
            rows["preempt"].append(result["preempt_to_first_new_step_s"])
            steps.append(result["preempted_at_step"])
    cpus = os.cpu_count()
    print(f"adopted project via gitlab-ci-local, {args.repeats} repeat(s), {cpus} CPUs visible")
    print(f"{'figure':<52} {'median s':>9} {'runs':>24}")
    labels = {
        "mr": f"merge-request pipeline (target <= {MR_TARGET_S:.0f} s)",
        "protected": "protected pipeline (train..deploy-staging)",
        "preempt": "SIGTERM -> retried job's first new step",
    }
    for key, label in labels.items():
        values = rows[key]
        runs = " ".join(f"{v:.1f}" for v in values)
        print(f"{label:<52} {statistics.median(values):>9.1f} {runs:>24}")
    print(f"preempted at logged step(s): {steps}")
    verdict = "meets" if statistics.median(rows["mr"]) <= MR_TARGET_S else "MISSES"
    print(f"merge-request pipeline {verdict} the {MR_TARGET_S:.0f} s target")


if __name__ == "__main__":
    main()
