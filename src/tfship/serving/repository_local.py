"""Model repository on a local (or mounted) filesystem: publish by rename(2)."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from tfship.artifacts import numeric_versions
from tfship.errors import ModelError
from tfship.fsutil import atomic_write_text
from tfship.serving.repository import (
    META_DIR,
    READY_FILE,
    TMP_PREFIX,
    FileManifest,
    ModelRepository,
    local_manifest,
)


class LocalRepository(ModelRepository):
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.url = str(self.root)

    def _model_dir(self, model: str) -> Path:
        return self.root / model

    def versions(self, model: str) -> list[int]:
        return numeric_versions(self._model_dir(model))

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
        fd = os.open(self._model_dir(model), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return True

    def _discard_tmp(self, model: str, tmp: str) -> None:
        shutil.rmtree(self._model_dir(model) / tmp, ignore_errors=True)

    def delete_version(self, model: str, version: int) -> None:
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

    def _log_path(self, model: str) -> Path:
        return self._model_dir(model) / META_DIR / "deploy-log.jsonl"

    def append_log(self, model: str, record: dict[str, Any]) -> None:
        path = self._log_path(model)
        path.parent.mkdir(parents=True, exist_ok=True)
        line = (json.dumps(record, sort_keys=True, default=str) + "\n").encode()
        # O_APPEND: one write() per record, so concurrent writers never interleave a line.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)

    def read_log(self, model: str) -> list[dict[str, Any]]:
        path = self._log_path(model)
        if not path.is_file():
            return []
        return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
