"""Deploy timing and label-switch availability against a model server on 127.0.0.1.

Figures: seconds from `deploy` start to the new version AVAILABLE and verified (golden requests
through /versions/<v>); request success rate on /labels/stable while `promote` and `rollback`
move the label under a steady client load. Baseline: the same client load with no switch.
Server: TFSHIP_MODEL_SERVER (default: the test stand-in, `python -m tests.tfserving_standin`).
Run from the repository root: `python benchmarks/deploy_switch.py [--rounds N]`.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.integration import serving_exports as se
from tests.integration.test_deploy import _expected, _Hammer
from tests.tfserving_standin.fixture import model_server_command, start_model_server

from tfship.config import load_config
from tfship.serving.deploy import run_deploy, run_promote, run_rollback


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3, help="promote+rollback pairs (bounded)")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="tfship-bench-"))
    v1 = se.export_good(root, 1, seed=1)
    v2 = se.export_variant(v1, root, 2, seed=2)
    server = start_model_server(
        root / "server",
        model_config_text="model_config_list {}\n",
        extra_flags=["--file_system_poll_wait_seconds=1"],
    )
    url = server.rest_url
    try:
        cfg = load_config(
            None,
            overrides=[
                f"serving.model_repository={root / 'repo'}",
                f"serving.rest_url={url}",
                f"serving.grpc_target={server.grpc_target}",
                "serving.allow_ungated=true",
                "serving.poll_interval_seconds=0.1",
            ],
        )
        t = time.monotonic()
        first = run_deploy(cfg, v1, promote=True)
        t_first = time.monotonic() - t
        t = time.monotonic()
        second = run_deploy(cfg, v2)
        t_second = time.monotonic() - t

        def under_load(action) -> tuple[int, int, float]:
            h = _Hammer(url, cfg.project.model_name, _expected(v1))
            h.start()
            time.sleep(1.0)
            t0 = time.monotonic()
            action()
            dt = time.monotonic() - t0
            time.sleep(1.0)
            h.stop.set()
            h.join()
            return h.ok, len(h.errors), dt

        base_ok, base_err, _ = under_load(lambda: time.sleep(2.0))
        ok = err = 0
        switch_s = []
        for _ in range(args.rounds):
            # A rollback unloads the rolled-back version, so each round deploys it again.
            for action in (
                lambda: run_deploy(cfg, v2),
                lambda: run_promote(cfg, v2),
                lambda: run_rollback(cfg, v2),
            ):
                o, e, dt = under_load(action)
                ok, err = ok + o, err + e
                switch_s.append(dt)
        print(f"server: {' '.join(model_server_command())}")
        print(
            f"first deploy (publish+load+verify+labels): {t_first:.2f} s "
            f"(to AVAILABLE {first.seconds.get('available', 0):.2f} s)"
        )
        print(
            f"canary deploy: {t_second:.2f} s (publish {second.seconds['publish']:.2f} s, "
            f"to AVAILABLE {second.seconds['available']:.2f} s, "
            f"verified at {second.seconds['total']:.2f} s)"
        )
        print(f"baseline (no switch): {base_ok} requests, {base_err} errors")
        rate = 100.0 * ok / max(ok + err, 1)
        print(
            f"label switches: {len(switch_s)} (deploy/promote/rollback), "
            f"median {sorted(switch_s)[len(switch_s) // 2]:.2f} s; "
            f"{ok + err} requests to /labels/stable, {err} errors, success {rate:.2f} %"
        )
        return 0 if err == 0 else 1
    finally:
        server.stop()


if __name__ == "__main__":
    raise SystemExit(main())
