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


class ExportConfig(_Section):
    """SavedModel export for TF Serving."""

    version: int | None = Field(None, ge=1, description="default: next after the highest present")
    golden_requests: int = Field(8, ge=1, le=256)
    warmup_requests: int = Field(16, ge=0, le=1024)
    tolerance: float = Field(1e-4, gt=0, description="abs tolerance when replaying golden requests")
    image_digest: str | None = Field(None, description="training image digest, recorded in manifest")


class PipelineConfig(_Section):
    """The whole pipeline.yaml."""

    version: Literal[1] = 1
    project: ProjectConfig = ProjectConfig()
    run: RunConfig = RunConfig()
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    export: ExportConfig = ExportConfig()

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
