"""Data snapshots and change detection: should a scheduled pipeline retrain?

`run_snapshot` records the data set's fingerprint and file manifest (path, size, sha256) in the
run directory as `data.manifest.json`, the same file `tfship data` writes. `run_changed`
compares the data as it is now with a baseline (a manifest file, a run directory, an export
directory or the champion) and says whether anything was added, removed or modified; its exit
code is 0 (retrain) or 12 (NoChange, skip), which is what the pipeline's `rules`/`if` branch on.

The scan only lists and hashes files, with the same rules as the loaders in tfship.data, so
the fingerprint equals `load_splits(cfg).fingerprint` without decoding any image.

With `data.stream` (docs/data-at-scale.md) nothing is hashed whole: the location(s) are listed
(local path/glob, `gs://` through tf.io.gfile, `s3://` through boto3) and `run_changed`
compares that listing with the baseline's file list (`diff_listings`: relative path, size,
checksum = S3 ETag; where neither side has a checksum, the version = mtime / LastModified when
the baseline recorded one — `tfship data snapshot` does, the data.manifest.json written by
`tfship data` and copied into exports does not). When a local or gs:// listing is unchanged and
the baseline has neither checksums nor versions, the bounded stream fingerprint (listing +
content sample, `tfship.data.stream.profile`) is computed and compared too, so a same-size
rewrite of a sampled shard is still seen. A baseline with only a fingerprint is compared by
that fingerprint. `tfship data snapshot` records the stream fingerprint (the one
`load_splits(cfg).fingerprint` gives) and the listing with versions.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tfship.artifacts import MANIFEST
from tfship.config import DataSource, PipelineConfig
from tfship.data import FileEntry
from tfship.errors import ConfigError, DataError, ExitCode
from tfship.fsutil import atomic_write_json
from tfship.rundir import RunDir

MANIFEST_FILE = "data.manifest.json"
# The export stage copies data.manifest.json here (exports made before it did hold only
# the tfship-manifest.json's data_fingerprint, so those are compared by fingerprint).
EXPORT_DATA_MANIFEST = Path("assets.extra") / "tfship-data-manifest.json"


@dataclass(frozen=True)
class DataSnapshot:
    fingerprint: str | None  # None: a stream listing taken without its content sample
    files: tuple[FileEntry, ...]
    # data.stream: the listing (relative paths as in `files`, "<split>/" prefixed for explicit
    # split locations) with checksum and version; None for the in-memory sources.
    shards: tuple[Any, ...] | None = None


SPLIT_NAMES = ("train", "validation", "test")  # tfship.data.streamed's order and prefixes


def _stream_entries(shards: tuple[Any, ...]) -> tuple[FileEntry, ...]:
    # What tfship.data.streamed records in data.manifest.json: the checksum (S3 ETag) or "".
    return tuple(FileEntry(s.rel, int(s.size), str(s.checksum or "")) for s in shards)


def scan_stream(cfg: PipelineConfig, *, with_fingerprint: bool = True) -> DataSnapshot:
    """The `data.stream` location(s) listed; with `with_fingerprint`, also the bounded stream
    fingerprint (listing + content sample: reads a sample of shards, on S3 downloads them) —
    the value `load_splits(cfg).fingerprint` has. No shard is read without it."""
    from tfship.data.stream.locations import list_location

    scfg = cfg.data.stream
    assert scfg is not None
    if scfg.hash_key is not None:
        if cfg.data.path is None:
            raise DataError("data.stream with hash_key reads data.path; it is not set")
        locations = {"": str(cfg.data.path)}
    else:
        assert scfg.locations is not None  # DataConfig validation: hash_key or locations
        locations = {f"{s}/": getattr(scfg.locations, s) for s in SPLIT_NAMES}
    if not with_fingerprint:
        from tfship.data.stream.pipeline import image_files

        found: list[Any] = []
        for prefix, loc in locations.items():
            listing = list_location(loc, s3_endpoint_url=scfg.s3_endpoint_url)
            if cfg.data.source.value == "image_folder":
                listing = image_files(listing)  # the files the stream reads, as in the manifest
            found += [replace(s, rel=prefix + s.rel) for s in listing]
        shards = tuple(found)
        return DataSnapshot(None, _stream_entries(shards), shards)

    from tfship.data.stream import StreamSource, profile
    from tfship.data.streamed import stream_options, stream_schema

    schema, opts = stream_schema(cfg), stream_options(cfg)
    fingerprints: dict[str, str] = {}
    listed: list[Any] = []
    for prefix, loc in locations.items():
        split = prefix.rstrip("/") or None
        src = StreamSource.open("" if split else loc, schema, opts, split=split)
        try:
            prof = profile(src)
        finally:
            src.close()
        fingerprints[split or "all"] = prof.fingerprint
        listed.extend(replace(s, rel=prefix + s.rel) for s in prof.shards)
    if len(fingerprints) == 1:
        fp = fingerprints["all"]
    else:  # as load_stream_splits combines the three splits' fingerprints
        fp = hashlib.sha256(json.dumps(fingerprints, sort_keys=True).encode()).hexdigest()
    shards = tuple(listed)
    return DataSnapshot(fp, _stream_entries(shards), shards)


def scan(cfg: PipelineConfig) -> DataSnapshot:
    """Fingerprint and manifest of `cfg.data` as it is now (files hashed, nothing decoded;
    with `data.stream`, listed plus the bounded content sample: `scan_stream`)."""
    from tfship.data.files import file_manifest, manifest_bytes, source_files
    from tfship.data.loaders import load

    if cfg.data.stream is not None:
        return scan_stream(cfg)
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
    assert snap.fingerprint is not None
    path = run_dir.ensure().root / MANIFEST_FILE
    files = [dict(e.__dict__) for e in snap.files]
    if snap.shards is not None:  # data.stream: the version lets a rewrite be seen
        for row, shard in zip(files, snap.shards, strict=True):
            row["version"] = shard.version
    atomic_write_json(
        path,
        {
            "fingerprint": snap.fingerprint,
            "files": files,
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
    # path -> version (mtime / S3 LastModified) where the manifest recorded one
    # (`tfship data snapshot` of a data.stream config)
    versions: Mapping[str, str] = field(default_factory=dict)


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
    versions = (
        {
            f["path"]: f["version"]
            for f in files
            if isinstance(f, dict) and isinstance(f.get("version"), str)
        }
        if isinstance(files, list)
        else {}
    )
    return Baseline(str(path), fingerprint, entries, versions)


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
    fingerprint: str | None  # None: a data.stream listing decided (content sample not read)
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
    return _file_changes(now, base, added, removed, modified, min_changed_files)


def _file_changes(
    now: DataSnapshot,
    base: Baseline,
    added: tuple[str, ...],
    removed: tuple[str, ...],
    modified: tuple[str, ...],
    min_changed_files: int,
) -> ChangedResult:
    """The verdict on a file-level diff, for in-memory file lists and stream listings alike."""
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


def compare_stream(
    now: DataSnapshot, base: Baseline, *, min_changed_files: int = 1
) -> ChangedResult:
    """Diff a data.stream listing with a recorded file list (`diff_listings`)."""
    from tfship.data.stream.locations import Shard
    from tfship.data.stream.profile import diff_listings

    assert now.shards is not None and base.files is not None
    old = [
        Shard(e.path, e.path, e.size, e.sha256 or None, base.versions.get(e.path))
        for e in base.files
    ]
    # A version is compared only where the baseline recorded one for that file.
    new = [
        Shard(s.rel, s.rel, s.size, s.checksum, s.version if s.rel in base.versions else None)
        for s in now.shards
    ]
    added, removed, modified = diff_listings(old, new)
    return _file_changes(now, base, added, removed, modified, min_changed_files)


def _changed_stream(
    cfg: PipelineConfig, base: Baseline | None, since: str, n: int
) -> ChangedResult:
    if base is None or base.files is None:
        # First run, or only a fingerprint recorded: the fingerprint decides (content sample).
        now = scan_stream(cfg)
        if base is None:
            return ChangedResult(True, "no champion yet (first run)", since, now.fingerprint, None)
        return compare(now, base)
    now = scan_stream(cfg, with_fingerprint=False)
    result = compare_stream(now, base, min_changed_files=n)
    assert now.shards is not None
    unverifiable = (
        not result.added
        and not result.removed
        and not result.modified
        and not any(e.sha256 for e in base.files)
        and not base.versions
    )
    if unverifiable:
        # Same paths and sizes, and nothing recorded that a same-size rewrite would change:
        # compare the bounded fingerprint (its content sample) with the recorded one.
        full = scan_stream(cfg)
        if full.fingerprint != base.fingerprint:
            return ChangedResult(
                True,
                "same files and sizes, but the fingerprint (content sample) differs",
                base.source,
                full.fingerprint,
                base.fingerprint,
            )
        return replace(
            result, fingerprint=full.fingerprint, reason=result.reason + "; same fingerprint"
        )
    return result


def run_changed(cfg: PipelineConfig, since: str, *, min_changed_files: int = 1) -> ChangedResult:
    """Compare the data now with `since` (file, run dir, export dir or `champion`)."""
    if min_changed_files < 1:
        raise ConfigError(f"--min-changed-files must be >= 1; received {min_changed_files}")
    base = load_baseline(cfg, since)
    if cfg.data.stream is not None:
        return _changed_stream(cfg, base, since, min_changed_files)
    now = scan(cfg)
    if base is None:
        return ChangedResult(True, "no champion yet (first run)", since, now.fingerprint, None)
    return compare(now, base, min_changed_files=min_changed_files)
