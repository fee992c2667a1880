"""The deploy transaction: what every action records, and how a failed one is undone.

`session()` holds the repository's lease (`lease`) for a whole action, retention included, and
first finishes whatever an earlier action left (`journal.recover`). Inside it,
`transaction()` snapshots the model's `models.config` entry, appends a `started` record to the
deploy log and writes the journal before anything changes (no log, no change). The body sets
`ctx["result"]`; its `ok` record and `deploy.json` are written *inside* the transaction, so if
either cannot be written the change is undone: a label never moves without a record.

On any failure `journal.undo` puts back what this action changed - files first, then the
server - and the exit code says what is true afterwards:

* 9 (DeployFailed): everything put back and, with a server, the previous versions AVAILABLE
  again: `stable` keeps serving, and the files a restarted server reads say the same;
* 8 (InfraError): infrastructure failed before the server was sent any config; what was
  published is removed again, nothing changed;
* 13 (RestoreFailed): part of the undo failed (named in the message); the journal stays, and
  `tfship status` shows it until the next action finishes the undo.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from tfship.errors import DeployFailed, GateFailed, InfraError, Locked, RestoreFailed
from tfship.fsutil import atomic_write_json
from tfship.redact import redact, redact_text
from tfship.result import to_jsonable
from tfship.rundir import RunDir
from tfship.serving import golden, journal, lease, models_config
from tfship.serving.deploy_log import log_record
from tfship.serving.repository import PublishResult, VersionConflict
from tfship.serving.target import Target


@dataclass(frozen=True)
class DeployResult:
    """What one publish/deploy/promote/rollback did (also written to run_dir/deploy.json)."""

    action: str
    model: str
    environment: str | None
    mode: str  # "server" | "offline"
    status: str  # "ok" | "unchanged"
    version: int | None
    labels_before: dict[str, int]
    labels_after: dict[str, int]
    versions_before: list[int]
    versions_after: list[int]
    reason: str | None = None
    published: PublishResult | None = None
    golden: golden.GoldenCheck | None = None
    offline_check: Any = None
    removed_versions: list[int] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    next_step: str | None = None
    warnings: list[str] = field(default_factory=list)  # after the change took effect
    recovered: list[str] = field(default_factory=list)  # what an earlier action left, finished

    def render_text(self) -> str:
        where = f" ({self.environment})" if self.environment else ""
        lines = [
            f"{self.action}{where}: {self.model} version {self.version} "
            f"[{self.status}, {self.mode}]",
            f"  labels   {self.labels_before or '{}'} -> {self.labels_after or '{}'}",
            f"  versions {self.versions_before} -> {self.versions_after}",
        ]
        if self.golden is not None:
            lines.append(
                f"  golden   max |diff| {self.golden.max_abs_diff:.3g} <= {self.golden.tolerance:g}"
            )
        if self.removed_versions:
            lines.append(f"  removed  {self.removed_versions} (retention)")
        if self.seconds:
            lines.append("  seconds  " + ", ".join(f"{k} {v:.2f}" for k, v in self.seconds.items()))
        lines.extend(f"  RECOVERED {r}" for r in self.recovered)
        lines.extend(f"  WARNING  {w}" for w in self.warnings)
        if self.next_step:
            lines.append(f"  next: {self.next_step}")
        return redact_text("\n".join(lines))


class Terminated(InfraError):
    """SIGTERM (a cancelled or timed-out CI job) while a deploy action held the lease."""


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """Turn the first SIGTERM into an exception, so the undo runs; ignore later ones."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # let the undo finish
        raise Terminated(
            "received SIGTERM (job cancelled or timed out)",
            hint="the action was undone; run it again",
        )

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def session(
    target: Target, action: str, version: int | None, wait: float | None
) -> Iterator[list[str]]:
    """Hold the repository lease for one action; first finish what an earlier one left.

    Yields notes on what was recovered (also logged).
    """
    kwargs = {"wait": lease.DEFAULT_WAIT if wait is None else wait}
    try:
        held = lease.acquire(
            target.repository, action=action, model=target.model, version=version, **kwargs
        )
    except OSError as exc:  # a local repository that cannot be written (permissions, full)
        raise InfraError(
            f"cannot take the deploy lease in {target.repository.url}: {exc}",
            hint="the deploy job must be able to write the model repository",
        ) from exc
    target.lease = held
    try:
        with _sigterm_raises():
            yield journal.recover(target)
    finally:
        target.lease = None
        held.release()


def write_deploy_json(run_dir: RunDir, result: Any, record: dict[str, Any]) -> None:
    doc = to_jsonable(result) if not isinstance(result, dict) else result
    atomic_write_json(run_dir.ensure().deploy_json, redact({**doc, "record": record}))


def _ok_record(result: DeployResult, op: str) -> dict[str, Any]:
    return log_record(
        result.action,
        result.model,
        id=op,
        environment=result.environment,
        status="ok",
        version=result.version,
        why=result.reason,
        labels_before=result.labels_before,
        labels_after=result.labels_after,
        versions_before=result.versions_before,
        versions_after=result.versions_after,
    )


