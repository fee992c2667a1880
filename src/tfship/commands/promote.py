from __future__ import annotations

import argparse
from typing import Any

from tfship.commands import _serving_flags, load
from tfship.serving.deploy import DeployResult


def _handle(args: argparse.Namespace) -> DeployResult:
    from tfship.serving.deploy import run_promote

    cfg, run_dir = load(args)
    return run_promote(
        cfg,
        run_dir,
        to=args.to,
        reason=args.reason,
        version=args.version,
        lease_wait=args.lease_wait,
    )


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "promote",
        parents=[common],
        help="move the stable label to this pipeline's version, which must be the canary",
    )
    _serving_flags.add_target(p)
    _serving_flags.add_reason(p)
    _serving_flags.add_version(
        p,
        "the version to promote (default: the run directory's export, i.e. this pipeline's); "
        "refused unless it is the canary",
    )
    _serving_flags.add_lease_wait(p)
    p.set_defaults(handler=_handle)
