from __future__ import annotations

import argparse
from typing import Any

from tfship.commands import _serving_flags, load
from tfship.serving.deploy import DeployResult


def _handle(args: argparse.Namespace) -> DeployResult:
    from tfship.serving.deploy import run_promote

    cfg, run_dir = load(args)
    return run_promote(cfg, run_dir, to=args.to, reason=args.reason, version=args.version)


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "promote", parents=[common], help="move the stable label to the canary version"
    )
    _serving_flags.add_target(p)
    _serving_flags.add_reason(p)
    p.add_argument("--version", type=int, default=None, help="a loaded version (default: canary)")
    p.set_defaults(handler=_handle)
