"""Flags shared by the serving commands (publish, deploy, promote, rollback, status)."""

from __future__ import annotations

import argparse


def add_target(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--to",
        default=None,
        metavar="ENVIRONMENT",
        help="serving.environments entry (staging | production); default: the serving section",
    )


def add_reason(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reason", default=None, help="why; recorded in the deploy log")


def add_allow_ungated(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--allow-ungated",
        action="store_true",
        help="deploy even without a passed evaluation gate (recorded; serving.allow_ungated)",
    )
