"""Typed pipeline configuration, validated once at the edge.

Precedence (lowest to highest): defaults < pipeline.yaml < TFSHIP_<SECTION>_<FIELD> environment
variables < `--set section.field=value` flags. Unknown keys and bad values are rejected with the
field, the value received and what was expected. Every object is frozen: stages never mutate
configuration, they receive it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tfship import env as envvars
from tfship.errors import ConfigError


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

    version: int | None = Field(None, ge=1, description="default: next after the highest present")
    golden_requests: int = Field(8, ge=1, le=256)
    # TF Serving refuses to load a model with more than 1000 warmup records (WarmupConsts).
    warmup_requests: int = Field(16, ge=0, le=1000)
    tolerance: float = Field(1e-4, gt=0, description="abs tolerance when replaying golden requests")
    image_digest: str | None = Field(
        None, description="training image digest, recorded in manifest"
    )


# Metrics the evaluation gate understands, and which direction is better for each.
# Latency is the serving signature's wall time on the evaluating machine (batch 1 unless named).
GATE_METRICS: dict[str, Literal["higher", "lower"]] = {
    "accuracy": "higher",
    "macro_f1": "higher",
    "min_class_f1": "higher",
    "min_class_recall": "higher",
    "loss": "lower",
    "p50_latency_ms": "lower",
    "p95_latency_ms": "lower",
    "p50_latency_ms_batch32": "lower",
    "p95_latency_ms_batch32": "lower",
}


def _check_gate_metrics(names: Any, where: str) -> None:
    unknown = sorted(set(names) - set(GATE_METRICS))
    if unknown:
        raise ValueError(
            f"{where}: unknown metric(s) {unknown}; expected one of {sorted(GATE_METRICS)}"
        )


class AbsoluteThreshold(_Section):
    """Bounds on the candidate's own value: `{min: 0.95}`, `{max: 50}` or both."""

    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _one_bound(self) -> AbsoluteThreshold:
        if self.min is None and self.max is None:
            raise ValueError("an absolute threshold needs 'min' and/or 'max'")
        return self


class ChangeThreshold(_Section):
    """How much worse than the champion the candidate may be.

    `max_regression` is in the metric's unit (`relative: false`) or a fraction of the champion's
    value (`relative: true`, e.g. 0.2 = 20 %). 0 means "at least as good as the champion".
    """

    max_regression: float = Field(0.0, ge=0.0)
    relative: bool = False
    better: Literal["higher", "lower"] | None = Field(
        None, description="which direction is better; default: the metric's own (GATE_METRICS)"
    )


class GateConfig(_Section):
    """The evaluation gate: thresholds, champion and mode. No thresholds is an error, not a pass."""

    run_mode: Literal["enabled", "dry_run", "disabled"] = Field(
        "enabled", description="dry_run reports the verdict but never fails the pipeline"
    )
    absolute: dict[str, AbsoluteThreshold] = Field(
        default_factory=dict, description="metric -> {min, max} on the candidate itself"
    )
    change: dict[str, ChangeThreshold] = Field(
        default_factory=dict, description="metric -> allowed regression against the champion"
    )
    champion_repository: str | None = Field(
        None,
        description="model repository holding the champion (<base>/models.config, "
        "<base>/<model_name>/<version>/); default: serving.model_repository",
    )
    champion_label: str = Field("stable", pattern=r"^[A-Za-z0-9_-]+$")
    latency_runs: int = Field(50, ge=5, le=10000, description="timed calls per batch size")

    @model_validator(mode="after")
    def _known_metrics(self) -> GateConfig:
        _check_gate_metrics(self.absolute, "gate.absolute")
        _check_gate_metrics(self.change, "gate.change")
        return self


class ServingEnvironment(_Section):
    """Where one deploy target (`tfship deploy --to <name>`) lives; unset fields fall back to
    the `serving` section's own values."""

    model_repository: str | None = Field(None, description="path or s3://bucket/prefix")
    server_model_repository: str | None = None
    rest_url: str | None = Field(None, description="TF Serving REST base, e.g. http://tfs:8501")
    grpc_target: str | None = Field(None, description="TF Serving gRPC host:port (config reloads)")


