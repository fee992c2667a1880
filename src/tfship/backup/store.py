"""A minimal object-store interface for checkpoint backup: S3 (boto3), GCS (fsspec), local path.

Keys are '/'-separated and relative to the store's root (the backup prefix). Credentials are
never passed in or logged: boto3 uses its own chain (AWS_* variables, web-identity/OIDC via
AWS_ROLE_ARN + AWS_WEB_IDENTITY_TOKEN_FILE, instance role), gcsfs uses Google's application
default credentials (GOOGLE_APPLICATION_CREDENTIALS, workload identity).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import re
import shutil
import threading
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from tfship.errors import ConfigError, InfraError


def _not_found(exc: BaseException | None) -> bool:
    code = (getattr(exc, "response", None) or {}).get("Error", {}).get("Code")
    return code in ("NoSuchKey", "404", "NotFound")


class ObjectStore(ABC):
    """Flat keys under one root; every call has a timeout and raises InfraError when the store
    cannot be reached."""

    url: str

    @abstractmethod
    def put_file(self, key: str, path: Path) -> None:
        """Upload; returns only once the store holds exactly these bytes, else raises."""

    @abstractmethod
    def put_bytes(self, key: str, data: bytes) -> None: ...

    @abstractmethod
    def get_file(self, key: str, path: Path) -> None: ...

    @abstractmethod
    def get_bytes(self, key: str) -> bytes | None: ...

    @abstractmethod
    def list(self, prefix: str = "") -> dict[str, int]:
        """key -> size for every object whose key starts with `prefix`."""

    def size(self, key: str) -> int | None:
        return self.list(key).get(key)

    @abstractmethod
    def delete(self, keys: list[str]) -> None:
        """Delete in the order given (callers put the 'complete' marker first)."""

    def delete_unordered(self, keys: list[str]) -> None:
        """Delete, in any order (S3: one batch request)."""
        self.delete(keys)


class S3Store(ObjectStore):
    """`s3://bucket/prefix` through boto3; `endpoint_url` for MinIO, Ceph, moto, ..."""

    def __init__(
        self,
        url: str,
        *,
        endpoint_url: str | None = None,
        timeout: float = 60.0,
        client: Any = None,
    ) -> None:
        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        if not bucket:
            raise ConfigError(f"backup.url {url!r} names no bucket; expected s3://bucket/prefix")
        self.url = url.rstrip("/")
        self.bucket = bucket
        self.root = prefix.strip("/")
        self.endpoint_url = endpoint_url
        self.timeout = timeout
        self._client = client
        self._lock = threading.Lock()
        # Multipart above 64 MiB: big checkpoints upload in parallel parts, small ones in one PUT.
        self.multipart_threshold = 64 << 20

    @property
    def s3(self) -> Any:
        # Created on first use (boto3's import and client set-up cost ~0.3 s of CPU), so it
        # can happen on a background thread while training starts up.
        with self._lock:
            if self._client is None:
                import boto3
                from botocore.config import Config

                self._client = boto3.client(
                    "s3",
                    endpoint_url=self.endpoint_url,
                    config=Config(
                        connect_timeout=min(self.timeout, 10.0),
                        read_timeout=self.timeout,
                        retries={"max_attempts": 5, "mode": "standard"},
                        # Content-MD5 (below) already guards each PUT; skipping botocore's
                        # default CRC32 trailer avoids its pure-Python aws-chunked encoding.
                        request_checksum_calculation="when_required",
                    ),
                )
            return self._client

    @property
    def transfer(self) -> Any:
        from boto3.s3.transfer import TransferConfig

        return TransferConfig(multipart_threshold=self.multipart_threshold, max_concurrency=4)

    def _key(self, key: str) -> str:
        return f"{self.root}/{key}" if self.root else key

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(*args, **kwargs)
        except (BotoCoreError, ClientError) as exc:
            raise InfraError(
                f"S3 {what} under {self.url} failed: {exc}",
                hint=f"check backup.url, backup.endpoint_url ({self.endpoint_url or 'AWS'}), "
                "network access, and the credentials in the environment (AWS_* variables or "
                "AWS_ROLE_ARN + AWS_WEB_IDENTITY_TOKEN_FILE for OIDC)",
            ) from exc

    def put_file(self, key: str, path: Path) -> None:
        size = path.stat().st_size
        if size >= self.multipart_threshold:
            self._call(
                f"upload of {key}",
                self.s3.upload_file,
                str(path),
                self.bucket,
                self._key(key),
                Config=self.transfer,
            )
            head = self._call(
                f"check of {key}", self.s3.head_object, Bucket=self.bucket, Key=self._key(key)
            )
            if int(head["ContentLength"]) != size:
                raise InfraError(
                    f"{self.url}/{key} holds {head['ContentLength']} bytes after upload; "
                    f"expected {size}"
                )
            return
        # One PUT (far less client CPU than the transfer manager's thread pool) with
        # Content-MD5, which S3 checks before storing; the ETag of a single-part upload is the
        # MD5 of what was stored (not with SSE-KMS/SSE-C, where Content-MD5 alone vouches).
        md5 = hashlib.md5(usedforsecurity=False)
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                md5.update(chunk)
            fh.seek(0)
            resp = self._call(
                f"upload of {key}",
                self.s3.put_object,
                Bucket=self.bucket,
                Key=self._key(key),
                Body=fh,
                ContentMD5=base64.b64encode(md5.digest()).decode(),
            )
        etag = str(resp.get("ETag", "")).strip('"')
        if re.fullmatch(r"[0-9a-f]{32}", etag) and etag != md5.hexdigest():
            raise InfraError(
                f"{self.url}/{key}: the store's ETag {etag} is not the MD5 of the uploaded file "
                f"({md5.hexdigest()}); this generation gets no completion marker"
            )

    def put_bytes(self, key: str, data: bytes) -> None:
        self._call(
            f"write of {key}", self.s3.put_object, Bucket=self.bucket, Key=self._key(key), Body=data
        )

    def get_file(self, key: str, path: Path) -> None:
        try:
            self._call(
                f"download of {key}",
                self.s3.download_file,
                self.bucket,
                self._key(key),
                str(path),
                Config=self.transfer,
            )
        except InfraError as exc:
            if _not_found(exc.__cause__):
                raise FileNotFoundError(f"{self.url}/{key}") from None
            raise

    def get_bytes(self, key: str) -> bytes | None:
        try:
            obj = self._call(
                f"read of {key}", self.s3.get_object, Bucket=self.bucket, Key=self._key(key)
            )
        except InfraError as exc:
            if _not_found(exc.__cause__):
                return None
            raise
        return self._call(f"read of {key}", obj["Body"].read)

    def list(self, prefix: str = "") -> dict[str, int]:
        full = self._key(prefix) if prefix else (f"{self.root}/" if self.root else "")
        strip = len(f"{self.root}/") if self.root else 0
        pages = self._call(
            "list",
            lambda: list(
                self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full)
            ),
        )
        return {o["Key"][strip:]: int(o["Size"]) for p in pages for o in p.get("Contents", [])}

    def delete(self, keys: list[str]) -> None:
        # One DELETE per key keeps the caller's order (a batch delete has none).
        for key in keys:
            self._call(
                f"delete of {key}", self.s3.delete_object, Bucket=self.bucket, Key=self._key(key)
            )

    def delete_unordered(self, keys: list[str]) -> None:
        for i in range(0, len(keys), 1000):
            batch = [{"Key": self._key(k)} for k in keys[i : i + 1000]]
            self._call(
                "delete",
                self.s3.delete_objects,
                Bucket=self.bucket,
                Delete={"Objects": batch, "Quiet": True},
            )


class FsspecStore(ObjectStore):
    """`gs://bucket/prefix` (and other fsspec protocols) when fsspec + its driver are installed."""

    def __init__(self, url: str, *, timeout: float = 60.0) -> None:
        protocol = url.split("://", 1)[0]
        try:
            import fsspec

            self.fs = fsspec.filesystem(protocol, timeout=timeout)
        except ImportError as exc:
            driver = {"gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs"}.get(
                protocol, f"the fsspec driver for {protocol}://"
            )
            raise ConfigError(
                f"backup.url {url!r} needs fsspec and {driver}, which are not installed",
                hint=f"pip install fsspec {driver} in the training image, or back up to an "
                "S3-compatible store (s3://, with backup.endpoint_url for GCS's XML API)",
            ) from exc
        self.url = url.rstrip("/")
        self.root = url.split("://", 1)[1].rstrip("/")

    def _path(self, key: str) -> str:
        return f"{self.root}/{key}"

    def _call(self, what: str, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except FileNotFoundError:
            raise
        except Exception as exc:
            raise InfraError(
                f"{what} under {self.url} failed: {exc}",
                hint="check backup.url, network access and the credentials in the environment",
            ) from exc

    def put_file(self, key: str, path: Path) -> None:
        self._call(f"upload of {key}", self.fs.put_file, str(path), self._path(key))
        got = self._call(f"check of {key}", self.fs.size, self._path(key))
        if got != path.stat().st_size:
            raise InfraError(
                f"{self.url}/{key} holds {got} bytes after upload; expected {path.stat().st_size}"
            )

    def put_bytes(self, key: str, data: bytes) -> None:
        self._call(f"write of {key}", self.fs.pipe_file, self._path(key), data)

    def get_file(self, key: str, path: Path) -> None:
        self._call(f"download of {key}", self.fs.get_file, self._path(key), str(path))

    def get_bytes(self, key: str) -> bytes | None:
        try:
            return self._call(f"read of {key}", self.fs.cat_file, self._path(key))
        except FileNotFoundError:
            return None

    def list(self, prefix: str = "") -> dict[str, int]:
        try:
            found = self._call("list", self.fs.find, self.root, None, False, True)
        except FileNotFoundError:
            return {}
        base = self.root.strip("/") + "/"
        out = {}
        for path, info in found.items():
            path = path.strip("/")
            if not path.startswith(base) or info.get("type", "file") != "file":
                continue
            key = path[len(base) :]
            if key.startswith(prefix):
                out[key] = int(info.get("size") or 0)
        return out

    def delete(self, keys: list[str]) -> None:
        for key in keys:
            with contextlib.suppress(FileNotFoundError):
                self._call(f"delete of {key}", self.fs.rm_file, self._path(key))


class LocalStore(ObjectStore):
    """A directory (a shared disk, or tests). Writes go to a temp name and are renamed."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.root = Path(url.removeprefix("file://"))

    def put_file(self, key: str, path: Path) -> None:
        dst = self.root / key
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(f".{dst.name}.tmp")
        shutil.copyfile(path, tmp)
        os.replace(tmp, dst)

    def put_bytes(self, key: str, data: bytes) -> None:
        from tfship.fsutil import atomic_write_bytes

        atomic_write_bytes(self.root / key, data)

    def get_file(self, key: str, path: Path) -> None:
        shutil.copyfile(self.root / key, path)

    def get_bytes(self, key: str) -> bytes | None:
        p = self.root / key
        return p.read_bytes() if p.is_file() else None

    def list(self, prefix: str = "") -> dict[str, int]:
        if not self.root.is_dir():
            return {}
        out = {}
        for p in self.root.rglob("*"):
            key = p.relative_to(self.root).as_posix()
            if p.is_file() and not p.name.startswith(".") and key.startswith(prefix):
                out[key] = p.stat().st_size
        return out

    def delete(self, keys: list[str]) -> None:
        for key in keys:
            (self.root / key).unlink(missing_ok=True)


def open_store(url: str, *, endpoint_url: str | None = None, timeout: float = 60.0) -> ObjectStore:
    """The store for `url`: s3://, gs:// (fsspec), file:// or a plain local path."""
    if url.startswith("s3://"):
        return S3Store(url, endpoint_url=endpoint_url, timeout=timeout)
    if url.startswith("file://") or "://" not in url:
        return LocalStore(url)
    return FsspecStore(url, timeout=timeout)
