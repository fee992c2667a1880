from __future__ import annotations

import argparse
from typing import Any

from tfship.commands import load


def _handle(args: argparse.Namespace) -> Any:
    from tfship.train import run_train

    cfg, run_dir = load(args)
    return run_train(cfg, run_dir)


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "train",
        parents=[common],
        help="train the model (resumes from the run directory's latest checkpoint); "
        "exit 75 after SIGTERM with a checkpoint saved",
    )
    p.set_defaults(handler=_handle)
