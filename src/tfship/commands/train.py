from __future__ import annotations

import argparse
from typing import Any

from tfship.commands import load


def _handle(args: argparse.Namespace) -> Any:
    from tfship.backup import open_training_backup
    from tfship.cluster import is_chief

    cfg, run_dir = load(args)
    # The backup agent (a no-op unless backup.enabled) starts before TensorFlow is imported, so
    # its start-up and the fetch of a backed-up generation run during that import (5-7 s)
    # instead of alongside training. run_train closes it; should the import fail, the agent
    # sees this process's pipe close and stops by itself.
    backup = open_training_backup(cfg, run_dir, chief=is_chief())
    from tfship.train import run_train

    return run_train(cfg, run_dir, backup=backup)


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "train",
        parents=[common],
        help="train the model (resumes from the run directory's latest checkpoint); "
        "exit 75 after SIGTERM with a checkpoint saved",
    )
    p.set_defaults(handler=_handle)
