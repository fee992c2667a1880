"""The run directory: every stage reads its inputs from it and writes its outputs to it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from tfship import env
from tfship.config import PipelineConfig


@dataclass(frozen=True)
class RunDir:
    """Paths of one run (see DESIGN.md, 'The path of one model')."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.resolved.yaml"

    @property
    def data_json(self) -> Path:
        return self.root / "data.json"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tensorboard"

    @property
    def train_json(self) -> Path:
        return self.root / "train.json"

    @property
    def export(self) -> Path:
        return self.root / "export"

    @property
    def evaluation(self) -> Path:
        return self.root / "evaluation"

    @property
    def validation_json(self) -> Path:
        return self.root / "validation.json"

    @property
    def deploy_json(self) -> Path:
        return self.root / "deploy.json"

    def ensure(self) -> RunDir:
        self.root.mkdir(parents=True, exist_ok=True)
        return self


def run_id(cfg: PipelineConfig, environ: Mapping[str, str] | None = None) -> str:
    """This run's id: run.run_id, else ci-<CI_PIPELINE_ID>, gh-<GITHUB_RUN_ID> or 'local'."""
    return cfg.run.run_id or env.default_run_id(environ)


def resolve_run_dir(cfg: PipelineConfig, explicit: str | Path | None = None) -> RunDir:
    """--run-dir, else TFSHIP_RUN_DIR, else <runs_dir>/<run id>."""
    chosen = explicit or env.get("TFSHIP_RUN_DIR")
    if chosen:
        return RunDir(Path(chosen))
    return RunDir(cfg.run.runs_dir / run_id(cfg))


def checkpoint_dir(
    cfg: PipelineConfig, run_dir: RunDir, environ: Mapping[str, str] | None = None
) -> Path:
    """<run dir>/checkpoints, or <checkpoint.dir>/<run id> when checkpoint.dir is set.

    checkpoint.dir is meant to outlive a job (a persistent volume, so a retry on another
    runner resumes); pipelines share it, so each run gets its own directory below it: a
    retried job (same pipeline id) finds its checkpoints, a new pipeline starts fresh in an
    empty one and never sees another run's.
    """
    if cfg.checkpoint.dir:
        return Path(cfg.checkpoint.dir) / run_id(cfg, environ)
    return run_dir.checkpoints
