"""`tfship status`: what models.config says, what is on disk, what the server reports."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tfship.config import PipelineConfig
from tfship.serving.target import resolve
from tfship.serving.transaction import stable_history


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

    def render_text(self) -> str:
        lines = [
            f"{self.model} ({self.environment or 'default'}) in {self.repository}",
            f"  labels     {self.labels or '{}'}",
            f"  configured {self.config_versions}   on disk {self.on_disk}",
            f"  server     {self.server if self.server is not None else 'offline (no rest_url)'}",
        ]
        for r in self.last_actions:
            lines.append(
                f"  {r.get('at')} {r.get('action')} {r.get('status')} v{r.get('version')} "
                f"by {r.get('who')}: {r.get('why') or ''}"
            )
        return "\n".join(lines)


def run_status(cfg: PipelineConfig, *, to: str | None = None, last: int = 5) -> StatusResult:
    target = resolve(cfg, to)
    _, state = target.read()
    server = None
    if target.client is not None:
        server = {s.version: s.state for s in target.client.status()}
    records = target.repository.read_log(target.model)
    return StatusResult(
        target.model,
        to,
        target.repository.location(target.model),
        list(state.versions),
        dict(state.labels),
        target.repository.versions(target.model),
        server,
        stable_history(records),
        records[-last:],
    )
