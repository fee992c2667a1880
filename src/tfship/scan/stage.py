"""The scan stage: run Trivy on a target, gate, and write every report into <run dir>/scan/.

Files written for a scan named N (see docs/scanning.md):
  N.trivy.json   Trivy's raw JSON report        N.sarif        SARIF 2.1.0 (GitHub code scanning)
  N.cdx.json     CycloneDX SBOM (image, fs)     N.result.json  this result, for the summary
  gl-container-scanning-report.json             GitLab report (image scans)
  summary.md     markdown for the MR report, rebuilt from every N.result.json
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from tfship.config import PipelineConfig, ScanScanner
from tfship.errors import ExitCode, ScanFindings, ScannerError
from tfship.fsutil import atomic_write_json, atomic_write_text
from tfship.result import to_jsonable
from tfship.rundir import RunDir
from tfship.scan import gitlab, sarif
from tfship.scan.allowlist import ExpiredEntry, Suppressed, load_allowlist
from tfship.scan.findings import Finding, TrivyReport, parse_report
from tfship.scan.gate import evaluate
from tfship.scan.summary import load_records, render_summary
from tfship.scan.trivy import (
    TargetKind,
    build_command,
    convert_to_cyclonedx,
    find_trivy,
    run_trivy,
    trivy_version,
)

log = logging.getLogger(__name__)


def scan_dir(run_dir: RunDir) -> Path:
    return run_dir.root / "scan"


def summary_path(run_dir: RunDir) -> Path:
    """scan/summary.md: the security section for the merge-request report."""
    return scan_dir(run_dir) / "summary.md"


@dataclass(frozen=True)
class ScanResult:
    """One Trivy scan, gated. `findings`: active findings at or above the report level."""

    name: str
    kind: str
    target: str
    passed: bool
    fail_on: str
    report_level: str
    blocking: int
    counts: dict[str, int]
    findings: tuple[Finding, ...]
    suppressed: tuple[Suppressed, ...]
    expired_allowlist: tuple[ExpiredEntry, ...]
    unfixed_dropped: int
    trivy_version: str
    seconds: float
    artifacts: dict[str, str] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return int(ExitCode.OK if self.passed else ExitCode.SCAN_FINDINGS)

    def render_text(self) -> str:
        verdict = "PASSED" if self.passed else f"FAILED ({self.blocking} at/above {self.fail_on})"
        counts = ", ".join(f"{k} {v}" for k, v in self.counts.items())
        lines = [f"scan {self.name} ({self.kind} {self.target}): {verdict}", f"  {counts}"]
        lines += [f"  {f.severity.value:<8} {f.label} [{f.location}]" for f in self.findings[:20]]
        if len(self.findings) > 20:
            lines.append(
                f"  ... {len(self.findings) - 20} more (see {self.artifacts.get('sarif')})"
            )
        lines += [
            f"  suppressed {s.finding.id} until {s.expires}: {s.reason}" for s in self.suppressed
        ]
        lines += [
            f"  EXPIRED allowlist entry {e.id} ({e.expired_at})" for e in self.expired_allowlist
        ]
        lines += [f"  {k}: {v}" for k, v in self.artifacts.items()]
        return "\n".join(lines)


# Scans may run concurrently (the pipeline's tree scans): each rebuilds summary.md from every
# N.result.json, so the rebuilds are serialised and the last one sees every finished scan.
_summary_lock = threading.Lock()


def _write_summary(run_dir: RunDir) -> Path:
    path = summary_path(run_dir)
    with _summary_lock:
        atomic_write_text(path, render_summary(load_records(scan_dir(run_dir))))
    return path


def _record_failure(
    run_dir: RunDir, name: str, kind: TargetKind, target: str, err: Exception
) -> None:
    record = {"name": name, "kind": kind.value, "target": target, "error": str(err)}
    atomic_write_json(scan_dir(run_dir) / f"{name}.result.json", record)
    _write_summary(run_dir)


def record_scan(
    cfg: PipelineConfig,
    run_dir: RunDir,
    report: TrivyReport,
    *,
    name: str,
    kind: TargetKind,
    target: str,
    started: datetime,
    seconds: float = 0.0,
    artifacts: dict[str, str] | None = None,
    today: date | None = None,
) -> ScanResult:
    """Gate a parsed Trivy report and write the SARIF, GitLab and summary reports."""
    out = scan_dir(run_dir)
    today = today or datetime.now(UTC).date()
    ev = evaluate(report.findings, load_allowlist(cfg.scan.allowlist), cfg.scan, today)
    artifacts = dict(artifacts or {})
    base = "" if kind is TargetKind.IMAGE else _repo_relative(target)
    sarif_path = out / f"{name}.sarif"
    atomic_write_json(
        sarif_path,
        sarif.build_sarif(ev, category=name, trivy_version=report.trivy_version, base=base),
    )
    artifacts["sarif"] = str(sarif_path)
    if kind is TargetKind.IMAGE:
        gl_path = out / gitlab.REPORT_NAME
        gl_report = gitlab.build_report(
            ev,
            image=report.artifact_name or target,
            os_name=report.os,
            trivy_version=report.trivy_version,
            started=started,
            finished=datetime.now(UTC),
        )
        atomic_write_json(gl_path, gl_report)
        artifacts["gitlab"] = str(gl_path)
    result = ScanResult(
        name=name,
        kind=kind.value,
        target=target,
        passed=ev.passed,
        fail_on=ev.fail_on.value,
        report_level=ev.report_level.value,
        blocking=len(ev.blocking),
        counts=ev.counts,
        findings=ev.reported,
        suppressed=ev.suppressed,
        expired_allowlist=ev.expired,
        unfixed_dropped=ev.unfixed_dropped,
        trivy_version=report.trivy_version,
        seconds=round(seconds, 3),
        artifacts=artifacts,
    )
    atomic_write_json(out / f"{name}.result.json", to_jsonable(result))
    result.artifacts["summary"] = str(_write_summary(run_dir))
    for e in ev.expired:
        log.warning("allowlist entry %s expired on %s: it no longer suppresses", e.id, e.expired_at)
    return result


def _repo_relative(target: str) -> str:
    try:
        return Path(target).resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return ""


def run_scan(
    cfg: PipelineConfig,
    run_dir: RunDir,
    kind: TargetKind,
    target: str,
    *,
    name: str | None = None,
    scanners: tuple[ScanScanner, ...] | None = None,
    sbom: bool = True,
    today: date | None = None,
) -> ScanResult:
    """Scan `target` (an image ref or archive, a directory, or a config directory) with Trivy.

    Returns the gated result (`passed`, `exit_code` 0 or 10). Raises ScannerError (exit 11) when
    Trivy cannot scan: missing binary, timeout, no vulnerability DB, any non-zero exit.
    """
    name = name or kind.value
    out = scan_dir(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = datetime.now(UTC)
    t0 = time.perf_counter()
    raw = out / f"{name}.trivy.json"
    try:
        binary = find_trivy()
        version = trivy_version(binary)
        log.info("trivy %s: %s scan of %s", version, kind.value, target)
        cmd = build_command(binary, kind, target, cfg.scan, raw, scanners=scanners)
        report = parse_report(run_trivy(cmd, cfg.scan, raw), source=str(raw))
        artifacts = {"trivy_json": str(raw)}
        if sbom and kind is not TargetKind.CONFIG:
            sbom_path = out / f"{name}.cdx.json"
            if report.has_packages:
                convert_to_cyclonedx(binary, raw, sbom_path, cfg.scan)
            else:  # the JSON run listed no packages (no vuln scanner): list them without a DB
                cmd = build_command(binary, kind, target, cfg.scan, sbom_path, fmt="cyclonedx")
                run_trivy(cmd, cfg.scan, sbom_path)
            artifacts["sbom"] = str(sbom_path)
    except ScannerError as err:
        _record_failure(run_dir, name, kind, target, err)
        raise
    return record_scan(
        cfg,
        run_dir,
        report,
        name=name,
        kind=kind,
        target=target,
        started=started,
        seconds=time.perf_counter() - t0,
        artifacts=artifacts,
        today=today,
    )


@dataclass(frozen=True)
class PipelineScanResult:
    """The scan stage of `tfship run`: config + secrets of the project, secrets of the export."""

    scans: tuple[ScanResult, ...]
    skipped: tuple[str, ...]
    summary: str

    @property
    def passed(self) -> bool:
        return all(s.passed for s in self.scans)

    def render_text(self) -> str:
        lines = [s.render_text() for s in self.scans]
        lines += [f"skipped: {why}" for why in self.skipped]
        lines.append(f"summary: {self.summary}")
        return "\n".join(lines)


def _split_tree_report(data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """One `trivy fs --scanners misconfig,secret` report as the two reports `trivy config` and
    `trivy fs --scanners secret` write: the config files' results (misconfigurations) and the
    rest (secrets, and the packages the SBOM lists)."""
    results = data.get("Results") or []
    if not isinstance(results, list):
        results = []  # parse_report names the malformed report; each part stays parseable

    def is_config(r: Any) -> bool:
        return isinstance(r, dict) and (r.get("Class") == "config" or "Misconfigurations" in r)

    config = {**data, "Results": [r for r in results if is_config(r)]}
    rest = {**data, "Results": [r for r in results if not is_config(r)]}
    return config, rest


def scan_tree(cfg: PipelineConfig, run_dir: RunDir, project: str) -> list[ScanResult]:
    """The project's config and secret scans as ONE Trivy process: one walk of the tree and one
    start of Trivy instead of two (measured on the template itself, 2 cores: 3.2 CPU-seconds
    instead of 4.3; the scans share the machine with training and the export). Trivy's
    misconfiguration scanner under `fs` is the one `trivy config` runs (same checks, same
    findings); the report is split and recorded as before, as `config` (misconfigurations,
    gated by scan.fail_on_config) and `secrets` (with the project's SBOM). A Trivy failure is
    recorded under both names and raised (ScannerError, exit 11)."""
    out = scan_dir(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = datetime.now(UTC)
    t0 = time.perf_counter()
    raw = out / "tree.trivy.json"
    scanners = (ScanScanner.MISCONFIG, ScanScanner.SECRET)
    try:
        binary = find_trivy()
        version = trivy_version(binary)
        log.info("trivy %s: config + secret scan of %s", version, project)
        cmd = build_command(binary, TargetKind.FS, project, cfg.scan, raw, scanners=scanners)
        data = run_trivy(cmd, cfg.scan, raw)
        if not isinstance(data, dict):
            parse_report(data, source=str(raw))  # raises ScannerError naming the report
            data = {}
        parts = _split_tree_report(data)
        reports, paths = [], []
        for name, part in zip(TreeScans.NAMES, parts, strict=True):
            path = out / f"{name}.trivy.json"
            atomic_write_json(path, part)
            reports.append(parse_report(part, source=str(path)))
            paths.append(path)
        raw.unlink(missing_ok=True)  # its two halves are the reports
        sbom_path = out / "secrets.cdx.json"
        if reports[1].has_packages:
            convert_to_cyclonedx(binary, paths[1], sbom_path, cfg.scan)
        else:  # no packages listed: list them without a DB
            cmd = build_command(
                binary, TargetKind.FS, project, cfg.scan, sbom_path, fmt="cyclonedx"
            )
            run_trivy(cmd, cfg.scan, sbom_path)
    except ScannerError as err:
        for name, kind in zip(TreeScans.NAMES, TreeScans.KINDS, strict=True):
            _record_failure(run_dir, name, kind, project, err)
        raise
    seconds = time.perf_counter() - t0
    artifacts = (
        {"trivy_json": str(paths[0])},
        {"trivy_json": str(paths[1]), "sbom": str(sbom_path)},
    )
    results = []
    for name, kind, report, extra in zip(
        TreeScans.NAMES, TreeScans.KINDS, reports, artifacts, strict=True
    ):
        results.append(
            record_scan(
                cfg,
                run_dir,
                report,
                name=name,
                kind=kind,
                target=project,
                started=started,
                seconds=seconds,
                artifacts=extra,
            )
        )
    return results


class TreeScans:
    """The pipeline's scans of the project tree (Trivy config; secrets, with the SBOM: one
    Trivy process, `scan_tree`), running in the background, concurrently with whatever the
    caller does next.

    They read only the project's files, so `tfship run` starts them with the train stage
    (`start_tree_scans`) and the scan stage collects them (`results`). They use no
    vulnerability DB (misconfiguration and secret scanners only) and Trivy's default
    in-memory cache backend, so concurrent trivy processes share no cache file or lock.
    A failed scan is never lost: `results` waits for it and raises the failure (ScannerError:
    exit 11), which is also recorded in each N.result.json.
    """

    NAMES = ("config", "secrets")
    KINDS = (TargetKind.CONFIG, TargetKind.FS)

    def __init__(self, cfg: PipelineConfig, run_dir: RunDir, project: str) -> None:
        self.project = project
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tfship-scan")
        self._future: Future[list[ScanResult]] = self._pool.submit(scan_tree, cfg, run_dir, project)
        self._pool.shutdown(wait=False)

    def results(self) -> list[ScanResult]:
        """The tree scans' results, in order, once finished; their failure raised."""
        return self._future.result()  # waits (trivy's own timeout bounds it)

    def wait(self) -> None:
        """Let the scans finish without raising (a run that stopped before its scan stage);
        a failure is logged, and recorded in its N.result.json as always."""
        err = self._future.exception()
        if err is not None:
            log.error("background project scans failed: %s", err)


