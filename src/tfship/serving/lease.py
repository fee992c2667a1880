"""The model repository's lease: one deploy action at a time, whatever pipeline or platform.

CI serialisation (GitLab `resource_group`, GitHub `concurrency`) only covers jobs of one project
on one platform, and GitHub cancels a *pending* job of a group when another queues. The lease
lives where the state lives, in the model repository (`<repo>/.tfship/lease.json`, one per
repository because TF Serving's config and `models.config` are one per server):

* acquire: create it only if absent (local link(2), S3 `If-None-Match: *`), or replace a free one
  by compare-and-swap (local flock, S3 `If-Match: <ETag>`): free = released, expired, damaged,
  or held by a process on this machine that no longer exists (a `kill -9`);
* hold: a heartbeat thread renews `expires_at` (TTL `TTL`, every `RENEW_EVERY`); a renewal that
  finds someone else's lease marks it lost, and `check()` (called before every change) stops
  the action, so a stalled holder never overwrites its successor;
* release: compare-and-swap to a released record (never a blind delete).

While the lease is held, waiting callers poll until `wait` seconds, then raise Locked (exit 14)
naming the holder.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tfship.errors import Locked
from tfship.redact import redact
from tfship.serving import deploy_log, schema
from tfship.serving.repository import META_DIR, ModelRepository

log = logging.getLogger(__name__)
LEASE = f"{META_DIR}/lease.json"
TTL = 120.0
RENEW_EVERY = 30.0
DEFAULT_WAIT = 900.0


def machine_id() -> str:
    """This host, boot and PID namespace: equal ids mean a PID can be checked here."""
    parts = [socket.gethostname()]
    with contextlib.suppress(OSError):
        parts.append(Path("/proc/sys/kernel/random/boot_id").read_text().strip())
    with contextlib.suppress(OSError):
        parts.append(str(os.stat("/proc/self/ns/pid").st_ino))
    return "/".join(parts)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class LeaseState:
    """What `<repo>/.tfship/lease.json` says now (for `tfship status` and waiting callers)."""

    state: str  # held | released | expired | holder gone | damaged
    holder: dict[str, Any] | None
    detail: str

    @property
    def free(self) -> bool:
        return self.state != "held"


def inspect(text: str, now: float | None = None) -> LeaseState:
    doc, bad = schema.loads("lease", text)
    if doc is None:
        return LeaseState("damaged", None, f"unreadable lease ({'; '.join(bad)}): taken over")
    now = time.time() if now is None else now
    who = describe(doc)
    if doc.get("released"):
        return LeaseState("released", doc, f"released by {who}")
    if doc["expires_at"] < now:
        return LeaseState("expired", doc, f"expired {now - doc['expires_at']:.0f}s ago: {who}")
    holder = doc["holder"]
    if holder["machine"] == machine_id() and not _alive(int(holder["pid"])):
        return LeaseState("holder gone", doc, f"process {holder['pid']} is gone: {who}")
    return LeaseState("held", doc, f"held by {who}, {doc['expires_at'] - now:.0f}s left")


def describe(doc: dict[str, Any]) -> str:
    h = doc.get("holder") or {}
    what = f"{doc.get('action')} {doc.get('model') or ''} v{doc.get('version')}".strip()
    since = time.strftime("%H:%M:%S", time.gmtime(doc.get("acquired_at") or 0))
    where = f", pipeline {h['pipeline_url']}" if h.get("pipeline_url") else ""
    return f"{h.get('who')} ({what}, pid {h.get('pid')}, since {since} UTC{where})"


def read(repo: ModelRepository) -> LeaseState | None:
    current = repo.read_meta(LEASE)
    return None if current is None else inspect(current[0])


class Lease:
    """A held lease; renew in the background, `check()` before each change, `release()`."""

    def __init__(self, repo: ModelRepository, doc: dict[str, Any], token: str, ttl: float):
        self.repo, self.doc, self.token, self.ttl = repo, doc, token, ttl
        self.lost: str | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="tfship-lease", daemon=True)

    @property
    def id(self) -> str:
        return str(self.doc["id"])

    def _write(self, doc: dict[str, Any]) -> bool:
        with self._lock:
            if self.lost:
                return False
            token = self.repo.replace_meta(LEASE, self.token, _dumps(doc))
            if token is None:
                current = read(self.repo)
                self.lost = f"taken over: {current.detail if current else 'lease removed'}"
                return False
            self.doc, self.token = doc, token
            return True

    def renew(self) -> bool:
        return self._write({**self.doc, "expires_at": time.time() + self.ttl})

    def _beat(self) -> None:
        interval = min(RENEW_EVERY, self.ttl / 4)
        while not self._stop.wait(interval):
            try:
                self.renew()
            except Exception as exc:  # a store hiccup: retry, but never past the expiry
                log.warning("could not renew the deploy lease: %s", exc)
                if time.time() > self.doc["expires_at"]:
                    self.lost = f"expired while it could not be renewed ({exc})"
            if self.lost:
                return

    def check(self) -> None:
        """Raise Locked when the lease was lost: nothing more may change."""
        if self.lost is None and time.time() > self.doc["expires_at"]:
            self.lost = "expired (this process stalled longer than the lease lasts)"
        if self.lost:
            raise Locked(
                f"the deploy lease on {self.repo.url} was lost ({self.lost}); "
                "stopping before anything else changes",
                hint="another deploy action may be running: check `tfship status`",
            )

    def release(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        try:
            done = self._write({**self.doc, "released": True, "expires_at": time.time()})
        except Exception as exc:  # it expires on its own
            log.warning("could not release the deploy lease (expires by itself): %s", exc)
            return
        if not done:
            log.warning("deploy lease not released: %s", self.lost)


def _dumps(doc: dict[str, Any]) -> str:
    return json.dumps(redact(doc), sort_keys=True) + "\n"


def acquire(
    repo: ModelRepository,
    *,
    action: str,
    model: str,
    version: int | None,
    wait: float = DEFAULT_WAIT,
    ttl: float = TTL,
) -> Lease:
    """Take the repository's lease, waiting up to `wait` seconds; Locked (exit 14) after."""
    deadline = time.monotonic() + max(wait, 0.0)
    poll = min(1.0, max(wait / 20, 0.05))
    while True:
        now = time.time()
        doc = {
            "format": "tfship-lease/1",
            "id": uuid.uuid4().hex,
            "action": action,
            "model": model,
            "version": version,
            "acquired_at": now,
            "expires_at": now + ttl,
            "holder": {
                "who": deploy_log.who(),
                "machine": machine_id(),
                "pid": os.getpid(),
                "pipeline_url": deploy_log.pipeline_url(),
            },
        }
        token = repo.create_meta(LEASE, _dumps(doc))
        current = None
        if token is None:
            current = repo.read_meta(LEASE)
            if current is not None:
                state = inspect(current[0], now)
                if state.free:
                    token = repo.replace_meta(LEASE, current[1], _dumps(doc))
                    if token is not None and state.state != "released":
                        log.warning("took over the deploy lease: %s", state.detail)
        if token is not None:
            lease = Lease(repo, doc, token, ttl)
            lease._thread.start()
            return lease
        if time.monotonic() > deadline:
            state = inspect(current[0]) if current else None
            raise Locked(
                f"another deploy action holds the lease on {repo.url}: "
                f"{state.detail if state else 'it changed while waiting'}; waited {wait:.0f}s "
                "and changed nothing",
                hint="wait for it (`tfship status` shows it) and run this again, or raise "
                "--lease-wait; a crashed holder's lease expires by itself "
                f"({ttl:.0f}s after its last renewal)",
            )
        time.sleep(poll)


@contextlib.contextmanager
def held(repo: ModelRepository, **kwargs: Any) -> Iterator[Lease]:
    lease = acquire(repo, **kwargs)
    try:
        yield lease
    finally:
        lease.release()
