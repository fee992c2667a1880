"""`tfship scan image <ref-or-archive> | fs <path> | config <path> | project`.

Each flag is a shortcut for `--set scan.<field>=...` (and so also settable as TFSHIP_SCAN_<FIELD>).
Exit codes: 0 pass, 10 findings at or above scan.fail_on, 11 the scanner failed, 3 bad config.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from tfship.commands import load

_FLAG_FIELDS = {
    "fail_on": "fail_on",
    "report": "report",
    "timeout": "timeout_seconds",
    "cache_dir": "cache_dir",
    "allowlist": "allowlist",
}


def _overrides(args: argparse.Namespace) -> list[str]:
    out = [f"scan.{field}={getattr(args, flag)}" for flag, field in _FLAG_FIELDS.items()
           if getattr(args, flag, None) is not None]  # fmt: skip
    if getattr(args, "scanners", None):
        out.append(f"scan.scanners=[{args.scanners}]")
    if getattr(args, "offline", False):
        out.append("scan.offline=true")
    if getattr(args, "ignore_unfixed", False):
        out.append("scan.ignore_unfixed=true")
    return out


def _handle(args: argparse.Namespace) -> Any:
    from tfship.scan import TargetKind, run_scan, run_scan_for_pipeline

    args.overrides = [*args.overrides, *_overrides(args)]
    cfg, run_dir = load(args)
    if args.target_kind == "project":
        return run_scan_for_pipeline(cfg, run_dir, Path(args.path))
    kind = TargetKind(args.target_kind)
    return run_scan(
        cfg, run_dir, kind, args.target, name=args.name, sbom=not getattr(args, "no_sbom", False)
    )


def _scan_flags(p: argparse.ArgumentParser, *, scanners: bool) -> None:
    sev = "UNKNOWN|LOW|MEDIUM|HIGH|CRITICAL"
    p.add_argument("--fail-on", default=None, metavar=sev, help="gate threshold (scan.fail_on)")
    p.add_argument("--report", default=None, metavar=sev, help="lowest severity reported")
    p.add_argument("--timeout", type=int, default=None, metavar="SECONDS", help="trivy --timeout")
    p.add_argument("--cache-dir", default=None, help="trivy --cache-dir (vulnerability DB)")
    p.add_argument("--allowlist", default=None, help="allowlist file (default .trivyignore.yaml)")
    p.add_argument(
        "--offline", action="store_true", help="no downloads: DB and checks must be cached"
    )
    if scanners:
        p.add_argument("--scanners", default=None, help="comma-separated: vuln,secret,misconfig")
        p.add_argument("--ignore-unfixed", action="store_true", help="drop unfixed vulnerabilities")


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    # `common` goes on the leaf parsers only: argparse lets a subparser's defaults overwrite
    # values its parent already parsed.
    p = sub.add_parser(
        "scan",
        help="security scan with Trivy (exit 10: findings, 11: scanner failed)",
    )
    kinds = p.add_subparsers(dest="target_kind", metavar="<target>", required=True)
    for kind, what in (
        ("image", "an image reference, or a `docker save` / OCI archive"),
        ("fs", "a directory: dependencies (vuln) and secrets"),
        ("config", "a directory: Dockerfiles, Kubernetes, Terraform... misconfigurations"),
    ):
        k = kinds.add_parser(kind, parents=[common], help=f"scan {what}")
        k.add_argument("target", help=what)
        k.add_argument("--name", default=None, help=f"report file prefix (default: {kind})")
        if kind != "config":
            k.add_argument("--no-sbom", action="store_true", help="skip the CycloneDX SBOM")
        _scan_flags(k, scanners=kind != "config")
        k.set_defaults(handler=_handle)
    proj = kinds.add_parser(
        "project",
        parents=[common],
        help="what `tfship run` scans: config + secrets of the project, secrets of the export",
    )
    proj.add_argument("path", nargs="?", default=".", help="project directory (default: .)")
    _scan_flags(proj, scanners=False)
    proj.set_defaults(handler=_handle)
