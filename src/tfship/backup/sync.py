"""Upload checkpoint generations to an object store in a background thread.

The training loop calls `sync()` right after each save. That call only hard-links the new
generation's files into a staging directory (microseconds, and the links keep the bytes alive
when CheckpointManager deletes an old generation) and hands it to the uploader thread. If
training saves faster than the store accepts, only the newest waiting generation is kept: a
backup exists to resume from, so an older generation nobody will restore is not worth the wait.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tfship.backup.generation import (
    EXTRA_INFIX,
    MARKER_SUFFIX,
    build_marker,
    group_remote,
    local_files,
    local_latest,
)
from tfship.backup.store import ObjectStore

if TYPE_CHECKING:  # not at run time: the agent process stays light
    from tfship.config import BackupConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BackupStatus:
    """What the uploader did, as `close()` reports it."""

    url: str
    uploaded: tuple[str, ...] = ()
    last_step: int | None = None
    bytes: int = 0
    upload_seconds: float = 0.0
    superseded: int = 0  # generations replaced by a newer one before their upload started
    failures: int = 0
    last_error: str | None = None
    pending: tuple[str, ...] = ()  # not uploaded when close() gave up waiting


def close_budget(bcfg: BackupConfig, *, preempted: bool) -> float:
    """Seconds `close()` may wait for the last upload."""
    return float(bcfg.preempt_timeout_seconds if preempted else bcfg.upload_timeout_seconds)


@dataclass
class _Job:
    generation: str
    staged: Path
    files: dict[str, Path] = field(default_factory=dict)  # remote name -> staged path
    extras: dict[str, Path] = field(default_factory=dict)


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another filesystem, or links not supported: copy instead
        shutil.copy2(src, dst)


class CheckpointBackup:
    """Mirror one local CheckpointManager directory to `store`, keeping `keep` generations.

    `extras` are small files next to the checkpoints (e.g. run.json) saved with every
    generation, so a restore brings back what the trainer checks before resuming.
    """

    def __init__(
        self,
        store: ObjectStore,
        local_dir: str | os.PathLike[str],
        *,
        keep: int = 2,
        extras: tuple[str, ...] = (),
        staging_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.store = store
        self.local_dir = Path(local_dir)
        self.keep = keep
        self.extras = extras
        self.staging_dir = Path(staging_dir or f"{self.local_dir}.backup-staging")
        self._cond = threading.Condition()
        self._sync_lock = threading.Lock()
        self._pending: _Job | None = None
        self._busy = False
        self._current: str | None = None
        self._closing = False
        self._handed: str | None = None
        self._uploaded: list[str] = []
        self._stats = {"bytes": 0, "seconds": 0.0, "superseded": 0, "failures": 0}
        self._last_error: str | None = None
        self._remote: dict[str, int] | None = None  # the store's listing, kept by the thread
        self._thread = threading.Thread(
            target=self._run, name=f"tfship-backup-{self.local_dir.name}", daemon=True
        )
        self._thread.start()

    # -- called by the training loop -----------------------------------------------------

    def sync(self) -> bool:
        """Queue the newest local generation if it has not been queued yet. Never blocks on
        the network; returns whether something was queued."""
        with self._sync_lock:  # the training loop and TrainingBackup's poller both call this
            generation = local_latest(self.local_dir)
            if generation is None or generation == self._handed:
                return False
            job = self._stage(generation)
            if job is None:
                return False
            return self._enqueue(job)

    def _enqueue(self, job: _Job) -> bool:
        with self._cond:
            if self._closing:
                shutil.rmtree(job.staged, ignore_errors=True)
                return False
            if self._pending is not None:
                self._stats["superseded"] += 1
                shutil.rmtree(self._pending.staged, ignore_errors=True)
            self._pending = job
            self._cond.notify_all()
        self._handed = job.generation
        return True

    def flush(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds until everything queued is uploaded."""
        with self._cond:
            return self._cond.wait_for(
                lambda: self._pending is None and not self._busy, timeout=timeout
            )

    def close(self, timeout: float) -> BackupStatus:
        """Queue the newest generation, wait (bounded) for the uploads, stop the thread."""
        self.sync()
        done = self.flush(timeout)
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if done:
            self._thread.join(timeout=1.0)
            shutil.rmtree(self.staging_dir, ignore_errors=True)
        else:
            log.warning(
                "checkpoint backup to %s did not finish within %.0f s; the remote copy may lag "
                "behind the local checkpoints (raise backup.upload_timeout_seconds)",
                self.store.url,
                timeout,
            )
        return self.status()

    def status(self) -> BackupStatus:
        with self._cond:
            pending = [j.generation for j in (self._pending,) if j is not None]
            if self._busy and self._current is not None:
                pending.insert(0, self._current)
            return BackupStatus(
                url=self.store.url,
                uploaded=tuple(self._uploaded),
                last_step=int(self._uploaded[-1].rsplit("-", 1)[1]) if self._uploaded else None,
                bytes=int(self._stats["bytes"]),
                upload_seconds=round(float(self._stats["seconds"]), 3),
                superseded=int(self._stats["superseded"]),
                failures=int(self._stats["failures"]),
                last_error=self._last_error,
                pending=tuple(pending),
            )

    # -- staging and the uploader thread ---------------------------------------------------

    def _stage(self, generation: str) -> _Job | None:
        staged = self.staging_dir / generation
        shutil.rmtree(staged, ignore_errors=True)
        staged.mkdir(parents=True)
        job = _Job(generation, staged)
        try:
            for src in local_files(self.local_dir, generation):
                _link_or_copy(src, staged / src.name)
                job.files[src.name] = staged / src.name
            for name in self.extras:
                src = self.local_dir / name
                if src.is_file():
                    _link_or_copy(src, staged / f"extra-{name}")
                    job.extras[name] = staged / f"extra-{name}"
        except FileNotFoundError as exc:
            # Only if saves outpace max_to_keep between two sync() calls; the next one catches up.
            log.warning(
                "checkpoint backup: %s vanished before it could be staged (%s)", generation, exc
            )
            shutil.rmtree(staged, ignore_errors=True)
            return None
        return job

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending is not None or self._closing)
                if self._pending is None:
                    return
                job, self._pending, self._busy = self._pending, None, True
                self._current = job.generation
            try:
                self._upload(job)
            except Exception as exc:  # keep training; the next generation tries again
                self._stats["failures"] += 1
                self._last_error = f"{type(exc).__name__}: {exc}"
                log.warning(
                    "checkpoint backup of %s to %s failed: %s",
                    job.generation,
                    self.store.url,
                    self._last_error,
                )
            finally:
                shutil.rmtree(job.staged, ignore_errors=True)
                with self._cond:
                    self._busy, self._current = False, None
                    self._cond.notify_all()

    def _upload(self, job: _Job) -> None:
        t0 = time.perf_counter()
        gen = job.generation
        marker = build_marker(gen, job.files, job.extras)
        # One listing per generation; between generations only this thread writes here, so
        # the previous pass's view (updated below) is current. Reset after any failure.
        remote = self._remote if self._remote is not None else self.store.list()
        self._remote = None
        # Leftovers of an earlier, cut-off attempt at this step: marker first, so a reader
        # never sees a marker next to files it does not describe.
        stale = sorted(
            (k for k in remote if k.startswith(f"{gen}.")),
            key=lambda k: not k.endswith(MARKER_SUFFIX),
        )
        if stale:
            self.store.delete(stale)
        index = f"{gen}.index"
        for name in sorted(job.files, key=lambda n: n == index):  # index last
            if name != index:
                self.store.put_file(name, job.files[name])
        for name, path in job.extras.items():
            self.store.put_file(f"{gen}{EXTRA_INFIX}{name}", path)
        self.store.put_file(index, job.files[index])
        # put_file returned, so the store verified each object (S3: Content-MD5 / size).
        expected = {
            **marker["files"],
            **{f"{gen}{EXTRA_INFIX}{k}": v for k, v in marker["extras"].items()},
        }
        listing = {k: v for k, v in remote.items() if k not in stale}
        listing.update({name: meta["size"] for name, meta in expected.items()})
        # The marker is the 'complete' signal: written last, after every file is verified.
        body = json.dumps(marker, indent=1, sort_keys=True).encode()
        self.store.put_bytes(f"{gen}{MARKER_SUFFIX}", body)
        listing[f"{gen}{MARKER_SUFFIX}"] = len(body)
        self._remote = self._apply_retention(listing)
        seconds = time.perf_counter() - t0
        size = sum(m["size"] for m in expected.values())
        with self._cond:
            self._uploaded.append(gen)
            self._stats["bytes"] += size
            self._stats["seconds"] += seconds
        log.info(
            "checkpoint backup: %s (%d files, %.1f MB) -> %s in %.2f s",
            gen,
            len(expected),
            size / 1e6,
            self.store.url,
            seconds,
        )

    def _apply_retention(self, listing: dict[str, int]) -> dict[str, int]:
        """Delete all but the newest `keep` complete generations; returns what remains."""
        gens = sorted(group_remote(listing).values(), key=lambda g: g.step, reverse=True)
        complete = [g for g in gens if g.marker_key in listing][: self.keep]
        kept = {g.generation for g in complete}
        doomed = [g for g in gens if g.generation not in kept]
        # One batch request. Deletion order does not matter for safety: a restore verifies
        # every file the marker lists, so a partly deleted generation is skipped, never loaded.
        markers = [g.marker_key for g in doomed if g.marker_key in listing]
        rest = [k for g in doomed for k in g.keys if k != g.marker_key]
        if markers or rest:
            self.store.delete_unordered(markers + rest)
        gone = set(markers) | set(rest)
        return {k: v for k, v in listing.items() if k not in gone}
