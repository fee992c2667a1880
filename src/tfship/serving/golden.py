"""The export's manifest and its golden requests: what any server must answer for them.

Deploy trusts a manifest only after `check_manifest`: it must match
`schemas/serving-manifest.schema.json` (a positive int64 version, a non-empty golden set with
finite numbers) and name the version it is published under, so a tampered manifest can neither
publish version -5 nor pass a NaN model with an empty golden set.
"""

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
from tfship.errors import ModelError
from tfship.serving import schema


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
    """Outputs must be finite, have the manifest's names and shapes, and match within tolerance.

    Every served output must be finite, also those the golden set does not list, and an empty
    golden set is a problem, never a pass.
    """
    golden = manifest["golden"]
    tol = float(tolerance if tolerance is not None else golden.get("tolerance", 1e-4))
    problems: list[str] = []
    worst = 0.0
    if not golden.get("outputs"):
        problems.append("the manifest lists no golden outputs: nothing to compare")
    for name, value in outputs.items():
        got = np.asarray(value)
        if got.dtype.kind in "fc" and not np.all(np.isfinite(got)):
            problems.append(f"output '{name}' contains NaN/Inf")
    for name, expected in golden.get("outputs", {}).items():
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
            continue  # reported above
        if not np.all(np.isfinite(exp)):
            problems.append(f"the manifest's golden output '{name}' contains NaN/Inf")
            continue
        if got.size == 0:
            problems.append(f"output '{name}' is empty")
            continue
        diff = float(np.max(np.abs(got - exp)))
        worst = max(worst, diff)
        if diff > tol:
            problems.append(f"output '{name}' differs by {diff:.3g} (tolerance {tol:g})")
    return GoldenCheck(not problems, worst, tol, tuple(problems))


def golden_inputs(manifest: Mapping[str, Any]) -> dict[str, np.ndarray]:
    return {k: np.asarray(v, dtype=np.float32) for k, v in manifest["golden"]["inputs"].items()}


def check_manifest(manifest: Any, *, version: int | None, where: str) -> dict[str, Any]:
    """The manifest, if deploy may trust it for `version`; ModelError (exit 6) otherwise."""
    bad = schema.problems("manifest", manifest)
    if not bad and version is not None and manifest["version"] != version:
        bad = [f"it says version {manifest['version']}, but it is published as {version}"]
    if bad:
        raise ModelError(
            f"{where}: the tfship manifest is not one deploy can trust: {'; '.join(bad)}",
            hint="re-export the model (`tfship export`); a manifest is never edited by hand",
        )
    return dict(manifest)
