"""Sliced metrics and their thresholds ("recall >= 0.8 on every country"), and report plots."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from tfship.errors import ConfigError, DataError
from tfship.task import (
    MISSING_VALUE,
    PlotSpec,
    SlicedMetrics,
    load_task,
    render_png,
    sliced_metrics,
)

# Binary labels and probabilities for three countries: de is perfect, fr misses one positive
# of two, and it is tiny.
COUNTRY = ["de"] * 4 + ["fr"] * 4 + ["it"] * 2
Y = np.array([1, 1, 0, 0, 1, 1, 0, 0, 1, 0], dtype=np.float32).reshape(-1, 1)
P = np.array([0.9, 0.8, 0.1, 0.2, 0.9, 0.3, 0.1, 0.2, 0.2, 0.1])


def _sliced(min_size: int = 3, values: list | None = None) -> SlicedMetrics:
    return sliced_metrics(
        load_task("binary"),
        Y,
        {"probability": P},
        values or COUNTRY,
        feature="country",
        min_size=min_size,
    )


def test_each_value_gets_its_own_metrics_and_small_slices_are_not_gated() -> None:
    sliced = _sliced()
    by_value = {s.value: s for s in sliced.slices}
    assert [(s.value, s.count, s.gated) for s in sliced.slices] == [
        ("de", 4, True),
        ("fr", 4, True),
        ("it", 2, False),
    ]
    assert by_value["de"].metrics["recall"] == 1.0
    assert by_value["fr"].metrics["recall"] == 0.5
    assert by_value["it"].metrics["recall"] == 0.0


@pytest.mark.parametrize(
    ("metric", "bounds", "ok", "failing"),
    [
        pytest.param("recall", {"minimum": 0.8}, False, ["fr"], id="fr_misses_the_recall"),
        pytest.param("recall", {"minimum": 0.5}, True, [], id="the_tiny_slice_is_not_gated"),
        pytest.param("ece", {"maximum": 0.5}, True, [], id="a_maximum_bounds_lower_is_better"),
        pytest.param("roc_auc", {"minimum": 0.9}, True, [], id="auc_on_both_gated_slices"),
    ],
)
def test_a_slice_threshold_holds_only_when_every_gated_slice_meets_it(
    metric: str, bounds: dict, ok: bool, failing: list
) -> None:
    check = _sliced().check(metric, **bounds)
    assert check.ok is ok
    assert [value for value, _, _ in check.failing] == failing


def test_an_undefined_metric_on_a_gated_slice_fails_with_its_reason() -> None:
    values = ["de"] * 4 + ["fr"] * 6  # every positive is in de
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0], dtype=np.float32).reshape(-1, 1)
    sliced = sliced_metrics(load_task("binary"), y, P, values, feature="country", min_size=3)
    check = sliced.check("roc_auc", minimum=0.5)
    assert not check.ok
    assert check.failing[0][0] == "de" and "only one class" in check.failing[0][2]


def test_a_check_with_no_gated_slice_fails_rather_than_passing_vacuously() -> None:
    check = _sliced(min_size=100).check("recall", minimum=0.1)
    assert not check.ok and "nothing to check" in check.reason


def test_missing_feature_values_form_their_own_slice_and_equal_values_merge() -> None:
    values = [None, float("nan"), 3, 3.0, "3", 7, 7, 7, 7, 7]
    sliced = _sliced(values=values)
    assert [(s.value, s.count) for s in sliced.slices] == [("3", 3), ("7", 5), (MISSING_VALUE, 2)]


def test_slices_serialize_to_strict_json_with_nan_as_null() -> None:
    as_json = _sliced(values=["de"] * 2 + ["fr"] * 8).to_json()  # de: two positives only
    text = json.dumps(as_json, allow_nan=False)
    de = json.loads(text)["slices"][0]
    assert de["metrics"]["roc_auc"] is None and "only one class" in de["notes"]["roc_auc"]


@pytest.mark.parametrize(
    ("values", "min_size", "error", "fragment"),
    [
        pytest.param(["de"] * 3, 3, DataError, "3 feature values for 10 labels", id="length"),
        pytest.param(COUNTRY, 0, ConfigError, "min_size=0", id="min_size"),
    ],
)
def test_slicing_refuses_mismatched_inputs(
    values: list, min_size: int, error: type, fragment: str
) -> None:
    with pytest.raises(error, match=fragment):
        _sliced(min_size=min_size, values=values)


def test_a_slice_threshold_on_a_metric_the_task_lacks_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="rmse"):
        _sliced().check("rmse", maximum=1.0)


def test_regression_slices_by_a_categorical_column() -> None:
    task = load_task("regression")
    y, _ = task.encode([1.0, 2.0, 3.0, 10.0, 20.0])
    sliced = sliced_metrics(
        task, y, np.array([1.0, 2.0, 3.0, 12.0, 20.0]), list("aaabb"), feature="shop", min_size=1
    )
    assert [s.metrics["mae"] for s in sliced.slices] == pytest.approx([0.0, 1.0])


# --- report plots --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("task", "y", "outputs", "names", "plots"),
    [
        pytest.param("binary", Y, P, ("0", "1"), ["roc", "pr", "calibration"], id="binary"),
        pytest.param(
            "classification",
            np.array([0, 1, 1]),
            np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]),
            ("cat", "dog"),
            ["confusion"],
            id="classification",
        ),
        pytest.param(
            "regression",
            np.array([[1.0], [2.0]]),
            np.array([1.5, 1.5]),
            ("price",),
            ["residuals"],
            id="regression",
        ),
        pytest.param(
            "multilabel", np.eye(2), np.eye(2) * 0.9, ("a", "b"), ["label_f1"], id="multilabel"
        ),
    ],
)
def test_each_task_asks_for_its_report_plots(
    task: str, y: np.ndarray, outputs: np.ndarray, names: tuple, plots: list
) -> None:
    specs = load_task(task).report_plots(y, outputs, names)
    assert [s.name for s in specs] == plots
    json.dumps([s.to_json() for s in specs], allow_nan=False)


def test_the_confusion_plot_counts_true_rows_against_predicted_columns() -> None:
    (spec,) = load_task("classification").report_plots(
        np.array([0, 1, 1]), np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]), ("cat", "dog")
    )
    assert spec.matrix == [[1, 0], [1, 1]] and spec.ticks == ("cat", "dog")


def test_binary_without_both_classes_draws_only_the_calibration_plot() -> None:
    specs = load_task("binary").report_plots(np.zeros((3, 1)), np.array([0.1, 0.2, 0.3]), "ab")
    assert [s.name for s in specs] == ["calibration"]


@pytest.mark.parametrize(
    "spec",
    [
        PlotSpec(
            "roc", "curve", "ROC", "fpr", "tpr", {"m": ([0, 1], [0, 1])}, reference="diagonal"
        ),
        PlotSpec("confusion", "matrix", "C", matrix=[[3, 1], [0, 2]], ticks=("a", "b")),
        PlotSpec("res", "scatter", "R", series={"e": ([1, 2], [0.1, -0.2])}, reference="zero"),
        PlotSpec("f1", "bars", "F1", series={"f1": ([0, 1], [0.5, 0.9])}, ticks=("a", "b")),
    ],
    ids=lambda s: s.kind,
)
def test_every_plot_kind_renders_to_png(spec: PlotSpec) -> None:
    assert render_png(spec).startswith(b"\x89PNG\r\n\x1a\n")


@pytest.mark.parametrize(
    ("task", "y", "outputs", "names"),
    [
        ("binary", np.zeros((2, 1)), np.array([0.1, 0.2]), ("0", "1")),
        ("multilabel", np.zeros((2, 2)), np.full((2, 2), 0.1), ("a", "b")),
        ("regression", np.ones((2, 1)), np.array([1.0, 2.0]), ("t",)),
    ],
)
def test_breakdowns_are_strict_json_even_where_a_metric_is_undefined(
    task: str, y: np.ndarray, outputs: np.ndarray, names: tuple
) -> None:
    t = load_task(task)
    assert any(math.isnan(v) for v in t.evaluate(y, outputs).values())
    json.dumps(t.breakdown(y, outputs, names), allow_nan=False)
