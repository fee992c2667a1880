"""Config sections of the training half: project, run, data, model, train, checkpoints, export."""

from __future__ import annotations

import math
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

# Every number has an upper bound: sizes that would exhaust memory, counts that would never end,
# and anything TF or TF Serving keeps in an int64 are refused at load, not hours later.
INT64_MAX = 2**63 - 1
HOUR, DAY = 3600.0, 86400.0
# A name becomes a directory (<repository>/<model_name>/, runs/<run_id>/), a URL path segment
# (/v1/models/<model_name>) and an object-store key: plain characters, bounded, never '..'.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
RESERVED_NAMES = frozenset({"models.config"})  # the model repository's own file


def _plain_name(value: str) -> str:
    if ".." in value or value.endswith("."):
        raise ValueError("a name may not contain '..' or end with '.'")
    if value.lower() in RESERVED_NAMES:
        raise ValueError(f"'{value}' is reserved: the model repository needs that name")
    return value


Name = Annotated[str, Field(pattern=NAME_PATTERN), AfterValidator(_plain_name)]


def _plain_value(value: Any, where: str) -> None:
    """Builder options are YAML values handed to user code: bounded, finite, named."""
    if isinstance(value, bool) or value is None:
        return
    if isinstance(value, int):
        if abs(value) > INT64_MAX:
            raise ValueError(f"{where}: {value} does not fit in 64 bits")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where}: {value} is not a finite number")
    elif isinstance(value, str):
        if len(value) > 4096:
            raise ValueError(f"{where}: a string longer than 4096 characters")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _plain_value(item, f"{where}[{i}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            _plain_value(item, f"{where}.{key}")
    else:
        raise ValueError(f"{where}: {type(value).__name__} is not a plain YAML value")


class _Section(BaseModel):
    # allow_inf_nan=False: `.inf` / `.nan` in YAML is never a meaningful threshold or size.
    model_config = ConfigDict(
        extra="forbid", frozen=True, validate_default=True, allow_inf_nan=False
    )


class DataSource(StrEnum):
    DEMO = "demo"
    IMAGE_FOLDER = "image_folder"
    TEXT_FOLDER = "text_folder"
    TFRECORD = "tfrecord"
    CSV = "csv"
    PARQUET = "parquet"
    NPZ = "npz"
    LOADER = "loader"  # data.loader: module:function returns the splits and the schema


class FeatureKind(StrEnum):
    NUMERIC = "numeric"
    CATEGORICAL = "categorical"
    TEXT = "text"
    IMAGE = "image"


class StrategyKind(StrEnum):
    AUTO = "auto"
    DEFAULT = "default"
    MIRRORED = "mirrored"
    MULTI_WORKER = "multi_worker"


class ProjectConfig(_Section):
    """Names used in artifacts, the model repository and TF Serving."""

    name: Name = Field("digits", description="project name (1-64 of A-Z a-z 0-9 _ . -)")
    model_name: Name = Field(
        "digits",
        description="TF Serving model name (URL path segment: /v1/models/<model_name>; "
        "directory <repository>/<model_name>/): 1-64 of A-Z a-z 0-9 _ . -, not "
        "'models.config', no '..'",
    )


class RunConfig(_Section):
    """Where a run's outputs go. A relaunch with the same run id resumes that run."""

    runs_dir: Path = Path("runs")
    run_id: Name | None = Field(None, description="default: ci-<pipeline id> in CI, else 'local'")
    seed: int = Field(42, ge=0, le=2**32 - 1, description="numpy and scikit-learn take 32 bits")


ColumnName = Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[^\x00-\x1f]+$")]
FEATURE_NAME = r"^[A-Za-z_][A-Za-z0-9_.-]{0,127}$"  # a Keras input and a signature key


class FeatureDecl(_Section):
    """One feature in the long form: `{kind: categorical, dtype: int64}`."""

    kind: FeatureKind
    dtype: Literal["float32", "int64", "string"] | None = Field(
        None, description="default per kind: float32 (numeric, image), string (categorical, text)"
    )
    shape: list[Annotated[int, Field(ge=1, le=65_536)]] | None = Field(
        None, max_length=3, description="per example; image: [height, width, channels]"
    )


class StreamSplitLocations(_Section):
    """Explicit split locations (each a path, glob, gs:// or s3:// prefix)."""

    train: str = Field(min_length=1, max_length=4096)
    validation: str = Field(min_length=1, max_length=4096)
    test: str = Field(min_length=1, max_length=4096)


class StreamConfig(_Section):
    """`data.stream`: read sharded files with tf.data instead of loading them into memory
    (tfship.data.stream; docs/data-at-scale.md). `data.path` is the location (path, glob,
    gs:// or s3://) unless `locations` names one per split."""

    hash_key: str | None = Field(
        None,
        max_length=256,
        description="hash split on this feature (stable per example); fractions from "
        "data.validation_fraction/test_fraction",
    )
    hash_key_dtype: Literal["string", "int64"] | None = Field(
        None, description="the key's type when it is not a declared feature (default string)"
    )
    hash_buckets: int = Field(10_000, ge=2, le=10**7)
    locations: StreamSplitLocations | None = Field(
        None, description="explicit train/validation/test locations instead of a hash split"
    )
    compression: Literal["auto", "none", "GZIP", "ZLIB"] = Field(
        "auto", description="auto: .gz files are GZIP"
    )
    label_dtype: Literal["int64", "string", "float32"] = "int64"
    cycle_length: int = Field(16, ge=1, le=1024, description="shards read at once")
    on_error: Literal["fail", "skip"] = "fail"
    max_bad_records: int = Field(0, ge=0, le=10**12)
    s3_endpoint_url: str | None = Field(
        None, max_length=2048, description="S3-compatible endpoint (MinIO); default from env"
    )
    stage_dir: str | None = Field(None, max_length=4096, description="S3 staging directory")
    stage_max_bytes: int = Field(2 << 30, ge=1 << 20, le=1 << 50)
    max_eval_examples: int = Field(
        200_000,
        ge=1,
        le=10**8,
        description="bound on the validation/test examples held in memory (more: exit 4)",
    )

    @model_validator(mode="after")
    def _one_split(self) -> StreamConfig:
        if (self.hash_key is None) == (self.locations is None):
            raise ValueError(
                "data.stream needs exactly one of hash_key (a hash split on a key feature) "
                "or locations (explicit train/validation/test locations)"
            )
        return self


def _is_url(value: Any) -> bool:
    return isinstance(value, str) and "://" in value


class DataConfig(_Section):
    """Input data, its schema and the train/validation/test split."""

    source: DataSource = DataSource.DEMO
    # A str only for a URL (s3://, gs://: a Path would turn s3://b/x into s3:/b/x), which
    # only data.stream reads; every local path is a Path.
    path: Path | str | None = Field(
        None,
        description="file or directory; required unless source=demo or loader; with "
        "data.stream also a glob, gs:// or s3:// location",
    )
    loader: str | None = Field(
        None,
        pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$",
        max_length=256,
        description="module:function returning the data and its schema (source: loader)",
    )
    label: ColumnName = Field("label", description="the label column / feature key")
    features: dict[str, FeatureKind | FeatureDecl] | None = Field(
        None,
        max_length=10_000,
        description="feature name -> kind (numeric, categorical, text, image) or {kind, dtype, "
        "shape}; default: every other column, kinds inferred and written to schema.json",
    )
    image_size: tuple[
        Annotated[int, Field(ge=1, le=4096)], Annotated[int, Field(ge=1, le=4096)]
    ] = Field((8, 8), description="(height, width) the model sees; each 1-4096")
    channels: Literal[1, 3] = 1
    tfrecord_image_key: str = Field("image", min_length=1, max_length=256)
    validation_fraction: float = Field(0.15, gt=0.0, lt=0.5)
    test_fraction: float = Field(0.15, gt=0.0, lt=0.5)
    limit: int | None = Field(
        None, ge=10, le=10**9, description="use only the first N examples (smoke runs)"
    )
    cache: bool = True
    shuffle_buffer: int = Field(2048, ge=1, le=10**7, description="examples held for shuffling")
    stream: StreamConfig | None = Field(
        None, description="stream sharded files with tf.data (None: load into memory)"
    )

    @field_validator("path", mode="after")
    @classmethod
    def _local_path(cls, value: Path | str | None) -> Path | str | None:
        return Path(value) if isinstance(value, str) and not _is_url(value) else value

    @field_validator("features")
    @classmethod
    def _feature_names(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        import re

        for name in value or {}:
            if not re.fullmatch(FEATURE_NAME, name):
                raise ValueError(
                    f"feature name {name[:80]!r} must match {FEATURE_NAME} (it names a model "
                    "input and a serving signature key)"
                )
        if value == {}:
            raise ValueError("data.features is empty; omit it to infer the features")
        return value

    @model_validator(mode="before")
    @classmethod
    def _loader_means_source(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("loader") and data.get("source") in (None, "demo"):
            data = {**data, "source": "loader"}
        return data

    @model_validator(mode="after")
    def _path_required(self) -> DataConfig:
        if self.source == DataSource.LOADER:
            if not self.loader:
                raise ValueError("data.loader (module:function) is required for source 'loader'")
        elif self.loader:
            raise ValueError(
                f"data.loader is set but data.source is '{self.source.value}'; "
                "a loader replaces the source (source: loader)"
            )
        elif (
            self.source != DataSource.DEMO
            and self.path is None
            and (self.stream is None or self.stream.locations is None)
        ):
            raise ValueError(f"data.path is required when data.source is '{self.source.value}'")
        if self.stream is not None:
            streamed = (DataSource.TFRECORD, DataSource.CSV, DataSource.PARQUET)
            if self.source not in (*streamed, DataSource.IMAGE_FOLDER):
                raise ValueError(
                    "data.stream reads tfrecord, csv or parquet shards or an image_folder; "
                    f"data.source is '{self.source.value}'"
                )
            if not self.features and self.source != DataSource.IMAGE_FOLDER:
                raise ValueError(
                    "data.stream needs data.features (and data.label) declared: the schema "
                    "cannot be inferred without reading all the data"
                )
            if self.limit is not None:
                raise ValueError("data.limit applies to the in-memory path, not data.stream")
        if self.features and self.label in self.features:
            raise ValueError(
                f"data.label '{self.label}' is also listed in data.features: the model would "
                "be given its answer"
            )
        return self


class TaskConfig(_Section):
    """The learning problem (tfship.task): `type` plus that task's own options.

    `task: {type: binary, threshold: 0.3}` and `task: {type: binary, options: {threshold:
    0.3}}` are the same; the options are checked by the task when the config is loaded.
    """

    type: str = Field(
        "classification",
        max_length=256,
        pattern=r"^[A-Za-z_][\w.]*(:[A-Za-z_][\w.]*)?$",
        description="classification | binary | multilabel | regression | module:Class",
    )
    options: dict[str, Any] = Field(
        default_factory=dict, description="the task's options (threshold, loss, class_weight ...)"
    )

    @model_validator(mode="before")
    @classmethod
    def _inline_options(cls, data: Any) -> Any:
        if isinstance(data, dict):
            inline = {k: v for k, v in data.items() if k not in ("type", "options")}
            if inline:
                both = sorted(set(inline) & set(data.get("options") or {}))
                if both:
                    raise ValueError(f"task option(s) {both} given twice (inline and in options)")
                rest = {k: v for k, v in data.items() if k in ("type", "options")}
                data = {**rest, "options": {**(data.get("options") or {}), **inline}}
        return data

    @field_validator("options")
    @classmethod
    def _plain_options(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key, item in value.items():
            _plain_value(item, f"task.{key}")
        return value


class ModelConfig(_Section):
    """The network. `builder` is 'module:function' returning an uncompiled keras.Model."""

    builder: str | None = Field(
        None,
        pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$",
        max_length=256,
        description="default: a model for the task and features (tfship.model.default_model)",
    )
    options: dict[str, Any] = Field(default_factory=dict, description="kwargs for the builder")

    @field_validator("options")
    @classmethod
    def _plain_options(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key, item in value.items():
            if not key.isidentifier():
                raise ValueError(f"option '{key[:80]}' is not a Python keyword-argument name")
            _plain_value(item, key)
        return value


class TrainConfig(_Section):
    """Distributed training settings."""

    strategy: StrategyKind = StrategyKind.AUTO
    cpu_logical_devices: int = Field(
        0, ge=0, le=64, description="split the CPU into N logical devices (MirroredStrategy on CPU)"
    )
    epochs: int = Field(15, ge=1, le=100_000)
    per_replica_batch_size: int = Field(64, ge=1, le=65_536)
    # Bounded well inside float32 and int64. A rate near the bound is absurd but
    # harmless to accept: training diverges and stops with exit 5, which the tests rely on.
    learning_rate: float = Field(0.002, gt=0, le=1e18)
    scale_learning_rate: bool = Field(False, description="multiply the rate by replicas in sync")
    optimizer: Literal["adam", "adamw", "sgd", "rmsprop"] = "adam"
    lr_schedule: Literal["constant", "cosine"] = Field(
        "constant", description="cosine: decays learning_rate to 0 over the run's steps"
    )
    weight_decay: float | None = Field(None, ge=0, le=1.0, description="adamw / sgd / rmsprop")
    max_steps: int | None = Field(
        None, ge=1, le=10**12, description="stop after this many steps (smoke)"
    )
    log_every_steps: int = Field(20, ge=1, le=10**9)
    steps_per_execution: int = Field(
        10,
        ge=1,
        le=100_000,
        description="training steps per compiled call; loss, NaN and preemption checks run once "
        "per call (a call never crosses an epoch end or a periodic checkpoint)",
    )
    progress: Literal["auto", "bar", "log", "none"] = "auto"


class CheckpointConfig(_Section):
    """Step-level checkpoints for resume after preemption."""

    @model_validator(mode="before")
    @classmethod
    def _no_url_as_dir(cls, data: Any) -> Any:
        # Path("s3://bucket/x") is the local folder "s3:/bucket/x": the checkpoints would stay
        # in the job's workspace and a retry on another runner would start from step 0.
        raw = data.get("dir") if isinstance(data, dict) else None
        if isinstance(raw, str) and "://" in raw:
            raise ValueError(
                f"checkpoint.dir must be a local or mounted path, not a URL ({raw.split('://')[0]}"
                "://...); to keep checkpoints in object storage set backup.url to it "
                "(TFSHIP_BACKUP_URL): generations are copied there and restored on a retry"
            )
        return data

    dir: Path | None = Field(
        None,
        description="a local or mounted path; default <run dir>/checkpoints; a set dir holds "
        "<dir>/<run id>/. Object stores go in backup.url",
    )
    every_steps: int | None = Field(100, ge=1, le=10**12)
    every_seconds: float | None = Field(None, gt=0, le=7 * DAY)
    keep: int = Field(3, ge=2, le=1000, description="generations kept (2-1000)")
    best_metric: str | None = Field(
        None,
        min_length=1,
        max_length=128,
        description="training metric that picks the exported checkpoint; default: the task's "
        "(val_accuracy for classification, val_loss otherwise)",
    )
    best_mode: Literal["max", "min"] | None = Field(
        None, description="default: the metric's direction"
    )


class BackupConfig(_Section):
    """Checkpoint backup to object storage, so a retried job on a fresh runner resumes.

    Remote layout: `<url>/<prefix>/` with `prefix` defaulting to
    `<project.name>/<branch slug>/<run key>`, the run key being the CI pipeline (GitLab) or run
    (GitHub) id plus the job name: a retry of the same job finds its checkpoints, a new pipeline
    starts fresh. Credentials come only from the environment (boto3's chain, OIDC web identity).
    """

    enabled: bool = Field(
        False, description="default: on when backup.url is set (false turns it off explicitly)"
    )
    url: str | None = Field(
        None,
        description="s3://bucket/prefix, gs://bucket/prefix (needs gcsfs) or a shared local path",
    )
    prefix: str | None = Field(
        None,
        max_length=1024,
        pattern=r"^/?[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*/?$",
        description="path under url; default <project>/<branch>/<pipeline id>-<job name>",
    )
    endpoint_url: str | None = Field(None, description="S3-compatible endpoint (MinIO, Ceph, ...)")
    keep: int = Field(2, ge=1, le=1000, description="complete generations kept remotely")
    every_seconds: float = Field(
        30.0,
        ge=0,
        le=DAY,
        description="upload the newest checkpoint at most this often, counted from the start "
        "(0: every save); the last one is always uploaded at the end of training and on SIGTERM",
    )
    include_best: bool = Field(True, description="also back up checkpoints/best/")
    restore: bool = Field(True, description="restore into an empty checkpoint dir on start")
    request_timeout_seconds: float = Field(
        60.0, gt=0, le=HOUR, description="per object-store request"
    )
    upload_timeout_seconds: float = Field(
        600.0, gt=0, le=DAY, description="wait for pending uploads when training ends"
    )
    preempt_timeout_seconds: float = Field(
        20.0,
        gt=0,
        le=HOUR,
        description="wait for pending uploads after SIGTERM (keep under the grace "
        "period: 30 s on GCE spot VMs and Kubernetes, 120 s on EC2 spot)",
    )

    @model_validator(mode="before")
    @classmethod
    def _on_when_url_given(cls, data: Any) -> Any:
        # Documented setup: set TFSHIP_BACKUP_URL and a retried job resumes from it. Requiring
        # a second switch made that silently do nothing.
        if isinstance(data, dict) and data.get("enabled") is None and data.get("url"):
            data = {**data, "enabled": True}
        return data

    @model_validator(mode="after")
    def _url_required(self) -> BackupConfig:
        if self.prefix and any(part in (".", "..") for part in self.prefix.split("/")):
            raise ValueError("backup.prefix may not contain '.' or '..' segments")
        if self.enabled and not self.url:
            raise ValueError("backup.url is required when backup.enabled is true")
        return self


class ExportConfig(_Section):
    """SavedModel export for TF Serving."""

    version: int | None = Field(
        None,
        ge=1,
        le=INT64_MAX,
        description="explicit version (overrides the scheme); TF Serving reads it as an int64",
    )
    version_scheme: Literal["timestamp", "sequential"] = Field(
        "timestamp",
        description="timestamp: UTC seconds, so runs on fresh CI machines never reuse a number "
        "already published; sequential: one more than the highest version in the run directory",
    )
    golden_requests: int = Field(8, ge=1, le=256)
    # TF Serving refuses to load a model with more than 1000 warmup records (WarmupConsts).
    warmup_requests: int = Field(16, ge=0, le=1000)
    tolerance: float = Field(
        1e-4, gt=0, le=1.0, description="abs tolerance when replaying golden requests (<= 1)"
    )
    image_digest: str | None = Field(
        None,
        max_length=256,
        # what ci/image-ref checks: the pipeline's training image by digest, never a tag
        pattern=r"^([a-z0-9][a-z0-9._/:-]*@)?sha256:[0-9a-f]{64}$",
        description="the training image, <repository>@sha256:<digest> or sha256:<digest>, "
        "recorded in the manifest (the train job sets TFSHIP_EXPORT_IMAGE_DIGEST)",
    )


# Metrics the evaluation gate understands, and which direction is better for each.
# Latency is the serving signature's wall time on the evaluating machine (batch 1 unless named).
