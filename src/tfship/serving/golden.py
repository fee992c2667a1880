"""The export's manifest and its golden requests: what any server must answer for them."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tfship.errors import ModelError

MANIFEST = Path("assets.extra") / "tfship-manifest.json"
WARMUP = Path("assets.extra") / "tf_serving_warmup_requests"


@dataclass(frozen=True)
class GoldenCheck:
    """Served outputs compared with the manifest's expected outputs."""

    ok: bool
    max_abs_diff: float
    tolerance: float
    problems: tuple[str, ...]


def read_manifest(export_dir: Path) -> dict[str, Any]:
    path = export_dir / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(
            f"{path} is missing; every tfship export carries its manifest",
            hint="re-run `tfship export`; see docs/run-directory.md",
        ) from None
    except ValueError as exc:
        raise ModelError(f"{path} is not valid JSON: {exc}") from exc
    for key in ("golden", "version", "signature"):
        if key not in data:
            raise ModelError(
                f"{path} has no '{key}'; expected the tfship-manifest/1 format",
                hint="re-export with this tfship version (docs/run-directory.md)",
            )
    return data


def latest_export(export_root: Path) -> Path:
    """The highest numeric `export/<version>/` of a run directory."""
    versions = sorted(
        (int(p.name), p) for p in export_root.glob("*") if p.name.isdigit() and p.is_dir()
    )
    if not versions:
        raise ModelError(
            f"no exported SavedModel under {export_root}/<version>/",
            hint="run `tfship export` (or `tfship run`) for this run directory first",
        )
    return versions[-1][1]


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
