"""The task registry and the metric vocabulary that config checks at load time."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from typing import Any, ClassVar

import pytest

from tfship.errors import ConfigError
from tfship.task import (
    LATENCY_METRICS,
    BinaryTask,
    ClassificationTask,
    MultilabelTask,
    RegressionTask,
    Task,
    TaskType,
    load_task,
)

# Issue 14's user-facing gate names, per task; classification keeps today's names.
TODAYS_CLASSIFICATION = ["accuracy", "macro_f1", "min_class_f1", "min_class_recall", "loss"]
ISSUE_NAMES = {
    "binary": ["roc_auc", "pr_auc", "precision", "recall", "f1", "log_loss", "brier", "ece"],
    "classification": [*TODAYS_CLASSIFICATION, "top_k_accuracy"],
    "multilabel": ["micro_f1", "macro_f1", "subset_accuracy", "hamming_loss"],
    "regression": ["rmse", "mae", "r2", "mape"],
}
LATENCY = ["p50_latency_ms", "p95_latency_ms", "p50_latency_ms_batch32", "p95_latency_ms_batch32"]
LOWER_IS_BETTER = {"loss", "log_loss", "brier", "ece", "hamming_loss", "rmse", "mae", "mape"}


@pytest.mark.parametrize("task", ISSUE_NAMES)
def test_metric_directions_hold_every_name_of_the_issue_and_latency(task: str) -> None:
    directions = load_task(task).metric_directions()
    assert set(ISSUE_NAMES[task]) | set(LATENCY) <= set(directions)
    for name, direction in directions.items():
        expected = "lower" if name in LOWER_IS_BETTER or name in LATENCY else "higher"
        assert direction == expected, name


def test_binary_adds_recall_at_precision_to_the_issue_names() -> None:
    extra = set(BinaryTask.METRICS) - set(ISSUE_NAMES["binary"])
    assert extra == {"recall_at_precision"}


def test_latency_names_are_todays() -> None:
    assert list(LATENCY_METRICS) == LATENCY


@pytest.mark.parametrize(
    ("task", "best", "mode", "recorded"),
    [
        ("classification", "val_accuracy", "max", {"loss", "accuracy", "val_accuracy"}),
        ("binary", "val_loss", "min", {"val_precision", "val_recall", "val_f1", "f1"}),
        ("multilabel", "val_loss", "min", {"val_micro_f1", "val_hamming_loss"}),
        ("regression", "val_loss", "min", {"val_rmse", "val_mae", "rmse"}),
    ],
)
def test_each_task_has_a_default_best_metric_that_training_records(
    task: str, best: str, mode: str, recorded: set[str]
) -> None:
    t = load_task(task)
    assert t.default_best_metric == best
    assert t.best_mode(best) == mode
    assert recorded <= set(t.training_metric_directions())


def test_a_best_metric_training_does_not_record_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"'val_roc_auc' is not a metric training records"):
        load_task("binary").best_mode("val_roc_auc")


def test_a_gate_metric_the_task_does_not_compute_is_refused_naming_it() -> None:
    with pytest.raises(ConfigError) as err:
        load_task("regression").check_metric_names(["rmse", "accuracy"], "gate.absolute")
    assert "gate.absolute" in str(err.value) and "['accuracy']" in str(err.value)
    assert "rmse" in str(err.value)  # the expected names are listed


def test_importing_the_task_vocabulary_does_not_import_tensorflow_or_sklearn() -> None:
    code = (
        "import sys; from tfship.task import load_task\n"
        "for name in ('classification', 'binary', 'multilabel', 'regression'):\n"
        "    t = load_task(name); t.metric_directions(); t.best_mode(t.default_best_metric)\n"
        "print(sorted(m for m in ('tensorflow', 'keras', 'sklearn', 'matplotlib') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- registry ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class ShoutingClassification(ClassificationTask):
    """A user task: today's classification with one more option."""

    type: ClassVar[str] = "shouting"
    volume: int = 11


class NotATask:
    pass


