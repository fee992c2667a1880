"""Checkpoint generations on local disk and in the object store, and the completion marker.

A generation is what one `CheckpointManager.save()` writes: `<name>-<step>.index` plus
`<name>-<step>.data-<i>-of-<n>` for every shard. Remotely it counts only once its marker
`<name>-<step>.tfship.json` exists (uploaded after every file, index last) and every file the
marker lists is there with the size it records; sha256 is checked again on download.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tfship.checkpoint_names import step_of
from tfship.fsutil import sha256_file

MARKER_SUFFIX = ".tfship.json"
EXTRA_INFIX = ".extra/"
SCHEMA = "tfship-checkpoint-backup/1"
STATE_FILE = "checkpoint"  # tf.train.CheckpointManager's state file

_GEN = r"(?P<gen>(?P<name>[A-Za-z0-9_.-]+?)-(?P<step>\d+))"
_REMOTE_KEY = re.compile(
    _GEN
    + r"(?P<rest>\.index|\.data-\d{5}-of-\d{5}|"
    + re.escape(MARKER_SUFFIX)
    + r"|"
    + re.escape(EXTRA_INFIX)
    + r".+)$"
)
_EXTRA_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")  # run.json, best.json
_DATA = re.compile(r"\.data-(\d{5})-of-(\d{5})$")
_STATE_LINE = re.compile(r'^model_checkpoint_path:\s*"(?P<path>.*)"\s*$', re.M)


def shards_complete(names: list[str], generation: str) -> bool:
    """The index and every data shard `<gen>.data-<i>-of-<n>`, i = 0..n-1, are present."""
    if f"{generation}.index" not in names:
        return False
    shards = [m for n in names if n.startswith(generation) and (m := _DATA.search(n))]
    if not shards:
        return False
    total = {int(m.group(2)) for m in shards}
    if len(total) != 1:
        return False
    (n,) = total
    return {int(m.group(1)) for m in shards} == set(range(n))


def local_latest(directory: Path) -> str | None:
    """The generation the `checkpoint` state file names, if its index exists (what
    tf.train.latest_checkpoint returns, without importing TensorFlow)."""
    state = directory / STATE_FILE
    if not state.is_file():
        return None
    m = _STATE_LINE.search(state.read_text(encoding="utf-8", errors="replace"))
    if not m:
        return None
    gen = Path(m.group("path")).name
    return gen if (directory / f"{gen}.index").is_file() else None


def local_files(directory: Path, generation: str) -> list[Path]:
    """Data shards first, index last: the order they are uploaded in."""
    data = sorted(directory.glob(f"{generation}.data-*-of-*"))
    return [*data, directory / f"{generation}.index"]


def build_marker(
    generation: str, files: dict[str, Path], extras: dict[str, Path]
) -> dict[str, Any]:
    def describe(p: Path) -> dict[str, Any]:
        return {"size": p.stat().st_size, "sha256": sha256_file(p)}

    return {
        "schema": SCHEMA,
        "generation": generation,
        "step": step_of(generation),
        "files": {name: describe(p) for name, p in files.items()},
        "extras": {name: describe(p) for name, p in extras.items()},
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


@dataclass(frozen=True)
class RemoteGeneration:
    generation: str
    step: int
    keys: tuple[str, ...]  # every object of this generation, marker included

    @property
    def marker_key(self) -> str:
        return f"{self.generation}{MARKER_SUFFIX}"


def group_remote(listing: dict[str, int]) -> dict[str, RemoteGeneration]:
    """Objects grouped by generation (keys that are not checkpoint files are ignored)."""
    keys: dict[str, list[str]] = {}
    for key in listing:
        m = _REMOTE_KEY.match(key)
        if m:
            keys.setdefault(m.group("gen"), []).append(key)
    return {gen: RemoteGeneration(gen, step_of(gen), tuple(sorted(ks))) for gen, ks in keys.items()}


def check_remote(
    gen: RemoteGeneration, marker_bytes: bytes | None, listing: dict[str, int]
) -> tuple[dict[str, Any] | None, str]:
    """(marker, "") when the generation is complete remotely, else (None, why not)."""
    if marker_bytes is None:
        return None, "no completion marker (upload cut off)"
    try:
        marker = json.loads(marker_bytes)
    except ValueError:
        return None, "completion marker is not valid JSON"
    if not isinstance(marker, dict) or marker.get("schema") != SCHEMA:
        return None, f"completion marker schema is not {SCHEMA}"
    files = marker.get("files") or {}
    extras = marker.get("extras") or {}
    if not isinstance(files, dict) or not isinstance(extras, dict):
        return None, "completion marker lists no files"
    # Names become local paths on restore: only this generation's own files, and extras as
    # plain names (an object store takes '../' in a key literally; a path would not).
    own = re.compile(re.escape(gen.generation) + r"(?:\.index|\.data-\d{5}-of-\d{5})")
    stray = [n for n in files if not own.fullmatch(n)]
    stray += [n for n in extras if not _EXTRA_NAME.fullmatch(n)]
    if stray:
        return None, f"marker names files that are not this generation's: {sorted(stray)[:3]}"
    if not shards_complete(list(files), gen.generation):
        return None, "marker does not list an index and every data shard"
    expected = {
        **files,
        **{f"{gen.generation}{EXTRA_INFIX}{k}": v for k, v in extras.items()},
    }
    for name, meta in expected.items():
        if not isinstance(meta, dict):
            return None, f"completion marker entry for {name} is not a size and sha256"
        size = listing.get(name)
        if size is None:
            return None, f"{name} is missing"
        if size != meta.get("size"):
            return None, f"{name} has {size} bytes; the marker says {meta.get('size')}"
    return marker, ""


def state_file_text(generation: str) -> str:
    """A `checkpoint` state file naming one generation, as CheckpointManager writes it."""
    now = time.time()
    return (
        f'model_checkpoint_path: "{generation}"\n'
        f'all_model_checkpoint_paths: "{generation}"\n'
        f"all_model_checkpoint_timestamps: {now}\n"
        f"last_preserved_timestamp: {now}\n"
    )
