"""Evaluation metrics per task, against hand-computed numbers and independent formulas."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from tfship.errors import ModelError
from tfship.task import load_task
from tfship.task.metrics import expected_calibration_error, recall_at_precision

nan = float("nan")

# --- classification ------------------------------------------------------------------------

# Predictions: 0 right, 1 right, 2 taken for 1 (2 is second), 2 right.
CLS_Y = np.array([0, 1, 2, 2])
CLS_P = np.array([[0.7, 0.2, 0.1], [0.3, 0.6, 0.1], [0.1, 0.5, 0.4], [0.2, 0.2, 0.6]])
CLS_EXPECTED = {
    "accuracy": 3 / 4,
    "macro_f1": (1 + 2 / 3 + 2 / 3) / 3,  # class 1: P 1/2 R 1; class 2: P 1 R 1/2
    "min_class_f1": 2 / 3,
    "min_class_recall": 1 / 2,
    "loss": -(math.log(0.7) + math.log(0.6) + math.log(0.4) + math.log(0.6)) / 4,
    "top_k_accuracy": 1.0,  # top_k=2: the missed example has its label second
}


def test_classification_metrics_match_hand_computed_values() -> None:
    got = load_task("classification", {"top_k": 2}).evaluate(CLS_Y, {"probabilities": CLS_P})
    assert got == pytest.approx(CLS_EXPECTED)


@pytest.mark.parametrize(
    ("top_k", "expected", "note"),
    [
        pytest.param(1, 3 / 4, None, id="top_1_is_accuracy"),
        pytest.param(2, 1.0, None, id="top_2_counts_a_label_ranked_second"),
        pytest.param(3, 1.0, "always 1.0", id="top_k_at_least_the_classes_is_one_with_a_note"),
    ],
)
def test_top_k_accuracy_counts_labels_among_the_k_most_probable(
    top_k: int, expected: float, note: str | None
) -> None:
    result = load_task("classification", {"top_k": top_k}).measure(CLS_Y, CLS_P)
    assert result.values["top_k_accuracy"] == pytest.approx(expected)
    assert (note is None) == ("top_k_accuracy" not in result.notes)


def test_two_class_classification_top_1_is_accuracy() -> None:
    probs = np.array([[0.8, 0.2], [0.4, 0.6], [0.3, 0.7]])
    got = load_task("classification", {"top_k": 1}).evaluate(np.array([0, 0, 1]), probs)
    assert got["top_k_accuracy"] == pytest.approx(2 / 3)


def _todays_evaluate_metrics(probs: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """The formulas of tfship/evaluate.py's evaluate_saved_model before the task seam,
    copied so the classification task is held to them (that function needs a SavedModel)."""
    from sklearn.metrics import precision_recall_fscore_support

    n = probs.shape[1]
    pred = probs.argmax(axis=1)
    _, rec, f1, support = precision_recall_fscore_support(
        y, pred, labels=list(range(n)), zero_division=0
    )
    picked = np.clip(probs[np.arange(len(y)), y], 1e-7, 1.0)
    present = support > 0
    return {
        "accuracy": float((pred == y).mean()),
        "macro_f1": float(f1.mean()),
        "min_class_f1": float(f1[present].min()),
        "min_class_recall": float(rec[present].min()),
        "loss": float(-np.log(picked).mean()),
    }


def test_classification_reproduces_todays_evaluate_metrics_on_a_fixed_random_example() -> None:
    rng = np.random.default_rng(14)
    y = rng.integers(0, 9, 300)  # class 9 never occurs: macro_f1 counts it, the minima do not
    probs = rng.dirichlet(np.full(10, 0.3), 300)
    probs[np.arange(150), y[:150]] += 1.0  # half the examples right, so F1s differ by class
    probs /= probs.sum(axis=1, keepdims=True)
    got = load_task("classification").evaluate(y, {"probabilities": probs})
    assert {k: got[k] for k in _todays_evaluate_metrics(probs, y)} == pytest.approx(
        _todays_evaluate_metrics(probs, y), rel=1e-12
    )


# --- binary --------------------------------------------------------------------------------

BIN_Y = np.array([[0.0], [0.0], [1.0], [1.0]])
BIN_P = np.array([0.1, 0.4, 0.35, 0.8])
BIN_EXPECTED = {
    "roc_auc": 0.75,  # 3 of the 4 (positive, negative) pairs are ordered right
    "pr_auc": 0.5 * 1 + 0.5 * 2 / 3,  # recall steps 0.5 at precision 1, 0.5 at 2/3
    "precision": 1.0,  # threshold 0.5: only 0.8 is predicted positive
    "recall": 0.5,
    "f1": 2 / 3,
    "recall_at_precision": 0.5,  # precision >= 0.9 only at threshold 0.8
    "log_loss": -(math.log(0.9) + math.log(0.6) + math.log(0.35) + math.log(0.8)) / 4,
    "brier": (0.1**2 + 0.4**2 + 0.65**2 + 0.2**2) / 4,
    "ece": (0.1 + 0.4 + 0.65 + 0.2) / 4,  # every example alone in its bin
}


def test_binary_metrics_match_hand_computed_values() -> None:
    got = load_task("binary").evaluate(BIN_Y, {"probability": BIN_P, "class_id": BIN_P > 0.5})
    assert got == pytest.approx(BIN_EXPECTED)


def test_binary_breakdown_has_the_confusion_and_the_threshold_reaching_the_target() -> None:
    detail = load_task("binary").breakdown(BIN_Y, BIN_P, ("ham", "spam"))
    assert detail["confusion"] == [[2, 0], [1, 1]]  # [[tn, fp], [fn, tp]] at 0.5
    assert detail["threshold_at_precision_target"] == pytest.approx(0.8)
    assert detail["positive_label"] == "spam"


def test_classification_breakdown_keeps_todays_per_class_and_confusion() -> None:
    detail = load_task("classification").breakdown(CLS_Y, CLS_P, ("a", "b", "c"))
    assert detail["confusion"] == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]
    assert detail["per_class"]["b"] == pytest.approx(
        {"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1}
    )


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        pytest.param(1.0, 0.5, id="full_precision_is_reached_at_the_top_score_only"),
        pytest.param(0.6, 1.0, id="two_thirds_precision_reaches_every_positive"),
    ],
)
def test_recall_at_precision_is_the_best_recall_holding_the_target(
    target: float, expected: float
) -> None:
    got = load_task("binary", {"precision_target": target}).evaluate(BIN_Y, BIN_P)
    assert got["recall_at_precision"] == pytest.approx(expected)


def test_recall_at_precision_agrees_with_a_brute_force_threshold_sweep() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 200)
    p = np.clip(0.3 * y + 0.7 * rng.random(200), 0, 1)
    best = 0.0
    for t in np.unique(p):
        pred = p >= t
        tp = (pred & (y == 1)).sum()
        if pred.sum() and tp / pred.sum() >= 0.8:
            best = max(best, tp / (y == 1).sum())
    assert recall_at_precision(y, p, 0.8)[0] == pytest.approx(best)


def test_expected_calibration_error_agrees_with_a_per_bin_loop() -> None:
    rng = np.random.default_rng(5)
    p = rng.random(500)
    y = (rng.random(500) < p**2).astype(float)
    ece = 0.0
    for b in range(10):
        in_bin = (p >= b / 10) & ((p < (b + 1) / 10) if b < 9 else (p <= 1.0))
        if in_bin.any():
            ece += in_bin.mean() * abs(y[in_bin].mean() - p[in_bin].mean())
    assert expected_calibration_error(y, p, 10) == pytest.approx(ece)


def test_a_higher_threshold_trades_recall_for_precision() -> None:
    got = load_task("binary", {"threshold": 0.3}).evaluate(BIN_Y, BIN_P)
    assert (got["precision"], got["recall"]) == pytest.approx((2 / 3, 1.0))


@pytest.mark.parametrize(
    ("y", "p", "undefined"),
    [
        pytest.param(
            [0, 0, 0],
            [0.2, 0.7, 0.1],
            {"roc_auc": "only one class", "pr_auc": "no positive", "recall": "no positive"},
            id="no_positive_example_leaves_ranking_metrics_and_recall_undefined",
        ),
        pytest.param(
            [1, 1, 1],
            [0.2, 0.3, 0.1],
            {"roc_auc": "only one class", "precision": "nothing predicted positive"},
            id="nothing_predicted_positive_leaves_precision_undefined",
        ),
    ],
)
def test_binary_degenerate_cases_are_nan_with_a_reason(
    y: list, p: list, undefined: dict[str, str]
) -> None:
    result = load_task("binary").measure(np.asarray(y, float).reshape(-1, 1), np.asarray(p))
    for name, reason in undefined.items():
        assert math.isnan(result.values[name]) and reason in result.notes[name], name
    defined = set(result.values) - set(undefined)
    assert all(math.isfinite(result.values[k]) for k in defined - {"f1", "recall_at_precision"})


# --- multilabel ----------------------------------------------------------------------------

ML_Y = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0]], dtype=np.float32)
ML_P = np.array([[0.9, 0.2, 0.4], [0.1, 0.7, 0.6], [0.8, 0.6, 0.1]])
# predicted [[1,0,0],[0,1,1],[1,1,0]]: labels a, b perfect; c has one miss and one false alarm
ML_EXPECTED = {
    "micro_f1": 2 * 4 / (2 * 4 + 1 + 1),
    "macro_f1": (1 + 1 + 0) / 3,
    "subset_accuracy": 1 / 3,
    "hamming_loss": 2 / 9,
}


def test_multilabel_metrics_match_hand_computed_values() -> None:
    got = load_task("multilabel").evaluate(ML_Y, {"probabilities": ML_P})
    assert got == pytest.approx(ML_EXPECTED)


def test_multilabel_macro_f1_leaves_out_labels_never_present_nor_predicted() -> None:
    got = load_task("multilabel").evaluate(np.array([[1, 0], [0, 0]]), np.array([[0.9, 0.1]] * 2))
    assert got["macro_f1"] == pytest.approx(2 / 3)  # label a: P 1/2 R 1; label b left out


def test_multilabel_without_any_label_or_prediction_has_undefined_f1() -> None:
    result = load_task("multilabel").measure(np.zeros((2, 2)), np.full((2, 2), 0.1))
    assert math.isnan(result.values["micro_f1"]) and math.isnan(result.values["macro_f1"])
    assert "no label" in result.notes["micro_f1"]
    assert (result.values["subset_accuracy"], result.values["hamming_loss"]) == (1.0, 0.0)


# --- regression ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("y", "pred", "expected", "notes"),
    [
        pytest.param(
            [1, 2, 3, 4],
            [1.5, 2, 2, 5],
            {"rmse": 0.75, "mae": 0.625, "r2": 1 - 2.25 / 5, "mape": (0.5 + 1 / 3 + 1 / 4) / 4},
            {},
            id="errors_half_zero_minus_one_one",
        ),
        pytest.param(
            [0, 2],
            [1, 1],
            {"rmse": 1.0, "mae": 1.0, "r2": 0.0, "mape": 0.5},  # SSres = SStot = 2
            {"mape": "1 of 2"},
            id="a_zero_target_is_left_out_of_mape_and_counted",
        ),
        pytest.param(
            [0, 0],
            [1, -1],
            {"rmse": 1.0, "mae": 1.0, "r2": nan, "mape": nan},
            {"r2": "do not vary", "mape": "every target"},
            id="constant_zero_targets_leave_r2_and_mape_undefined",
        ),
        pytest.param(
            [2],
            [3],
            {"rmse": 1.0, "mae": 1.0, "r2": nan, "mape": 0.5},
            {"r2": "at least 2"},
            id="one_example_has_no_r2",
        ),
        pytest.param(
            [[1, 10], [2, 20], [3, 30]],
            [[1, 10], [2, 22], [3, 30]],
            {
                "rmse": (0 + math.sqrt(4 / 3)) / 2,
                "mae": (0 + 2 / 3) / 2,
                "r2": (1 + (1 - 4 / 200)) / 2,
                "mape": (2 / 20) / 6,
            },
            {},
            id="two_outputs_average_rmse_mae_r2_and_pool_mape",
        ),
    ],
)
def test_regression_metrics_match_hand_computed_values(
    y: list, pred: list, expected: dict[str, float], notes: dict[str, str]
) -> None:
    task = load_task("regression")
    y_enc, _ = task.encode(y)
    result = task.measure(y_enc, {"prediction": np.asarray(pred, float)})
    assert result.values == pytest.approx(expected, nan_ok=True)
    for name, fragment in notes.items():
        assert fragment in result.notes[name]


def test_mape_min_target_leaves_out_near_zero_targets() -> None:
    got = load_task("regression", {"mape_min_target": 0.5}).evaluate(
        np.array([[0.01], [2.0]]), np.array([1.0, 1.0])
    )
    assert got["mape"] == pytest.approx(0.5)


# --- every task ----------------------------------------------------------------------------

SAMPLES: dict[str, tuple[Any, Any]] = {
    "classification": (CLS_Y, CLS_P),
    "binary": (BIN_Y, BIN_P),
    "multilabel": (ML_Y, ML_P),
    "regression": (np.array([[1.0], [2.0], [4.0]]), np.array([1.0, 2.5, 3.0])),
}


@pytest.mark.parametrize("task", SAMPLES)
def test_evaluate_returns_exactly_the_tasks_metric_names(task: str) -> None:
    t = load_task(task)
    assert set(t.evaluate(*SAMPLES[task])) == set(t.METRICS)


@pytest.mark.parametrize("task", SAMPLES)
def test_no_examples_give_every_metric_nan_with_a_reason(task: str) -> None:
    t = load_task(task)
    y, scores = SAMPLES[task]
    result = t.measure(y[:0], scores[:0])
    assert all(math.isnan(v) for v in result.values.values())
    assert set(result.notes) == set(t.METRICS)


@pytest.mark.parametrize(
    ("task", "outputs", "names", "fragment"),
    [
        pytest.param("binary", {"probabilities": BIN_P}, None, "lack 'probability'", id="key"),
        pytest.param("classification", CLS_P, ("a", "b"), "expects 2", id="width"),
        pytest.param("multilabel", ML_P * nan, None, "NaN", id="non_finite"),
        pytest.param("regression", np.ones(2), None, "2 model outputs for 3", id="length"),
        pytest.param("classification", CLS_P[:, :2], None, "label ids reach 2", id="classes"),
    ],
)
def test_outputs_that_break_the_tasks_contract_raise_model_error(
    task: str, outputs: Any, names: tuple | None, fragment: str
) -> None:
    y = SAMPLES[task][0]
    with pytest.raises(ModelError, match=fragment):
        load_task(task).evaluate(y, outputs, names)
