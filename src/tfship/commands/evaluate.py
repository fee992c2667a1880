from __future__ import annotations

import argparse
from typing import Any

from tfship.commands import load


def add_gate_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--override-reason",
        default=None,
        help="let a failed gate pass, recorded with the approver from GITLAB_USER_LOGIN / "
        "GITHUB_ACTOR (env TFSHIP_GATE_OVERRIDE_REASON)",
    )
    p.add_argument(
        "--post",
        action="store_true",
        help="post report.md as the merge-request comment (failures only warn)",
    )


def _check_champion_flag(champion: str | None) -> None:
    # --champion picks the model the change thresholds compare with: a verdict input, like
    # gate.champion_label. A job script could expand a CI/CD variable into it.
    from tfship.config import trust
    from tfship.errors import ConfigError

    if champion is not None and not trust.context().may_set_verdict:
        raise ConfigError(
            "--champion is given in a CI job no person started; the champion the change "
            "thresholds compare with must come from the model repository (the version labelled "
            "gate.champion_label in gate.champion_repository)",
            hint="drop --champion from the job, or run the evaluation as a manual job "
            "(GitLab manual job, GitHub workflow_dispatch)",
        )


def _handle(args: argparse.Namespace) -> Any:
    from tfship.gate import evaluate_and_gate

    _check_champion_flag(args.champion)
    cfg, run_dir = load(args)
    return evaluate_and_gate(
        cfg,
        run_dir,
        champion=args.champion,
        model=args.model,
        override_reason=args.override_reason,
        post=args.post,
    )


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "evaluate",
        parents=[common],
        help="evaluate the exported model, apply the gate, write the report (exit 7: gate failed)",
    )
    p.add_argument("--model", default=None, help="SavedModel dir (default: newest run export)")
    p.add_argument(
        "--champion",
        default=None,
        help="champion SavedModel dir (default: the `stable` version in gate.champion_repository)",
    )
    add_gate_flags(p)
    p.set_defaults(handler=_handle)
