from __future__ import annotations

import argparse
from typing import Any

from tfship.commands import load


def _handle(args: argparse.Namespace) -> Any:
    import shutil

    from tfship.pipeline import STAGES, run_pipeline

    cfg, run_dir = load(args)
    unknown = set(args.skip) - {name for name, _ in STAGES}
    if unknown:
        from tfship.errors import ConfigError

        raise ConfigError(
            f"--skip {', '.join(sorted(unknown))}: no such stage; "
            f"stages are {', '.join(n for n, _ in STAGES)}"
        )
    if args.fresh and run_dir.root.exists():
        shutil.rmtree(run_dir.root)
    return run_pipeline(cfg, run_dir, skip=frozenset(args.skip))


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "run",
        parents=[common],
        help="run the whole pipeline locally (the quick-start demo); resumes an interrupted run",
    )
    p.add_argument("--skip", action="append", default=[], metavar="STAGE", help="skip a stage")
    p.add_argument(
        "--fresh", action="store_true", help="delete the run directory first (no resume)"
    )
    p.set_defaults(handler=_handle)
