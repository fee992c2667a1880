"""evaluate_saved_model on every task: tiny Keras models exported with ExportArchive, called
through `serving_default` only, metric values checked against scikit-learn on the same
predictions; slices, missing inputs, incomparable champions, and the gate + report on top."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tfship.config import load_config
from tfship.data.schema import Feature, Kind, Schema
from tfship.errors import ConfigError, ModelError
from tfship.evaluate import evaluate_saved_model, run_evaluate
from tfship.gate import run_gate
from tfship.report import run_report
from tfship.rundir import RunDir
from tfship.task import load_task

pytestmark = pytest.mark.slow

N = 80
RNG = np.random.default_rng(7)
COUNTRY = np.asarray(RNG.choice(["de", "fr", "it", ""], N, p=[0.45, 0.45, 0.05, 0.05]), object)
AGE = RNG.uniform(18, 80, N).astype(np.float32)
VEC = RNG.normal(size=(N, 3)).astype(np.float32)
PIXELS = RNG.uniform(0, 255, (N, 4, 4, 1)).astype(np.float32)
BINARY_NAMES = ("no", "yes")
CLASSES = ("cat", "dog", "eel")
TARGETS = ("a", "b", "c")


def _export(path: Path, task_type: str, names: tuple[str, ...], specs: dict[str, Any]) -> Path:
    """A tiny model over `specs` (name -> TensorSpec) whose outputs are the task's own."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(3)
    task = load_task(task_type, {"top_k": 2} if task_type == "classification" else {})
    lookup = keras.layers.StringLookup(vocabulary=["de", "fr", "it"], output_mode="one_hot")
    lookup.build((None,))
    # One-hot of 3 words + out-of-vocabulary for a string input, the flat values otherwise.
    width = sum(4 if s.dtype == tf.string else int(np.prod(s.shape[1:])) for s in specs.values())
    dense = keras.layers.Dense(task.output_width(names))
    dense.build((None, width))
    archive = keras.export.ExportArchive()
    archive.track(lookup)
    archive.track(dense)

    def serve(**inputs: Any) -> dict[str, Any]:
        parts = []
        for name in sorted(inputs):
            value = inputs[name]
            if value.dtype == tf.string:
                parts.append(tf.cast(lookup(value), tf.float32))
            else:
                parts.append(tf.reshape(value, [tf.shape(value)[0], -1]) / 50.0)
        return task.serving_outputs(dense(tf.concat(parts, axis=1)), names)

    # One tensor per input, named like the feature (what tfship export writes).
    endpoint = tf.function(serve)
    endpoint.get_concrete_function(**specs)  # traced once: add_endpoint exports that trace
    archive.add_endpoint("serving_default", endpoint)
    archive.write_out(str(path))
    return path


def _spec(shape: list[Any], dtype: Any, name: str) -> Any:
    import tensorflow as tf

    return tf.TensorSpec(shape, dtype, name=name)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    import tensorflow as tf

    root = tmp_path_factory.mktemp("task_models")
    return {
        "binary": _export(
            root / "binary" / "1",
            "binary",
            BINARY_NAMES,
            {
                "country": _spec([None], tf.string, "country"),
                "age": _spec([None], tf.float32, "age"),
            },
        ),
        "regression": _export(
            root / "regression" / "1",
            "regression",
            ("target",),
            {"x": _spec([None, 3], tf.float32, "x")},
        ),
        "multilabel": _export(
            root / "multilabel" / "1",
            "multilabel",
            TARGETS,
            {"x": _spec([None, 3], tf.float32, "x")},
        ),
        "classification": _export(
            root / "classification" / "1",
            "classification",
            CLASSES,
            {"pixels": _spec([None, 4, 4, 1], tf.float32, "pixels")},
        ),
    }


