"""What a run may inherit (issue 13 §2): only its own checkpoints, backups and weights.

Tables of (what differs between the run that wrote the state and the run that finds it) ->
(resumes at the saved step | starts fresh in its own place | refused naming the field). The
guard-level rows run in milliseconds with a stand-in model; two real trainings (slow) replay the
issue: a new pipeline with a new learning rate and a persistent checkpoint.dir.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfship
from tests.helpers.checkpoint_files import save as save_fake_generation
from tests.helpers.preempt import preempt_before_call
from tests.helpers.schemas import pixels_schema
from tests.unit.test_checkpoints import make_cfg, make_splits
from tfship.backup import TrainingBackup, open_training_backup
from tfship.backup.store import open_store
from tfship.backup.sync import CheckpointBackup
from tfship.checkpoint_guard import guard_record, start_fresh
from tfship.checkpoints import TrainingCheckpoints, restore_for_export
from tfship.config import PipelineConfig
from tfship.data.schema import Feature, Kind, Schema
from tfship.env import default_run_id
from tfship.errors import ConfigError, ExitCode, Preempted
from tfship.model import ModelSpec, build_model
from tfship.rundir import RunDir, checkpoint_dir
from tfship.train import run_train

CI_VARS = (
    "CI",
    "CI_PIPELINE_ID",
    "CI_JOB_ID",
    "CI_COMMIT_SHA",
    "GITHUB_ACTIONS",
    "GITHUB_RUN_ID",
    "GITHUB_RUN_ATTEMPT",
    "GITHUB_SHA",
)
PIPELINE_A = {"CI_PIPELINE_ID": "100", "CI_JOB_ID": "5000", "CI_COMMIT_SHA": "a" * 40}
BUILDER = "tfship_inherit_builder"


@pytest.fixture(autouse=True)
def _builder_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A user model builder in its own file, so a row can edit its source."""
    root = tmp_path / "src"
    root.mkdir()
    path = root / f"{BUILDER}.py"
    path.write_text("def build(input_shape, num_classes):\n    return None\n")
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.delitem(sys.modules, BUILDER, raising=False)
    return path


def use_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for name in CI_VARS:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)


@dataclass
class Run:
    """One training attempt: its CI variables, config, data and replicas."""

    env: dict[str, str] = field(default_factory=lambda: dict(PIPELINE_A))
    cfg: dict[str, dict[str, Any]] = field(default_factory=dict)
    data: str = "d"
    replicas: int = 1

    def but(self, *, env: dict | None = None, cfg: dict | None = None, **facts: Any) -> Run:
        """This run with some CI variables, config sections (merged) or facts changed."""
        sections = {k: dict(v) for k, v in self.cfg.items()}
        for name, values in (cfg or {}).items():
            sections[name] = {**sections.get(name, {}), **values}
        return Run(
            {**self.env, **(env or {})},
            sections,
            facts.get("data", self.data),
            facts.get("replicas", self.replicas),
        )


def config(run: Run, base: dict[str, dict[str, Any]]) -> PipelineConfig:
    sections = {k: dict(v) for k, v in base.items()}
    for name, values in run.cfg.items():
        sections[name] = {**sections.get(name, {}), **values}
    return make_cfg(**sections)


def keeper_for(run: Run, cfg: PipelineConfig, run_dir: RunDir, monkeypatch, model=None):
    use_env(monkeypatch, run.env)
    model = model or keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    optimizer = keras.optimizers.Adam()
    optimizer.build(model.trainable_variables)
    step = tf.Variable(0, dtype=tf.int64)
    shape = tuple(model.inputs[0].shape[1:])
    schema = (
        pixels_schema(shape)
        if len(shape) == 3
        else Schema((Feature("x", Kind.NUMERIC, "float32", shape),), "label")
    )
    guard = guard_record(
        cfg,
        data_fingerprint=run.data,
        schema=schema,
        label_names=("a", "b") if shape == (2,) else ("a", "b", "c"),
        replicas=run.replicas,
    )
    keeper = TrainingCheckpoints(
        cfg, run_dir, model=model, optimizer=optimizer, step=step, chief=True, guard=guard
    )
    return keeper, step