def start_tree_scans(
    cfg: PipelineConfig, run_dir: RunDir, project_dir: Path | None = None
) -> TreeScans | None:
    """Start the pipeline's project scans now, in the background (see `TreeScans`).

    None when scanning is disabled, or when the run directory lies inside the project where
    the scans would read it (not under a top-level scan.skip_dirs entry): what the run writes
    there while they run would change what they see, so the scan stage scans the tree itself,
    after export, as before.
    """
    if not cfg.scan.enabled:
        return None
    project = Path(project_dir or Path("."))
    try:
        inside = run_dir.root.resolve().relative_to(project.resolve()).parts
    except ValueError:
        inside = None  # elsewhere: the tree scans never read it
    if inside is not None and (not inside or inside[0] not in cfg.scan.skip_dirs):
        return None
    return TreeScans(cfg, run_dir, str(project_dir or Path(".")))


def run_scan_for_pipeline(
    cfg: PipelineConfig,
    run_dir: RunDir,
    project_dir: Path | None = None,
    *,
    tree: TreeScans | None = None,
) -> PipelineScanResult:
    """What `tfship run` scans: Trivy config on the project, secrets in the project (with its
    SBOM) and in the exported SavedModel directory. Needs no vulnerability DB.

    The project scans run concurrently with training and the export; `tree`: those already
    started (`start_tree_scans`, by `tfship run` with its train stage), collected here. Raises
    ScanFindings (exit 10) when a scan has findings at or above scan.fail_on, after writing
    every report; ScannerError (exit 11) when Trivy fails (any scan, once all have finished).
    """
    skipped: list[str] = []
    if not cfg.scan.enabled:
        if tree is not None:
            tree.wait()
        return PipelineScanResult((), ("scan.enabled is false",), str(summary_path(run_dir)))
    tree = tree or TreeScans(cfg, run_dir, str(project_dir or Path(".")))
    export_scan: ScanResult | None = None
    try:
        if run_dir.export.is_dir():
            export_scan = run_scan(
                cfg, run_dir, TargetKind.FS, str(run_dir.export), name="export-secrets",
                scanners=(ScanScanner.SECRET,), sbom=False,
            )  # fmt: skip
        else:
            skipped.append(f"{run_dir.export} does not exist (no export in this run)")
    except BaseException:
        tree.wait()  # never leave a scan running behind a failure; its own is logged
        raise
    scans = [*tree.results(), *([export_scan] if export_scan else [])]
    # Every scan has finished: one last rebuild, so the summary holds all of them.
    _write_summary(run_dir)
    result = PipelineScanResult(tuple(scans), tuple(skipped), str(summary_path(run_dir)))
    blocking = [f for s in scans for f in s.findings if cfg.scan.fails(f.kind.value, f.severity)]
    if blocking:
        listed = "\n".join(f"  {f.severity.value} {f.label} [{f.location}]" for f in blocking[:15])
        raise ScanFindings(
            f"security scan found {len(blocking)} finding(s) at or above "
            f"{cfg.scan.fail_on.value} (misconfigurations: {cfg.scan.fail_on_config.value})"
            f":\n{listed}",
            hint=f"fix them, or accept a risk in {cfg.scan.allowlist} with a statement and "
            f"expired_at; details in {result.summary}",
        )
    return result
