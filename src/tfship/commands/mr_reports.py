"""`tfship mr-reports`: the GitLab merge-request report without a token in MR pipelines.

`--write DIR` (in the MR pipeline's report job): the report as data, DIR/report.json, plus
report.md and the plots for people (the exposed artifact). `--post` (in a scheduled pipeline of
the protected default branch, with the protected TFSHIP_GITLAB_TOKEN): one note per open merge
request, rendered from that data by this checkout's code (tfship.mr_reports). Neither flag:
the same as `--post` but nothing is written (a dry run that still reads the API).
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class WriteResult:
    path: Path

    def render_text(self) -> str:
        return (
            f"merge-request report data: {self.path} (posted later by `tfship mr-reports --post`)"
        )


def _handle(args: argparse.Namespace) -> Any:
    if args.write:
        from tfship.commands import load
        from tfship.mr_report_doc import write_bundle

        _, run_dir = load(args)
        return WriteResult(write_bundle(run_dir, Path(args.write), os.environ))
    from tfship.mr_reports import post_mr_reports

    return post_mr_reports(post=args.post)


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "mr-reports",
        parents=[common],
        help="GitLab MR reports without a token in MR pipelines: --write DIR leaves the report "
        "as data (MR pipeline); --post comments on every open MR from a protected schedule "
        "(exit 3: no token or not protected; 8: the API failed)",
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--write", metavar="DIR", help="write DIR/report.json (+ report.md, plots)")
    mode.add_argument(
        "--post", action="store_true", help="create or edit one note per open merge request"
    )
    p.set_defaults(handler=_handle)
