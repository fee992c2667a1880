"""Flags shared by the serving commands (publish, deploy, promote, rollback, status)."""

from __future__ import annotations

import argparse

INT64_MAX = 2**63 - 1


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


def version(text: str) -> int:
    """A TF Serving version number: 1 .. 2**63-1 (int64)."""
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a version number, got {text!r}") from None
    if not 1 <= value <= INT64_MAX:
        raise argparse.ArgumentTypeError(f"version {text} is outside 1 .. 2**63-1 (int64)")
    return value


def add_version(p: argparse.ArgumentParser, help: str) -> None:
    p.add_argument("--version", type=version, default=None, metavar="N", help=help)


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not 0 <= value <= 86400:
        raise argparse.ArgumentTypeError(f"{text} is outside 0 .. 86400 seconds")
    return value


def add_lease_wait(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--lease-wait",
        type=seconds,
        default=None,
        metavar="SECONDS",
        help="how long to wait while another deploy action holds the model repository's "
        "lease (default 900); then exit 14, having changed nothing",
    )
