"""The model repository TF Serving reads: `<base>/<model>/<version>/` on a filesystem or S3.

TF Serving loads any numeric directory its policy selects and does not check that a copy is
complete (tensorflow/serving#1086), so a version becomes visible only once it is whole:

* local (`repository_local`): copy to a non-numeric temporary name, verify sizes + sha256,
  `os.rename` into place;
* S3 (`repository_s3`, no rename): upload under a temporary prefix, verify, then copy to the
  final prefix with `saved_model.pb` last, since the loader needs it before anything else.

This module holds what both share: the publish protocol (`ModelRepository.publish`), file
manifests, and `open_repository`. Next to the versions, `<base>/<model>/.tfship/` holds tfship's
own records (an append-only deploy log, see `deploy_log`; `versions/<v>.json`, the size and
sha256 of every file of a published version, written before it becomes visible); TF Serving
ignores non-numeric names. `<base>/.tfship/` holds the repository's lease and journal (`lease`,
`journal`); the lease is written with the conditional operations `create_meta` /
`replace_meta` (local: link(2), compare-and-swap under flock; S3: PUT If-None-Match / If-Match).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tfship.errors import DeployFailed, InfraError
from tfship.redact import redact
from tfship.serving import deploy_log, schema

log = logging.getLogger(__name__)
TMP_PREFIX = ".tfship-tmp-"
META_DIR = ".tfship"
READY_FILE = "saved_model.pb"
CHUNK = 1 << 20
_DIGITS = re.compile(r"[0-9]+")


def version_number(name: str) -> int | None:
    """TF Serving's rule for a version directory: ASCII digits that fit an int64, else None.

    (`str.isdigit` also accepts other scripts' digits, which TF Serving never loads.)
    """
    if not _DIGITS.fullmatch(name):
        return None
    value = int(name)
    return value if value <= schema.INT64_MAX else None


# name -> (size, sha256)
FileManifest = dict[str, tuple[int, str]]


class VersionConflict(DeployFailed):
    """A different model already sits under the version number being published."""


@dataclass(frozen=True)
class PublishResult:
    """Outcome of publishing one SavedModel version."""

    model: str
    version: int
    location: str
    status: str  # "published" | "unchanged"
    files: int
    bytes: int
    seconds: float


def local_manifest(root: Path) -> FileManifest:
    """Sizes and sha256 of every regular file under `root` (relative POSIX paths)."""
    out: FileManifest = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            h = hashlib.sha256()
            with path.open("rb") as fh:
                while chunk := fh.read(CHUNK):
                    h.update(chunk)
            out[path.relative_to(root).as_posix()] = (path.stat().st_size, h.hexdigest())
    return out


def tree_digest(root: Path) -> str:
    """One sha256 for a whole directory (names, sizes, contents): identifies an export."""
    return manifest_digest(local_manifest(root))


def manifest_digest(files: FileManifest) -> str:
    """`tree_digest` of the directory `files` was read from (`local_manifest`): a caller that
    hashed the files once (deploy) binds the gate, the verification record and the published
    copy to that one reading instead of hashing the same bytes again for each."""
    h = hashlib.sha256()
    # In local_manifest's order (sorted by path, not by name string): digests already recorded
    # in gate.json and verification records were computed in that order.
    for name, (size, sha) in files.items():
        h.update(f"{name}\0{size}\0{sha}\n".encode())
    return h.hexdigest()


def manifest_diff(expected: FileManifest, actual: FileManifest) -> str:
    missing = sorted(set(expected) - set(actual))
    extra = sorted(set(actual) - set(expected))
    changed = sorted(k for k in set(expected) & set(actual) if expected[k] != actual[k])
    parts = [
        f"{n}: {v[:5]}{'...' if len(v) > 5 else ''}"
        for n, v in (("missing", missing), ("extra", extra), ("different", changed))
        if v
    ]
    return "; ".join(parts) or "identical"


class ModelRepository:
    """Common interface of the local and S3 repositories."""

    url: str

    def versions(self, model: str) -> list[int]:
        raise NotImplementedError

    def leftovers(self, model: str) -> list[str]:
        """Temporary names (`.tfship-tmp-*`) under the model: copies a killed action left."""
        raise NotImplementedError

    def discard_leftovers(self, model: str) -> list[str]:
        """Remove every leftover; only a lease holder may call this (no publish in flight)."""
        names = self.leftovers(model)
        for name in names:
            self._discard_tmp(model, name)
        return names

    def version_manifest(self, model: str, version: int) -> FileManifest:
        raise NotImplementedError

    def is_complete(self, model: str, version: int) -> bool:
        raise NotImplementedError

    def local_copy(self, model: str, version: int, scratch: Path) -> Path:
        """`<model>/<version>` as a local directory, verified against the repository's file
        manifest (sizes + sha256). A local repository returns the version's own directory; an
        object store downloads into `scratch/<version>/`."""
        raise NotImplementedError

    def _upload_tmp(self, model: str, version: int, export_dir: Path) -> str:
        raise NotImplementedError

    def _tmp_manifest(self, model: str, tmp: str) -> FileManifest:
        raise NotImplementedError

    def _make_visible(self, model: str, version: int, tmp: str, manifest: FileManifest) -> bool:
        """Move tmp into place; False when someone else made the version visible first."""
        raise NotImplementedError

    def _discard_tmp(self, model: str, tmp: str) -> None:
        raise NotImplementedError

    def _delete_files(self, model: str, version: int) -> None:
        raise NotImplementedError

    def delete_version(self, model: str, version: int) -> None:
        """Unpublish: hide the version from TF Serving, remove it, then its publish record."""
        self._delete_files(model, version)
        self.delete_text(self._record_path(model, version))

    def read_text(self, relpath: str) -> str | None:
        raise NotImplementedError

    def write_text(self, relpath: str, text: str) -> None:
        """Atomic: readers see the old content or the new, never a mix."""
        raise NotImplementedError

    def delete_text(self, relpath: str) -> None:
        """Remove a file/object; absent is fine."""
        raise NotImplementedError

    # ---- conditional writes (lease): `token` identifies the content that was read ------------
    def read_meta(self, relpath: str) -> tuple[str, str] | None:
        """(text, token) or None when absent; the token changes whenever the content does."""
        raise NotImplementedError

    def create_meta(self, relpath: str, text: str) -> str | None:
        """Create only if absent (atomically, fully written): its token, or None if it exists."""
        raise NotImplementedError

    def replace_meta(self, relpath: str, token: str, text: str) -> str | None:
        """Replace only if it still has `token`: the new token, or None when it changed."""
        raise NotImplementedError

    # ---- deploy log ---------------------------------------------------------------------------
    def _append_raw(self, model: str, text: str) -> None:
        raise NotImplementedError

    def _raw_log(self, model: str) -> list[tuple[str, str]]:
        """(where, text) of every record in order; text may be damaged."""
        raise NotImplementedError

    def append_log(self, model: str, record: dict[str, Any]) -> None:
        """Append one record, credentials masked; a record tfship would not read back is a bug."""
        record = redact(json.loads(json.dumps(record, default=str)))
        bad = schema.problems("log-record", record)
        if bad:
            raise ValueError(f"deploy-log record does not match its schema: {bad}")
        self._append_raw(model, json.dumps(record, sort_keys=True))

    def read_log_checked(self, model: str) -> tuple[list[dict[str, Any]], list[str]]:
        """(valid records in order, problems): damaged records are skipped, never fatal."""
        return deploy_log.parse(self._raw_log(model))

    def read_log(self, model: str) -> list[dict[str, Any]]:
        records, problems = self.read_log_checked(model)
        for p in problems:
            log.warning("deploy log of %s: skipped a damaged record: %s", model, p)
        return records

    # ---- publish records ----------------------------------------------------------------------
    def _record_path(self, model: str, version: int) -> str:
        return f"{model}/{META_DIR}/versions/{version}.json"

    def version_record(self, model: str, version: int) -> tuple[FileManifest | None, list[str]]:
        """The files `version` was published with, or (None, why not)."""
        text = self.read_text(self._record_path(model, version))
        if text is None:
            return None, [f"no publish record {self._record_path(model, version)}"]
        doc, bad = schema.loads("version-record", text)
        if doc is None:
            return None, bad
        if doc["version"] != version or doc["model"] != model:
            return None, [f"the record names {doc['model']} v{doc['version']}"]
        return {k: (int(v[0]), str(v[1])) for k, v in doc["files"].items()}, []

    def _write_record(self, model: str, version: int, manifest: FileManifest) -> None:
        doc = {
            "format": "tfship-version-record/1",
            "model": model,
            "version": version,
            "files": {k: [size, sha] for k, (size, sha) in sorted(manifest.items())},
        }
        self.write_text(self._record_path(model, version), json.dumps(doc, indent=1) + "\n")

    def location(self, model: str, version: int | None = None) -> str:
        base = f"{self.url.rstrip('/')}/{model}"
        return base if version is None else f"{base}/{version}"

    def publish(
        self,
        model: str,
        version: int,
        export_dir: str | os.PathLike[str],
        expected: FileManifest | None = None,
    ) -> PublishResult:
        """Make `export_dir` visible as `<model>/<version>`, atomically and idempotently.

        Re-publishing identical files is a no-op (`status="unchanged"`); different files under
        an existing version raise VersionConflict and change nothing. `expected`: the files as
        the caller already read them (`local_manifest(export_dir)`, e.g. the reading its gate
        and verification checks were bound to); the published copy must match it, so bytes
        changed since that reading are refused, not published.
        """
        export_dir = Path(export_dir)
        t0 = time.monotonic()
        expected = local_manifest(export_dir) if expected is None else dict(expected)
        if READY_FILE not in expected:
            raise DeployFailed(
                f"{export_dir} has no {READY_FILE}; expected a SavedModel directory",
                hint="run `tfship export` first, or point --run-dir at a run that exported",
            )
        size = sum(s for s, _ in expected.values())

        def result(status: str) -> PublishResult:
            return PublishResult(
                model,
                version,
                self.location(model, version),
                status,
                len(expected),
                size,
                round(time.monotonic() - t0, 3),
            )

        if version_number(str(version)) is None:
            raise DeployFailed(
                f"version {version} is not a TF Serving version number (0 .. 2**63-1)",
                hint="export under a positive version number",
            )
        if self._same_or_conflict(model, version, expected):
            if self.version_record(model, version)[0] != expected:
                self._write_record(model, version, expected)  # published before records existed
            return result("unchanged")
        tmp = self._upload_tmp(model, version, export_dir)
        try:
            got = self._tmp_manifest(model, tmp)
            if got != expected:
                raise InfraError(
                    f"upload to {self.location(model)}/{tmp} does not match {export_dir} "
                    f"({manifest_diff(expected, got)})",
                    hint="check free space / object-store health and publish again",
                )
            # The record first: a visible version always has one to be checked against.
            self._write_record(model, version, expected)
            lost_race = not self._make_visible(model, version, tmp, expected)
            if lost_race and self._same_or_conflict(model, version, expected):
                return result("unchanged")
        finally:
            self._discard_tmp(model, tmp)
        return result("published")

    def _same_or_conflict(self, model: str, version: int, expected: FileManifest) -> bool:
        if not self.is_complete(model, version):
            return False
        existing = self.version_manifest(model, version)
        if existing == expected:
            return True
        raise VersionConflict(
            f"{self.location(model, version)} already holds a different model "
            f"({manifest_diff(expected, existing)}); a published version is never overwritten",
            hint="export under a new version number (export.version / TFSHIP_EXPORT_VERSION)",
        )


def open_repository(url: str, *, s3_endpoint_url: str | None = None) -> ModelRepository:
    """A repository for a local path or an `s3://bucket/prefix` URL."""
    if url.startswith("s3://"):
        from tfship.serving.repository_s3 import S3Repository  # boto3 only when needed

        return S3Repository(url, endpoint_url=s3_endpoint_url)
    if "://" in url:
        raise InfraError(
            f"model repository {url!r}: unsupported scheme",
            hint="use a local path or s3://bucket/prefix (S3-compatible stores via "
            "serving.s3_endpoint_url)",
        )
    from tfship.serving.repository_local import LocalRepository

    return LocalRepository(url)
