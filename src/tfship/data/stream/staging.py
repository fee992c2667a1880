"""Stage S3 shards to local disk ahead of the reader, in a cache bounded by bytes.

TF 2.21 cannot open `s3://` (no S3 filesystem; tensorflow-io no longer supports current TF), so
each worker downloads the shards it reads — only its own FILE shard — to a local directory and
hands tf.data local paths in a deterministic order (`Stager.paths(order)`, consumed through
`tf.data.Dataset.from_generator`).

Chosen policy (and why):
- Downloads run in a thread pool (boto3 releases the GIL on I/O), `workers` at a time, in the
  order the reader will open the shards, so the reader rarely waits.
- The cache holds at most `max_bytes`: a download starts only while the bytes on disk plus the
  bytes being downloaded stay within the bound (one shard is always allowed, so a shard larger
  than the bound still works, alone).
- A shard is evicted when the reader has read it to the end: the pipeline appends to each
  shard's record dataset an empty tail that calls `release(path)` (a `tf.py_function`), so
  eviction follows the reader, not a guess of how far ahead tf.data's parallel interleave
  fetches file names (it holds `cycle_length` open files plus as many prefetched names). The
  generator blocks while the cache is full of unfinished shards. tf.data's parallel interleave
  asks for about 3 x cycle_length names before it finishes its first shard (measured on TF
  2.21: 6 for cycle_length 2), so `StreamSource` raises a bound below (3 x cycle_length + 2)
  shards to that, with a warning. Should the reader still hold more, the generator, after
  `stall_seconds` without a release, stages one shard over the bound (counted in
  `stats.over_bound`, warned once) rather than hang the pipeline.
- Nothing is kept across epochs: a second epoch downloads again. For data that fits on local
  disk, copy it once (or set max_bytes above the data size and read it as a local location).
A download is written to `<name>.part` and renamed, so a half-written file is never read.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tfship.data.stream.locations import Shard, s3_client
from tfship.errors import DataError, InfraError

log = logging.getLogger(__name__)


@dataclass
class StageStats:
    downloaded_files: int = 0
    downloaded_bytes: int = 0
    evicted_files: int = 0
    peak_bytes: int = 0
    wait_seconds: float = 0.0  # time the reader spent waiting for a download
    over_bound: int = 0  # shards staged beyond the bound so the reader could not stall


@dataclass
class Stager:
    """Downloads `s3://` shards to `cache_dir` ahead of the reader; see the module doc."""

    cache_dir: Path | None = None
    max_bytes: int = 2 << 30
    workers: int = 8
    endpoint_url: str | None = None
    stall_seconds: float = 2.0
    stats: StageStats = field(default_factory=StageStats)

    def __post_init__(self) -> None:
        if self.max_bytes < 1 or self.workers < 1:
            raise ValueError("max_bytes and workers must be >= 1")
        self._client: Any = None
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._on_disk = 0
        self._in_flight = 0
        self._sizes: dict[str, int] = {}  # staged, not yet released by the reader
        self._fetched: set[Path] = set()
        self._seq = 0
        self._owned_dir: str | None = None

    def _dir(self) -> Path:
        if self.cache_dir is None:
            self._owned_dir = tempfile.mkdtemp(prefix="tfship-stage-")
            self.cache_dir = Path(self._owned_dir)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        return self.cache_dir

    def close(self) -> None:
        if self._owned_dir:
            shutil.rmtree(self._owned_dir, ignore_errors=True)
            self._owned_dir = None

    #: A staged copy's name is `<tag>-<digest>-<file name>`; this finds the digest in its path.
    DIGEST_RE = r"(?s)^.*/[^/-]*-([0-9a-f]{16})-[^/]*$"

    @staticmethod
    def digest(shard: Shard) -> str:
        """The digest of the shard's S3 path in its staged copies' names."""
        return hashlib.sha256(shard.path.encode()).hexdigest()[:16]

    def _local(self, shard: Shard, tag: str) -> Path:
        return self._dir() / f"{tag}-{self.digest(shard)}-{Path(shard.rel).name}"

    def _download(self, shard: Shard, target: Path) -> Path:
        from botocore.exceptions import BotoCoreError, ClientError

        bucket, _, key = shard.path[len("s3://") :].partition("/")
        part = target.with_name(target.name + ".part")
        try:
            self._client.download_file(bucket, key, str(part))
        except ClientError as exc:
            part.unlink(missing_ok=True)
            err = exc.response.get("Error", {})
            raise DataError(
                f"shard {shard.path} cannot be downloaded (HTTP "
                f"{exc.response.get('ResponseMetadata', {}).get('HTTPStatusCode')} "
                f"{err.get('Code', '')})",
                hint="was it deleted or rewritten after the listing? list again and retry",
            ) from None
        except BotoCoreError as exc:
            part.unlink(missing_ok=True)
            raise InfraError(
                f"shard {shard.path}: the object store cannot be reached ({exc})"
            ) from None
        size = part.stat().st_size
        if size != shard.size:
            part.unlink(missing_ok=True)
            raise DataError(
                f"shard {shard.path} is {size} bytes; the listing said {shard.size} (it changed "
                "while the pipeline ran)"
            )
        os.replace(part, target)
        with self._lock:
            self.stats.downloaded_files += 1
            self.stats.downloaded_bytes += size
        return target

    def fetch(self, shard: Shard) -> Path:
        """Download one shard now, outside the bounded stream (samples, error diagnosis); it
        stays until `cleanup()`."""
        if self._client is None:
            self._client = s3_client(self.endpoint_url)
        target = self._local(shard, "sample")
        if target.exists():
            return target
        path = self._download(shard, target)
        self._fetched.add(path)
        return path

    def release(self, local: str | bytes) -> None:
        """The reader has finished `local` (called from the pipeline): evict it now."""
        path = Path(local.decode() if isinstance(local, bytes) else local)
        with self._cond:
            size = self._sizes.pop(str(path), None)
            if size is None:
                return
            path.unlink(missing_ok=True)
            self._on_disk -= size
            self.stats.evicted_files += 1
            self._cond.notify_all()

    def paths(self, order: Sequence[Shard]) -> Iterator[str]:
        """Local paths of `order`'s shards, in that order, each downloaded before it is yielded.

        Blocks (waiting for `release`) while the bytes on disk and in flight would exceed the
        bound; at least one shard is always allowed."""
        import time

        if self._client is None:
            self._client = s3_client(self.endpoint_url)
        pending: deque[tuple[Shard, Future[Path]]] = deque()
        yielded: list[str] = []
        nxt = 0
        with ThreadPoolExecutor(self.workers, thread_name_prefix="tfship-stage") as pool:
            try:
                while nxt < len(order) or pending:
                    with self._cond:
                        while nxt < len(order) and len(pending) < self.workers:
                            shard = order[nxt]
                            used = self._on_disk + self._in_flight
                            if used and used + shard.size > self.max_bytes:
                                break
                            self._in_flight += shard.size
                            self._seq += 1
                            target = self._local(shard, f"{self._seq:08d}")
                            pending.append((shard, pool.submit(self._download, shard, target)))
                            nxt += 1
                        if not pending:
                            # Full of shards the reader has not finished: wait for a release.
                            t0 = time.perf_counter()
                            released = self._cond.wait(timeout=self.stall_seconds)
                            self.stats.wait_seconds += time.perf_counter() - t0
                            if not released and nxt < len(order):
                                # The reader needs another name before it can finish any
                                # shard (tf.data fetched more names ahead than the floor
                                # assumed): go over the bound by one shard rather than hang.
                                self.stats.over_bound += 1
                                if self.stats.over_bound == 1:
                                    log.warning(
                                        "staging cache over its bound (%d bytes): the reader "
                                        "holds more unfinished shards than it allows; raise "
                                        "stage_max_bytes",
                                        self.max_bytes,
                                    )
                                shard = order[nxt]
                                self._in_flight += shard.size
                                self._seq += 1
                                target = self._local(shard, f"{self._seq:08d}")
                                pending.append((shard, pool.submit(self._download, shard, target)))
                                nxt += 1
                            else:
                                continue
                    shard, fut = pending.popleft()
                    t0 = time.perf_counter()
                    path = fut.result()
                    with self._cond:
                        self.stats.wait_seconds += time.perf_counter() - t0
                        self._in_flight -= shard.size
                        self._on_disk += shard.size
                        self._sizes[str(path)] = shard.size
                        self.stats.peak_bytes = max(
                            self.stats.peak_bytes, self._on_disk + self._in_flight
                        )
                    yielded.append(str(path))
                    yield str(path)
            except GeneratorExit:
                # Closed before the end (an epoch cut short by `take`, an iterator dropped,
                # which tears the reader down too): shards the reader took but did not finish
                # are evicted here, or they would hold the cache's bytes for the rest of the
                # run (release ignores finished ones). Not on a normal end: the interleave may
                # not have opened the last names yet.
                for done in yielded:
                    self.release(done)
                raise
            finally:
                for _, fut in pending:
                    fut.cancel()
                for shard, fut in pending:
                    with contextlib.suppress(Exception):
                        fut.result().unlink(missing_ok=True)
                    with self._cond:
                        self._in_flight -= shard.size

    def discard(self, local: str | Path) -> None:
        """Remove a `fetch`ed copy now (not one the stream staged)."""
        path = Path(local)
        if path in self._fetched:
            path.unlink(missing_ok=True)
            self._fetched.discard(path)

    def cleanup(self) -> None:
        """Remove every staged shard still on disk (call when the reader is done)."""
        for path in list(self._sizes):
            self.release(path)
        for fetched in self._fetched:
            fetched.unlink(missing_ok=True)
        self._fetched.clear()
