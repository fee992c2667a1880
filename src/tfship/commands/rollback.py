from __future__ import annotations

import argparse
from typing import Any

from tfship.commands import _serving_flags, load
from tfship.serving.deploy import DeployResult


def _handle(args: argparse.Namespace) -> DeployResult:
    from tfship.serving.deploy import run_rollback

    cfg, run_dir = load(args)
    return run_rollback(
        cfg,
        run_dir,
        to=args.to,
        reason=args.reason,
        version=args.version,
        lease_wait=args.lease_wait,
    )


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "rollback", parents=[common], help="move stable back to the previous stable version"
    )
    _serving_flags.add_target(p)
    _serving_flags.add_reason(p)
    _serving_flags.add_version(
        p,
        "roll back to this version (default: the previous stable from the deploy log); it is "
        "checked from the model repository before any label moves",
    )
    _serving_flags.add_lease_wait(p)
    p.set_defaults(handler=_handle)
