"""Find the champion: the model the candidate must not be worse than.

The champion is the version of `project.model_name` labelled `gate.champion_label` (default
`stable`) in the model repository's `models.config`, TF Serving's own text-proto model config
(`model_config_list { config { name, base_path, version_labels { key: "stable" value: 3 } } }`),
or a SavedModel directory given explicitly. Repository (`gate.champion_repository`, default
`serving.model_repository`): `<base>/models.config` and
`<base>/<model_name>/<version>/` (the deploy stage's layout).

No repository, no `models.config`, or no label yet means "first run": that is reported, never
silently treated as a pass of the change thresholds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tfship.config import PipelineConfig
from tfship.errors import ConfigError, ModelError

MANIFEST = Path("assets.extra") / "tfship-manifest.json"
MODELS_CONFIG = "models.config"


@dataclass(frozen=True)
class Champion:
    """A resolved champion SavedModel."""

    path: str
    version: int | None
    source: str  # "repository" | "path"
    label: str | None
    manifest: dict[str, Any] | None


@dataclass(frozen=True)
class ChampionLookup:
    """The champion, or why there is none (first run)."""

    champion: Champion | None
    note: str


def read_manifest(saved_model: Path) -> dict[str, Any] | None:
    path = saved_model / MANIFEST
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _check_saved_model(path: Path, what: str) -> None:
    if not (path / "saved_model.pb").is_file():
        raise ModelError(
            f"{what} {path} is not a SavedModel directory (no saved_model.pb)",
            hint="point it at an export/<version>/ directory, or fix the model repository",
        )


def from_path(path: str | Path) -> Champion:
    p = Path(path)
    _check_saved_model(p, "champion")
    version = int(p.name) if p.name.isdigit() else None
    return Champion(str(p), version, "path", None, read_manifest(p))


def _labelled_version(
    text: str, origin: str, model_name: str, label: str
) -> tuple[int | None, str]:
    from tfship.serving.models_config import parse

    for entry in parse(text, origin=origin).model_config_list.config:
        if entry.name == model_name:
            return (
                int(entry.version_labels[label]) if label in entry.version_labels else None,
                entry.base_path,
            )
    return None, ""


def resolve_champion(cfg: PipelineConfig, explicit: str | Path | None = None) -> ChampionLookup:
    """Explicit path first, else the labelled version in `gate.champion_repository`."""
    if explicit:
        champ = from_path(explicit)
        return ChampionLookup(champ, f"champion given explicitly: {champ.path}")
    base = cfg.gate.champion_repository or cfg.serving.model_repository
    label = cfg.gate.champion_label
    name = cfg.project.model_name
    origin = f"{base.rstrip('/')}/{MODELS_CONFIG}"
    if "://" in base:
        from tfship.serving.repository import open_repository

        repo = open_repository(base, s3_endpoint_url=cfg.serving.s3_endpoint_url)
        text = repo.read_text(MODELS_CONFIG)
    else:
        config_file = Path(base) / MODELS_CONFIG
        text = config_file.read_text(encoding="utf-8") if config_file.is_file() else None
    if text is None:
        return ChampionLookup(None, f"first run: no {origin} yet, so no `{label}` model")
    version, base_path = _labelled_version(text, origin, name, label)
    if version is None:
        return ChampionLookup(
            None, f"first run: no version of '{name}' is labelled `{label}` in {origin}"
        )
    if "://" in base:
        # Scoring needs the SavedModel on local disk; a silent "first run" would skip the
        # change thresholds, so this is an error with the way out.
        raise ConfigError(
            f"the champion ({name} version {version}, `{label}`) is in {base}; the gate "
            "evaluates champions from a local directory",
            hint=f"copy {base}/{name}/{version} locally and pass --champion <dir>, or set "
            "gate.champion_repository to a local mirror of the repository",
        )
    # models.config may hold the path the server sees (e.g. /models/digits in a container);
    # prefer it when it exists here, else the repository's own <base>/<model_name>.
    model_dir = Path(base_path) if base_path and Path(base_path).is_dir() else Path(base) / name
    path = model_dir / str(version)
    _check_saved_model(path, f"`{label}` version {version} of '{name}':")
    champ = Champion(str(path), version, "repository", label, read_manifest(path))
    return ChampionLookup(champ, f"champion: version {version} labelled `{label}` in {base}")
