from __future__ import annotations

import argparse
from typing import Any

from tfship.commands import load
from tfship.config import dump_config


def _handle(args: argparse.Namespace) -> Any:
    if args.verify_only:
        from tfship.export import verify_export

        return verify_export(args.verify_only, args.tolerance)
    from tfship.cluster import is_chief

    if is_chief():
        # The export's loader check runs in a fresh interpreter that spends most of its time
        # importing TensorFlow: start it before this one imports TensorFlow and Keras too
        # (tfship.cpp_loader; run_export would otherwise start it after those imports).
        from tfship.cpp_loader import prestart

        prestart()
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
