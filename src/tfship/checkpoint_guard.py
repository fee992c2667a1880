"""What a run's checkpoints are bound to, and the check before anything inherits them.

A run inherits only its own state (DESIGN.md, "Trust model"). Every checkpoint directory holds
run.json, the *guard*, in four parts:

    run       the run identity: `run_id` (run.run_id, else ci-<pipeline>/gh-<run>/local) and
              `pipeline` (the CI pipeline/run it was written in, `local` outside CI)
    config    every config field that changes the trained result (RESULT_FIELDS below)
    code      tfship, TensorFlow and Keras versions, the sha256 of the model builder's source
              file(s), and the CI commit (CI_COMMIT_SHA / GITHUB_SHA; none locally)
    trained   what training found: data fingerprint, input shape, class names, replicas

plus `fingerprint`, a sha256 over all four. Every checkpoint generation carries that fingerprint
inside it (tfship.checkpoints), so weights are bound to the guard they were written under.
Resuming (train) or restoring (export) checkpoints whose guard differs is refused, naming every
field that differs, old -> new; so is a guard that is missing, unreadable, edited after it was
written (its fingerprint no longer matches) or written by an older tfship.

Importable without TensorFlow or pydantic: the backup agent checks the run identity of what it
restores (tfship.backup.restore).
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import logging
import re
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tfship
from tfship import env
from tfship.checkpoint_names import BEST_DIR, GUARD_FILE
from tfship.errors import ConfigError

if TYPE_CHECKING:
    from tfship.config import PipelineConfig
    from tfship.data.schema import Schema
    from tfship.rundir import RunDir

log = logging.getLogger(__name__)

GUARD_SCHEMA = "tfship-checkpoints/3"
PARTS = ("run", "config", "code", "trained")

# Every config field, classified: does it change the weights training produces (or which of
# them export picks)? A field listed in neither set counts as a result field (fail safe), and
# tests/unit/test_checkpoints.py fails until it is classified here.
RESULT_FIELDS: frozenset[str] = frozenset(
    {
        "version",
        "run.seed",  # initial weights, dropout, the split
        "data.source",
        "data.image_size",
        "data.channels",
        "data.label",
        "data.features",
        "data.loader",
        "data.tfrecord_image_key",
        "task.type",
        "task.options",  # the loss, class weights and threshold shape training
        "data.validation_fraction",
        "data.test_fraction",
        "data.limit",
        "data.shuffle_buffer",
        "data.stream",  # the split, the training order and which records are read
        "model.builder",
        "model.options",
        "train.epochs",  # how long training runs: a finished run with more epochs is another run
        "train.max_steps",  # the same, for smoke runs
        "train.per_replica_batch_size",
        "train.learning_rate",
        "train.scale_learning_rate",
        "train.optimizer",
        "train.lr_schedule",
        "train.weight_decay",
        "checkpoint.best_metric",  # which weights are kept as best/, i.e. exported
        "checkpoint.best_mode",
    }
)
NOT_RESULT_FIELDS: Mapping[str, str] = {
    "run.runs_dir": "where outputs go",
    "run.run_id": "the run identity, compared on its own (guard part `run`)",
    "data.path": "where the data is read from; what it holds is the data fingerprint",
    "data.cache": "keeps decoded data in memory; the examples are the same",
    "train.strategy": "how steps are spread over devices; the replica count it yields is "
    "guarded (part `trained`)",
    "train.cpu_logical_devices": "as train.strategy",
    "train.steps_per_execution": "steps per compiled call; the same steps, the same model",
    "train.log_every_steps": "logging",
    "train.progress": "display",
    "checkpoint.dir": "where checkpoints go; the run id is a directory below it",
    "checkpoint.every_steps": "when to save; saving does not change the training math",
    "checkpoint.every_seconds": "as checkpoint.every_steps",
    "checkpoint.keep": "how many generations are kept",
    "project.*": "names of artifacts and the served model",
    "backup.*": "where copies of the checkpoints go",
    "export.*": "runs after training, from the checkpoints",
    "serving.*": "deploy",
    "gate.*": "evaluation",
    "scan.*": "image scanning",
}


def classification(key: str) -> str | None:
    """'result', 'not result' or None (unclassified) for a config key `section.field`."""
    if key in RESULT_FIELDS:
        return "result"
    if key in NOT_RESULT_FIELDS or f"{key.split('.', 1)[0]}.*" in NOT_RESULT_FIELDS:
        return "not result"
    return None


def config_fields(cfg: PipelineConfig) -> dict[str, Any]:
    """The config values that change the result, by `section.field` (unclassified included)."""
    out: dict[str, Any] = {}
    for name, value in cfg.model_dump(mode="json").items():
        items = value.items() if isinstance(value, dict) else [(None, value)]
        for field, v in items:
            key = f"{name}.{field}" if field is not None else name
            if classification(key) != "not result":
                out[key] = v
    return out


def run_identity(cfg: PipelineConfig, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """{"run_id", "pipeline"}: the same on a retry of the same CI pipeline (GitLab keeps
    CI_PIPELINE_ID, GitHub keeps GITHUB_RUN_ID on a re-run), different for every new one."""
    pipeline = env.default_run_id(environ)
    # run_id as tfship.rundir.run_id (not imported: that module needs pydantic).
    return {"run_id": cfg.run.run_id or pipeline, "pipeline": pipeline}


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def builder_source(spec: str) -> dict[str, str | None]:
    """{module: sha256 of its source file} for the module the builder is named in and the one
    it is defined in (a builder re-exported from a package `__init__` lives elsewhere).

    The module's file is the granularity: helpers the builder imports from other modules are
    covered by the CI commit (and, locally, not at all; `tfship run --fresh` after editing
    them). None when the source cannot be found (a compiled module): changes go undetected,
    and a warning says so."""
    module_name, _, func_name = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
        func = inspect.unwrap(getattr(module, func_name, None) or module)
    except Exception:  # build_model reports an unusable builder with the fix
        return {module_name: None}
    out: dict[str, str | None] = {}
    for mod in (module, inspect.getmodule(func) or module):
        try:
            path = inspect.getsourcefile(mod)
            out[mod.__name__] = _sha256(Path(path).read_bytes()) if path else None
        except (OSError, TypeError):
            out[mod.__name__] = None
    if None in out.values():
        log.warning("no source file for model builder %s: changes to it cannot be detected", spec)
    return out


def _version(name: str) -> str | None:
    module = sys.modules.get(name)
    return getattr(module, "__version__", None) if module else None


def code_version(cfg: PipelineConfig, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    ci = env.ci_context(environ)
    return {
        "tfship": tfship.__version__,
        # Read where TensorFlow is already imported (training, export); never imported here.
        "tensorflow": _version("tensorflow"),
        "keras": _version("keras"),
        "builder_source": builder_source(cfg.model.builder or "tfship.model:default_model"),
        "commit": ci.get("CI_COMMIT_SHA") or ci.get("GITHUB_SHA"),
    }


def fingerprint(record: Mapping[str, Any]) -> str:
    blob = json.dumps({p: record.get(p) for p in PARTS}, sort_keys=True, separators=(",", ":"))
    return _sha256(blob.encode())


def guard_record(
    cfg: PipelineConfig,
    *,
    data_fingerprint: str,
    schema: Schema,
    label_names: tuple[str, ...],
    replicas: int = 1,
    environ: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """run.json for a run of `cfg` on this data: what must not change across a resume, and
    what `restore_for_export` needs to rebuild the model."""
    record: dict[str, Any] = {
        "schema": GUARD_SCHEMA,
        **expected_record(cfg, environ),
        "trained": {
            "data_fingerprint": data_fingerprint,
            # What the model is built from (export rebuilds it from these): the features
            # with kinds, dtypes and shapes, and the labels the outputs index.
            "schema": schema.to_json(),
            "label_names": list(label_names),
            "task": cfg.task_obj.describe(),
            "replicas": replicas,
        },
    }
    record["fingerprint"] = fingerprint(record)
    return record


def expected_record(
    cfg: PipelineConfig, environ: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The parts of the guard that follow from the config and the code alone."""
    return {
        "run": run_identity(cfg, environ),
        "config": config_fields(cfg),
        "code": code_version(cfg, environ),
    }


