"""The model repository TF Serving reads: `<base>/<model>/<version>/` on a filesystem or S3.

TF Serving loads any numeric directory its policy selects and does not check that a copy is
complete (tensorflow/serving#1086), so a version becomes visible only once it is whole:

* local: copy to a non-numeric temporary name, verify sizes + sha256, `os.rename` into place;
* S3 (no rename): upload under a temporary prefix, verify, then copy to the final prefix with
  `saved_model.pb` last, since the loader needs it before anything else is read.

Next to the versions, `<base>/<model>/.tfship/` holds tfship's own records (an append-only
deploy log); TF Serving ignores non-numeric names.
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tfship import env as envvars
from tfship.errors import DeployFailed, InfraError
from tfship.fsutil import atomic_write_text

TMP_PREFIX = ".tfship-tmp-"
META_DIR = ".tfship"
READY_FILE = "saved_model.pb"
_CHUNK = 1 << 20

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
                while chunk := fh.read(_CHUNK):
                    h.update(chunk)
            out[path.relative_to(root).as_posix()] = (path.stat().st_size, h.hexdigest())
    return out


def _diff(expected: FileManifest, actual: FileManifest) -> str:
    missing = sorted(set(expected) - set(actual))
    extra = sorted(set(actual) - set(expected))
    changed = sorted(k for k in set(expected) & set(actual) if expected[k] != actual[k])
    parts = [
        f"{n}: {v[:5]}{'...' if len(v) > 5 else ''}"
        for n, v in (("missing", missing), ("extra", extra), ("different", changed))
        if v
    ]
    return "; ".join(parts) or "identical"


def who(environ: dict[str, str] | None = None) -> str:
    ctx = envvars.ci_context(environ)
    for key in ("GITLAB_USER_LOGIN", "GITHUB_ACTOR"):
        if ctx.get(key):
            return ctx[key]
    try:
        return f"{getpass.getuser()} (local)"
    except Exception:  # no passwd entry in some containers
        return "unknown (local)"


def log_record(action: str, model: str, **fields: Any) -> dict[str, Any]:
    """A deploy-log record with who/when/where; callers add why, from/to versions, status."""
    ctx = envvars.ci_context()
    return {
        "action": action,
        "model": model,
        "at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "who": who(),
        "pipeline_url": ctx.get("CI_PIPELINE_URL")
        or (
            f"{ctx['GITHUB_SERVER_URL']}/{ctx['GITHUB_REPOSITORY']}/actions/runs/{ctx['GITHUB_RUN_ID']}"
            if {"GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "GITHUB_RUN_ID"} <= ctx.keys()
            else None
        ),
        "job_url": ctx.get("CI_JOB_URL"),
        "commit": ctx.get("CI_COMMIT_SHA") or ctx.get("GITHUB_SHA"),
        **fields,
    }


class ModelRepository:
    """Common interface of the local and S3 repositories."""

    url: str

    def versions(self, model: str) -> list[int]:
        raise NotImplementedError

    def version_manifest(self, model: str, version: int) -> FileManifest:
        raise NotImplementedError

    def is_complete(self, model: str, version: int) -> bool:
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

    def delete_version(self, model: str, version: int) -> None:
        raise NotImplementedError

    def read_text(self, relpath: str) -> str | None:
        raise NotImplementedError

    def write_text(self, relpath: str, text: str) -> None:
        """Atomic: readers see the old content or the new, never a mix."""
        raise NotImplementedError

    def append_log(self, model: str, record: dict[str, Any]) -> None:
        raise NotImplementedError

    def read_log(self, model: str) -> list[dict[str, Any]]:
        raise NotImplementedError

    def location(self, model: str, version: int | None = None) -> str:
        base = f"{self.url.rstrip('/')}/{model}"
        return base if version is None else f"{base}/{version}"

    def publish(
        self, model: str, version: int, export_dir: str | os.PathLike[str]
    ) -> PublishResult:
        """Make `export_dir` visible as `<model>/<version>`, atomically and idempotently.

        Re-publishing identical files is a no-op (`status="unchanged"`); different files under
        an existing version raise VersionConflict and change nothing.
        """
        export_dir = Path(export_dir)
        t0 = time.monotonic()
        expected = local_manifest(export_dir)
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

        if self._same_or_conflict(model, version, expected):
            return result("unchanged")
        tmp = self._upload_tmp(model, version, export_dir)
        try:
            got = self._tmp_manifest(model, tmp)
            if got != expected:
                raise InfraError(
                    f"upload to {self.location(model)}/{tmp} does not match {export_dir} "
                    f"({_diff(expected, got)})",
                    hint="check free space / object-store health and publish again",
                )
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
            f"({_diff(expected, existing)}); a published version is never overwritten",
            hint="export under a new version number (export.version / TFSHIP_EXPORT_VERSION)",
        )


class LocalRepository(ModelRepository):
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.url = str(self.root)

    def _model_dir(self, model: str) -> Path:
        return self.root / model

    def versions(self, model: str) -> list[int]:
        d = self._model_dir(model)
        if not d.is_dir():
            return []
        return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit() and p.is_dir())

    def is_complete(self, model: str, version: int) -> bool:
        return (self._model_dir(model) / str(version) / READY_FILE).is_file()

    def version_manifest(self, model: str, version: int) -> FileManifest:
        return local_manifest(self._model_dir(model) / str(version))

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


class S3Repository(ModelRepository):
    """`s3://bucket/prefix`. Credentials come from boto3's own chain (environment, profile,
    instance role); only the endpoint is configurable here."""

    def __init__(self, url: str, *, endpoint_url: str | None = None, client: Any = None) -> None:
        import boto3
        from botocore.config import Config

        if not url.startswith("s3://"):
            raise ValueError(f"not an s3:// URL: {url}")
        bucket, _, prefix = url[5:].partition("/")
        self.url = url.rstrip("/")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url
        self.s3 = client or boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            config=Config(
                connect_timeout=10, read_timeout=60, retries={"max_attempts": 5, "mode": "standard"}
            ),
        )

    def _key(self, *parts: str) -> str:
        return "/".join(p.strip("/") for p in (self.prefix, *parts) if p)

    def _call(self, what: str, fn: Any, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(**kwargs)
        except ClientError:
            raise
        except BotoCoreError as exc:
            raise InfraError(
                f"S3 {what} on {self.url} failed: {exc}",
                hint=f"check serving.s3_endpoint_url ({self.endpoint_url or 'AWS default'}), "
                "network access and the AWS_* credentials in the environment",
            ) from exc

    def _list(self, prefix: str, delimiter: str | None = None) -> Iterator[dict[str, Any]]:
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
        if delimiter:
            kwargs["Delimiter"] = delimiter
        paginator = self.s3.get_paginator("list_objects_v2")
        try:
            yield from self._call("list", lambda **kw: list(paginator.paginate(**kw)), **kwargs)
        except Exception as exc:
            if isinstance(exc, InfraError):
                raise
            raise InfraError(
                f"cannot list {self.url}/{prefix}: {exc}",
                hint="check the bucket exists and the credentials may list it",
            ) from exc

    def versions(self, model: str) -> list[int]:
        out = set()
        for page in self._list(self._key(model) + "/", "/"):
            for cp in page.get("CommonPrefixes", []):
                name = cp["Prefix"].rstrip("/").rsplit("/", 1)[-1]
                if name.isdigit():
                    out.add(int(name))
        return sorted(out)

    def _objects(self, prefix: str) -> dict[str, int]:
        prefix = prefix.rstrip("/") + "/"
        return {
            o["Key"][len(prefix) :]: o["Size"]
            for page in self._list(prefix)
            for o in page.get("Contents", [])
        }

    def is_complete(self, model: str, version: int) -> bool:
        return READY_FILE in self._objects(self._key(model, str(version)))

    def _sha256(self, key: str) -> str:
        head = self.s3.head_object(Bucket=self.bucket, Key=key, ChecksumMode="ENABLED")
        if head.get("ChecksumSHA256") and "-" not in head["ChecksumSHA256"]:
            return base64.b64decode(head["ChecksumSHA256"]).hex()
        h = hashlib.sha256()  # no stored checksum (older object, other tool): hash the bytes
        body = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"]
        for chunk in iter(lambda: body.read(_CHUNK), b""):
            h.update(chunk)
        return h.hexdigest()

    def _manifest(self, prefix: str) -> FileManifest:
        return {
            rel: (size, self._sha256(f"{prefix}/{rel}"))
            for rel, size in sorted(self._objects(prefix).items())
        }

    def version_manifest(self, model: str, version: int) -> FileManifest:
        return self._manifest(self._key(model, str(version)))

    def _upload_tmp(self, model: str, version: int, export_dir: Path) -> str:
        tmp = f"{TMP_PREFIX}{version}-{uuid.uuid4().hex[:12]}"
        for path in sorted(export_dir.rglob("*")):
            if path.is_file():
                key = self._key(model, tmp, path.relative_to(export_dir).as_posix())
                with path.open("rb") as fh:
                    self._call(
                        "upload",
                        self.s3.put_object,
                        Bucket=self.bucket,
                        Key=key,
                        Body=fh,
                        ChecksumAlgorithm="SHA256",
                    )
        return tmp

    def _tmp_manifest(self, model: str, tmp: str) -> FileManifest:
        return self._manifest(self._key(model, tmp))

    def _make_visible(self, model: str, version: int, tmp: str, manifest: FileManifest) -> bool:
        src, dst = self._key(model, tmp), self._key(model, str(version))
        # saved_model.pb last: until it exists the version cannot be loaded, only retried.
        order = sorted(manifest, key=lambda rel: (rel == READY_FILE, rel))
        for rel in order:
            self._call(
                "copy",
                self.s3.copy_object,
                Bucket=self.bucket,
                Key=f"{dst}/{rel}",
                CopySource={"Bucket": self.bucket, "Key": f"{src}/{rel}"},
                ChecksumAlgorithm="SHA256",
            )
        got = self._manifest(dst)
        if got != manifest:
            raise InfraError(
                f"{self.url}/{dst} does not match what was uploaded ({_diff(manifest, got)})",
                hint="another writer published the same version concurrently, or "
                "the store is inconsistent; inspect it before publishing again",
            )
        return True

    def _delete_prefix(self, prefix: str) -> None:
        keys = [{"Key": f"{prefix}/{rel}"} for rel in self._objects(prefix)]
        # saved_model.pb first, so a half-deleted version is never loadable.
        keys.sort(key=lambda k: not k["Key"].endswith("/" + READY_FILE))
        for i in range(0, len(keys), 1000):
            self._call(
                "delete",
                self.s3.delete_objects,
                Bucket=self.bucket,
                Delete={"Objects": keys[i : i + 1000], "Quiet": True},
            )

    def _discard_tmp(self, model: str, tmp: str) -> None:
        self._delete_prefix(self._key(model, tmp))

    def delete_version(self, model: str, version: int) -> None:
        self._delete_prefix(self._key(model, str(version)))

    def read_text(self, relpath: str) -> str | None:
        try:
            obj = self.s3.get_object(Bucket=self.bucket, Key=self._key(relpath))
        except self.s3.exceptions.NoSuchKey:
            return None
        return obj["Body"].read().decode("utf-8")

    def write_text(self, relpath: str, text: str) -> None:
        # A single PUT is atomic on S3: readers get the old object or the new one.
        self._call(
            "write",
            self.s3.put_object,
            Bucket=self.bucket,
            Key=self._key(relpath),
            Body=text.encode("utf-8"),
        )

    def append_log(self, model: str, record: dict[str, Any]) -> None:
        # Objects cannot be appended to: one object per record, named to sort by time.
        name = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.json"
        self._call(
            "write",
            self.s3.put_object,
            Bucket=self.bucket,
            Key=self._key(model, META_DIR, "deploy-log", name),
            Body=json.dumps(record, sort_keys=True, default=str).encode(),
        )

    def read_log(self, model: str) -> list[dict[str, Any]]:
        prefix = self._key(model, META_DIR, "deploy-log")
        out = []
        for rel in sorted(self._objects(prefix)):
            body = self.s3.get_object(Bucket=self.bucket, Key=f"{prefix}/{rel}")["Body"].read()
            out.append(json.loads(body))
        return out


def open_repository(url: str, *, s3_endpoint_url: str | None = None) -> ModelRepository:
    """A repository for a local path or an `s3://bucket/prefix` URL."""
    if url.startswith("s3://"):
        return S3Repository(url, endpoint_url=s3_endpoint_url)
    if "://" in url:
        raise InfraError(
            f"model repository {url!r}: unsupported scheme",
            hint="use a local path or s3://bucket/prefix (S3-compatible stores via "
            "serving.s3_endpoint_url)",
        )
    return LocalRepository(url)
