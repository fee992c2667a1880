"""One module per CLI command; each exposes `register(subparsers, common_parser)`."""

from __future__ import annotations

import argparse

from tfship.config import PipelineConfig, load_config
from tfship.rundir import RunDir, resolve_run_dir


def load(args: argparse.Namespace) -> tuple[PipelineConfig, RunDir]:
    """Config and run directory from the common flags (--config, --set, --run-dir)."""
    cfg = load_config(args.config, overrides=args.overrides)
    return cfg, resolve_run_dir(cfg, args.run_dir)