class ServingConfig(_Section):
    """Model repository and TF Serving (publish, deploy, promote, rollback, validate)."""

    model_repository: str = Field("models", description="path or s3://bucket/prefix")
    server_model_repository: str | None = Field(
        None,
        description="the repository as the model server sees it, used for base_path in "
        "models.config (e.g. /models in the compose container); default: model_repository",
    )
    s3_endpoint_url: str | None = Field(None, description="S3-compatible endpoint (MinIO, ...)")
    rest_url: str | None = Field(None, description="TF Serving REST base; unset = offline deploy")
    grpc_target: str | None = Field(None, description="TF Serving gRPC host:port")
    request_timeout_seconds: float = Field(10.0, gt=0)
    connect_retries: int = Field(3, ge=0, le=20, description="retries on connection errors")
    retry_backoff_seconds: float = Field(0.5, ge=0)
    load_deadline_seconds: float = Field(
        600.0, gt=0, description="wait for AVAILABLE; allow for TF Serving's load retries"
    )
    poll_interval_seconds: float = Field(0.5, gt=0)
    retention: int = Field(3, ge=2, description="versions kept on disk (labelled ones always)")
    tolerance: float | None = Field(None, gt=0, description="default: the manifest's tolerance")
    latency_requests: int = Field(50, ge=1, le=10000, description="`validate` latency sample")
    allow_ungated: bool = Field(False, description="deploy without evaluation/gate.json")
    environments: dict[str, ServingEnvironment] = Field(
        default_factory=lambda: {
            "staging": ServingEnvironment(),
            "production": ServingEnvironment(),
        }
    )


class ScanSeverity(StrEnum):
    """Trivy's severities, lowest first (the order is the gate's order)."""

    UNKNOWN = "UNKNOWN"
    LOW = "LOW"
    MEDIUM = "MEDIUM"
    HIGH = "HIGH"
    CRITICAL = "CRITICAL"

    @property
    def rank(self) -> int:
        return list(ScanSeverity).index(self)


class ScanScanner(StrEnum):
    VULN = "vuln"
    SECRET = "secret"
    MISCONFIG = "misconfig"