def _serve(path: Path, x: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    import tensorflow as tf

    fn = tf.saved_model.load(str(path)).signatures["serving_default"]
    return {k: v.numpy() for k, v in fn(**{k: tf.constant(v) for k, v in x.items()}).items()}


TABULAR = Schema(
    (
        Feature("country", Kind.CATEGORICAL, "string"),
        Feature("age", Kind.NUMERIC, "float32"),
    ),
    label="label",
)


def test_binary_model_with_a_string_input_matches_sklearn_and_is_sliced(models):
    from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

    x = {"country": COUNTRY, "age": AGE}
    y = (AGE > 45).astype(np.float32).reshape(-1, 1)
    ev = evaluate_saved_model(
        models["binary"],
        x,
        y,
        task=load_task("binary", {}),
        label_names=BINARY_NAMES,
        schema=TABULAR,
        latency_runs=5,
        slice_features={"country": 10},
    )
    p = _serve(models["binary"], x)["probability"].astype(np.float64)
    assert ev.metrics["roc_auc"] == pytest.approx(roc_auc_score(y, p), rel=1e-6)
    assert ev.metrics["pr_auc"] == pytest.approx(average_precision_score(y, p), rel=1e-6)
    assert ev.metrics["log_loss"] == pytest.approx(log_loss(y, p), rel=1e-5)
    assert ev.metrics["brier"] == pytest.approx(brier_score_loss(y.ravel(), p), rel=1e-5)
    latency = {"p50_latency_ms", "p95_latency_ms", "p50_latency_ms_batch32"}
    assert set(ev.metrics) == set(load_task("binary", {}).metric_directions()) >= latency
    assert [p["name"] for p in ev.plots] == ["roc", "pr", "calibration"]
    slices = {s["value"]: s for s in ev.slices["country"]["slices"]}
    # "" is the schema's missing value: it forms the (missing) slice, too small to gate.
    assert set(slices) == {"de", "fr", "it", "(missing)"}
    assert sum(s["count"] for s in slices.values()) == N
    de = COUNTRY == "de"
    assert slices["de"]["gated"] and slices["de"]["metrics"]["roc_auc"] == pytest.approx(
        roc_auc_score(y[de], p[de]), rel=1e-6
    )
    assert not slices["(missing)"]["gated"]


def test_regression_metrics_match_sklearn(models):
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    y = (VEC @ np.array([1.0, -2.0, 0.5]) + 3).astype(np.float32).reshape(-1, 1)
    ev = evaluate_saved_model(
        models["regression"],
        {"x": VEC},
        y,
        task=load_task("regression", {}),
        label_names=("target",),
        latency_runs=5,
    )
    pred = _serve(models["regression"], {"x": VEC})["prediction"].astype(np.float64)
    assert ev.metrics["rmse"] == pytest.approx(np.sqrt(mean_squared_error(y, pred)), rel=1e-5)
    assert ev.metrics["mae"] == pytest.approx(mean_absolute_error(y, pred), rel=1e-5)
    assert ev.metrics["r2"] == pytest.approx(r2_score(y, pred), rel=1e-5)
    assert [p["name"] for p in ev.plots] == ["residuals"]
    assert set(ev.breakdown["per_output"]) == {"target"}


def test_multilabel_metrics_match_sklearn(models):
    from sklearn.metrics import accuracy_score, f1_score, hamming_loss

    y = (VEC > 0).astype(np.float32)
    ev = evaluate_saved_model(
        models["multilabel"],
        {"x": VEC},
        y,
        task=load_task("multilabel", {}),
        label_names=TARGETS,
        latency_runs=5,
    )
    pred = (_serve(models["multilabel"], {"x": VEC})["probabilities"] >= 0.5).astype(int)
    assert ev.metrics["micro_f1"] == pytest.approx(f1_score(y, pred, average="micro"), rel=1e-6)
    macro = f1_score(y, pred, average="macro", zero_division=0)
    assert ev.metrics["macro_f1"] == pytest.approx(macro, rel=1e-6)
    assert ev.metrics["subset_accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert ev.metrics["hamming_loss"] == pytest.approx(hamming_loss(y, pred))
    assert set(ev.breakdown["per_label"]) == set(TARGETS)


def test_classification_metrics_match_sklearn_and_slice_by_an_extra_int_feature(models):
    from sklearn.metrics import f1_score, top_k_accuracy_score

    y = RNG.integers(0, 3, N).astype(np.int64)
    region = RNG.integers(0, 2, N).astype(np.int64)
    ev = evaluate_saved_model(
        models["classification"],
        {"pixels": PIXELS, "region": region},  # the signature takes only `pixels`
        y,
        task=load_task("classification", {"top_k": 2}),
        label_names=CLASSES,
        latency_runs=5,
        slice_features={"region": 5},
    )
    out = _serve(models["classification"], {"pixels": PIXELS})
    probs = out["probabilities"].astype(np.float64)
    assert ev.metrics["accuracy"] == pytest.approx((probs.argmax(1) == y).mean())
    assert ev.metrics["macro_f1"] == pytest.approx(f1_score(y, probs.argmax(1), average="macro"))
    picked = np.clip(probs[np.arange(N), y], 1e-7, 1.0)
    assert ev.metrics["loss"] == pytest.approx(-np.log(picked).mean(), rel=1e-6)
    top2 = top_k_accuracy_score(y, probs, k=2, labels=[0, 1, 2])
    assert ev.metrics["top_k_accuracy"] == pytest.approx(top2)
    assert [p["name"] for p in ev.plots] == ["confusion"]
    assert [s["value"] for s in ev.slices["region"]["slices"]] == ["0", "1"]
    assert set(out["class_name"].astype(str)) <= set(CLASSES)


def test_a_signature_input_the_data_lacks_is_a_model_error_naming_it(models):
    with pytest.raises(ModelError, match=r"\['country'\].*the data has \['age'\]"):
        evaluate_saved_model(
            models["binary"],
            {"age": AGE},
            np.zeros((N, 1), np.float32),
            task=load_task("binary", {}),
            label_names=BINARY_NAMES,
            latency_runs=5,
        )


@pytest.mark.parametrize(
    ("feature", "match"),
    [
        pytest.param("city", r"'city' is not a feature.*\['country', 'age'\]", id="unknown"),
        pytest.param(
            "age", r"'age' is a numeric feature.*categorical features: \['country'\]", id="float"
        ),
    ],
)
def test_an_unsliceable_feature_is_a_config_error_before_the_model_loads(tmp_path, feature, match):
    with pytest.raises(ConfigError, match=match):
        evaluate_saved_model(
            tmp_path / "no-model-here",
            {"country": COUNTRY, "age": AGE},
            np.zeros((N, 1), np.float32),
            task=load_task("binary", {}),
            label_names=BINARY_NAMES,
            schema=TABULAR,
            slice_features={feature: 5},
        )


@dataclass(frozen=True)
class _Splits:
    x_test: dict[str, np.ndarray]
    y_test: np.ndarray
    label_names: tuple[str, ...]
    schema: Schema
    fingerprint: str = "e" * 64


def test_a_champion_with_another_input_contract_is_incomparable_and_fails_change_checks(
    models, tmp_path
):
    run_dir = RunDir(tmp_path / "run").ensure()
    cfg = load_config(
        overrides=[
            "task.type=binary",
            "gate.latency_runs=5",
            "gate.absolute={roc_auc: {min: 0.0}}",
            "gate.change={log_loss: {max_regression: 100}}",
            "gate.slices=[{feature: country, min_examples: 10, absolute: {roc_auc: {min: 0.0}}}]",
        ]
    )
    y = (AGE > 45).astype(np.float32).reshape(-1, 1)
    splits = _Splits({"country": COUNTRY, "age": AGE}, y, BINARY_NAMES, TABULAR)
    result = run_evaluate(
        cfg, run_dir, model=models["binary"], champion=models["classification"], splits=splits
    )
    assert result.champion is None and "pixels" in result.incomparable
    doc = json.loads((run_dir.evaluation / "metrics.json").read_text())
    assert doc["task"]["type"] == "binary" and doc["label_names"] == list(BINARY_NAMES)
    assert "pixels" in doc["champion"]["incomparable"] and "country" in doc["slices"]
    gate = run_gate(cfg, run_dir)
    assert gate.verdict == "failed" and gate.exit_code == 7
    (change,) = [c for c in gate.checks if c.kind == "change"]
    assert not change.passed and "could not be scored" in change.why
    (sliced,) = [c for c in gate.checks if c.kind == "slice"]
    assert sliced.passed and sliced.feature == "country"
    report = run_report(run_dir)
    assert [p.name for p in report.images] == ["roc.png", "pr.png", "calibration.png"]
    md = report.report_md.read_text()
    assert "could not be scored on this test split**, so every change threshold fails" in md
    assert "Slices of `country`" in md and "| roc\\_auc |" not in md and "| roc_auc |" in md
