"""Typed pipeline configuration, validated once at the edge.

Precedence (lowest to highest): defaults < pipeline.yaml < TFSHIP_<SECTION>_<FIELD> environment
variables < `--set section.field=value` flags. Unknown keys and bad values are rejected with the
field, the value received and what was expected. Every object is frozen: stages never mutate
configuration, they receive it.

Who may set what (DESIGN.md, trust model): in CI, a field that decides whether a model ships
(tfship.config.fields.VERDICT_FIELDS) is refused when it comes from a variable, a flag or a
file other than the committed one, unless a person started the job (tfship.config.trust).
Every value that is not a default records where it came from (`cfg.sources`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, PrivateAttr, ValidationError, model_validator

from tfship import env as envvars
from tfship import safe_yaml
from tfship.config import trust
from tfship.config.committed import FileOrigin, origin_of
from tfship.config.fields import VERDICT_FIELDS, field_of, is_verdict
from tfship.config.provenance import DEFAULT, UNRECORDED, ConfigSources, Override, file_keys
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
    TaskConfig,
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
    SliceGate,
)
from tfship.errors import ConfigError

__all__ = [
    "GATE_METRICS",
    "VERDICT_FIELDS",
    "AbsoluteThreshold",
    "BackupConfig",
    "ChangeThreshold",
    "CheckpointConfig",
    "ConfigSources",
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
    "SliceGate",
    "StrategyKind",
    "TaskConfig",
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
    task: TaskConfig = TaskConfig()
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    backup: BackupConfig = BackupConfig()
    export: ExportConfig = ExportConfig()
    serving: ServingConfig = ServingConfig()
    gate: GateConfig = GateConfig()
    scan: ScanConfig = ScanConfig()

    _sources: ConfigSources = PrivateAttr(default=UNRECORDED)
    _task: Any = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _task_vocabulary(self) -> PipelineConfig:
        # What the task computes is known at load: a gate or best-checkpoint metric it never
        # computes fails here, not after an hour of training.
        from tfship.task import load_task

        try:
            task = load_task(self.task.type, self.task.options)
            task.check_metric_names(self.gate.absolute, "gate.absolute")
            task.check_metric_names(self.gate.change, "gate.change")
            for i, sl in enumerate(self.gate.slices):
                task.check_metric_names(sl.absolute, f"gate.slices[{i}].absolute")
            metric = self.checkpoint.best_metric or task.default_best_metric
            mode = self.checkpoint.best_mode or task.best_mode(metric)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        # Resolved once, so every stage (and run.json) sees the same concrete values.
        object.__setattr__(
            self,
            "checkpoint",
            self.checkpoint.model_copy(update={"best_metric": metric, "best_mode": mode}),
        )
        self._task = task
        return self

    @property
    def task_obj(self) -> Any:
        """The configured tfship.task.Task (built when the config was loaded)."""
        if self._task is None:
            from tfship.task import load_task

            self._task = load_task(self.task.type, self.task.options)
        return self._task

    @property
    def sources(self) -> ConfigSources:
        """Where each value came from (file@commit, variable, flag): config.provenance."""
        return self._sources

    def __eq__(self, other: object) -> bool:
        # Equal configurations are equal wherever their values came from.
        return type(other) is type(self) and self.__dict__ == other.__dict__

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


def _format_errors(err: ValidationError, sources: ConfigSources, name: str) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        src = sources.of(loc)
        src = name if src == DEFAULT else src
        if e["type"] == "extra_forbidden":
            lines.append(f"  {loc}: unknown key (from {src}); check the spelling against the docs")
            continue
        received = e.get("input")
        shown = json.dumps(received, default=str) if not isinstance(received, dict) else "{...}"
        if len(shown) > 200:
            shown = shown[:200] + "..."
        msg = e["msg"].removeprefix("Value error, ")
        lines.append(f"  {loc}: {msg}; received {shown} (from {src})")
    return "\n".join(lines)


def _enforce(ctx: trust.Context, sources: ConfigSources) -> None:
    """In CI, verdict fields only from the committed file, unless a person decides."""
    if ctx.may_set_verdict:
        return
    refused = [
        f"  {field_of(ov.key)}: set by {ov.origin}"
        for ov in sources.overrides
        if is_verdict(ov.key)
    ]
    hints = []
    if refused:
        hints.append(
            "commit the value to pipeline.yaml through a merge request (reviewed, CODEOWNERS) "
            "and remove the CI/CD variable or --set flag"
        )
    f = sources.file
    if f is not None and (not f.committed or not f.project_file):
        problem = f.problem or (
            f"the committed {f.repo_path}, not the project's pipeline.yaml at the root of the "
            "checkout (a variable or flag chose another committed file)"
        )
        fields = sorted({field_of(k) for k in sources.keys_in_file if is_verdict(k)})
        refused += [f"  {name}: read from {f.path}, which is {problem}" for name in fields]
        if fields:
            hints.append(
                "run with the repository's committed pipeline.yaml (no --config / "
                "TFSHIP_CONFIG pointing elsewhere, nothing rewriting it, the checkout's .git "
                "kept: GitLab GIT_STRATEGY fetch or clone)"
            )
    if refused:
        raise ConfigError(
            "in a CI job no person started, what decides whether a model ships must come from "
            "the committed pipeline.yaml; refused:\n" + "\n".join(refused),
            hint="; ".join(hints) + ". To decide by hand, run a manual job (GitLab: a manual "
            "job; GitHub: workflow_dispatch): the value is then recorded with who set it",
        )


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Sequence[str] = (),
) -> PipelineConfig:
    """Load pipeline.yaml (optional), apply TFSHIP_* env vars and `key=value` overrides.

    Raises ConfigError (exit 3) for bad YAML or values, and, in a CI job no person started,
    for a verdict field that does not come from the committed pipeline.yaml.
    """
    env = os.environ if env is None else env
    ctx = trust.context(env)
    tree: dict[str, Any] = {}
    origin: FileOrigin | None = None
    name = "defaults"
    if path is not None:
        p = Path(path)
        name = str(p)
        if not p.is_file():
            raise ConfigError(
                f"config file {p} does not exist" + (" as a file" if p.exists() else ""),
                hint="pass --config pipeline.yaml or set TFSHIP_CONFIG to an existing file",
            )
        with p.open("rb") as fh:
            data = fh.read(safe_yaml.MAX_BYTES + 1)
        loaded = safe_yaml.loads(data, name)
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(
                f"{p}: expected a mapping of sections at the top level; "
                f"received {type(loaded).__name__}"
            )
        tree = loaded
        origin = origin_of(p, data, env)
    in_file = file_keys(tree)
    applied: list[Override] = []
    decided_by = ctx.describe()
    for var, (section, field) in override_variables().items():
        if var in env:
            value = safe_yaml.parse_value(env[var], f"environment variable {var}")
            _apply(tree, f"{section}.{field}", value, var)
            applied.append(
                Override(f"{section}.{field}", f"environment variable {var}", decided_by)
            )
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
        key = key.strip()
        _apply(tree, key, safe_yaml.parse_value(raw, f"--set {key}"), f"--set {key}")
        applied.append(Override(key, f"--set {key}", decided_by))
    sources = ConfigSources(origin, in_file, tuple(applied))
    _enforce(ctx, sources)
    try:
        cfg = PipelineConfig.model_validate(tree)
    except ValidationError as exc:
        src = f"{name}" if path else "configuration"
        raise ConfigError(
            f"invalid {src}:\n{_format_errors(exc, sources, name)}",
            hint="fix the values above; `tfship config --explain` shows every field and default",
        ) from None
    cfg._sources = sources
    return cfg


def dump_config(cfg: PipelineConfig, path: Path) -> None:
    """Write the resolved config (what actually ran) atomically, its sources as comments."""
    from tfship.fsutil import atomic_write_text
    from tfship.redact import redact, redact_text

    notes = [f"# {k}: {v}" for k, v in cfg.sources.fields().items()]
    header = "# where each value that is not a default came from:\n" if notes else ""
    # The run directory is a CI artifact: URL credentials (serving, endpoints) are masked.
    body = yaml.safe_dump(redact(cfg.to_dict()), sort_keys=False)
    notes_text = "".join(redact_text(n.replace("\n", " ")) + "\n" for n in notes)
    atomic_write_text(path, header + notes_text + body)
