"""`tfship <command>`: parse flags, call the stage function, render its result, map errors.

Glue only. Each command lives in tfship/commands/<name>.py with `register(subparsers)`; the
handler it sets returns a result object (see tfship.result) and never prints. Everything this
module prints, and every log record while a command runs, goes through tfship.redact.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

from tfship import __version__, env
from tfship.errors import EXIT_CODE_DOC, ExitCode, Preempted, TfshipError
from tfship.redact import format_exception, redact_text, redacting_logs
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
    "mr-reports",
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


class _Parser(argparse.ArgumentParser):
    """argparse echoes offending values ("invalid choice: 'https://user:pw@...'"): redacted.
    Sub-commands' parsers are of this class too (argparse reuses the parent's class)."""

    def _print_message(self, message: str, file: Any = None) -> None:
        super()._print_message(redact_text(message) if message else message, file)


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
    common.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="tfship's debug logging on stderr (third-party loggers stay at WARNING; "
        "credentials are masked)",
    )

    parser = _Parser(
        prog="tfship",
        description="Take a TensorFlow model from a merge request to TensorFlow Serving, safely.",
        epilog=_exit_code_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"tfship {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="<command>", required=True)
    for name in COMMANDS:
        module = importlib.import_module(f"tfship.commands.{name.replace('-', '_')}")
        module.register(sub, common)
    return parser


def _error(message: str) -> None:
    print(redact_text(message), file=sys.stderr)


def project_on_path(cwd: str | None = None) -> None:
    """Make the project's own modules importable (`model.builder: models:build`).

    `python -m tfship` puts the working directory on sys.path, the `tfship` console script
    does not, so a model module at the repository root failed to import in CI jobs and the
    training image. Appended, not prepended: a project file named like a library (`yaml.py`)
    must not shadow the library tfship imports.
    """
    cwd = os.getcwd() if cwd is None else cwd
    if cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)


def main(argv: Sequence[str] | None = None) -> int:
    project_on_path()
    # Redaction first: argparse errors and whatever the command modules log on import too.
    with redacting_logs():
        args = build_parser().parse_args(argv)
        if args.verbose:
            log.setLevel(logging.DEBUG)  # tfship only; redacting_logs restores it on exit
        return _run(args)


# Commands that CI retries on exit 75: a SIGTERM before the training loop takes over (while
# TensorFlow is still importing, the data loading, ...) must exit 75 too, not die with 143,
# which `retry: exit_codes: [75]` does not retry.
_PREEMPTIBLE = frozenset({"train", "run"})


def _preempted_early(signum: int, frame: Any) -> None:
    raise Preempted(
        "SIGTERM received outside the training loop; whatever the last checkpoint holds is kept",
        hint="rerun the same command: it resumes from the last checkpoint",
    )


def _run(args: argparse.Namespace) -> int:
    preemptible = (
        args.command in _PREEMPTIBLE and threading.current_thread() is threading.main_thread()
    )
    previous = signal.signal(signal.SIGTERM, _preempted_early) if preemptible else None
    try:
        return _run_command(args)
    finally:
        if preemptible:  # in-process callers (tests, tools) get their handler back
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def _run_command(args: argparse.Namespace) -> int:
    try:
        result: Any = args.handler(args)
    except TfshipError as err:
        _error(f"tfship {args.command}: error: {err}")
        _error(f"(exit code {int(err.exit_code)}: {EXIT_CODE_DOC[err.exit_code]})")
        return int(err.exit_code)
    except KeyboardInterrupt:
        _error(f"tfship {args.command}: interrupted")
        return 130
    except Exception as exc:
        # Python would print the traceback unredacted; an exception message often holds the
        # URL or request that failed.
        print(format_exception(exc), end="", file=sys.stderr)
        code = ExitCode.INTERNAL
        _error(
            f"tfship {args.command}: internal error (exit code {int(code)}: {EXIT_CODE_DOC[code]})"
        )
        return int(code)
    if result is not None:
        print(redact_text(render(result, args.output)))
    return int(getattr(result, "exit_code", ExitCode.OK))


def entry() -> int:
    """The `tfship` program: `main`, then a quick interpreter teardown.

    With TensorFlow loaded, CPython's teardown spends ~0.6 s (measured on a 2-core runner)
    in garbage-collector passes over TF's object graph, for every command. Collect what is
    garbage now (its finalizers run), then freeze the survivors out of the collector:
    atexit handlers, thread joins and module cleanup still run as before.
    """
    code = main()
    gc.collect()
    gc.freeze()
    return code


if __name__ == "__main__":
    raise SystemExit(entry())
