from __future__ import annotations

import argparse
from typing import Any

from tfship.commands import _serving_flags, load
from tfship.serving.deploy import DeployResult


def _handle(args: argparse.Namespace) -> DeployResult:
    from tfship.serving.deploy import run_deploy

    cfg, run_dir = load(args)
    return run_deploy(
        cfg,
        run_dir,
        to=args.to,
        reason=args.reason,
        allow_ungated=args.allow_ungated,
        promote=args.promote,
        lease_wait=args.lease_wait,
    )


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "deploy",
        parents=[common],
        help="publish, load and verify the run's model in TF Serving, then label it canary",
    )
    _serving_flags.add_target(p)
    _serving_flags.add_reason(p)
    _serving_flags.add_allow_ungated(p)
    p.add_argument("--promote", action="store_true", help="also move stable to it (one step)")
    _serving_flags.add_lease_wait(p)
    p.set_defaults(handler=_handle)