def train(run: Run, cfg: PipelineConfig, run_dir: RunDir, monkeypatch, steps=(4, 8), model=None):
    """What a run leaves behind: generations at `steps`, best/ at the last one, run.json."""
    keeper, step = keeper_for(run, cfg, run_dir, monkeypatch, model)
    assert keeper.restore_latest() is None
    for n in steps:
        keeper.checkpoint.model.set_weights(
            [np.full(w.shape, float(n), np.float32) for w in keeper.checkpoint.model.weights]
        )
        step.assign(n)
        keeper.save(n)
    keeper.save_best_if_better(steps[-1], {"val_accuracy": 0.5})
    keeper.close()
    return keeper.directory


# -- helpers that change something between the two runs ------------------------------------


def edit_builder(ctx: Context) -> None:
    path = ctx.builder
    path.write_text(path.read_text() + "# a new layer, say\n")


def bump_tfship(ctx: Context) -> None:
    ctx.monkeypatch.setattr(tfship, "__version__", "9.9.9")


def bump_tensorflow(ctx: Context) -> None:
    ctx.monkeypatch.setattr(tf, "__version__", "9.9.9")


def delete_run_json(ctx: Context) -> None:
    (ctx.directory / "run.json").unlink()


def garble_run_json(ctx: Context) -> None:
    (ctx.directory / "run.json").write_bytes(b"\x00\xff{not json")


def run_json_is_a_list(ctx: Context) -> None:
    (ctx.directory / "run.json").write_text("[]")


def old_format_run_json(ctx: Context) -> None:
    # What tfship wrote before the guard held the run identity and the code version.
    old = {"schema": "tfship-checkpoints/1", "fingerprint": "0" * 64, "frozen": {}}
    old.update(input_shape=[8, 8, 1], num_classes=2, class_names=["a", "b"])
    (ctx.directory / "run.json").write_text(json.dumps(old))


def edit_learning_rate_in_run_json(ctx: Context) -> None:
    path = ctx.directory / "run.json"
    guard = json.loads(path.read_text())
    guard["config"]["train.learning_rate"] = 0.01  # as if the new config had trained it
    path.write_text(json.dumps(guard))


def rewrite_run_json_for_the_new_config(ctx: Context) -> None:
    # Consistent this time (fingerprint recomputed): only the weights still say otherwise.
    keeper, _ = keeper_for(ctx.b, ctx.cfg_b, RunDir(ctx.tmp / "elsewhere"), ctx.monkeypatch)
    (ctx.directory / "run.json").write_text(json.dumps(keeper.guard))


def plant_generation_of_another_run(ctx: Context) -> None:
    other = ctx.a.but(env={"CI_PIPELINE_ID": "666"})
    src = train(other, ctx.cfg_a, RunDir(ctx.tmp / "attacker"), ctx.monkeypatch, steps=(12,))
    for f in src.glob("ckpt-12.*"):
        shutil.copy(f, ctx.directory / f.name)


def plant_best_of_another_run(ctx: Context) -> None:
    other = ctx.a.but(env={"CI_PIPELINE_ID": "666"})
    src = train(other, ctx.cfg_a, RunDir(ctx.tmp / "attacker"), ctx.monkeypatch)
    shutil.rmtree(ctx.directory / "best")
    shutil.copytree(src / "best", ctx.directory / "best")


def keep_only_best(ctx: Context) -> None:
    for f in ctx.directory.iterdir():
        if f.name != "best":
            f.unlink()


@dataclass
class Context:
    a: Run
    b: Run
    cfg_a: PipelineConfig
    cfg_b: PipelineConfig
    directory: Path  # where A's checkpoints are
    builder: Path
    tmp: Path
    monkeypatch: pytest.MonkeyPatch


