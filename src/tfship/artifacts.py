"""Where an export keeps what tfship reads back, and how "the newest version" is chosen.

One definition for every stage: the export's manifest and warmup records under
`assets.extra/`, TF Serving's `models.config` at a model repository's root, and numeric
version directories (TF Serving's own rule: the highest number is the newest; file times
never decide).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tfship.errors import ModelError

MANIFEST = Path("assets.extra") / "tfship-manifest.json"
WARMUP = Path("assets.extra") / "tf_serving_warmup_requests"
MODELS_CONFIG = "models.config"


def numeric_versions(root: Path) -> list[int]:
    """The numeric sub-directories of `root`, ascending; [] when `root` does not exist."""
    if not root.is_dir():
        return []
    return sorted(
        int(p.name) for p in root.iterdir() if p.name.isascii() and p.name.isdigit() and p.is_dir()
    )


def latest_export(export_root: Path, *, hint: str | None = None) -> Path:
    """The highest numeric `export/<version>/` of a run directory."""
    versions = numeric_versions(export_root)
    if not versions:
        raise ModelError(
            f"no exported SavedModel under {export_root}/<version>/",
            hint=hint or "run `tfship export` (or `tfship run`) for this run directory first",
        )
    return export_root / str(versions[-1])


def read_manifest(export_dir: Path) -> dict[str, Any]:
    """The export's tfship-manifest.json; a missing or malformed one is a ModelError."""
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
    if not isinstance(data, dict):
        raise ModelError(f"{path} holds {type(data).__name__}, expected a JSON object")
    for key in ("golden", "version", "signature"):
        if key not in data:
            raise ModelError(
                f"{path} has no '{key}'; expected the tfship-manifest format",
                hint="re-export with this tfship version (docs/run-directory.md)",
            )
    return data


def manifest_if_any(saved_model: Path) -> dict[str, Any] | None:
    """The manifest when there is a readable one (champions may come from other tools)."""
    try:
        data = json.loads((saved_model / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
