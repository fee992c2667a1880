from __future__ import annotations

import argparse
from typing import Any

from tfship.commands import load
from tfship.config import dump_config


def _handle(args: argparse.Namespace) -> Any:
    if args.verify_only:
        from tfship.export import verify_export

        return verify_export(args.verify_only, args.tolerance)
    from tfship.export import run_export

    cfg, run_dir = load(args)
    dump_config(cfg, run_dir.ensure().config)
    return run_export(cfg, run_dir)


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "export",
        parents=[common],
        help="export the best checkpoint as a verified SavedModel under export/<version>/",
    )
    p.add_argument(
        "--verify-only",
        metavar="EXPORT_DIR",
        default=None,
        help="export nothing; check an existing export (C++ loader + golden requests)",
    )
    p.add_argument(
        "--tolerance",
        type=float,
        default=None,
        help="with --verify-only: abs tolerance (default: the manifest's golden.tolerance)",
    )
    p.set_defaults(handler=_handle)