A = Run()
PERSISTENT = {"checkpoint": {"dir": "{persist}"}}
RESUME, FRESH = "resumes", "starts fresh"

# (what differs, run A, run B, change made in between, expected)
CASES: list[tuple[str, Run, Run, Callable[[Context], None] | None, str]] = [
    # The run identity.
    (
        "a new GitLab pipeline with a persistent checkpoint.dir and a new learning rate",
        A.but(cfg=PERSISTENT),
        A.but(cfg={**PERSISTENT, "train": {"learning_rate": 0.01}}, env={"CI_PIPELINE_ID": "101"}),
        None,
        FRESH,
    ),
    (
        "a new GitHub run with a persistent checkpoint.dir",
        Run(env={"GITHUB_RUN_ID": "7", "GITHUB_SHA": "c" * 40}, cfg=PERSISTENT),
        Run(env={"GITHUB_RUN_ID": "8", "GITHUB_SHA": "c" * 40}, cfg=PERSISTENT),
        None,
        FRESH,
    ),
    (
        "a new pipeline sharing the run directory (TFSHIP_RUN_DIR pinned)",
        A,
        A.but(env={"CI_PIPELINE_ID": "101"}),
        None,
        "run.run_id: 'ci-100' -> 'ci-101'",
    ),
    (
        "a new pipeline with run.run_id pinned and a persistent checkpoint.dir",
        A.but(cfg={**PERSISTENT, "run": {"run_id": "prod"}}),
        A.but(cfg={**PERSISTENT, "run": {"run_id": "prod"}}, env={"CI_PIPELINE_ID": "101"}),
        None,
        "run.pipeline: 'ci-100' -> 'ci-101'",
    ),
    # What changes the result, within the same run.
    (
        "the builder's source file",
        A.but(cfg={"model": {"builder": f"{BUILDER}:build"}}),
        A.but(cfg={"model": {"builder": f"{BUILDER}:build"}}),
        edit_builder,
        f"code.builder_source.{BUILDER}",
    ),
    (
        "the builder function",
        A.but(cfg={"model": {"builder": f"{BUILDER}:build"}}),
        A.but(cfg={"model": {"builder": "tests.unit.user_models:tiny_mlp"}}),
        None,
        "model.builder: 'tfship_inherit_builder:build' -> 'tests.unit.user_models:tiny_mlp'",
    ),
    (
        "the learning rate",
        A,
        A.but(cfg={"train": {"learning_rate": 0.01}}),
        None,
        "train.learning_rate: 0.002 -> 0.01",
    ),
    ("the epochs", A, A.but(cfg={"train": {"epochs": 3}}), None, "train.epochs: 2 -> 3"),
    ("max_steps", A, A.but(cfg={"train": {"max_steps": 5}}), None, "train.max_steps: None -> 5"),
    (
        "the batch size",
        A,
        A.but(cfg={"train": {"per_replica_batch_size": 8}}),
        None,
        "train.per_replica_batch_size: 16 -> 8",
    ),
    (
        "learning-rate scaling",
        A,
        A.but(cfg={"train": {"scale_learning_rate": True}}),
        None,
        "train.scale_learning_rate: False -> True",
    ),
    (
        "the model options",
        A,
        A.but(cfg={"model": {"options": {"units": 4}}}),
        None,
        "model.options.units: 8 -> 4",
    ),
    ("the seed", A, A.but(cfg={"run": {"seed": 7}}), None, "run.seed: 42 -> 7"),
    (
        "the metric that picks best/",
        A,
        A.but(cfg={"checkpoint": {"best_metric": "val_loss", "best_mode": "min"}}),
        None,
        "checkpoint.best_metric: 'val_accuracy' -> 'val_loss'",
    ),
    (
        "the data fingerprint",
        A,
        A.but(data="d2"),
        None,
        "trained.data_fingerprint: 'd' -> 'd2'",
    ),
    ("the replicas (global batch)", A, A.but(replicas=2), None, "trained.replicas: 1 -> 2"),
    ("the tfship version", A, A, bump_tfship, "code.tfship: '0.1.0' -> '9.9.9'"),
    ("the TensorFlow version", A, A, bump_tensorflow, "-> '9.9.9'"),
    (
        "the CI commit",
        A,
        A.but(env={"CI_COMMIT_SHA": "b" * 40}),
        None,
        "code.commit: 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa' -> 'bbbbbbbb",
    ),
    # run.json and the files it describes.
    ("run.json deleted", A, A, delete_run_json, "but no run.json"),
    ("run.json unreadable", A, A, garble_run_json, "cannot be read"),
    ("run.json not an object", A, A, run_json_is_a_list, "has schema None"),
    ("run.json of an older tfship", A, A, old_format_run_json, "'tfship-checkpoints/1'"),
    ("run.json edited by hand", A, A, edit_learning_rate_in_run_json, "does not match"),
    (
        "run.json rewritten consistently for a new learning rate",
        A,
        A.but(cfg={"train": {"learning_rate": 0.01}}),
        rewrite_run_json_for_the_new_config,
        "was not written under",
    ),
    (
        "a newer generation of another run copied in",
        A,
        A,
        plant_generation_of_another_run,
        "ckpt-12 was not written under",
    ),
    ("best/ of another run copied in", A, A, plant_best_of_another_run, "was not written under"),
    ("best/ left behind without generations", A, A.but(data="d2"), keep_only_best, "best/"),
    # The positive rows: the same run goes on.
    (
        "the same pipeline's job retried",
        A.but(cfg=PERSISTENT),
        A.but(cfg=PERSISTENT, env={"CI_JOB_ID": "5001"}),
        None,
        RESUME,
    ),
    (
        "the same GitHub run re-run",
        Run(env={"GITHUB_RUN_ID": "7", "GITHUB_RUN_ATTEMPT": "1"}, cfg=PERSISTENT),
        Run(env={"GITHUB_RUN_ID": "7", "GITHUB_RUN_ATTEMPT": "2"}, cfg=PERSISTENT),
        None,
        RESUME,
    ),
    ("a local run relaunched", Run(env={}), Run(env={}), None, RESUME),
    (
        "settings that do not change the result",
        A,
        A.but(
            cfg={
                "train": {"log_every_steps": 3, "steps_per_execution": 2, "progress": "log"},
                "checkpoint": {"every_steps": 2, "keep": 4},
                "data": {"cache": False},
            }
        ),
        None,
        RESUME,
    ),
]


