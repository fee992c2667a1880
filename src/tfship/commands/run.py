from __future__ import annotations

import argparse
from typing import Any

from tfship.commands import load


def _handle(args: argparse.Namespace) -> Any:
    from tfship.pipeline import run_pipeline

    cfg, run_dir = load(args)
    return run_pipeline(cfg, run_dir, skip=frozenset(args.skip), fresh=args.fresh)


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    from tfship.pipeline import STAGES

    p = sub.add_parser(
        "run",
        parents=[common],
        help="run the whole pipeline locally (the quick-start demo); resumes an interrupted run",
    )
    p.add_argument(
        "--skip",
        action="append",
        default=[],
        choices=[name for name, _ in STAGES],
        metavar="STAGE",
        help=f"skip a stage (repeatable): {', '.join(name for name, _ in STAGES)}",
    )
    p.add_argument(
        "--fresh", action="store_true", help="delete this run's outputs first (no resume)"
    )
    p.set_defaults(handler=_handle)
