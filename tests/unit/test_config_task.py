"""The task section and what it checks when pipeline.yaml is loaded (not after training)."""

from __future__ import annotations

import pytest

from tfship.config import load_config
from tfship.errors import ConfigError


def load(tmp_path, text: str):
    path = tmp_path / "pipeline.yaml"
    path.write_text(text)
    return load_config(path, env={})


def test_the_default_task_is_classification_with_the_digits_best_metric(tmp_path):
    cfg = load(tmp_path, "version: 1\n")
    assert cfg.task.type == "classification"
    assert (cfg.checkpoint.best_metric, cfg.checkpoint.best_mode) == ("val_accuracy", "max")


@pytest.mark.parametrize(
    ("task", "metric", "mode"),
    [("binary", "val_loss", "min"), ("regression", "val_loss", "min")],
)
def test_the_best_checkpoint_metric_defaults_to_the_tasks(tmp_path, task, metric, mode):
    cfg = load(
        tmp_path, f"task: {{type: {task}}}\ngate: {{absolute: {{p95_latency_ms: {{max: 9}}}}}}\n"
    )
    assert (cfg.checkpoint.best_metric, cfg.checkpoint.best_mode) == (metric, mode)


def test_task_options_inline_and_under_options_are_the_same(tmp_path):
    a = load(tmp_path, "task: {type: binary, threshold: 0.3}\n")
    b = load(tmp_path, "task: {type: binary, options: {threshold: 0.3}}\n")
    assert a.task == b.task and a.task_obj.threshold == 0.3


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        # A gate metric the task never computes fails at load, naming what it does compute.
        (
            "task: {type: regression}\ngate: {absolute: {accuracy: {min: 0.9}}}\n",
            "unknown metric(s) ['accuracy'] for task.type regression",
        ),
        (
            "task: {type: binary}\ngate: {change: {rmse: {max_regression: 1}}}\n",
            "gate.change: unknown metric(s) ['rmse']",
        ),
        (
            "task: {type: binary}\n"
            "gate: {slices: [{feature: country, absolute: {r2: {min: 0}}}]}\n",
            "gate.slices[0].absolute: unknown metric(s) ['r2']",
        ),
        (
            "task: {type: regression}\ncheckpoint: {best_metric: val_accuracy}\n",
            "checkpoint.best_metric='val_accuracy' is not a metric training records",
        ),
        (
            "task: {type: binary, treshold: 0.3}\n",
            "['treshold'] are not options of task.type binary",
        ),
        ("task: {type: binary, threshold: 1.5}\n", "task.threshold=1.5"),
        ("task: {type: ranking}\n", "neither a built-in task nor 'module:Class'"),
        ("task: {type: 'no_such_module:Task'}\n", "cannot import module 'no_such_module'"),
        ("task: {type: binary, threshold: 0.3, options: {threshold: 0.4}}\n", "given twice"),
        (
            "data: {source: csv, path: x.csv, label: y, features: {y: numeric}}\n",
            "given its answer",
        ),
        ("data: {source: csv, path: x.csv, features: {'bad name': numeric}}\n", "must match"),
        ("data: {source: csv, path: x.csv, features: {}}\n", "omit it to infer"),
        ("data: {source: loader}\n", "data.loader (module:function) is required"),
        ("data: {source: csv, path: x.csv, loader: 'a.b:c'}\n", "a loader replaces the source"),
        ("data: {features: {x: {kind: vector}}}\n", "data.features.x"),
    ],
)
def test_a_task_or_schema_setting_that_cannot_work_is_a_config_error(tmp_path, text, fragment):
    with pytest.raises(ConfigError) as err:
        load(tmp_path, text)
    assert fragment in str(err.value)


def test_a_loader_alone_selects_the_loader_source(tmp_path):
    cfg = load(tmp_path, "data: {loader: 'my_project.data:load'}\n")
    assert cfg.data.source == "loader"
