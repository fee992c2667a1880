"""Model repository on S3 (or an S3-compatible store): publish by copy, `saved_model.pb` last.

The lease uses S3's conditional writes: create with `PUT If-None-Match: *`, renew, release and
take over with `PUT If-Match: <ETag>` (AWS S3 since 2024; MinIO). A store that ignores these
headers cannot serialise deploys: keep the CI-side serialisation (resource_group/concurrency).
"""

from __future__ import annotations

import base64
import hashlib
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tfship.errors import InfraError
from tfship.redact import redact_url
from tfship.serving.repository import (
    CHUNK,
    META_DIR,
    READY_FILE,
    TMP_PREFIX,
    FileManifest,
    ModelRepository,
    local_manifest,
    manifest_diff,
    version_number,
)

# Error codes S3 (and moto, MinIO) use for a missing object; HEAD has no body, hence "404".
_MISSING = ("NoSuchKey", "404", "NotFound")
# A conditional write lost: the object exists (If-None-Match) or changed (If-Match).
_CONDITION_LOST = ("PreconditionFailed", "412", "ConditionalRequestConflict", "409", *_MISSING)


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

    def _call(self, what: str, fn: Any, *, missing_ok: bool = False, **kwargs: Any) -> Any:
        """Every S3 request goes through here: a failure becomes InfraError (exit 8).

        `missing_ok`: a missing object is None instead of an error.
        """
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(**kwargs)
        except ClientError as exc:
            if missing_ok and exc.response.get("Error", {}).get("Code") in _MISSING:
                return None
            raise self._client_error(what, exc, kwargs.get("Key") or kwargs.get("Prefix")) from exc
        except BotoCoreError as exc:
            raise InfraError(
                f"S3 {what} on {self.url} failed: {exc}",
                hint=f"check serving.s3_endpoint_url ({self._endpoint()}), "
                "network access and the AWS_* credentials in the environment",
            ) from exc

    def _endpoint(self) -> str:
        return redact_url(self.endpoint_url) if self.endpoint_url else "AWS default"

    def _client_error(self, what: str, exc: Any, key: str | None) -> InfraError:
        """The store answered with an error: name the object and what to check for that code."""
        err = exc.response.get("Error", {})
        code = str(err.get("Code") or "unknown")
        where = f"s3://{self.bucket}/{key}" if key else f"s3://{self.bucket}"
        if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            hint = (
                f"the credentials in the environment (AWS_* / role) may not {what} in "
                f"bucket {self.bucket}; grant s3:GetObject/PutObject/DeleteObject/ListBucket"
            )
        elif code in ("NoSuchBucket",):
            hint = f"bucket {self.bucket} does not exist: create it or fix the s3:// URL"
        elif code in _MISSING:
            hint = "the object disappeared (deleted concurrently?): check the repository by hand"
        else:
            hint = (
                f"check the bucket, the credentials and serving.s3_endpoint_url "
                f"({self._endpoint()})"
            )
        return InfraError(
            f"S3 {what} of {where} failed: {code}: {err.get('Message') or exc}", hint=hint
        )

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
                version = version_number(cp["Prefix"].rstrip("/").rsplit("/", 1)[-1])
                if version is not None:
                    out.add(version)
        return sorted(out)

    def leftovers(self, model: str) -> list[str]:
        names = set()
        for page in self._list(self._key(model) + "/", "/"):
            for cp in page.get("CommonPrefixes", []):
                name = cp["Prefix"].rstrip("/").rsplit("/", 1)[-1]
                if name.startswith(TMP_PREFIX):
                    names.add(name)
        return sorted(names)

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
        head = self._call(
            "checksum read",
            self.s3.head_object,
            Bucket=self.bucket,
            Key=key,
            ChecksumMode="ENABLED",
        )
        if head.get("ChecksumSHA256") and "-" not in head["ChecksumSHA256"]:
            return base64.b64decode(head["ChecksumSHA256"]).hex()
        h = hashlib.sha256()  # no stored checksum (older object, other tool): hash the bytes
        body = self._call("read", self.s3.get_object, Bucket=self.bucket, Key=key)["Body"]
        for chunk in iter(lambda: body.read(CHUNK), b""):
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
                f"{self.url}/{dst} does not match what was uploaded "
                f"({manifest_diff(manifest, got)})",
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

    def _delete_files(self, model: str, version: int) -> None:
        self._delete_prefix(self._key(model, str(version)))

    def read_text(self, relpath: str) -> str | None:
        obj = self._call(
            "read", self.s3.get_object, missing_ok=True, Bucket=self.bucket, Key=self._key(relpath)
        )
        return None if obj is None else obj["Body"].read().decode("utf-8")

    def write_text(self, relpath: str, text: str) -> None:
        # A single PUT is atomic on S3: readers get the old object or the new one.
        self._call(
            "write",
            self.s3.put_object,
            Bucket=self.bucket,
            Key=self._key(relpath),
            Body=text.encode("utf-8"),
        )

    def delete_text(self, relpath: str) -> None:
        self._call("delete", self.s3.delete_object, Bucket=self.bucket, Key=self._key(relpath))

    # ---- conditional writes ---------------------------------------------------------------
    def read_meta(self, relpath: str) -> tuple[str, str] | None:
        obj = self._call(
            "read", self.s3.get_object, missing_ok=True, Bucket=self.bucket, Key=self._key(relpath)
        )
        if obj is None:
            return None
        return obj["Body"].read().decode("utf-8", errors="replace"), str(obj["ETag"])

    def _put_if(self, relpath: str, text: str, **condition: str) -> str | None:
        from botocore.exceptions import ClientError

        key = self._key(relpath)

        def put(**kwargs: Any) -> str | None:
            try:
                return str(self.s3.put_object(**kwargs)["ETag"])
            except ClientError as exc:
                if str(exc.response.get("Error", {}).get("Code")) in _CONDITION_LOST:
                    return None
                raise

        body = text.encode("utf-8")
        return self._call("lease write", put, Bucket=self.bucket, Key=key, Body=body, **condition)

    def create_meta(self, relpath: str, text: str) -> str | None:
        return self._put_if(relpath, text, IfNoneMatch="*")

    def replace_meta(self, relpath: str, token: str, text: str) -> str | None:
        return self._put_if(relpath, text, IfMatch=token)

    # ---- deploy log -----------------------------------------------------------------------
    def _append_raw(self, model: str, text: str) -> None:
        # Objects cannot be appended to: one object per record, named to sort by time.
        name = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.json"
        self._call(
            "write",
            self.s3.put_object,
            Bucket=self.bucket,
            Key=self._key(model, META_DIR, "deploy-log", name),
            Body=text.encode("utf-8"),
        )

    def _raw_log(self, model: str) -> list[tuple[str, str]]:
        prefix = self._key(model, META_DIR, "deploy-log")
        out = []
        for rel in sorted(self._objects(prefix)):
            key = f"{prefix}/{rel}"
            obj = self._call(
                "read", self.s3.get_object, missing_ok=True, Bucket=self.bucket, Key=key
            )
            if obj is not None:  # removed by hand between list and read
                text = obj["Body"].read().decode("utf-8", "replace")
                out.append((f"s3://{self.bucket}/{key}", text))
        return out

    def local_copy(self, model: str, version: int, scratch: Path) -> Path:
        """Download `<model>/<version>` into `scratch/<version>/` and verify every sha256."""
        prefix = self._key(model, str(version))
        expected = self.version_manifest(model, version)
        if READY_FILE not in expected:
            raise InfraError(
                f"{self.location(model, version)} has no {READY_FILE}; it is not a complete "
                "SavedModel version",
                hint="re-publish it, or label a complete version",
            )
        dest = scratch / str(version)
        for rel in expected:
            path = dest / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            body = self._call(
                "download", self.s3.get_object, Bucket=self.bucket, Key=f"{prefix}/{rel}"
            )["Body"]
            with path.open("wb") as fh:
                for chunk in iter(lambda b=body: b.read(CHUNK), b""):
                    fh.write(chunk)
        got = local_manifest(dest)
        if got != expected:
            raise InfraError(
                f"the download of {self.location(model, version)} to {dest} does not match "
                f"the repository ({manifest_diff(expected, got)})",
                hint="the version changed while downloading, or the store is inconsistent; "
                "retry, and inspect the version if it persists",
            )
        return dest
