from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

from tfship.commands import load


@dataclass(frozen=True)
class ReportCommandResult:
    """report.md and plots rebuilt from gate.json; the comment when --post."""

    report: Any
    comment: Any = None

    def render_text(self) -> str:
        text = self.report.render_text()
        return text + (f"\n{self.comment.render_text()}" if self.comment else "")


def _handle(args: argparse.Namespace) -> ReportCommandResult:
    from tfship.report import run_report

    _, run_dir = load(args)
    report = run_report(run_dir)
    comment = None
    if args.post:
        from tfship.mr_comment import post_report

        comment = post_report(report.report_md)
    return ReportCommandResult(report, comment)


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "report",
        parents=[common],
        help="rebuild evaluation/report.md and plots; --post makes it the merge-request comment "
        "(exit 0 even when posting fails: the gate's job carries the verdict)",
    )
    p.add_argument("--post", action="store_true", help="create or update the MR/PR comment")
    p.set_defaults(handler=_handle)
