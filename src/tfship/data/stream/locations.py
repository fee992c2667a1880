"""Where streamed data lives, and what is there: a listing of shards without reading them.

A location is a local path or glob (`data/shards/*.tfrecord`, a directory = every file under
it), a `gs://bucket/prefix*` glob read through `tf.io.gfile` (TF's own GCS filesystem), or an
`s3://bucket/prefix*` glob listed with boto3 (TF 2.21 has no S3 filesystem: the shards are
staged to local disk, see tfship.data.stream.staging). Any other scheme TF's filesystems know
(`file://`, `hdfs://`) is listed and read through `tf.io.gfile` like `gs://`; the tests use
`file://` to run the gfile code path, as there is no GCS fake here. S3-compatible stores
(MinIO) are reached with an endpoint URL: `StreamOptions.s3_endpoint_url`, else
`AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL` (boto3 reads these itself). Credentials come only
from boto3's default chain (environment variables, the shared AWS config files, instance/pod
roles) — never from pipeline.yaml.

A listing holds, per shard: its full path, its path relative to the location's root, its size,
a checksum where the store keeps one (S3 ETag, GCS via gfile has none exposed, local files:
none) and a version marker (S3: LastModified; GCS/local: mtime in ns). That is what the
fingerprint and `tfship data changed` compare; no byte of a shard is read to list it.

Errors: a glob matching nothing, a directory without files, a bucket that does not exist or
refuses the listing (403/404) are DataError (exit 4) naming the location; an endpoint that
cannot be reached is InfraError (exit 8, the exit table's "object store unreachable"), so CI may
retry it.
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tfship.errors import DataError, InfraError

GLOB_CHARS = "*?["
#: A listing longer than this is almost certainly the wrong prefix (a whole bucket).
MAX_SHARDS = 1_000_000


@dataclass(frozen=True)
class Shard:
    """One file of a listing. `rel` is '/'-separated and relative to the location's root."""

    path: str  # full: /abs/path, gs://bucket/key, s3://bucket/key
    rel: str
    size: int
    checksum: str | None = None  # S3 ETag (quotes stripped); None where the store has none
    version: str | None = None  # S3 LastModified (ISO), local/gfile mtime in ns

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Location:
    """A parsed `data.path`-style location."""

    raw: str
    scheme: str  # "local", "gs", "s3" (and any other scheme tf.io.gfile knows, read by gfile)
    bucket: str | None
    root: str  # the part before the first glob character (a directory or key prefix)
    pattern: str | None  # glob relative to root; None: root is a file, or every file under it

    @property
    def is_remote(self) -> bool:
        return self.scheme != "local"

    @property
    def needs_staging(self) -> bool:
        """True where TF cannot open the shards itself (S3)."""
        return self.scheme == "s3"


def parse_location(raw: str | os.PathLike[str]) -> Location:
    text = os.fspath(raw)
    if not text:
        raise DataError("data location is empty; expected a path, a glob, gs:// or s3:// URL")
    scheme = "local"
    bucket = None
    rest = text
    if "://" in text:
        scheme, _, rest = text.partition("://")
        scheme = scheme.lower()
        if scheme in ("s3", "gs"):
            bucket, _, rest = rest.partition("/")
            if not bucket:
                raise DataError(f"data location {text}: no bucket name after {scheme}://")
    first = min((i for i, ch in enumerate(rest) if ch in GLOB_CHARS), default=-1)
    if first < 0:
        return Location(text, scheme, bucket, rest, None)
    cut = rest.rfind("/", 0, first) + 1
    return Location(text, scheme, bucket, rest[:cut], rest[cut:])


def _full(loc: Location, key: str) -> str:
    if loc.scheme == "local":
        return key
    if loc.bucket is not None:
        return f"{loc.scheme}://{loc.bucket}/{key}"
    return f"{loc.scheme}://{key}"


def list_location(
    raw: str | os.PathLike[str], *, s3_endpoint_url: str | None = None
) -> tuple[Shard, ...]:
    """The shards at `raw`, sorted by relative path. Never empty (DataError instead)."""
    loc = parse_location(raw)
    if loc.scheme == "s3":
        shards = _list_s3(loc, s3_endpoint_url)
    elif loc.scheme == "local":
        shards = _list_local(loc)
    else:
        shards = _list_gfile(loc)
    shards = tuple(s for s in shards if not _hidden(s.rel))
    if not shards:
        what = "glob matches no files" if loc.pattern else "holds no files"
        raise DataError(
            f"data location {loc.raw}: {what}",
            hint="check data.path (a directory, a file or a glob such as "
            "'shards/train-*.tfrecord'), and that the files were written",
        )
    return tuple(sorted(shards, key=lambda s: s.rel))


def _hidden(rel: str) -> bool:
    # _SUCCESS / .crc files of Spark and Beam jobs are not shards.
    return any(part.startswith((".", "_")) for part in rel.split("/"))


def _matches(loc: Location, rel: str) -> bool:
    """Glob match; `*` stays within one folder level unless the pattern has `**`."""
    if loc.pattern is None:
        return True
    if "**" not in loc.pattern and rel.count("/") != loc.pattern.count("/"):
        return False
    return fnmatch.fnmatchcase(rel, loc.pattern)


