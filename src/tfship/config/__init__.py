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
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ValidationError

from tfship import env as envvars
from tfship.config.sections import (
    BackupConfig,
    CheckpointConfig,
    DataConfig,
    DataSource,
    ExportConfig,
    ModelConfig,
    ProjectConfig,
    RunConfig,
    StrategyKind,
    TrainConfig,
    _Section,
)
from tfship.config.stages import (
    GATE_METRICS,
    AbsoluteThreshold,
    ChangeThreshold,
    GateConfig,
    ScanConfig,
    ScanScanner,
    ScanSeverity,
    ServingConfig,
    ServingEnvironment,
)
from tfship.errors import ConfigError

__all__ = [
    "GATE_METRICS",
    "AbsoluteThreshold",
    "BackupConfig",
    "ChangeThreshold",
    "CheckpointConfig",
    "DataConfig",
    "DataSource",
    "ExportConfig",
    "GateConfig",
    "ModelConfig",
    "PipelineConfig",
    "ProjectConfig",
    "RunConfig",
    "ScanConfig",
    "ScanScanner",
    "ScanSeverity",
    "ServingConfig",
    "ServingEnvironment",
    "StrategyKind",
    "TrainConfig",
    "dump_config",
    "load_config",
    "override_variables",
]


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