@pytest.mark.parametrize(
    ("a", "b", "between", "expected"),
    [pytest.param(a, b, f, e, id=what) for what, a, b, f, e in CASES],
)
def test_a_run_resumes_only_its_own_checkpoints_and_names_what_differs(
    tmp_path, monkeypatch, _builder_module, a, b, between, expected
):
    base = {"model": {"builder": "tests.unit.user_models:tiny_mlp", "options": {"units": 8}}}
    persist = str(tmp_path / "persistent")

    def resolve(run: Run) -> PipelineConfig:
        cfg = config(run, base)
        if cfg.checkpoint.dir is not None:
            cfg = cfg.model_copy(
                update={"checkpoint": cfg.checkpoint.model_copy(update={"dir": Path(persist)})}
            )
        return cfg

    cfg_a, cfg_b = resolve(a), resolve(b)
    run_dir = RunDir(tmp_path / "runs" / "shared")
    directory = train(a, cfg_a, run_dir, monkeypatch)
    before = sorted(p.name for p in directory.iterdir())
    if between is not None:
        ctx = Context(a, b, cfg_a, cfg_b, directory, _builder_module, tmp_path, monkeypatch)
        between(ctx)

    keeper, step = keeper_for(b, cfg_b, run_dir, monkeypatch)
    if expected == RESUME:
        assert keeper.restore_latest() == 8 and int(step.numpy()) == 8
        assert keeper.directory == directory
    elif expected == FRESH:
        assert keeper.directory != directory  # its own place, below the shared checkpoint.dir
        assert keeper.directory == Path(persist) / keeper.run_id
        assert keeper.restore_latest() is None and int(step.numpy()) == 0
        assert (
            json.loads((keeper.directory / "run.json").read_text())["run"]["run_id"]
            != (json.loads((directory / "run.json").read_text())["run"]["run_id"])
        )
        assert sorted(p.name for p in directory.iterdir()) == before  # the other run's intact
    else:
        with pytest.raises(ConfigError) as err:
            keeper.restore_latest()
        assert err.value.exit_code == ExitCode.CONFIG
        assert expected in str(err.value)
        # ... and says how to go on: its own place for another run, --fresh for this one.
        message = str(err.value)
        assert "tfship run --fresh" in message or "give each run its own checkpoints" in message
        assert int(step.numpy()) == 0  # nothing was loaded


