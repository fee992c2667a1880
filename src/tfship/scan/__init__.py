"""Security scanning with Trivy: `tfship scan image|fs|config` and the scan stage of `tfship run`.

Modules: trivy (binary, command line, failures), findings (Trivy JSON -> typed findings),
allowlist (.trivyignore.yaml with reasons and expiry), gate (severity threshold), gitlab / sarif /
summary (reports), stage (run_scan, run_scan_for_pipeline).
"""

from tfship.scan.stage import (
    PipelineScanResult,
    ScanResult,
    record_scan,
    run_scan,
    run_scan_for_pipeline,
    summary_path,
)
from tfship.scan.trivy import TargetKind

__all__ = [
    "PipelineScanResult",
    "ScanResult",
    "TargetKind",
    "record_scan",
    "run_scan",
    "run_scan_for_pipeline",
    "summary_path",
]
