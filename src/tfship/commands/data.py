from __future__ import annotations

import argparse
from typing import Any

from tfship.commands import load
from tfship.config import dump_config


def _handle(args: argparse.Namespace) -> Any:
    from tfship.data import run_data

    cfg, run_dir = load(args)
    dump_config(cfg, run_dir.ensure().config)
    return run_data(cfg, run_dir)


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "data", parents=[common], help="load, split and fingerprint the data; write data.json"
    )
    p.set_defaults(handler=_handle)
    # `tfship data snapshot | changed` (continuous training); bare `tfship data` is unchanged.
    from tfship.commands.data_changes import register_subcommands

    register_subcommands(p, common)
