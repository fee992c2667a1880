"""The export's manifest and its golden requests: what any server must answer for them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

# Re-exported: export.py, verify.py and the tests import these names from here.
from tfship.artifacts import MANIFEST as MANIFEST
from tfship.artifacts import WARMUP as WARMUP
from tfship.artifacts import latest_export as latest_export
from tfship.artifacts import read_manifest as read_manifest


@dataclass(frozen=True)
class GoldenCheck:
    """Served outputs compared with the manifest's expected outputs."""

    ok: bool
    max_abs_diff: float
    tolerance: float
    problems: tuple[str, ...]


def compare(
    manifest: Mapping[str, Any], outputs: Mapping[str, Any], tolerance: float | None = None
) -> GoldenCheck:
    """Outputs must be finite, have the manifest's names and shapes, and match within tolerance."""
    golden = manifest["golden"]
    tol = float(tolerance if tolerance is not None else golden.get("tolerance", 1e-4))
    problems: list[str] = []
    worst = 0.0
    for name, expected in golden["outputs"].items():
        if name not in outputs:
            problems.append(f"output '{name}' missing (got {sorted(outputs)})")
            continue
        exp = np.asarray(expected, dtype=np.float64)
        got = np.asarray(outputs[name], dtype=np.float64)
        if got.shape != exp.shape:
            problems.append(
                f"output '{name}' has shape {list(got.shape)}, expected {list(exp.shape)}"
            )
            continue
        if not np.all(np.isfinite(got)):
            problems.append(f"output '{name}' contains NaN/Inf")
            continue
        diff = float(np.max(np.abs(got - exp))) if got.size else 0.0
        worst = max(worst, diff)
        if diff > tol:
            problems.append(f"output '{name}' differs by {diff:.3g} (tolerance {tol:g})")
    return GoldenCheck(not problems, worst, tol, tuple(problems))


def golden_inputs(manifest: Mapping[str, Any]) -> dict[str, np.ndarray]:
    return {k: np.asarray(v, dtype=np.float32) for k, v in manifest["golden"]["inputs"].items()}