def _too_many(loc: Location) -> DataError:
    return DataError(
        f"data location {loc.raw}: more than {MAX_SHARDS} files; expected a narrower prefix or glob"
    )


def _list_local(loc: Location) -> list[Shard]:
    root = Path(loc.root or ".")
    if loc.pattern is None and root.is_file():
        st = root.stat()
        return [Shard(str(root), root.name, st.st_size, None, str(st.st_mtime_ns))]
    if not root.is_dir():
        raise DataError(
            f"data location {loc.raw}: {root} does not exist or is not a directory",
            hint="point data.path at a directory, a file or a glob of shard files",
        )
    out: list[Shard] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "_")))
        for name in filenames:
            p = Path(dirpath) / name
            rel = p.relative_to(root).as_posix()
            if not _matches(loc, rel):
                continue
            st = p.stat()
            if not p.is_file():
                continue  # FIFOs, sockets, devices: never shards
            out.append(Shard(str(p), rel, st.st_size, None, str(st.st_mtime_ns)))
            if len(out) > MAX_SHARDS:
                raise _too_many(loc)
    return out


def _list_gfile(loc: Location) -> list[Shard]:
    import tensorflow as tf

    base = _full(loc, loc.root)
    try:
        if loc.pattern is None and not tf.io.gfile.isdir(base):
            if not tf.io.gfile.exists(base):
                raise DataError(f"data location {loc.raw} does not exist")
            paths = [base]
            base = base.rsplit("/", 1)[0] + "/"
        elif loc.pattern is None:
            paths = [
                tf.io.gfile.join(d, f) for d, _, files in tf.io.gfile.walk(base) for f in files
            ]
        else:
            paths = tf.io.gfile.glob(base + loc.pattern)
        out = []
        for p in paths:
            st = tf.io.gfile.stat(p)
            if st.is_directory:
                continue
            rel = p[len(base) :].lstrip("/")
            out.append(Shard(p, rel, int(st.length), None, str(st.mtime_nsec)))
            if len(out) > MAX_SHARDS:
                raise _too_many(loc)
        return out
    except tf.errors.PermissionDeniedError as exc:
        raise DataError(f"data location {loc.raw}: listing refused ({exc.message[:200]})") from None
    except tf.errors.NotFoundError as exc:
        raise DataError(f"data location {loc.raw}: not found ({exc.message[:200]})") from None
    except tf.errors.OpError as exc:
        raise InfraError(
            f"data location {loc.raw}: cannot be listed ({type(exc).__name__}: {exc.message[:200]})"
        ) from None


def s3_client(endpoint_url: str | None = None) -> Any:
    """A boto3 S3 client from the default credential chain (environment, never the config)."""
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint_url,
        # standard retry mode: 3 attempts unless AWS_MAX_ATTEMPTS says otherwise
        config=Config(retries={"mode": "standard"}, max_pool_connections=32),
    )


def _list_s3(loc: Location, endpoint_url: str | None) -> list[Shard]:
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    client = s3_client(endpoint_url)
    prefix = loc.root
    out: list[Shard] = []
    try:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=loc.bucket, Prefix=prefix)
        for page in pages:
            for obj in page.get("Contents", ()):
                key = obj["Key"]
                if key.endswith("/"):
                    continue  # "folder" marker objects
                rel = key[len(prefix) :].lstrip("/")
                # s3://b/data means the object "data" or everything under "data/"
                if (
                    loc.pattern is None
                    and prefix
                    and not prefix.endswith("/")
                    and key != prefix
                    and not key.startswith(prefix + "/")
                ):
                    continue
                if not rel:
                    rel = key.rsplit("/", 1)[-1]
                if not _matches(loc, rel):
                    continue
                out.append(
                    Shard(
                        f"s3://{loc.bucket}/{key}",
                        rel,
                        int(obj["Size"]),
                        str(obj.get("ETag", "")).strip('"') or None,
                        obj["LastModified"].isoformat() if obj.get("LastModified") else None,
                    )
                )
                if len(out) > MAX_SHARDS:
                    raise _too_many(loc)
    except NoCredentialsError:
        raise DataError(
            f"data location {loc.raw}: no AWS credentials found",
            hint="set AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or a role / AWS_PROFILE) in "
            "the job's environment; credentials never go in pipeline.yaml",
        ) from None
    except ClientError as exc:
        err = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        raise DataError(
            f"data location {loc.raw}: bucket {loc.bucket!r} cannot be listed "
            f"(HTTP {status} {err.get('Code', '')}: {str(err.get('Message', ''))[:160]})",
            hint="check the bucket name, the prefix and that the job's credentials may "
            "s3:ListBucket it",
        ) from None
    except BotoCoreError as exc:  # endpoint unreachable, DNS, TLS
        raise InfraError(
            f"data location {loc.raw}: the object store cannot be reached ({exc})",
            hint="check the endpoint URL (AWS_ENDPOINT_URL / s3_endpoint_url) and the network",
        ) from None
    return out
