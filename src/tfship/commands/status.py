from __future__ import annotations

import argparse
from typing import Any

from tfship.commands import _serving_flags, load
from tfship.serving.status import StatusResult


def _handle(args: argparse.Namespace) -> StatusResult:
    from tfship.serving.status import run_status

    cfg, _ = load(args)
    return run_status(cfg, to=args.to, last=args.last)


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "status", parents=[common], help="labels, versions and recent deploy-log records"
    )
    _serving_flags.add_target(p)
    p.add_argument("--last", type=int, default=5, help="deploy-log records to show")
    p.set_defaults(handler=_handle)