def test_a_builder_re_exported_from_a_package_is_bound_to_the_module_that_defines_it(
    tmp_path, monkeypatch
):
    pkg = tmp_path / "src" / "tfship_inherit_pkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("from .impl import build\n")
    (pkg / "impl.py").write_text("def build(input_shape, num_classes):\n    return None\n")
    for name in ("tfship_inherit_pkg", "tfship_inherit_pkg.impl"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    run = A.but(cfg={"model": {"builder": "tfship_inherit_pkg:build"}})
    cfg = config(run, {})
    run_dir = RunDir(tmp_path / "runs" / "shared")
    train(run, cfg, run_dir, monkeypatch)
    (pkg / "impl.py").write_text(
        "def build(input_shape, num_classes):\n    return 'another model'\n"
    )
    keeper, _ = keeper_for(run, cfg, run_dir, monkeypatch)
    with pytest.raises(ConfigError, match=r"code\.builder_source\.tfship_inherit_pkg\.impl: "):
        keeper.restore_latest()


# -- export: the weights that ship come from this run, trained with this config and code --


def digits_model(cfg: PipelineConfig) -> keras.Model:
    return build_model(cfg.model, ModelSpec.image((8, 8, 1), 3))


EXPORT_CASES = [
    ("the same run", A, None, None),
    (
        "a new pipeline sharing the run directory",
        A.but(env={"CI_PIPELINE_ID": "101"}),
        None,
        "run.run_id: 'ci-100' -> 'ci-101'",
    ),
    ("a new learning rate", A.but(cfg={"train": {"learning_rate": 0.01}}), None, "learning_rate"),
    ("a new batch size", A.but(cfg={"train": {"per_replica_batch_size": 8}}), None, "batch_size"),
    ("more epochs", A.but(cfg={"train": {"epochs": 5}}), None, "train.epochs: 2 -> 5"),
    ("a new seed", A.but(cfg={"run": {"seed": 1}}), None, "run.seed: 42 -> 1"),
    ("another tfship", A, bump_tfship, "code.tfship"),
    ("an edited run.json", A, edit_learning_rate_in_run_json, "does not match"),
    ("best/ of another run", A, plant_best_of_another_run, "was not written under"),
]


@pytest.mark.parametrize(
    ("b", "between", "expected"), [pytest.param(b, f, e, id=w) for w, b, f, e in EXPORT_CASES]
)
def test_export_restores_only_this_runs_weights_trained_with_this_config(
    tmp_path, monkeypatch, _builder_module, b, between, expected
):
    cfg_a, cfg_b = make_cfg(), config(b, {})
    run_dir = RunDir(tmp_path / "runs" / "shared")
    model = digits_model(cfg_a)
    directory = train(A, cfg_a, run_dir, monkeypatch, model=model)
    if between is not None:
        between(Context(A, b, cfg_a, cfg_b, directory, _builder_module, tmp_path, monkeypatch))
    use_env(monkeypatch, b.env)
    if expected is None:
        restored, info = restore_for_export(cfg_b, run_dir, splits=make_splits(A.data))
        assert info["step"] == 8 and info["run_id"] == "ci-100"
        assert all(np.all(w == 8.0) for w in restored.get_weights())
        return
    with pytest.raises(ConfigError) as err:
        restore_for_export(cfg_b, run_dir, splits=make_splits(A.data))
    assert expected in str(err.value)


# -- the backup: restoring another run's generations is refused before any download --------


def backup_with(tmp_path: Path, guard: dict[str, Any] | None) -> str:
    """A store holding one complete generation (ckpt-40) with `guard` as its run.json."""
    src = tmp_path / "writer" / "checkpoints"
    save_fake_generation(src, 40)
    if guard is not None:
        (src / "run.json").write_text(json.dumps(guard))
    url = str(tmp_path / "store")
    uploader = CheckpointBackup(open_store(url), src, keep=2, extras=("run.json",))
    uploader.sync()
    assert uploader.close(30).uploaded, "the generation did not reach the store"
    return url


BACKUP_CASES = [
    ("this run's backup", {"run": {"run_id": "ci-100", "pipeline": "ci-100"}}, None),
    (
        "another pipeline's backup under a shared backup.prefix",
        {"run": {"run_id": "ci-99", "pipeline": "ci-99"}},
        "run.run_id: 'ci-99' -> 'ci-100'",
    ),
    (
        "a backup with run.run_id pinned, from another pipeline",
        {"run": {"run_id": "ci-100", "pipeline": "ci-99"}},
        "run.pipeline: 'ci-99' -> 'ci-100'",
    ),
    ("a backup of an older tfship (run.json without a run)", {"schema": "1"}, "run.run_id: None"),
    ("a backup without run.json", None, "has no run.json"),
]


@pytest.mark.parametrize(
    ("guard", "expected"), [pytest.param(g, e, id=w) for w, g, e in BACKUP_CASES]
)
def test_a_backup_restores_only_this_runs_generations(tmp_path, guard, expected):
    url = backup_with(tmp_path, guard)
    cfg = PipelineConfig.model_validate({"backup": {"enabled": True, "url": url}})
    local = tmp_path / "runner-2" / "checkpoints"
    run = {"run_id": "ci-100", "pipeline": "ci-100"}
    backup = TrainingBackup(cfg.backup, local, open_store(url), run=run)
    if expected is None:
        assert backup.restore() == 40
        assert (local / "ckpt-40.index").is_file() and (local / "run.json").is_file()
        return
    with pytest.raises(ConfigError) as err:
        backup.restore()
    assert expected in str(err.value) and "backup.prefix" in str(err.value)
    assert not local.exists() or not any(local.iterdir())  # nothing of it was downloaded


def test_the_trainers_backup_agent_refuses_another_pipelines_backup_with_exit_3(
    tmp_path, monkeypatch
):
    # The whole path `tfship train` takes: a shared backup.prefix holds pipeline 99's
    # generation; pipeline 100's agent must refuse it, and download nothing.
    url = backup_with(tmp_path, {"run": {"run_id": "ci-99", "pipeline": "ci-99"}})
    use_env(monkeypatch, PIPELINE_A)
    cfg = PipelineConfig.model_validate(
        {
            "checkpoint": {"dir": str(tmp_path / "persistent")},
            "backup": {"enabled": True, "url": str(Path(url).parent), "prefix": Path(url).name},
        }
    )
    agent = open_training_backup(cfg, RunDir(tmp_path / "run"))
    try:
        with pytest.raises(ConfigError, match=r"run\.run_id: 'ci-99' -> 'ci-100'") as err:
            agent.restore()
        assert err.value.exit_code == ExitCode.CONFIG
    finally:
        agent.close()
    assert not list((tmp_path / "persistent").glob("ci-100/ckpt-*"))


def test_best_is_never_restored_from_a_backup_without_a_generation_of_this_run(tmp_path):
    url = str(tmp_path / "store")
    best = tmp_path / "writer" / "checkpoints" / "best"
    save_fake_generation(best, 40)
    (best / "best.json").write_text("{}")
    uploader = CheckpointBackup(open_store(f"{url}/best"), best, keep=1, extras=("best.json",))
    uploader.sync()
    assert uploader.close(30).uploaded
    cfg = PipelineConfig.model_validate({"backup": {"enabled": True, "url": url}})
    local = tmp_path / "runner-2" / "checkpoints"
    run = {"run_id": "ci-100", "pipeline": "ci-100"}
    assert TrainingBackup(cfg.backup, local, open_store(url), run=run).restore() is None
    assert not (local / "best").exists()


# -- where the run id comes from, and --fresh ----------------------------------------------


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"CI_PIPELINE_ID": "4711"}, "ci-4711"),
        ({"CI_PIPELINE_ID": "4711", "CI_JOB_ID": "9"}, "ci-4711"),  # a retried job
        ({"GITHUB_RUN_ID": "99", "GITHUB_RUN_ATTEMPT": "2"}, "gh-99"),  # a re-run
        ({}, "local"),
        ({"CI_PIPELINE_ID": "../../other-run"}, "not a pipeline id"),
        ({"CI_PIPELINE_ID": "1/2"}, "not a pipeline id"),
        ({"GITHUB_RUN_ID": "7 8"}, "not a pipeline id"),
    ],
)
def test_the_run_id_follows_the_pipeline_and_is_refused_when_it_is_not_a_plain_name(
    environ, expected
):
    if expected.startswith("not"):
        with pytest.raises(ConfigError, match=expected) as err:
            default_run_id(environ)
        assert err.value.exit_code == ExitCode.CONFIG
    else:
        assert default_run_id(environ) == expected


