"""`tfship <command>`: parse flags, call the stage function, render its result, map errors.

Glue only. Each command lives in tfship/commands/<name>.py with `register(subparsers)`; the
handler it sets returns a result object (see tfship.result) and never prints.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from tfship import __version__, env
from tfship.errors import EXIT_CODE_DOC, ExitCode, TfshipError
from tfship.result import render

# Order is the order of `tfship --help`.
COMMANDS: tuple[str, ...] = (
    "run",
    "config",
    "env",
    "data",
    "train",
    "export",
    "evaluate",
    "gate",
    "report",
    "scan",
    "validate",
    "publish",
    "deploy",
    "promote",
    "rollback",
    "status",
)

log = logging.getLogger("tfship")


def _exit_code_epilog() -> str:
    rows = "\n".join(f"  {int(c):>3}  {doc}" for c, doc in EXIT_CODE_DOC.items())
    return f"exit codes:\n{rows}"


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        default=env.get("TFSHIP_CONFIG")
        or ("pipeline.yaml" if os.path.isfile("pipeline.yaml") else None),
        help="pipeline.yaml to use (env TFSHIP_CONFIG; default ./pipeline.yaml when present)",
    )
    common.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.FIELD=VALUE",
        help="override any config field, e.g. --set train.epochs=3 (repeatable)",
    )
    common.add_argument("--run-dir", default=None, help="run directory (env TFSHIP_RUN_DIR)")
    common.add_argument(
        "--output",
        choices=("text", "json"),
        default=env.get("TFSHIP_OUTPUT", "text"),
        help="result format on stdout (env TFSHIP_OUTPUT)",
    )
    common.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")

    parser = argparse.ArgumentParser(
        prog="tfship",
        description="Take a TensorFlow model from a merge request to TensorFlow Serving, safely.",
        epilog=_exit_code_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"tfship {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="<command>", required=True)
    for name in COMMANDS:
        module = importlib.import_module(f"tfship.commands.{name}")
        module.register(sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # TF's absl logger reports every checkpoint shard at INFO; that is noise in CI logs.
    logging.getLogger("absl").setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    try:
        result: Any = args.handler(args)
    except TfshipError as err:
        print(f"tfship {args.command}: error: {err}", file=sys.stderr)
        print(f"(exit code {int(err.exit_code)}: {EXIT_CODE_DOC[err.exit_code]})", file=sys.stderr)
        return int(err.exit_code)
    except KeyboardInterrupt:
        print(f"tfship {args.command}: interrupted", file=sys.stderr)
        return 130
    if result is not None:
        print(render(result, args.output))
    return int(getattr(result, "exit_code", ExitCode.OK))


if __name__ == "__main__":
    raise SystemExit(main())
