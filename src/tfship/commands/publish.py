from __future__ import annotations

import argparse
from typing import Any

from tfship.commands import _serving_flags, load
from tfship.serving.deploy import DeployResult


def _handle(args: argparse.Namespace) -> DeployResult:
    from tfship.serving.deploy import run_publish

    cfg, run_dir = load(args)
    return run_publish(
        cfg, run_dir, to=args.to, allow_ungated=args.allow_ungated, lease_wait=args.lease_wait
    )


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "publish",
        parents=[common],
        help="copy the run's export into the model repository (atomic, idempotent; loads nothing)",
    )
    _serving_flags.add_target(p)
    _serving_flags.add_allow_ungated(p)
    _serving_flags.add_lease_wait(p)
    p.set_defaults(handler=_handle)