class ScanConfig(_Section):
    """Security scanning with Trivy (`tfship scan`, and the scan stage of `tfship run`)."""

    enabled: bool = Field(True, description="run the scan stage in `tfship run`")
    fail_on: ScanSeverity = Field(
        ScanSeverity.CRITICAL, description="findings at or above this severity fail (exit 10)"
    )
    report: ScanSeverity = Field(
        ScanSeverity.HIGH, description="lowest severity listed in the reports and summary"
    )
    allowlist: Path = Field(
        Path(".trivyignore.yaml"),
        description="Trivy YAML ignore file; every entry needs `statement` and `expired_at`",
    )
    timeout_seconds: int = Field(
        900, ge=10, le=6 * 3600, description="trivy --timeout (TF images exceed its 5 min default)"
    )
    cache_dir: Path | None = Field(
        None, description="trivy --cache-dir (DB, checks); default ~/.cache/trivy"
    )
    offline: bool = Field(
        False,
        description="never download: --skip-db-update --skip-java-db-update --offline-scan"
        " --skip-check-update (the DB must already be in cache_dir)",
    )
    scanners: tuple[ScanScanner, ...] = Field(
        (ScanScanner.VULN, ScanScanner.SECRET), min_length=1, description="for `image` and `fs`"
    )
    ignore_unfixed: bool = Field(False, description="drop vulnerabilities that have no fix yet")
    skip_dirs: tuple[str, ...] = Field(
        (".git", ".venv", "venv", "node_modules", "runs", "build", ".gitlab-ci-local", ".cache"),
        description="trivy --skip-dirs for `fs` and `config` scans",
    )

    @model_validator(mode="before")
    @classmethod
    def _upper_severities(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            for key in ("fail_on", "report"):
                if isinstance(data.get(key), str):
                    data[key] = data[key].upper()
        return data

    @model_validator(mode="after")
    def _report_covers_gate(self) -> ScanConfig:
        if self.report.rank > self.fail_on.rank:
            raise ValueError(
                f"scan.report ({self.report.value}) must not be above scan.fail_on "
                f"({self.fail_on.value}): findings that fail the scan must appear in its report"
            )
        return self


class PipelineConfig(_Section):
    """The whole pipeline.yaml."""

    version: Literal[1] = 1
    project: ProjectConfig = ProjectConfig()
    run: RunConfig = RunConfig()
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    backup: BackupConfig = BackupConfig()
    export: ExportConfig = ExportConfig()
    serving: ServingConfig = ServingConfig()
    gate: GateConfig = GateConfig()
    scan: ScanConfig = ScanConfig()

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def fingerprint(self, *sections: str) -> str:
        """Stable sha256 of the given sections (all when none given)."""
        data = self.to_dict()
        if sections:
            data = {s: data[s] for s in sections}
        blob = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()


ENV_PREFIX = "TFSHIP_"


def override_variables() -> dict[str, tuple[str, str]]:
    """Every config field's environment variable: TFSHIP_<SECTION>_<FIELD> -> (section, field)."""
    out: dict[str, tuple[str, str]] = {}
    for section, info in PipelineConfig.model_fields.items():
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            for field in ann.model_fields:
                out[f"{ENV_PREFIX}{section}_{field}".upper()] = (section, field)
    return out


def _parse_scalar(text: str) -> Any:
    # YAML scalars give "3" -> 3, "true" -> True, "[8, 8]" -> [8, 8], "null" -> None.
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _apply(tree: dict[str, Any], dotted: str, value: Any, origin: str) -> None:
    parts = dotted.split(".")
    if len(parts) < 2 or not all(parts):
        raise ConfigError(
            f"{origin}: '{dotted}' is not a config key; expected 'section.field' "
            f"(e.g. train.epochs)"
        )
    node = tree
    for p in parts[:-1]:
        child = node.setdefault(p, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{origin}: '{p}' in '{dotted}' is not a section")
        node = child
    node[parts[-1]] = value


def _format_errors(err: ValidationError, origins: Mapping[str, str]) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        src = origins.get(loc, "pipeline.yaml")
        if e["type"] == "extra_forbidden":
            lines.append(f"  {loc}: unknown key (from {src}); check the spelling against the docs")
            continue
        received = e.get("input")
        shown = json.dumps(received, default=str) if not isinstance(received, dict) else "{...}"
        msg = e["msg"].removeprefix("Value error, ")
        lines.append(f"  {loc}: {msg}; received {shown} (from {src})")
    return "\n".join(lines)


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Sequence[str] = (),
) -> PipelineConfig:
    """Load pipeline.yaml (optional), apply TFSHIP_* env vars and `key=value` overrides."""
    env = os.environ if env is None else env
    tree: dict[str, Any] = {}
    origins: dict[str, str] = {}
    name = "defaults"
    if path is not None:
        p = Path(path)
        name = str(p)
        if not p.is_file():
            raise ConfigError(
                f"config file {p} does not exist",
                hint="pass --config pipeline.yaml or set TFSHIP_CONFIG to an existing file",
            )
        try:
            loaded = yaml.safe_load(p.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p} is not valid YAML: {exc}") from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(
                f"{p}: expected a mapping of sections at the top level; "
                f"received {type(loaded).__name__}"
            )
        tree = loaded
    for var, (section, field) in override_variables().items():
        if var in env:
            _apply(tree, f"{section}.{field}", _parse_scalar(env[var]), var)
            origins[f"{section}.{field}"] = f"environment variable {var}"
    unknown = sorted(
        k
        for k in env
        if k.startswith(ENV_PREFIX)
        and k not in override_variables()
        and k not in envvars.VARIABLES
        and k.count("_") >= 2
        and k.split("_", 2)[1].lower() in PipelineConfig.model_fields
    )
    if unknown:
        raise ConfigError(
            f"unknown configuration variable(s): {', '.join(unknown)}",
            hint="run `tfship env` to list the TFSHIP_* variables that are understood",
        )
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected section.field=value (e.g. train.epochs=3)")
        key, _, raw = item.partition("=")
        _apply(tree, key.strip(), _parse_scalar(raw), f"--set {key.strip()}")
        origins[key.strip()] = f"--set {key.strip()}"
    try:
        return PipelineConfig.model_validate(tree)
    except ValidationError as exc:
        src = f"{name}" if path else "configuration"
        raise ConfigError(
            f"invalid {src}:\n{_format_errors(exc, origins)}",
            hint="fix the values above; `tfship config --explain` shows every field and default",
        ) from None


def dump_config(cfg: PipelineConfig, path: Path) -> None:
    """Write the resolved config (what actually ran) atomically."""
    from tfship.fsutil import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