def test_fresh_discards_this_runs_checkpoints_outside_the_run_dir_and_skips_the_backup(
    tmp_path, monkeypatch
):
    use_env(monkeypatch, PIPELINE_A)
    cfg = PipelineConfig.model_validate(
        {
            "checkpoint": {"dir": str(tmp_path / "persist")},
            "backup": {"enabled": True, "url": str(tmp_path / "store")},
        }
    )
    run_dir = RunDir(tmp_path / "runs" / "ci-100")
    mine = checkpoint_dir(cfg, run_dir)
    other = tmp_path / "persist" / "ci-99"
    for d in (mine, other):
        save_fake_generation(d, 8)
        (d / "run.json").write_text("{}")
    fresh = start_fresh(cfg, run_dir)
    assert not mine.exists() and (other / "ckpt-8.index").is_file()
    assert fresh.backup.restore is False

    save_fake_generation(mine, 8)
    (mine / "notes.txt").write_text("not a checkpoint")
    with pytest.raises(ConfigError, match="not checkpoints"):
        start_fresh(cfg, run_dir)
    assert (mine / "notes.txt").is_file()


# -- the issue, with real training -------------------------------------------------------------


@pytest.mark.slow
def test_a_new_pipeline_with_a_new_learning_rate_trains_its_own_model_from_step_zero(
    tmp_path, monkeypatch
):
    persist = {"dir": str(tmp_path / "persistent")}
    use_env(monkeypatch, PIPELINE_A)
    first = run_train(make_cfg(checkpoint=persist), RunDir(tmp_path / "a"), splits=make_splits())
    assert first.steps == 12 and first.resumed_from_step is None

    use_env(monkeypatch, {**PIPELINE_A, "CI_PIPELINE_ID": "101", "CI_COMMIT_SHA": "b" * 40})
    cfg = make_cfg(checkpoint=persist, train={"learning_rate": 0.01})
    run_dir = RunDir(tmp_path / "b")
    second = run_train(cfg, run_dir, splits=make_splits())
    assert second.resumed_from_step is None  # not the previous pipeline's finished checkpoint
    assert second.steps == 12 and second.optimizer_iterations == 12
    assert second.weights_sha256 != first.weights_sha256
    report = json.loads(run_dir.train_json.read_text())
    assert report["checkpoints"]["dir"] == str(tmp_path / "persistent" / "ci-101")
    assert report["checkpoints"]["run_id"] == "ci-101"
    _, info = restore_for_export(cfg, run_dir, which="latest", splits=make_splits())
    assert info["run_id"] == "ci-101" and info["checkpoint"].startswith(
        report["checkpoints"]["dir"]
    )


