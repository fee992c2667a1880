"""`tfship status`: models.config, disk, server, deploy log - and anything left unfinished.

Reading never depends on a perfect repository: damaged deploy-log records are skipped and
counted, an unfinished action (the journal of a killed or failed one) and the lease holder are
shown, and an unreachable server is reported (exit 8) next to everything else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tfship.config import PipelineConfig
from tfship.errors import ExitCode, InfraError
from tfship.redact import redact, redact_text
from tfship.serving import journal, lease
from tfship.serving.retention import stable_history
from tfship.serving.target import resolve


@dataclass(frozen=True)
class StatusResult:
    """Labels and versions: what models.config says and what the server reports."""

    model: str
    environment: str | None
    repository: str
    config_versions: list[int]
    labels: dict[str, int]
    on_disk: list[int]
    server: dict[int, str] | None
    stable_history: list[int]
    last_actions: list[dict[str, Any]]
    unfinished: dict[str, Any] | None = None  # the journal of an action that did not finish
    lease: str | None = None
    damaged_records: list[str] = field(default_factory=list)
    temporary: list[str] = field(default_factory=list)
    server_error: str | None = None

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.INFRA if self.server_error else ExitCode.OK

    def render_text(self) -> str:
        server = self.server if self.server is not None else "offline (no rest_url)"
        lines = [
            f"{self.model} ({self.environment or 'default'}) in {self.repository}",
            f"  labels     {self.labels or '{}'}",
            f"  configured {self.config_versions}   on disk {self.on_disk}",
            f"  server     {f'UNREACHABLE: {self.server_error}' if self.server_error else server}",
        ]
        if self.lease:
            lines.append(f"  lease      {self.lease}")
        if self.unfinished and self.unfinished.get("in_progress"):
            u = self.unfinished
            lines.append(f"  IN PROGRESS {u.get('action')} of {u.get('model')} v{u.get('version')}")
        elif self.unfinished:
            u = self.unfinished
            lines.append(
                f"  UNFINISHED {u.get('action')} of {u.get('model')} v{u.get('version')} "
                f"({u.get('id')}, {u.get('state')}): {u.get('restore_error') or 'interrupted'}"
                " - the next deploy, promote or rollback undoes it first"
            )
        if self.temporary:
            lines.append(f"  temporary  {self.temporary} (removed by the next action)")
        if self.damaged_records:
            lines.append(f"  damaged deploy-log records skipped: {len(self.damaged_records)}")
            lines.extend(f"    {p}" for p in self.damaged_records[:5])
        for r in self.last_actions:
            lines.append(
                f"  {r.get('at')} {r.get('action')} {r.get('status')} v{r.get('version')} "
                f"by {r.get('who')}: {r.get('why') or ''}"
            )
        return redact_text("\n".join(lines))


def run_status(cfg: PipelineConfig, *, to: str | None = None, last: int = 5) -> StatusResult:
    target = resolve(cfg, to)
    repo = target.repository
    _, state = target.read()
    server, server_error = None, None
    if target.client is not None:
        try:
            server = {s.version: s.state for s in target.client.status()}
        except InfraError as exc:
            server_error = redact_text(exc.message)
    records, damaged = repo.read_log_checked(target.model)
    pending, bad = journal.read(repo)
    if bad:
        pending = {"state": "damaged", "restore_error": "; ".join(bad)}
    held = lease.read(repo)
    if pending is not None and held is not None and held.state == "held":
        # The lease holder is alive: its journal is an action running now, not a leftover.
        pending = {**pending, "in_progress": pending.get("state") == "running"}
    return StatusResult(
        target.model,
        to,
        redact_text(repo.location(target.model)),
        list(state.versions),
        dict(state.labels),
        repo.versions(target.model),
        server,
        stable_history(records),
        redact(records[-last:]) if last > 0 else [],
        redact(pending),
        redact_text(held.detail) if held is not None and held.state != "released" else None,
        damaged,
        repo.leftovers(target.model),
        server_error,
    )
