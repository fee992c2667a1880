"""Find the champion: the model the candidate must not be worse than.

The champion is the version of `project.model_name` labelled `gate.champion_label` (default
`stable`) in the model repository's `models.config`, TF Serving's own text-proto model config
(`model_config_list { config { name, base_path, version_labels { key: "stable" value: 3 } } }`),
or a SavedModel directory given explicitly (`--champion DIR`, always first). Repository
(`gate.champion_repository`, default `serving.model_repository`): a local path or
`s3://bucket/prefix`, opened with `open_repository()` like the deploy stage's; a version in an
object store is downloaded to a scratch directory and verified (sizes + sha256) before scoring.

A repository without `models.config` or without the label means "first run": that is
reported, never silently treated as a pass of the change thresholds. In CI (`CI` set) a local
repository that does not exist means the job was not given the repository at all, which is said
loudly (`no_repository`), not passed off as a first run.
"""

from __future__ import annotations

import atexit
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tfship import env as envvars
from tfship.artifacts import MODELS_CONFIG, manifest_if_any
from tfship.config import PipelineConfig
from tfship.errors import ModelError

log = logging.getLogger(__name__)


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
    # True when, in CI, the repository points nowhere: the change thresholds were skipped
    # because nothing was configured, not because this is the first model.
    no_repository: bool = False


def _check_saved_model(path: Path, what: str) -> None:
    if not (path / "saved_model.pb").is_file():
        raise ModelError(
            f"{what} {path} is not a SavedModel directory (no saved_model.pb)",
            hint="point it at an export/<version>/ directory, or fix the model repository",
        )


def from_path(path: str | Path) -> Champion:
    p = Path(path)
    _check_saved_model(p, "champion")
    version = int(p.name) if p.name.isascii() and p.name.isdigit() else None
    return Champion(str(p), version, "path", None, manifest_if_any(p))


def _labelled_version(text: str, origin: str, model_name: str, label: str) -> int | None:
    from tfship.serving.models_config import parse

    for entry in parse(text, origin=origin).model_config_list.config:
        if entry.name == model_name:
            return int(entry.version_labels[label]) if label in entry.version_labels else None
    return None


def _scratch() -> Path:
    """A temporary directory removed at exit (callers without their own scratch space)."""
    path = Path(tempfile.mkdtemp(prefix="tfship-champion-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def resolve_champion(
    cfg: PipelineConfig,
    explicit: str | Path | None = None,
    *,
    scratch: Path | None = None,
    environ: Any = None,
) -> ChampionLookup:
    """Explicit path first, else the labelled version in `gate.champion_repository`.

    `scratch`: where a champion from an object store is downloaded (default: a temporary
    directory removed at exit). `environ`: the environment to read `CI` from (tests).
    """
    from tfship.serving.repository import open_repository

    if explicit:
        champ = from_path(explicit)
        return ChampionLookup(champ, f"champion given explicitly: {champ.path}")
    base = cfg.gate.champion_repository or cfg.serving.model_repository
    label = cfg.gate.champion_label
    name = cfg.project.model_name
    origin = f"{base.rstrip('/')}/{MODELS_CONFIG}"
    if "://" not in base and not Path(base).is_dir() and envvars.ci_context(environ).get("CI"):
        note = (
            f"no model repository configured: {base} does not exist in this CI job, so there "
            "is no champion and the change thresholds were skipped; set "
            "gate.champion_repository (or serving.model_repository) to the repository the "
            "deploy job publishes to"
        )
        log.warning("%s", note)
        return ChampionLookup(None, note, no_repository=True)
    repo = open_repository(base, s3_endpoint_url=cfg.serving.s3_endpoint_url)
    text = repo.read_text(MODELS_CONFIG)
    if text is None:
        return ChampionLookup(None, f"first run: no {origin} yet, so no `{label}` model")
    version = _labelled_version(text, origin, name, label)
    if version is None:
        return ChampionLookup(
            None, f"first run: no version of '{name}' is labelled `{label}` in {origin}"
        )
    if not repo.is_complete(name, version):
        raise ModelError(
            f"`{label}` version {version} of '{name}' is not in {repo.location(name, version)} "
            "(no saved_model.pb)",
            hint="re-publish that version, or fix the label in models.config",
        )
    from tfship.serving.repository_local import LocalRepository

    if scratch is None and not isinstance(repo, LocalRepository):
        scratch = _scratch()
    path = repo.local_copy(name, version, scratch or Path("."))
    _check_saved_model(path, f"`{label}` version {version} of '{name}':")
    champ = Champion(str(path), version, "repository", label, manifest_if_any(path))
    return ChampionLookup(champ, f"champion: version {version} labelled `{label}` in {base}")
