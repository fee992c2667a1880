from __future__ import annotations

import argparse
from typing import Any

from tfship.commands import load
from tfship.validate import ValidationResult


def _handle(args: argparse.Namespace) -> ValidationResult:
    from tfship.validate import run_validate

    cfg, run_dir = load(args)
    return run_validate(cfg, run_dir, launcher=args.launcher, server_url=args.server_url)


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "validate",
        parents=[common],
        help="serve the export in a real model server; replay warmup + golden requests; latency",
    )
    p.add_argument(
        "--launcher",
        choices=("auto", "docker", "binary", "url", "offline"),
        default="auto",
        help="auto: Docker engine, else TFSHIP_MODEL_SERVER, else --server-url, else offline",
    )
    p.add_argument(
        "--server-url",
        default=None,
        help="REST URL of a running server that already serves the export "
        "(default: serving.rest_url)",
    )
    p.set_defaults(handler=_handle)