@pytest.mark.slow
def test_a_retried_job_of_the_same_pipeline_resumes_at_the_saved_step(tmp_path, monkeypatch):
    cfg = make_cfg(checkpoint={"dir": str(tmp_path / "persistent")})
    use_env(monkeypatch, PIPELINE_A)
    with monkeypatch.context() as m:
        preempt_before_call(m, 1)
        with pytest.raises(Preempted, match="at step 6"):
            run_train(cfg, RunDir(tmp_path / "runner-1"), splits=make_splits())
    # The retry lands on another runner (a fresh run dir); the checkpoint.dir is shared.
    use_env(monkeypatch, {**PIPELINE_A, "CI_JOB_ID": "5001"})
    retried = run_train(cfg, RunDir(tmp_path / "runner-2"), splits=make_splits())
    assert retried.resumed_from_step == 6 and retried.resumed_optimizer_iterations == 6
    assert retried.steps == 12


class _LiteralKeyStore:
    """A stand-in for S3, where an object key is a string: `run/../../x` is one key, not a path."""

    def __init__(self) -> None:
        self.url, self.objects = "s3://stand-in/prefix", {}

    def get_file(self, key: str, path: Path) -> None:
        path.write_bytes(self.objects[key])  # as boto3's download_file: whatever the path says

    def get_bytes(self, key: str) -> bytes | None:
        return self.objects.get(key)

    def list(self, prefix: str = "") -> dict[str, int]:
        return {k: len(v) for k, v in self.objects.items() if k.startswith(prefix)}


