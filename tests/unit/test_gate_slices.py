"""The gate for every task (directions from the task, NaN notes), slice thresholds, and the
report per task (plots from the task, slice tables, hostile label names escaped).

No TensorFlow: metrics.json is built from the task's own functions on fixed predictions, as
the evaluate stage builds it from the served outputs."""

from __future__ import annotations

import json
import math
import re
from typing import Any

import numpy as np
import pytest

from tfship.config import GateConfig, load_config
from tfship.data.schema import Feature, Kind, Schema
from tfship.errors import ConfigError
from tfship.evaluate import check_slice_features
from tfship.fsutil import atomic_write_json
from tfship.gate import decide, run_gate
from tfship.report import run_report
from tfship.rundir import RunDir
from tfship.task import load_task, sliced_metrics

LATENCY = {
    "p50_latency_ms": 1.0,
    "p95_latency_ms": 2.0,
    "p50_latency_ms_batch32": 3.0,
    "p95_latency_ms_batch32": 4.0,
}


def _gate(**kw: Any) -> GateConfig:
    return GateConfig.model_validate(kw)


# --- the gate per task -----------------------------------------------------------------------

TASK_TABLE = [
    # (id, task, gate, candidate, champion, notes, verdict, words in the failure reason)
    ("binary_auc_met", "binary", {"absolute": {"roc_auc": {"min": 0.8}}},
     {"roc_auc": 0.9}, None, {}, "passed", ""),
    ("binary_ece_above_max", "binary", {"absolute": {"ece": {"max": 0.05}}},
     {"ece": 0.08}, None, {}, "failed", "above the maximum"),
    ("binary_nan_recall_fails_with_its_note", "binary", {"absolute": {"recall": {"min": 0.5}}},
     {"recall": math.nan}, None, {"recall": "no positive example"}, "failed",
     "undefined (NaN): no positive example"),
    ("binary_log_loss_lower_is_better_regressed", "binary",
     {"change": {"log_loss": {"max_regression": 0.01}}},
     {"log_loss": 0.40}, {"log_loss": 0.30}, {}, "failed", "worse than the champion"),
    ("binary_log_loss_improved", "binary", {"change": {"log_loss": {"max_regression": 0.0}}},
     {"log_loss": 0.20}, {"log_loss": 0.30}, {}, "passed", ""),
    ("regression_rmse_lower_is_better", "regression", {"change": {"rmse": {"max_regression": 0}}},
     {"rmse": 1.2}, {"rmse": 1.0}, {}, "failed", "<= champion"),
    ("regression_r2_higher_is_better", "regression", {"change": {"r2": {"max_regression": 0}}},
     {"r2": 0.9}, {"r2": 0.8}, {}, "passed", ""),
    ("regression_nan_mape_fails", "regression", {"absolute": {"mape": {"max": 0.2}}},
     {"mape": math.nan}, None, {"mape": "every target is below mape_min_target"}, "failed",
     "below mape_min_target"),
    ("multilabel_hamming_loss_max", "multilabel", {"absolute": {"hamming_loss": {"max": 0.1}}},
     {"hamming_loss": 0.05}, None, {}, "passed", ""),
    ("multilabel_micro_f1_regressed", "multilabel",
     {"change": {"micro_f1": {"max_regression": 0.02}}},
     {"micro_f1": 0.80}, {"micro_f1": 0.85}, {}, "failed", "worse than the champion"),
    ("classification_top_k_met", "classification",
     {"absolute": {"top_k_accuracy": {"min": 0.9}}},
     {"top_k_accuracy": 0.95}, None, {}, "passed", ""),
    ("a_metric_missing_from_metrics_json_fails", "classification",
     {"absolute": {"top_k_accuracy": {"min": 0.9}}},
     {}, None, {}, "failed", "not measured"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("task", "cfg", "cand", "champ", "notes", "verdict", "why"),
    [t[1:] for t in TASK_TABLE],
    ids=[t[0] for t in TASK_TABLE],
)
def test_the_gate_reads_the_task_directions_and_nan_notes(
    task, cfg, cand, champ, notes, verdict, why
):
    directions = load_task(task, {}).metric_directions()
    got, checks, _ = decide(
        _gate(**cfg),
        {**LATENCY, **cand},
        None if champ is None else {**LATENCY, **champ},
        directions=directions,
        notes=notes,
        environ={},
    )
    assert got == verdict
    failed = [c for c in checks if not c.passed]
    assert bool(failed) == (verdict == "failed")
    if why:
        assert why in failed[0].why


def test_lower_is_better_comes_from_the_task_not_the_digits_vocabulary():
    # ece is not a digits metric: without the task's direction the gate could not read it.
    gate = _gate(change={"ece": {"max_regression": 0.0}})
    directions = load_task("binary", {}).metric_directions()
    verdict, (check,), _ = decide(gate, {"ece": 0.02}, {"ece": 0.03}, directions=directions)
    assert verdict == "passed" and check.threshold == "<= champion" and check.bound == 0.03


def test_an_incomparable_champion_fails_every_change_threshold_with_the_reason():
    gate = _gate(change={"roc_auc": {"max_regression": 1.0}})
    verdict, (check,), _ = decide(
        gate, {"roc_auc": 0.9}, None, incomparable="it takes ['pixels']", environ={}
    )
    assert verdict == "failed" and "it takes ['pixels']" in check.why


# --- slice thresholds ------------------------------------------------------------------------

COUNTRY = ["de"] * 40 + ["fr"] * 40 + ["it"] * 5
RNG = np.random.default_rng(1)


def _binary_slices(fr_quality: float = 1.0) -> dict[str, Any]:
    """Sliced binary metrics: de is perfect, fr's ranking flips with `fr_quality` < 0.5, and
    the 5-example `it` is random."""
    y = np.asarray([i % 2 for i in range(len(COUNTRY))], dtype=np.float32).reshape(-1, 1)
    p = np.where(y.ravel() == 1, 0.9, 0.1)
    fr = np.asarray(COUNTRY) == "fr"
    p[fr] = np.where(y.ravel()[fr] == 1, fr_quality, 1 - fr_quality) * 0.8 + 0.1
    it = np.asarray(COUNTRY) == "it"
    p[it] = RNG.uniform(0, 1, it.sum())
    sliced = sliced_metrics(
        load_task("binary", {}), y, {"probability": p}, COUNTRY, feature="country", min_size=30
    )
    return {"country": sliced.to_json()}


SLICE_TABLE = [
    # (id, slice gate, fr quality, passed, failing values, words in the reason)
    ("all_gated_slices_pass", {"absolute": {"roc_auc": {"min": 0.9}}}, 1.0, True, [], "on all 2"),
    ("one_slice_fails", {"absolute": {"roc_auc": {"min": 0.9}}}, 0.0, False, ["fr"], "misses"),
    ("the_small_slice_is_not_gated", {"absolute": {"recall": {"min": 0.99}}}, 1.0, True, [], ""),
    ("a_maximum_on_every_slice", {"absolute": {"brier": {"max": 0.5}}}, 0.0, False, ["fr"], ""),
    ("no_gated_slice_fails", {"min_examples": 100, "absolute": {"roc_auc": {"min": 0.1}}}, 1.0,
     False, [], "no value of 'country' has at least 100"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("rule", "quality", "passed", "failing", "why"),
    [t[1:] for t in SLICE_TABLE],
    ids=[t[0] for t in SLICE_TABLE],
)
def test_slice_thresholds_hold_on_every_gated_slice(rule, quality, passed, failing, why):
    gate = _gate(slices=[{"feature": "country", **rule}])
    verdict, (check,), _ = decide(
        gate,
        LATENCY,
        None,
        directions=load_task("binary", {}).metric_directions(),
        slices=_binary_slices(quality),
        environ={},
    )
    assert verdict == ("passed" if passed else "failed")
    assert check.kind == "slice" and check.feature == "country" and check.passed is passed
    assert [f[0] for f in check.failing] == failing
    assert why in check.why


def test_a_sliced_feature_missing_from_metrics_json_fails_safe():
    gate = _gate(slices=[{"feature": "city", "absolute": {"roc_auc": {"min": 0.5}}}])
    verdict, (check,), _ = decide(gate, LATENCY, None, slices=_binary_slices(), environ={})
    assert verdict == "failed" and "no slices of 'city'" in check.why


TABULAR = Schema(
    (
        Feature("country", Kind.CATEGORICAL, "string"),
        Feature("note", Kind.TEXT, "string"),
        Feature("age", Kind.NUMERIC, "float32"),
    ),
    label="label",
)


def test_slicing_by_an_unknown_or_float_feature_is_a_config_error_naming_the_features():
    x = {"country": np.asarray(["de"], object), "age": np.zeros(1, np.float32)}
    check_slice_features(["country", "note"], x, TABULAR)  # categorical, and any string
    with pytest.raises(ConfigError, match=r"'city' is not a feature.*'country', 'note', 'age'"):
        check_slice_features(["city"], x, TABULAR)
    with pytest.raises(ConfigError, match=r"'age' is a numeric feature of dtype float32"):
        check_slice_features(["age"], x, TABULAR)
    with pytest.raises(ConfigError, match=r"'age' is an array of dtype float32"):
        check_slice_features(["age"], x, None)  # no schema: the array's dtype decides


# --- gate.json and the report per task -------------------------------------------------------

HOSTILE = "<img src=x onerror=alert(1)> @all $x$ | [a](javascript:1)"


def _doc(task_type: str, y: np.ndarray, outputs: dict[str, Any], names: tuple[str, ...],
         slice_values: list[str] | None = None) -> dict[str, Any]:  # fmt: skip
    """metrics.json as run_evaluate writes it, from the task's functions on `outputs`."""
    task = load_task(task_type, {})
    measured = task.measure(y, outputs, names)
    metrics = {k: None if math.isnan(v) else v for k, v in measured.values.items()}
    slices = {}
    if slice_values is not None:
        slices = {
            "region": sliced_metrics(
                task, y, outputs, slice_values, feature="region", min_size=2, label_names=names
            ).to_json()
        }
    breakdown = task.breakdown(y, outputs, names)
    cand = {
        **breakdown,
        "path": "/runs/x/export/3",
        "version": 3,
        "metrics": {**metrics, **LATENCY},
        "notes": measured.notes,
        "breakdown": breakdown,
        "latency_ms": {"1": {"p50": 1.0, "p95": 2.0}, "32": {"p50": 3.0, "p95": 4.0}},
        "slices": slices,
        "plots": [p.to_json() for p in task.report_plots(y, outputs, names)],
    }
    return {
        "schema": "tfship-metrics/1",
        "task": task.describe(),
        "test_examples": len(y),
        "data_fingerprint": "cd" * 32,
        "class_names": list(names),
        "label_names": list(names),
        "notes": measured.notes,
        "slices": slices,
        "candidate": cand,
        "champion": None,
        "champion_note": "first run",
        "machine": {"cpus": 2},
    }


REGION = ["north", "north", HOSTILE, HOSTILE, "south", "south"]
Y_BIN = np.asarray([[1], [0], [1], [0], [1], [0]], np.float32)
P_BIN = np.asarray([0.9, 0.2, 0.6, 0.4, 0.3, 0.7])
CASES = {
    "binary": (
        Y_BIN, {"probability": P_BIN}, ("ok", HOSTILE), "roc_auc",
        ["roc.png", "pr.png", "calibration.png"],
    ),
    "classification": (
        np.asarray([0, 1, 2, 0, 1, 2]),
        {"probabilities": np.eye(3)[[0, 1, 2, 1, 1, 0]] * 0.7 + 0.1},
        ("cat", HOSTILE, "eel"), "accuracy", ["confusion.png"],
    ),
    "regression": (
        np.asarray([[1.0], [2.0], [3.0], [4.0], [5.0], [6.0]], np.float32),
        {"prediction": np.asarray([1.1, 2.2, 2.7, 4.4, 5.0, 5.5])},
        (HOSTILE,), "rmse", ["residuals.png"],
    ),
    "multilabel": (
        np.asarray([[1, 0], [0, 1], [1, 1], [0, 0], [1, 0], [0, 1]], np.float32),
        {"probabilities": np.asarray([[0.9, 0.1], [0.2, 0.8], [0.7, 0.4], [0.1, 0.2],
                                      [0.6, 0.3], [0.4, 0.9]])},
        ("ok", HOSTILE), "micro_f1", ["label_f1.png"],
    ),
}  # fmt: skip


@pytest.mark.parametrize("task_type", sorted(CASES))
def test_gate_json_and_report_for_each_task_escape_hostile_labels(task_type, tmp_path):
    y, outputs, names, metric, pngs = CASES[task_type]
    run_dir = RunDir(tmp_path / "run").ensure()
    atomic_write_json(
        run_dir.evaluation / "metrics.json", _doc(task_type, y, outputs, names, REGION)
    )
    bound = "max" if load_task(task_type, {}).metric_directions()[metric] == "lower" else "min"
    cfg = load_config(
        env={"GITLAB_USER_LOGIN": "alice"},
        overrides=[
            f"task.type={task_type}",
            f"gate.absolute={{{metric}: {{{bound}: 0.5}}}}",
            f"gate.slices=[{{feature: region, min_examples: 2, "
            f"absolute: {{{metric}: {{{bound}: 0.999}}}}}}]",
        ],
    )
    gate = run_gate(cfg, run_dir)
    doc = json.loads((run_dir.evaluation / "gate.json").read_text())
    sliced = [c for c in doc["checks"] if c["kind"] == "slice"]
    assert len(sliced) == 1 and sliced[0]["feature"] == "region"
    assert sliced[0]["metric"] == metric and sliced[0]["bound"] == 0.999
    assert "--set gate.slices (local run by alice)" in sliced[0]["source"]
    assert gate.verdict == ("passed" if sliced[0]["passed"] else "failed")
    assert all(len(f) == 3 for f in sliced[0]["failing"])

    report = run_report(run_dir)
    assert [p.name for p in report.images] == pngs
    for png in report.images:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = report.report_md.read_text()
    assert f"{metric} by region (slice)" in md and "Slices of `region`" in md
    for name in load_task(task_type, {}).METRICS:
        assert f"| {name} |" in md or f"| {name.replace('_', chr(92) + '_')} |" in md
    # The hostile label/slice value is data: no HTML, no mention, no table break, no link.
    assert "<img" not in md and "@all" not in md
    assert not re.search(r"(?<!\\)\]\(javascript", md)
    assert "&lt;img src=x onerror=alert(1)> @&#8203;all \\$x\\$ \\| \\[a\\](javascript:1)" in md


def test_a_nan_metric_shows_its_note_in_the_report(tmp_path):
    run_dir = RunDir(tmp_path / "run").ensure()
    y = np.ones((4, 1), np.float32)  # one class only: roc_auc is undefined
    doc = _doc("binary", y, {"probability": np.asarray([0.9, 0.8, 0.4, 0.7])}, ("no", "yes"))
    assert doc["candidate"]["metrics"]["roc_auc"] is None  # strict JSON: the reason is a note
    atomic_write_json(run_dir.evaluation / "metrics.json", doc)
    cfg = load_config(overrides=["task.type=binary", "gate.absolute={roc_auc: {min: 0.5}}"])
    gate = run_gate(cfg, run_dir)
    assert gate.verdict == "failed" and "only one class present" in gate.failed[0].why
    md = run_report(run_dir).report_md.read_text()
    assert "| roc\\_auc | – | – | only one class present" in md or (
        "| roc_auc | – | – | only one class present" in md
    )
