"""The checkpoint backup in its own process, so the trainer never shares its GIL with it.

In the training process, importing boto3 and setting up its client (~0.3 s of CPU), hashing and
HTTP all run under the trainer's GIL: measured on the demo, that slowed training by 10-15 %
(benchmarks/backup_overhead.py). The agent is a child process running `TrainingBackup`; the
trainer talks to it through `BackupAgent`, a proxy with the same calls:

    restore()           the agent restores as soon as it starts; this waits for its answer
    sync()              one line down a pipe: never blocks
    close(preempted)    the agent uploads what is pending (bounded), answers with its status

Protocol: JSON lines. The trainer writes the spec, then {"op": "sync"} / {"op": "close"}; the
agent answers {"op": "restored", "step": ...} or {"op": "error", ...} once, and
{"op": "closed", "status": ...} at the end. Credentials reach it only through the inherited
environment. It ignores SIGTERM and SIGINT: a preemption signals the whole process group, and
the trainer's own handler decides when the last upload happens (close), so the agent must not
die first. If the trainer vanishes (stdin closes), it flushes within the preemption budget and
exits.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import tfship
from tfship import errors
from tfship.backup.sync import BackupStatus, close_budget
from tfship.errors import InfraError, TfshipError
from tfship.redact import format_exception, redact, redact_text, redacting_logs

if TYPE_CHECKING:
    from tfship.config import BackupConfig

log = logging.getLogger(__name__)

# Time allowed on top of the configured budget for the agent to answer a close.
_CLOSE_MARGIN_SECONDS = 10.0


class BackupAgent:
    """Proxy for the agent process; same calls as `TrainingBackup`."""

    def __init__(
        self,
        bcfg: BackupConfig,
        checkpoint_dir: Path,
        url: str,
        *,
        chief: bool,
        run: dict[str, Any] | None = None,
    ) -> None:
        self.cfg = bcfg
        self.chief = chief
        self._restored: dict[str, Any] | None = None  # the agent's restore answer, once read
        self._closed = False
        self._lines: queue.Queue[str | None] = queue.Queue()
        # The agent imports tfship from where this process did, installed or not.
        package_root = str(Path(tfship.__file__).resolve().parent.parent)
        pythonpath = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "tfship.backup"],
            env={**os.environ, "PYTHONPATH": pythonpath},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        threading.Thread(target=self._read, name="tfship-backup-agent-reader", daemon=True).start()
        self._send(
            {
                "backup": bcfg.model_dump(mode="json"),
                "checkpoint_dir": str(checkpoint_dir),
                "url": url,
                "chief": chief,
                "run": run,  # only this run's generations are restored
                "log_level": logging.getLogger("tfship").getEffectiveLevel(),
            }
        )

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _send(self, message: dict[str, Any]) -> None:
        assert self._proc.stdin is not None
        # A gone agent (broken pipe) is reported by restore/close, which wait for its answers.
        with contextlib.suppress(BrokenPipeError, ValueError):
            _write_line(self._proc.stdin, message)

    def _answer(self, op: str, timeout: float | None) -> dict[str, Any]:
        while True:
            try:
                line = self._lines.get(timeout=timeout)
            except queue.Empty:
                raise InfraError(
                    f"the checkpoint backup agent did not answer {op!r} within {timeout:.0f} s",
                    hint="check the object store's reachability (backup.url, endpoint_url)",
                ) from None
            if line is None:
                code = self._proc.wait()
                raise InfraError(
                    f"the checkpoint backup agent exited (code {code}) before answering {op!r}; "
                    "its log lines above say why",
                    hint="set backup.enabled=false to train without a backup",
                )
            message = json.loads(line)
            if message.get("op") == "error":
                cls = getattr(errors, message.get("type", ""), None)
                if not (isinstance(cls, type) and issubclass(cls, TfshipError)):
                    cls = InfraError
                raise cls(message["message"], hint=message.get("hint"))
            if message.get("op") == op:
                return message

    def restore(self) -> int | None:
        """The step the agent restored into the empty checkpoint dir (None: nothing to do)."""
        if self._restored is None:
            try:
                self._restored = self._answer("restored", timeout=None)
            except TfshipError:
                self._closed = True  # the agent has stopped; close() has nothing left to do
                self._reap()
                raise
        return self._restored["step"]

    def sync(self) -> None:
        if self.chief and not self._closed:
            self._send({"op": "sync"})

    def close(self, *, preempted: bool = False) -> BackupStatus | None:
        if self._closed:
            return None
        self._closed = True
        budget = close_budget(self.cfg, preempted=preempted)
        status = None
        try:
            # An unread restore answer is skipped, or its error raised, on the way to this one.
            self._send({"op": "close", "preempted": preempted})
            found = self._answer("closed", timeout=budget + _CLOSE_MARGIN_SECONDS)["status"]
            status = (
                BackupStatus(
                    **{k: tuple(v) if isinstance(v, list) else v for k, v in found.items()}
                )
                if found
                else None
            )
        except TfshipError as exc:
            # Training itself succeeded (or was preempted and saved locally); a backup that
            # could not finish is a warning, never a reason to fail the run.
            log.warning("checkpoint backup: %s", exc)
        finally:
            self._reap()
        return status

    def _reap(self) -> None:
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        try:
            self._proc.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


def _write_line(stream: Any, message: dict[str, Any]) -> None:
    stream.write(json.dumps(message) + "\n")
    stream.flush()


def main() -> int:
    """The agent: restore, answer, then serve sync/close until told to close or stdin ends."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Background work: when the cores are busy, training goes first (the scheduler still gives
    # a niced process its share, so uploads never starve; at close the trainer only waits).
    with contextlib.suppress(OSError):
        os.nice(10)
    spec = json.loads(sys.stdin.readline())
    # Its log lines, warnings and tracebacks reach the job log like the trainer's: redacted.
    with redacting_logs(verbose=spec.get("log_level", logging.INFO) <= logging.DEBUG):
        try:
            return _serve(spec)
        except Exception as exc:  # printed here, while the redacting hooks are in place
            print(format_exception(exc), end="", file=sys.stderr)
            return 1


def _serve(spec: dict[str, Any]) -> int:
    from tfship.backup import TrainingBackup
    from tfship.backup.store import open_store

    # Validated by the trainer; importing pydantic and tfship.config here would cost ~0.2 s.
    bcfg: Any = SimpleNamespace(**spec["backup"])
    try:
        store = open_store(
            spec["url"], endpoint_url=bcfg.endpoint_url, timeout=bcfg.request_timeout_seconds
        )
        backup = TrainingBackup(
            bcfg, Path(spec["checkpoint_dir"]), store, chief=spec["chief"], run=spec.get("run")
        )
        _write_line(sys.stdout, {"op": "restored", "step": backup.restore()})
    except TfshipError as exc:
        # The trainer raises it again and may record it: no URL credentials in it.
        error = {
            "type": type(exc).__name__,
            "message": redact_text(exc.message),
            "hint": redact_text(exc.hint) if exc.hint else None,
        }
        _write_line(sys.stdout, {"op": "error", **error})
        return 1
    for line in sys.stdin:
        message = json.loads(line)
        if message["op"] == "sync":
            try:
                backup.sync()
            except Exception as exc:  # staging is best effort; the next sync tries again
                log.warning("checkpoint backup: sync failed: %s", exc)
        elif message["op"] == "close":
            status = backup.close(preempted=bool(message.get("preempted")))
            found = redact(asdict(status)) if status else None
            _write_line(sys.stdout, {"op": "closed", "status": found})
            return 0
    backup.close(preempted=True)  # the trainer is gone without a word
    return 0