def publish(
    ctx: dict[str, Any], target: Target, version: int, export_dir: Any, expected: Any = None
) -> PublishResult:
    """Publish inside a transaction: journalled first, so an undo removes only what it adds.
    `expected`: the export's files as already read (`ModelRepository.publish`)."""
    existed = target.repository.is_complete(target.model, version)
    if target.lease is not None:
        target.lease.check()
    ctx["journal"].note_publish(version, existed)
    return target.repository.publish(target.model, version, export_dir, expected)


@contextlib.contextmanager
def transaction(
    action: str, run_dir: RunDir, target: Target, reason: str | None, version: int | None
) -> Iterator[dict[str, Any]]:
    """Record, then change; undo exactly this action's changes on any failure.

    Run inside `session()`. The body must set `ctx["result"]` (a DeployResult) and publish
    with `publish(ctx, ...)`; after the block `ctx["record"]` holds the `ok` record.
    """
    before_cfg, before = target.read()
    # The entry exactly as the file has it (base_path included): what an undo puts back.
    as_found = models_config.model_state(before_cfg, target.model) if before_cfg else None
    op = uuid.uuid4().hex[:12]

    def record_of(status: str, **more: Any) -> dict[str, Any]:
        return log_record(
            action,
            target.model,
            id=op,
            environment=target.environment,
            status=status,
            version=version,
            why=reason,
            labels_before=dict(before.labels),
            versions_before=list(before.versions),
            **more,
        )

    # Before anything changes: a deploy log that cannot be written stops the action here.
    target.repository.append_log(target.model, record_of("started"))
    jr = journal.Journal.start(
        target.repository,
        op=op,
        action=action,
        model=target.model,
        version=version,
        before=as_found,
    )
    ctx: dict[str, Any] = {"cfg": before_cfg, "state": before, "journal": jr, "result": None}
    reloads0 = target.reloads
    target.journal = jr
    try:
        yield ctx
        result: DeployResult = ctx["result"]
        ctx["record"] = record = _ok_record(result, op)
        write_deploy_json(run_dir, result, record)
        # Still inside: if the log cannot take the outcome, the change is undone below.
        target.repository.append_log(target.model, record)
    except BaseException as exc:
        target.journal = None
        _fail(exc, action, run_dir, target, jr, record_of, reloads0, before, version)
        raise AssertionError("unreachable") from exc
    finally:
        target.journal = None
    # Committed (ok record logged): if the journal cannot be removed, the next action drops it.
    with contextlib.suppress(Exception):
        jr.clear()


def _fail(
    exc: BaseException,
    action: str,
    run_dir: RunDir,
    target: Target,
    jr: journal.Journal,
    record_of: Any,
    reloads0: int,
    before: Any,
    version: int | None,
) -> None:
    server_touched = target.reloads > reloads0
    outcome = journal.undo(target, jr.doc, server_touched=server_touched)
    error = redact_text(f"{type(exc).__name__}: {getattr(exc, 'message', exc)}")
    record = record_of(
        "failed" if outcome.complete else "restore_failed",
        error=error[:2000],
        restore=outcome.describe(),
        restore_error=None if outcome.complete else "; ".join(outcome.problems),
        labels_after=dict(before.labels),
    )
    with contextlib.suppress(Exception):
        target.repository.append_log(target.model, record)
    with contextlib.suppress(Exception):
        write_deploy_json(run_dir, {"action": action, "status": record["status"]}, record)
    with contextlib.suppress(Exception):
        if outcome.complete:
            jr.clear()
        else:
            jr.failed(outcome.describe())
    if isinstance(exc, GateFailed | VersionConflict | Locked) and outcome.complete:
        raise exc  # refused before anything changed
    if not isinstance(exc, Exception):
        raise exc  # KeyboardInterrupt / SystemExit, after the undo
    what = f"{action} of {target.model} v{version} failed ({error})"
    hint = getattr(exc, "hint", None)
    if not outcome.complete:
        raise RestoreFailed(
            f"{what}; the undo did not complete: {outcome.describe()}",
            hint="`tfship status` shows the unfinished action; once the server / store is "
            "back, the next deploy, promote or rollback finishes the undo first",
        ) from exc
    stable = before.labels.get("stable", "(none)")
    if isinstance(exc, InfraError) and target.client is not None and not server_touched:
        raise InfraError(
            f"{what}; the server was sent nothing and the repository is as before "
            f"({outcome.describe()})",
            hint=hint,
        ) from exc
    done = outcome.describe()
    if target.client is not None:
        state = f"previous config and labels restored ({done}); stable still serves {stable}"
    else:
        state = f"models.config restored ({done}); stable still serves {stable} (no server)"
    raise DeployFailed(f"{what}; {state}", hint=hint) from exc
