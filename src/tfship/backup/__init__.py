"""Checkpoint backup to object storage: survive preemption onto a fresh runner.

The training stage needs three calls (see `TrainingBackup`):

    backup = open_training_backup(cfg, run_dir, chief=chief)   # starts the agent process
    backup.restore()          # before the CheckpointManager is created
    ...                       # after every manager.save() / best save:
    backup.sync()             # returns at once; the agent uploads in the background
    ...
    backup.close(preempted=...)   # bounded wait for the last upload, then stop

`CheckpointBackup` and `restore_latest` are the lower-level pieces for any CheckpointManager
directory.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tfship.backup.agent import BackupAgent
from tfship.backup.restore import restore_latest
from tfship.backup.store import ObjectStore, open_store
from tfship.backup.sync import BackupStatus, CheckpointBackup, close_budget
from tfship.checkpoint_names import BEST_DIR, BEST_FILE, GUARD_FILE

if TYPE_CHECKING:  # not at run time: the agent process stays light (see tfship.backup.agent)
    from tfship.config import BackupConfig, PipelineConfig
    from tfship.rundir import RunDir

__all__ = [
    "BackupAgent",
    "BackupStatus",
    "CheckpointBackup",
    "ObjectStore",
    "TrainingBackup",
    "open_store",
    "open_training_backup",
    "remote_prefix",
    "restore_latest",
]

log = logging.getLogger(__name__)

POLL_SECONDS = 2.0  # how often the chief looks for a generation written after sync()


class _Prefixed(ObjectStore):
    """The same store, one level down (`best/` next to the latest generations)."""

    def __init__(self, store: ObjectStore, sub: str) -> None:
        self.inner, self.sub, self.url = store, sub.strip("/"), f"{store.url}/{sub.strip('/')}"

    def _k(self, key: str) -> str:
        return f"{self.sub}/{key}"

    def put_file(self, key: str, path: Path) -> None:
        self.inner.put_file(self._k(key), path)

    def put_bytes(self, key: str, data: bytes) -> None:
        self.inner.put_bytes(self._k(key), data)

    def get_file(self, key: str, path: Path) -> None:
        self.inner.get_file(self._k(key), path)

    def get_bytes(self, key: str) -> bytes | None:
        return self.inner.get_bytes(self._k(key))

    def list(self, prefix: str = "") -> dict[str, int]:
        n = len(self.sub) + 1
        return {k[n:]: v for k, v in self.inner.list(self._k(prefix)).items()}

    def delete(self, keys: list[str]) -> None:
        self.inner.delete([self._k(k) for k in keys])

    def delete_unordered(self, keys: list[str]) -> None:
        self.inner.delete_unordered([self._k(k) for k in keys])


def _slug(text: str) -> str:
    # GitLab's CI_COMMIT_REF_SLUG rule: lowercase, [a-z0-9-] only, at most 63 characters.
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:63].strip("-") or "x"


def remote_prefix(
    cfg: PipelineConfig, run_dir: RunDir, environ: Mapping[str, str] | None = None
) -> str:
    """`<project>/<branch>/<run key>` (or `backup.prefix`): stable across a retry of the same
    CI job, different for every new pipeline/run and every job in it."""
    if cfg.backup.prefix:
        return cfg.backup.prefix.strip("/")
    env = os.environ if environ is None else environ
    branch = env.get("CI_COMMIT_REF_SLUG") or _slug(env.get("GITHUB_REF_NAME") or "local")
    if env.get("CI_PIPELINE_ID"):
        key = f"pipeline-{env['CI_PIPELINE_ID']}-{_slug(env.get('CI_JOB_NAME') or 'job')}"
    elif env.get("GITHUB_RUN_ID"):
        key = f"run-{env['GITHUB_RUN_ID']}-{_slug(env.get('GITHUB_JOB') or 'job')}"
    else:
        key = f"local-{_slug(run_dir.root.name)}"
    return f"{_slug(cfg.project.name)}/{branch}/{key}"


class TrainingBackup:
    """Backup of one training run's checkpoint directory (generations, run.json, best/).

    Disabled (`backup.enabled: false`), every method does nothing and costs nothing. On a
    non-chief worker it restores (each worker may have its own empty disk) but never uploads.
    With `run` (the run identity, tfship.checkpoint_guard.run_identity), a restore brings back
    only that run's generations and refuses another run's (see `restore_latest`).
    """

    def __init__(
        self,
        bcfg: BackupConfig,
        checkpoint_dir: Path,
        store: ObjectStore | None,
        *,
        chief: bool = True,
        run: dict[str, Any] | None = None,
    ) -> None:
        self.cfg = bcfg
        self.store = store
        self.chief = chief
        self.run = run
        self.dirs: list[tuple[Path, ObjectStore, int, tuple[str, ...]]] = []
        if store is not None:
            self.dirs.append((checkpoint_dir, store, bcfg.keep, (GUARD_FILE,)))
            if bcfg.include_best:
                self.dirs.append(
                    (checkpoint_dir / BEST_DIR, _Prefixed(store, BEST_DIR), 1, (BEST_FILE,))
                )
        self._backups: list[CheckpointBackup] = []  # one uploader per directory, on first use
        self._poller: threading.Thread | None = None
        self._stop_poll = threading.Event()
        self._last_handed = time.monotonic()  # the interval counts from the start

    @property
    def _uploading(self) -> bool:
        """Whether this process uploads: enabled, the chief, and not closed yet."""
        return self.store is not None and self.chief and not self._stop_poll.is_set()

    def restore(self) -> int | None:
        """If the checkpoint directory is empty, bring back the newest complete remote
        generation (and best/). Returns the step restored, or None."""
        if self.store is None or not self.cfg.restore:
            return None
        (local, remote, _, _), *others = self.dirs
        step = restore_latest(local, remote, expect_run=self.run)
        # best/ carries no run.json of its own: it comes back only with a generation whose
        # run.json was checked, never on its own into a fresh directory.
        if step is not None:
            for local, remote, _, _ in others:
                restore_latest(local, remote)
        return step

    def sync(self) -> None:
        """Hand any new local generation to the background uploader (never blocks), at most
        once per `backup.every_seconds` counted from the start; the poller picks up what was
        held back once the interval has passed."""
        if not self._uploading:
            return
        self._start_uploaders()
        if self._poller is None:
            self._poller = threading.Thread(
                target=self._poll, name="tfship-backup-poll", daemon=True
            )
            self._poller.start()
        # A backup bounds what a hard kill loses; uploading each of several saves a second
        # apart only costs CPU and bandwidth (measured: benchmarks/backup_overhead.py).
        if time.monotonic() - self._last_handed < self.cfg.every_seconds:
            return
        # best/ rides along with each regular generation (and is flushed by close()): on the
        # demo it changes every epoch, and uploading it each time would double the traffic.
        if self._backups[0].sync():
            self._last_handed = time.monotonic()
            for b in self._backups[1:]:
                b.sync()

    def _start_uploaders(self) -> None:
        if not self._backups:
            self._backups = [
                CheckpointBackup(remote, local, keep=keep, extras=extras)
                for local, remote, keep, extras in self.dirs
            ]

    def _poll(self) -> None:
        # Checkpoints may be written in the background (TrainingCheckpoints with a shadow), so
        # the generation is often not on disk yet when sync() runs right after save(): look
        # again every few seconds rather than waiting for the next save.
        while not self._stop_poll.wait(POLL_SECONDS):
            try:
                self.sync()
            except Exception as exc:  # staging is best effort; the next look tries again
                log.warning("checkpoint backup: polling %s failed: %s", self.dirs[0][0], exc)

    def close(self, *, preempted: bool = False) -> BackupStatus | None:
        """Upload what is still pending, waiting at most `backup.preempt_timeout_seconds`
        after a preemption and `backup.upload_timeout_seconds` otherwise."""
        if not self._uploading:
            return None
        self._start_uploaders()
        self._stop_poll.set()
        if self._poller is not None:
            self._poller.join(timeout=5.0)
        for b in self._backups:  # the newest generation, whatever every_seconds held back
            b.sync()
        deadline = time.monotonic() + close_budget(self.cfg, preempted=preempted)
        statuses = [b.close(max(0.0, deadline - time.monotonic())) for b in self._backups]
        self._backups = []
        return statuses[0]


def open_training_backup(
    cfg: PipelineConfig,
    run_dir: RunDir,
    *,
    chief: bool = True,
    checkpoint_dir: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> TrainingBackup | BackupAgent:
    """The run's backup as `cfg.backup` describes it: a no-op when disabled, else an agent
    process (tfship.backup.agent) that starts restoring at once. Call it early, and
    `restore()` just before the CheckpointManager is created."""
    from tfship.checkpoint_guard import run_identity
    from tfship.rundir import checkpoint_dir as run_checkpoint_dir

    ckpt_dir = Path(checkpoint_dir or run_checkpoint_dir(cfg, run_dir, environ))
    bcfg = cfg.backup
    if not bcfg.enabled:
        return TrainingBackup(bcfg, ckpt_dir, None, chief=chief)
    assert bcfg.url is not None  # BackupConfig validation
    url = f"{bcfg.url.rstrip('/')}/{remote_prefix(cfg, run_dir, environ)}"
    log.info("checkpoint backup: %s -> %s", ckpt_dir, url)
    return BackupAgent(bcfg, ckpt_dir, url, chief=chief, run=run_identity(cfg, environ))
