"""Config sections of the training half: project, run, data, model, train, checkpoints, export."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class DataSource(StrEnum):
    DEMO = "demo"
    IMAGE_FOLDER = "image_folder"
    TFRECORD = "tfrecord"
    CSV = "csv"
    NPZ = "npz"


class StrategyKind(StrEnum):
    AUTO = "auto"
    DEFAULT = "default"
    MIRRORED = "mirrored"
    MULTI_WORKER = "multi_worker"


class ProjectConfig(_Section):
    """Names used in artifacts, the model repository and TF Serving."""

    name: str = Field("digits", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    model_name: str = Field(
        "digits",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="TF Serving model name (URL path segment: /v1/models/<model_name>)",
    )


class RunConfig(_Section):
    """Where a run's outputs go. A relaunch with the same run id resumes that run."""

    runs_dir: Path = Path("runs")
    run_id: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="default: ci-<pipeline id> in CI, else 'local'",
    )
    seed: int = Field(42, ge=0)


class DataConfig(_Section):
    """Input data and the train/validation/test split."""

    source: DataSource = DataSource.DEMO
    path: Path | None = Field(None, description="file or directory; required unless source=demo")
    image_size: tuple[int, int] = Field((8, 8), description="(height, width) the model sees")
    channels: Literal[1, 3] = 1
    csv_label_column: str = "label"
    tfrecord_image_key: str = "image"
    tfrecord_label_key: str = "label"
    validation_fraction: float = Field(0.15, gt=0.0, lt=0.5)
    test_fraction: float = Field(0.15, gt=0.0, lt=0.5)
    limit: int | None = Field(None, ge=10, description="use only the first N examples (smoke runs)")
    cache: bool = True
    shuffle_buffer: int = Field(2048, ge=1)

    @model_validator(mode="after")
    def _path_required(self) -> DataConfig:
        if self.source != DataSource.DEMO and self.path is None:
            raise ValueError(f"data.path is required when data.source is '{self.source.value}'")
        return self


class ModelConfig(_Section):
    """The network. `builder` is 'module:function' returning an uncompiled keras.Model."""

    builder: str = Field("tfship.model:small_cnn", pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
    options: dict[str, Any] = Field(default_factory=dict, description="kwargs for the builder")


class TrainConfig(_Section):
    """Distributed training settings."""

    strategy: StrategyKind = StrategyKind.AUTO
    cpu_logical_devices: int = Field(
        0, ge=0, le=64, description="split the CPU into N logical devices (MirroredStrategy on CPU)"
    )
    epochs: int = Field(15, ge=1)
    per_replica_batch_size: int = Field(64, ge=1)
    learning_rate: float = Field(0.002, gt=0)
    scale_learning_rate: bool = Field(False, description="multiply the rate by replicas in sync")
    max_steps: int | None = Field(None, ge=1, description="stop after this many steps (smoke)")
    log_every_steps: int = Field(20, ge=1)
    steps_per_execution: int = Field(
        10,
        ge=1,
        description="training steps per compiled call; loss, NaN and preemption checks run once "
        "per call (a call never crosses an epoch end or a periodic checkpoint)",
    )
    progress: Literal["auto", "bar", "log", "none"] = "auto"


class CheckpointConfig(_Section):
    """Step-level checkpoints for resume after preemption."""

    dir: Path | None = Field(None, description="default: <run dir>/checkpoints")
    every_steps: int | None = Field(100, ge=1)
    every_seconds: float | None = Field(None, gt=0)
    keep: int = Field(3, ge=2, description="generations kept (at least two)")
    best_metric: str = "val_accuracy"
    best_mode: Literal["max", "min"] = "max"


class BackupConfig(_Section):
    """Checkpoint backup to object storage, so a retried job on a fresh runner resumes.

    Remote layout: `<url>/<prefix>/` with `prefix` defaulting to
    `<project.name>/<branch slug>/<run key>`, the run key being the CI pipeline (GitLab) or run
    (GitHub) id plus the job name: a retry of the same job finds its checkpoints, a new pipeline
    starts fresh. Credentials come only from the environment (boto3's chain, OIDC web identity).
    """

    enabled: bool = False
    url: str | None = Field(
        None,
        description="s3://bucket/prefix, gs://bucket/prefix (needs gcsfs) or a shared local path",
    )
    prefix: str | None = Field(
        None, description="path under url; default <project>/<branch>/<pipeline id>-<job name>"
    )
    endpoint_url: str | None = Field(None, description="S3-compatible endpoint (MinIO, Ceph, ...)")
    keep: int = Field(2, ge=1, description="complete generations kept remotely")
    every_seconds: float = Field(
        30.0,
        ge=0,
        description="upload the newest checkpoint at most this often, counted from the start "
        "(0: every save); the last one is always uploaded at the end of training and on SIGTERM",
    )
    include_best: bool = Field(True, description="also back up checkpoints/best/")
    restore: bool = Field(True, description="restore into an empty checkpoint dir on start")
    request_timeout_seconds: float = Field(60.0, gt=0, description="per object-store request")
    upload_timeout_seconds: float = Field(
        600.0, gt=0, description="wait for pending uploads when training ends"
    )
    preempt_timeout_seconds: float = Field(
        20.0,
        gt=0,
        description="wait for pending uploads after SIGTERM (keep under the grace "
        "period: 30 s on GCE spot VMs and Kubernetes, 120 s on EC2 spot)",
    )

    @model_validator(mode="after")
    def _url_required(self) -> BackupConfig:
        if self.enabled and not self.url:
            raise ValueError("backup.url is required when backup.enabled is true")
        return self


class ExportConfig(_Section):
    """SavedModel export for TF Serving."""

    version: int | None = Field(None, ge=1, description="explicit version (overrides the scheme)")
    version_scheme: Literal["timestamp", "sequential"] = Field(
        "timestamp",
        description="timestamp: UTC seconds, so runs on fresh CI machines never reuse a number "
        "already published; sequential: one more than the highest version in the run directory",
    )
    golden_requests: int = Field(8, ge=1, le=256)
    # TF Serving refuses to load a model with more than 1000 warmup records (WarmupConsts).
    warmup_requests: int = Field(16, ge=0, le=1000)
    tolerance: float = Field(1e-4, gt=0, description="abs tolerance when replaying golden requests")
    image_digest: str | None = Field(
        None, description="training image digest, recorded in manifest"
    )


# Metrics the evaluation gate understands, and which direction is better for each.
# Latency is the serving signature's wall time on the evaluating machine (batch 1 unless named).