def _flat(value: Any, key: str, out: dict[str, Any]) -> dict[str, Any]:
    if isinstance(value, dict) and value:
        for k, v in value.items():
            _flat(v, f"{key}.{k}", out)
    else:
        out[key] = value
    return out


def _show(value: Any) -> str:
    if isinstance(value, str) and re.fullmatch(r"[0-9a-f]{64}", value):
        return f"{value[:12]}…"  # a sha256: enough to tell two apart
    return repr(value)


def differences(old: Mapping[str, Any], new: Mapping[str, Any], parts: tuple[str, ...]) -> list:
    """`key: old -> new` for every leaf that differs; config keys without their part's name."""
    out = []
    for part in parts:
        a = _flat(old.get(part), part, {}) if isinstance(old.get(part), dict) else {part: None}
        b = _flat(new.get(part), part, {})
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                shown = key.removeprefix("config.") if part == "config" else key
                out.append(f"{shown}: {_show(a.get(key))} -> {_show(b.get(key))}")
    return out


def checkpoint_files(directory: Path) -> list[str]:
    """Names of what a run left to resume in `directory`: generations (any ckpt-* file, damaged
    ones included), the `checkpoint` state file, and best/."""
    if not directory.is_dir():
        return []
    names = {p.name.split(".", 1)[0] for p in directory.glob("ckpt-*") if p.is_file()}
    found = sorted(names, key=lambda n: (-int(n[5:]) if n[5:].isdigit() else 0, n))
    if not found and (directory / "checkpoint").is_file():  # a state file naming lost ones
        found.append("checkpoint")
    best = directory / BEST_DIR
    if best.is_dir() and any(p.name.startswith("best-") for p in best.iterdir()):
        found.append(f"{BEST_DIR}/")
    return found