def _planted(where: str) -> _LiteralKeyStore:
    """A complete-looking generation for this run whose marker also lists a key with '../'."""
    import hashlib

    def meta(data: bytes) -> dict[str, Any]:
        return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}

    store = _LiteralKeyStore()
    guard = json.dumps({"run": {"run_id": "ci-100", "pipeline": "ci-100"}}).encode()
    payload = b"planted by whoever can write the store\n"
    files = {"ckpt-40.index": b"i", "ckpt-40.data-00000-of-00001": b"d"}
    extras = {"run.json": guard}
    escape = "../../../escaped"
    if where == "files":
        files[escape] = payload
    else:
        extras[escape] = payload
    store.objects.update(files)
    store.objects.update({f"ckpt-40.extra/{k}": v for k, v in extras.items()})
    marker = {
        "schema": "tfship-checkpoint-backup/1",
        "generation": "ckpt-40",
        "step": 40,
        "files": {k: meta(v) for k, v in files.items()},
        "extras": {k: meta(v) for k, v in extras.items()},
    }
    store.objects["ckpt-40.tfship.json"] = json.dumps(marker).encode()
    return store


# "extras" is kept out: their local name gets an `extra-` prefix, so `extra-..` is no directory
# and the download fails; the check refuses both all the same.
@pytest.mark.parametrize("where", ["files"])
def test_a_backup_marker_naming_a_path_outside_the_checkpoint_dir_restores_nothing(tmp_path, where):
    # Issue 13 §2, a new case: the store's keys are strings, so a marker may list
    # `../../../escaped`; restoring it must not write outside the checkpoint directory.
    from tfship.backup.restore import restore_latest

    local = tmp_path / "a" / "b" / "checkpoints"
    run = {"run_id": "ci-100", "pipeline": "ci-100"}
    assert restore_latest(local, _planted(where), expect_run=run) is None
    assert not list(tmp_path.rglob("escaped"))
    assert not (local / "ckpt-40.index").exists()
