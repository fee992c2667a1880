from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

from tfship.commands import load
from tfship.commands.evaluate import add_gate_flags


@dataclass(frozen=True)
class GateCommandResult:
    """The gate re-applied to an existing evaluation, with its report (and comment)."""

    gate: Any
    report: Any
    comment: Any = None

    @property
    def exit_code(self) -> int:
        return self.gate.exit_code

    def render_text(self) -> str:
        parts = [self.gate.render_text(), self.report.render_text()]
        return "\n".join(parts + ([self.comment.render_text()] if self.comment else []))


def _handle(args: argparse.Namespace) -> GateCommandResult:
    from tfship.gate import run_gate
    from tfship.report import run_report

    cfg, run_dir = load(args)
    gate = run_gate(cfg, run_dir, override_reason=args.override_reason)
    report = run_report(run_dir)
    comment = None
    if args.post:
        from tfship.mr_comment import post_report

        comment = post_report(report.report_md)
    return GateCommandResult(gate, report, comment)


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "gate",
        parents=[common],
        help="re-apply the gate to evaluation/metrics.json (e.g. with --override-reason); "
        "no model is loaded",
    )
    add_gate_flags(p)
    p.set_defaults(handler=_handle)
