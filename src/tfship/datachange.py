"""Data snapshots and change detection: should a scheduled pipeline retrain?

`run_snapshot` records the data set's fingerprint and file manifest (path, size, sha256) in the
run directory as `data.manifest.json`, the same file `tfship data` writes. `run_changed`
compares the data as it is now with a baseline (a manifest file, a run directory, an export
directory or the champion) and says whether anything was added, removed or modified; its exit
code is 0 (retrain) or 12 (NoChange, skip), which is what the pipeline's `rules`/`if` branch on.

The scan only lists and hashes files, with the same rules as the loaders in tfship.data, so
the fingerprint equals `load_splits(cfg).fingerprint` without decoding any image.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tfship.artifacts import MANIFEST
from tfship.config import DataSource, PipelineConfig
from tfship.data import FileEntry
from tfship.errors import ConfigError, ExitCode
from tfship.fsutil import atomic_write_json
from tfship.rundir import RunDir

MANIFEST_FILE = "data.manifest.json"
# The export stage copies data.manifest.json here (exports made before it did hold only
# the tfship-manifest.json's data_fingerprint, so those are compared by fingerprint).
EXPORT_DATA_MANIFEST = Path("assets.extra") / "tfship-data-manifest.json"


@dataclass(frozen=True)
class DataSnapshot:
    fingerprint: str
    files: tuple[FileEntry, ...]


def scan(cfg: PipelineConfig) -> DataSnapshot:
    """Fingerprint and manifest of `cfg.data` as it is now (files hashed, nothing decoded)."""
    from tfship.data.files import file_manifest, manifest_bytes, source_files
    from tfship.data.loaders import load

    if cfg.data.source in (DataSource.DEMO, DataSource.LOADER):
        # Built-in data and a data.loader's have no files; the fingerprint is the content hash
        # the loader makes.
        content = load(cfg.data).content
        return DataSnapshot(hashlib.sha256(content).hexdigest(), ())
    root, files = source_files(cfg.data)  # the loaders' rules: no FIFO is ever opened
    manifest = file_manifest(root, files)
    return DataSnapshot(hashlib.sha256(manifest_bytes(manifest)).hexdigest(), tuple(manifest))


@dataclass(frozen=True)
class SnapshotResult:
    """What `tfship data snapshot` recorded."""

    fingerprint: str
    files: int
    bytes: int
    manifest: Path

    def render_text(self) -> str:
        return (
            f"data snapshot: {self.files} file(s), {self.bytes} bytes, fingerprint "
            f"{self.fingerprint}\n  wrote {self.manifest}"
        )


def run_snapshot(cfg: PipelineConfig, run_dir: RunDir) -> SnapshotResult:
    """Write `<run dir>/data.manifest.json`: fingerprint + every file's path, size, sha256."""
    snap = scan(cfg)
    path = run_dir.ensure().root / MANIFEST_FILE
    atomic_write_json(
        path,
        {
            "fingerprint": snap.fingerprint,
            "files": [e.__dict__ for e in snap.files],
            "source": cfg.data.source.value,
            "path": str(cfg.data.path) if cfg.data.path else None,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
    )
    return SnapshotResult(snap.fingerprint, len(snap.files), sum(e.size for e in snap.files), path)


# --- change detection -------------------------------------------------------------------


@dataclass(frozen=True)
class Baseline:
    source: str  # where it was read from
    fingerprint: str
    files: tuple[FileEntry, ...] | None  # None: only a fingerprint was recorded


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:  # RecursionError: nesting bombs
        raise ConfigError(f"--since {path}: cannot read it as JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--since {path}: expected a JSON object")
    return data


def _from_json(path: Path) -> Baseline:
    data = _read_json(path)
    fingerprint = data.get("fingerprint") or data.get("data_fingerprint")
    if not isinstance(fingerprint, str):
        raise ConfigError(
            f"--since {path}: no data fingerprint in it",
            hint="pass a data.manifest.json, data.json, a run directory or an export directory",
        )
    files = data.get("files")
    entries = (
        tuple(_entry(f, path, i) for i, f in enumerate(files)) if isinstance(files, list) else None
    )
    return Baseline(str(path), fingerprint, entries)


def _entry(record: Any, path: Path, i: int) -> FileEntry:
    """One file of a recorded manifest: {"path": str, "size": int >= 0, "sha256": str}."""
    ok = (
        isinstance(record, dict)
        and isinstance(record.get("path"), str)
        and isinstance(record.get("size"), int)
        and not isinstance(record.get("size"), bool)
        and record["size"] >= 0
        and isinstance(record.get("sha256"), str)
    )
    if not ok:
        raise ConfigError(
            f"--since {path}: files[{i}] is not a file entry. Received: {str(record)[:120]}; "
            'expected {"path": "...", "size": <bytes>, "sha256": "..."}',
            hint="pass a data.manifest.json written by `tfship data` or `tfship data snapshot`",
        )
    return FileEntry(record["path"], record["size"], record["sha256"])


def load_baseline(cfg: PipelineConfig, since: str) -> Baseline | None:
    """The recorded data state `since` names; None for `champion` when there is none yet."""
    if since == "champion":
        from tfship.champion import resolve_champion

        if not cfg.gate.champion_repository:
            raise ConfigError(
                "--since champion: gate.champion_repository is not set, so there is no champion "
                "to compare with",
                hint="set gate.champion_repository (TFSHIP_GATE_CHAMPION_REPOSITORY) or pass a "
                "manifest / run directory / export directory",
            )
        lookup = resolve_champion(cfg)
        if lookup.champion is None:
            return None
        since = lookup.champion.path
    p = Path(since)
    candidates = (
        [p]
        if p.is_file()
        else [
            p / MANIFEST_FILE,
            p / "data.json",
            p / EXPORT_DATA_MANIFEST,
            p / MANIFEST,
        ]
    )
    for c in candidates:
        if c.is_file():
            return _from_json(c)
    raise ConfigError(
        f"--since {since}: no data manifest there (looked for "
        f"{', '.join(str(c) for c in candidates)})",
        hint="pass the previous run's data.manifest.json or run directory (CI artifact), an "
        "export directory, or `champion` (gate.champion_repository)",
    )


@dataclass(frozen=True)
class ChangedResult:
    """Whether the data changed since a baseline; exit 0 = retrain, 12 = nothing new."""

    changed: bool
    reason: str
    since: str
    fingerprint: str
    since_fingerprint: str | None
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    modified: tuple[str, ...] = ()
    exit_code: int = 0

    def render_text(self) -> str:
        verdict = "changed: retrain" if self.changed else "unchanged: skip retraining"
        lines = [f"data {verdict} ({self.reason})", f"  since: {self.since}"]
        for label, names in (
            ("added", self.added),
            ("removed", self.removed),
            ("modified", self.modified),
        ):
            if names:
                shown = ", ".join(names[:10]) + (
                    f", ... ({len(names)} in all)" if len(names) > 10 else ""
                )
                lines.append(f"  {label}: {shown}")
        return "\n".join(lines)


def compare(now: DataSnapshot, base: Baseline, *, min_changed_files: int = 1) -> ChangedResult:
    """Diff two data states. Without a file list on both sides, the fingerprints decide."""
    if base.files is None or (not now.files and not base.files):
        changed = now.fingerprint != base.fingerprint
        reason = "fingerprint differs" if changed else "same fingerprint"
        return ChangedResult(
            changed,
            reason,
            base.source,
            now.fingerprint,
            base.fingerprint,
            exit_code=0 if changed else int(ExitCode.NO_CHANGE),
        )
    old = {e.path: e for e in base.files}
    new = {e.path: e for e in now.files}
    added = tuple(sorted(set(new) - set(old)))
    removed = tuple(sorted(set(old) - set(new)))
    modified = tuple(
        sorted(
            p
            for p in set(new) & set(old)
            if (new[p].size, new[p].sha256) != (old[p].size, old[p].sha256)
        )
    )
    n = len(added) + len(removed) + len(modified)
    changed = n >= min_changed_files
    reason = f"{len(added)} added, {len(removed)} removed, {len(modified)} modified" + (
        "" if changed or n == 0 else f"; fewer than --min-changed-files {min_changed_files}"
    )
    return ChangedResult(
        changed,
        reason,
        base.source,
        now.fingerprint,
        base.fingerprint,
        added,
        removed,
        modified,
        0 if changed else int(ExitCode.NO_CHANGE),
    )


def run_changed(cfg: PipelineConfig, since: str, *, min_changed_files: int = 1) -> ChangedResult:
    """Compare the data now with `since` (file, run dir, export dir or `champion`)."""
    if min_changed_files < 1:
        raise ConfigError(f"--min-changed-files must be >= 1; received {min_changed_files}")
    base = load_baseline(cfg, since)
    now = scan(cfg)
    if base is None:
        return ChangedResult(True, "no champion yet (first run)", since, now.fingerprint, None)
    return compare(now, base, min_changed_files=min_changed_files)
