"""Bring the newest complete checkpoint generation back from the object store.

Only when the local directory has no usable generation (a fresh runner): local checkpoints are
always at least as new as the backup, which lags by design. Remote generations are tried newest
first; one that is incomplete or corrupt is skipped with a warning and never loaded. Given the
run identity it expects, a restore also reads the run.json saved with the generation before
downloading anything, and refuses one that belongs to another run (a shared `backup.prefix`):
nothing of it reaches the checkpoint directory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tfship.backup.generation import (
    EXTRA_INFIX,
    STATE_FILE,
    check_remote,
    group_remote,
    local_latest,
    state_file_text,
)
from tfship.backup.store import ObjectStore, open_store
from tfship.checkpoint_guard import differences
from tfship.checkpoint_names import GUARD_FILE
from tfship.errors import ConfigError
from tfship.fsutil import atomic_write_text, sha256_file

log = logging.getLogger(__name__)


class _Corrupt(Exception):
    pass


def _download(store: ObjectStore, gen: str, marker: dict[str, Any], local_dir: Path) -> None:
    tmp = local_dir / f".tfship-restore-{gen}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        wanted = {name: (name, meta) for name, meta in marker["files"].items()}
        wanted.update(
            {
                f"extra-{name}": (f"{gen}{EXTRA_INFIX}{name}", meta)
                for name, meta in (marker.get("extras") or {}).items()
            }
        )
        for local_name, (key, meta) in wanted.items():
            dst = tmp / local_name
            store.get_file(key, dst)
            if dst.stat().st_size != meta["size"] or sha256_file(dst) != meta["sha256"]:
                raise _Corrupt(f"{key} does not match the size/sha256 in its marker")
        # Index after the data it describes; the state file last makes the generation visible.
        index = f"{gen}.index"
        for local_name in sorted(wanted, key=lambda n: (n == index, not n.startswith("extra-"))):
            target = local_name.removeprefix("extra-")
            os.replace(tmp / local_name, local_dir / target)
        atomic_write_text(local_dir / STATE_FILE, state_file_text(gen))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _check_run(
    store: ObjectStore, gen: str, marker: dict[str, Any], expect_run: Mapping[str, Any]
) -> None:
    """Raise ConfigError unless the run.json saved with `gen` names the run `expect_run`;
    _Corrupt when that copy is damaged (then the generation is skipped like any damaged one)."""
    where = f"{store.url}/{gen}"
    hint = (
        "leave backup.prefix unset: the default prefix is per pipeline and job, so a new "
        "pipeline starts fresh; or give this run a backup.prefix of its own"
    )
    meta = (marker.get("extras") or {}).get(GUARD_FILE)
    if meta is None:
        raise ConfigError(
            f"the checkpoint backup {where} has no {GUARD_FILE}, so nothing says which run it "
            "belongs to; it is not restored",
            hint=hint,
        )
    data = store.get_bytes(f"{gen}{EXTRA_INFIX}{GUARD_FILE}")
    if data is None or hashlib.sha256(data).hexdigest() != meta.get("sha256"):
        raise _Corrupt(f"its {GUARD_FILE} does not match the sha256 in its marker")
    try:
        guard = json.loads(data)
    except ValueError as exc:
        raise _Corrupt(f"its {GUARD_FILE} is not JSON ({exc})") from None
    run = guard.get("run") if isinstance(guard, dict) else None
    if run != dict(expect_run):
        diffs = differences({"run": run}, {"run": dict(expect_run)}, ("run",))
        raise ConfigError(
            f"the checkpoint backup {where} belongs to another run, so it is not restored; "
            f"differs: {'; '.join(diffs)}",
            hint=hint,
        )


def restore_latest(
    local_dir: str | os.PathLike[str],
    remote: ObjectStore | str,
    *,
    endpoint_url: str | None = None,
    expect_run: Mapping[str, Any] | None = None,
) -> int | None:
    """Restore the newest complete remote generation into an empty `local_dir`.

    Writes the `checkpoint` state file so `tf.train.CheckpointManager` (created afterwards)
    finds it. Returns the restored step, or None when the local directory already has a
    generation or the remote holds no complete one. With `expect_run`, a generation whose
    run.json names another run (or none) is refused with ConfigError before any download.
    """
    local_dir = Path(local_dir)
    store = open_store(remote, endpoint_url=endpoint_url) if isinstance(remote, str) else remote
    existing = local_latest(local_dir)
    if existing is not None:
        log.info(
            "checkpoint restore: %s already has %s; not restoring from %s",
            local_dir,
            existing,
            store.url,
        )
        return None
    listing = store.list()
    gens = sorted(group_remote(listing).values(), key=lambda g: g.step, reverse=True)
    local_dir.mkdir(parents=True, exist_ok=True)
    for gen in gens:
        marker_bytes = store.get_bytes(gen.marker_key) if gen.marker_key in listing else None
        marker, why = check_remote(gen, marker_bytes, listing)
        if marker is None:
            log.warning("checkpoint restore: skipping %s/%s: %s", store.url, gen.generation, why)
            continue
        try:
            if expect_run is not None:
                _check_run(store, gen.generation, marker, expect_run)
            _download(store, gen.generation, marker, local_dir)
        except (_Corrupt, FileNotFoundError) as exc:
            log.warning("checkpoint restore: skipping %s/%s: %s", store.url, gen.generation, exc)
            continue
        log.info(
            "checkpoint restore: %s/%s -> %s (step %d)",
            store.url,
            gen.generation,
            local_dir,
            gen.step,
        )
        return gen.step
    if gens:
        log.warning(
            "checkpoint restore: no complete generation under %s; starting fresh", store.url
        )
    return None