@pytest.mark.parametrize(
    ("spec", "options", "cls", "check"),
    [
        pytest.param(None, {}, ClassificationTask, {"top_k": 5}, id="no_type_is_classification"),
        pytest.param("binary", {"threshold": 0.3}, BinaryTask, {"threshold": 0.3}, id="binary"),
        pytest.param(TaskType.MULTILABEL, {}, MultilabelTask, {"threshold": 0.5}, id="enum"),
        pytest.param("regression", {"loss": "huber"}, RegressionTask, {"loss": "huber"}, id="r"),
        pytest.param(
            f"{__name__}:ShoutingClassification",
            {"volume": 3, "top_k": 2},
            ShoutingClassification,
            {"volume": 3, "top_k": 2},
            id="user_task_by_module_and_class_takes_its_own_and_inherited_options",
        ),
    ],
)
def test_load_task_builds_the_named_task_with_its_options(
    spec: Any, options: dict, cls: type, check: dict
) -> None:
    task = load_task(spec, options)
    assert type(task) is cls
    assert {k: getattr(task, k) for k in check} == check


@pytest.mark.parametrize(
    ("spec", "options", "fragment"),
    [
        pytest.param("clasification", {}, "neither a built-in task", id="typo"),
        pytest.param("no_such_module_xyz:Task", {}, "cannot import module", id="no_module"),
        pytest.param(f"{__name__}:Missing", {}, "has no 'Missing'", id="no_class"),
        pytest.param(f"{__name__}:NotATask", {}, "not a Task class", id="not_a_task"),
        pytest.param("tfship.task:Task", {}, "cannot be instantiated", id="the_base_class"),
        pytest.param("binary", {"treshold": 0.3}, "['treshold'] are not options", id="option"),
        pytest.param("binary", {"threshold": 1.5}, "task.threshold=1.5", id="out_of_range"),
        pytest.param("binary", {"precision_target": "high"}, "precision_target", id="type"),
        pytest.param("classification", {"top_k": 0}, "task.top_k=0", id="top_k"),
        pytest.param("classification", {"loss": "mse"}, "not a loss of the", id="loss"),
        pytest.param("binary", {"class_weight": "even"}, "'balanced' or a mapping", id="cw"),
        pytest.param("binary", {"class_weight": {"1": -2}}, "positive numbers", id="cw_sign"),
        pytest.param("binary", {"class_weight": 3}, "'balanced' or a mapping", id="cw_type"),
        pytest.param("regression", {"class_weight": "balanced"}, "does not apply", id="r_cw"),
        pytest.param(
            "multilabel",
            {"class_weight": "balanced", "loss": "binary_focal_crossentropy"},
            "binary_crossentropy",
            id="multilabel_focal_with_class_weight",
        ),
        pytest.param("multilabel", {"separator": ""}, "non-empty", id="separator"),
    ],
)
def test_bad_task_specs_and_options_are_config_errors_naming_them(
    spec: str, options: dict, fragment: str
) -> None:
    with pytest.raises(ConfigError) as err:
        load_task(spec, options)
    assert fragment in str(err.value)


def test_describe_names_the_class_and_every_option_for_the_checkpoint_guard() -> None:
    described = load_task("binary", {"threshold": 0.3}).describe()
    assert described["type"] == "binary"
    assert described["class"] == "tfship.task.binary:BinaryTask"
    assert described["options"]["threshold"] == 0.3
    assert set(described["options"]) >= {"loss", "class_weight", "precision_target"}


def test_a_task_whose_metrics_break_its_promise_is_refused() -> None:
    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Liar(RegressionTask):
        def _metrics(self, y: Any, pred: Any, notes: dict) -> dict:
            return {"rmse": 0.0}

    with pytest.raises(ConfigError, match="promise"):
        Liar().evaluate([[1.0]], [1.0])


def test_the_base_task_leaves_every_problem_specific_method_to_subclasses() -> None:
    with pytest.raises(NotImplementedError):
        Task().infer_label_names([1, 2])
