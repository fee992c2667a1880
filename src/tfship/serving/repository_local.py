"""Model repository on a local (or mounted) filesystem: publish by rename(2).

Conditional writes for the lease: create by link(2) of a fully written file (fails if the name
exists, also over NFS), compare-and-swap under an flock(2) on a mutex file
next to it (released by the kernel when its holder dies, so it never goes stale).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from tfship.errors import ModelError
from tfship.fsutil import atomic_write_text
from tfship.serving.repository import (
    META_DIR,
    READY_FILE,
    TMP_PREFIX,
    FileManifest,
    ModelRepository,
    local_manifest,
    version_number,
)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalRepository(ModelRepository):
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.url = str(self.root)

    def _model_dir(self, model: str) -> Path:
        return self.root / model

    def versions(self, model: str) -> list[int]:
        root = self._model_dir(model)
        if not root.is_dir():
            return []
        found = ((version_number(p.name), p) for p in root.iterdir())
        return sorted(v for v, p in found if v is not None and p.is_dir())

    def leftovers(self, model: str) -> list[str]:
        root = self._model_dir(model)
        if not root.is_dir():
            return []
        return sorted(p.name for p in root.iterdir() if p.name.startswith(TMP_PREFIX))

    def is_complete(self, model: str, version: int) -> bool:
        return (self._model_dir(model) / str(version) / READY_FILE).is_file()

    def version_manifest(self, model: str, version: int) -> FileManifest:
        return local_manifest(self._model_dir(model) / str(version))

    def local_copy(self, model: str, version: int, scratch: Path) -> Path:
        # Already local, and published by rename: complete or absent, nothing to verify.
        path = self._model_dir(model) / str(version)
        if not self.is_complete(model, version):
            raise ModelError(
                f"{path} is not a SavedModel version (no {READY_FILE})",
                hint="re-publish that version, or label a version that exists",
            )
        return path

    def _upload_tmp(self, model: str, version: int, export_dir: Path) -> str:
        tmp = f"{TMP_PREFIX}{version}-{uuid.uuid4().hex[:12]}"
        dest = self._model_dir(model) / tmp
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(export_dir, dest, symlinks=False)
        for path in dest.rglob("*"):  # durable before the rename publishes it
            if path.is_file():
                with path.open("rb") as fh:
                    os.fsync(fh.fileno())
        return tmp

    def _tmp_manifest(self, model: str, tmp: str) -> FileManifest:
        return local_manifest(self._model_dir(model) / tmp)

    def _make_visible(self, model: str, version: int, tmp: str, manifest: FileManifest) -> bool:
        final = self._model_dir(model) / str(version)
        if final.exists() and not self.is_complete(model, version):
            # A leftover without saved_model.pb (copied by hand, interrupted tool): set it aside.
            final.rename(
                self._model_dir(model) / f"{TMP_PREFIX}stale-{version}-{uuid.uuid4().hex[:8]}"
            )
        try:
            # rename(2) of a directory is atomic; it fails if a non-empty target appeared.
            os.rename(self._model_dir(model) / tmp, final)
        except OSError:
            if final.exists():
                return False
            raise
        _fsync_dir(self._model_dir(model))
        return True

    def _discard_tmp(self, model: str, tmp: str) -> None:
        path = self._model_dir(model) / tmp
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)

    def _delete_files(self, model: str, version: int) -> None:
        final = self._model_dir(model) / str(version)
        if not final.exists():
            return
        # Hide it from TF Serving's poller first, then remove at leisure.
        hidden = self._model_dir(model) / f"{TMP_PREFIX}deleting-{version}-{uuid.uuid4().hex[:8]}"
        final.rename(hidden)
        shutil.rmtree(hidden, ignore_errors=True)

    def read_text(self, relpath: str) -> str | None:
        p = self.root / relpath
        return p.read_text(encoding="utf-8") if p.is_file() else None

    def write_text(self, relpath: str, text: str) -> None:
        atomic_write_text(self.root / relpath, text)

    def delete_text(self, relpath: str) -> None:
        path = self.root / relpath
        if path.exists():
            path.unlink()
            _fsync_dir(path.parent)

    # ---- conditional writes ---------------------------------------------------------------
    def read_meta(self, relpath: str) -> tuple[str, str] | None:
        try:
            data = (self.root / relpath).read_bytes()
        except FileNotFoundError:
            return None
        return data.decode("utf-8", errors="replace"), hashlib.sha256(data).hexdigest()

    def create_meta(self, relpath: str, text: str) -> str | None:
        path = self.root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
        with tmp.open("wb") as fh:
            fh.write(text.encode("utf-8"))
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)  # atomic, and only if the name is free: never a torn lease
        except FileExistsError:
            return None
        finally:
            tmp.unlink(missing_ok=True)
        _fsync_dir(path.parent)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    @contextlib.contextmanager
    def _mutex(self, path: Path) -> Iterator[None]:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path.with_name(f".{path.name}.mutex"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the flock

    def replace_meta(self, relpath: str, token: str, text: str) -> str | None:
        path = self.root / relpath
        with self._mutex(path):
            current = self.read_meta(relpath)
            if current is None or current[1] != token:
                return None
            atomic_write_text(path, text)
            return hashlib.sha256(text.encode("utf-8")).hexdigest()

    # ---- deploy log -----------------------------------------------------------------------
    def _log_path(self, model: str) -> Path:
        return self._model_dir(model) / META_DIR / "deploy-log.jsonl"

    def _append_raw(self, model: str, text: str) -> None:
        path = self._log_path(model)
        path.parent.mkdir(parents=True, exist_ok=True)
        # O_APPEND: one write() per record, so concurrent writers never interleave a line.
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            size = os.fstat(fd).st_size
            # A writer killed mid-append leaves a line with no newline: end it, so this record
            # starts on its own line instead of being glued to (and lost with) the torn one.
            torn = size > 0 and os.pread(fd, 1, size - 1) != b"\n"
            os.write(fd, (("\n" if torn else "") + text + "\n").encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)

    def _raw_log(self, model: str) -> list[tuple[str, str]]:
        path = self._log_path(model)
        if not path.is_file():
            return []
        text = path.read_bytes().decode("utf-8", errors="replace")
        return [(f"{path}:{i}", line) for i, line in enumerate(text.splitlines(), 1)]