def _fresh_hint(directory: Path) -> str:
    return (
        "a new pipeline starts fresh in its own place; to start this run over, use "
        f"`tfship run --fresh` or delete {directory}"
    )


def load_guard(directory: Path) -> dict[str, Any]:
    """run.json in `directory`, refused (ConfigError) when it is missing, unreadable, from an
    older tfship, or no longer matches its own fingerprint (edited or damaged)."""
    path = directory / GUARD_FILE
    if not path.is_file():
        raise ConfigError(
            f"{directory} holds training checkpoints ({', '.join(checkpoint_files(directory))}) "
            f"but no {GUARD_FILE}, which records the run and the configuration, data and code "
            "they were trained with, so tfship cannot tell whether they belong to this run",
            hint=_fresh_hint(directory) + f"; if they are this run's, put back its {GUARD_FILE}",
        )
    try:
        guard = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(
            f"{path} cannot be read ({exc}), so tfship cannot tell which run the checkpoints "
            f"in {directory} belong to",
            hint=_fresh_hint(directory),
        ) from None
    schema = guard.get("schema") if isinstance(guard, dict) else None
    if schema != GUARD_SCHEMA:
        raise ConfigError(
            f"{path} has schema {schema!r}, not {GUARD_SCHEMA!r}: it was written by another "
            "tfship version, which did not record the run identity, code version and every "
            "hyper-parameter; its checkpoints cannot be shown to belong to this run",
            hint=_fresh_hint(directory),
        )
    malformed = [p for p in PARTS if not isinstance(guard.get(p), dict)]
    if malformed or guard.get("fingerprint") != fingerprint(guard):
        what = f"lacks {', '.join(malformed)}" if malformed else "does not match its fingerprint"
        raise ConfigError(
            f"{path} {what}: it was edited or damaged after training wrote it, so it no longer "
            f"says which run the checkpoints in {directory} belong to",
            hint=_fresh_hint(directory),
        )
    return guard


def require_match(
    directory: Path, old: Mapping[str, Any], new: Mapping[str, Any], parts: tuple[str, ...]
) -> None:
    """Raise ConfigError naming every field of `parts` that differs between two guards."""
    diffs = differences(old, new, parts)
    if not diffs:
        return
    other_run = old.get("run") != new.get("run")
    was, now = old["run"], new["run"]
    whose = (
        f"belong to run {was.get('run_id')!r} (pipeline {was.get('pipeline')!r}), not to this "
        f"run {now['run_id']!r} (pipeline {now['pipeline']!r})"
        if other_run
        else "were trained with different settings, data or code"
    )
    raise ConfigError(
        f"the checkpoints in {directory} {whose}, so this run may not use them; differs: "
        + "; ".join(diffs),
        hint=(
            "give each run its own checkpoints: do not pin TFSHIP_RUN_DIR, --run-dir or "
            "run.run_id across pipelines (runs/<run id> and <checkpoint.dir>/<run id> are per "
            f"run); delete {directory} to discard them"
            if other_run
            else "to go on from these checkpoints, run with the values they were trained with "
            "(config.resolved.yaml in the run directory); " + _fresh_hint(directory)
        ),
    )


def check_guard(directory: Path, record: Mapping[str, Any]) -> None:
    """Before resuming from `directory`: when it holds anything to resume, its run.json must be
    intact and equal `record` in every part (run, config, code, trained)."""
    if not checkpoint_files(directory):
        return
    require_match(directory, load_guard(directory), record, PARTS)


def start_fresh(cfg: PipelineConfig, run_dir: RunDir) -> PipelineConfig:
    """`tfship run --fresh`, after the run directory is gone: also discard this run's
    checkpoints kept outside it (checkpoint.dir), and do not restore them from the backup."""
    from tfship.rundir import checkpoint_dir

    directory = checkpoint_dir(cfg, run_dir)
    if directory.is_dir() and not directory.is_relative_to(run_dir.root):
        known = {GUARD_FILE, "checkpoint", BEST_DIR, "corrupt"}
        other = [p.name for p in directory.iterdir() if p.name not in known]
        if any(not n.startswith(("ckpt-", ".")) for n in other):
            raise ConfigError(
                f"--fresh: {directory} holds files that are not checkpoints; not deleting it",
                hint="delete this run's checkpoint directory by hand",
            )
        shutil.rmtree(directory)
        log.info("--fresh: deleted this run's checkpoints in %s", directory)
    if cfg.backup.enabled and cfg.backup.restore:
        cfg = cfg.model_copy(update={"backup": cfg.backup.model_copy(update={"restore": False})})
    return cfg
