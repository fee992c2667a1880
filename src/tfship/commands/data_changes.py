"""`tfship data snapshot` and `tfship data changed`: subcommands of `tfship data`.

Kept apart from commands/data.py, which only attaches them, so bare `tfship data` (load,
split, fingerprint) keeps working unchanged. Options go after the subcommand:
`tfship data changed --since runs/ci-41 --config pipeline.yaml`.
"""

from __future__ import annotations

import argparse
from typing import Any

from tfship.commands import load


def _snapshot(args: argparse.Namespace) -> Any:
    from tfship.datachange import run_snapshot

    cfg, run_dir = load(args)
    return run_snapshot(cfg, run_dir)


def _changed(args: argparse.Namespace) -> Any:
    from tfship.datachange import run_changed

    cfg, _ = load(args)
    return run_changed(cfg, args.since, min_changed_files=args.min_changed_files)


def register_subcommands(
    data_parser: argparse.ArgumentParser, common: argparse.ArgumentParser
) -> None:
    sub = data_parser.add_subparsers(dest="data_command", metavar="<subcommand>", required=False)
    p = sub.add_parser(
        "snapshot",
        parents=[common],
        help="record the data fingerprint and file manifest (data.manifest.json) in the run dir",
    )
    p.set_defaults(handler=_snapshot)
    p = sub.add_parser(
        "changed",
        parents=[common],
        help="exit 0 when data was added/removed/modified since --since, 12 when not",
        description="Compare the data now with a recorded state. Exit 0: changed, retrain. "
        "Exit 12: nothing new, skip training.",
    )
    p.add_argument(
        "--since",
        required=True,
        metavar="MANIFEST|RUN_DIR|EXPORT_DIR|champion",
        help="data.manifest.json / data.json, a run directory, an export/<version> directory, "
        "or `champion` (the version labelled gate.champion_label in gate.champion_repository)",
    )
    p.add_argument(
        "--min-changed-files",
        type=int,
        default=1,
        metavar="N",
        help="retrain only when at least N files were added, removed or modified (default 1)",
    )
    p.set_defaults(handler=_changed)
