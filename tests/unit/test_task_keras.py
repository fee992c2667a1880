"""The TensorFlow side of each task on tiny tensors: head, loss, step sums, serving outputs."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from tfship.task import EXAMPLE_INPUT, load_task  # noqa: E402

LOGITS = np.array([[2.0, -1.0, 0.5], [-0.5, 1.5, 0.0], [0.2, 0.1, -2.0], [1.0, 1.0, 3.0]])
# task -> (options, label names, encoded labels, logits)
CASES: dict[str, tuple[dict, tuple, np.ndarray, np.ndarray]] = {
    "classification": ({}, ("a", "b", "c"), np.array([0, 1, 1, 2]), LOGITS),
    "binary": ({}, ("no", "yes"), np.array([[1.0], [1.0], [0.0], [1.0]]), LOGITS[:, :1]),
    "multilabel": (
        {},
        ("a", "b", "c"),
        np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1]], dtype=np.float32),
        LOGITS,
    ),
    "regression": (
        {},
        ("x", "y"),
        np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5], [2.0, 2.0]]),
        LOGITS[:, :2],
    ),
}


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-z))


def _reference_loss(task: str, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    if task == "classification":
        log_softmax = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        return -log_softmax[np.arange(len(y)), y]
    if task == "regression":
        return ((z - y) ** 2).mean(axis=1)
    p = _sigmoid(z)
    return -(y * np.log(p) + (1 - y) * np.log(1 - p)).mean(axis=1)


@pytest.mark.parametrize("task", CASES)
def test_the_head_and_default_loss_give_one_loss_per_example(task: str) -> None:
    options, names, y, logits = CASES[task]
    t = load_task(task, options)
    inputs = keras.Input((5,))
    model = keras.Model(inputs, t.head(names)(inputs))
    out = model(np.ones((4, 5), np.float32))
    assert tuple(out.shape) == (4, t.output_width(names))
    loss = t.per_example_loss(tf.constant(y), tf.constant(logits, tf.float32)).numpy()
    np.testing.assert_allclose(loss, _reference_loss(task, y, logits), rtol=1e-5)


@pytest.mark.parametrize(
    ("task", "loss"),
    [
        ("classification", "categorical_focal_crossentropy"),
        ("binary", "binary_focal_crossentropy"),
        ("multilabel", "binary_focal_crossentropy"),
        ("regression", "mean_absolute_error"),
        ("regression", "huber"),
        ("regression", "log_cosh"),
    ],
)
def test_every_configurable_loss_gives_one_finite_loss_per_example(task: str, loss: str) -> None:
    _, _, y, logits = CASES[task]
    value = load_task(task, {"loss": loss}).per_example_loss(
        tf.constant(y), tf.constant(logits, tf.float32)
    )
    assert value.shape == (4,) and np.isfinite(value.numpy()).all()


@pytest.mark.parametrize("task", ["classification", "binary"])
def test_class_weights_multiply_each_examples_loss_by_its_class_weight(task: str) -> None:
    _, names, y, logits = CASES[task]
    t = load_task(task, {"class_weight": {names[1]: 3.0}})
    weights = t.class_weights(y, names)
    plain = t.per_example_loss(tf.constant(y), tf.constant(logits, tf.float32)).numpy()
    weighted = t.per_example_loss(tf.constant(y), tf.constant(logits, tf.float32), weights)
    ids = y.reshape(-1).astype(int)
    np.testing.assert_allclose(weighted.numpy(), plain * weights[ids], rtol=1e-6)


def test_multilabel_class_weights_weigh_each_labels_positive_term() -> None:
    _, names, y, logits = CASES["multilabel"]
    t = load_task("multilabel", {"class_weight": {"b": 4.0}})
    w = t.class_weights(y, names)
    got = t.per_example_loss(tf.constant(y), tf.constant(logits, tf.float32), w).numpy()
    p = _sigmoid(logits)
    expected = -(w * y * np.log(p) + (1 - y) * np.log(1 - p)).mean(axis=1)
    np.testing.assert_allclose(got, expected, rtol=1e-5)


# Summaries from the step sums, for the CASES above. Threshold 0.5 is logit 0, and a
# probability at the threshold is predicted positive.
SUMMARIES = {
    "classification": {"accuracy": 3 / 4},  # argmax [0, 1, 0, 2]
    # predicted [1, 0, 1, 1] for [1, 1, 0, 1]: tp 2, fp 1, fn 1
    "binary": {"accuracy": 2 / 4, "precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3},
    # predicted [[1,0,1],[0,1,1],[1,1,0],[1,1,1]]: rows 0 and 2 exact; tp 6, fp 3, fn 0
    "multilabel": {"subset_accuracy": 2 / 4, "micro_f1": 12 / 15, "hamming_loss": 3 / 12},
    "regression": {
        "rmse": float(np.sqrt(((LOGITS[:, :2] - CASES["regression"][2]) ** 2).mean())),
        "mae": float(np.abs(LOGITS[:, :2] - CASES["regression"][2]).mean()),
    },
}


@pytest.mark.parametrize("task", CASES)
def test_step_sums_summarize_to_the_training_metrics(task: str) -> None:
    options, _, y, logits = CASES[task]
    t = load_task(task, options)
    # Two half batches summed, as the loop all-reduces replicas and adds steps.
    sums = sum(
        t.step_statistics(tf.constant(y[s]), tf.constant(logits[s], tf.float32)).numpy()
        for s in (slice(0, 2), slice(2, 4))
    )
    assert len(sums) == len(t.STATISTICS)
    assert t.summarize(sums, 4) == pytest.approx(SUMMARIES[task])
    assert set(SUMMARIES[task]) == set(t.SUMMARY)


SERVING = {
    "classification": {"probabilities": tf.float32, "class_id": tf.int64, "class_name": tf.string},
    "binary": {"probability": tf.float32, "class_id": tf.int64},
    "multilabel": {"probabilities": tf.float32, "labels": tf.string},
    "regression": {"prediction": tf.float32},
}


@pytest.mark.parametrize("task", CASES)
def test_serving_outputs_are_named_as_the_issue_lists_and_trace_for_any_batch(task: str) -> None:
    _, names, _, logits = CASES[task]
    t = load_task(task)
    serve = tf.function(lambda z: t.serving_outputs(z, names))
    concrete = serve.get_concrete_function(tf.TensorSpec([None, logits.shape[1]], tf.float32))
    out = concrete(tf.constant(logits, tf.float32))
    assert {k: v.dtype for k, v in out.items()} == SERVING[task]
    np.testing.assert_allclose(out[t.score_output].numpy(), t.scores_from_logits(logits), rtol=1e-5)


@pytest.mark.parametrize(
    ("task", "output", "expected"),
    [
        ("classification", "class_name", [b"a", b"b", b"a", b"c"]),
        ("binary", "class_id", [1, 0, 1, 1]),
        (
            "multilabel",
            "labels",  # row 1's logit 0 for c is probability 0.5: at the threshold, predicted
            [[b"a", b"", b"c"], [b"", b"b", b"c"], [b"a", b"b", b""], [b"a", b"b", b"c"]],
        ),
    ],
)
def test_serving_outputs_name_the_predicted_labels(task: str, output: str, expected: list) -> None:
    _, names, _, logits = CASES[task]
    out = load_task(task).serving_outputs(tf.constant(logits, tf.float32), names)
    assert out[output].numpy().tolist() == expected


def test_one_target_regression_serves_one_value_per_example() -> None:
    out = load_task("regression").serving_outputs(tf.constant([[1.5], [2.5]]), ("price",))
    assert out["prediction"].shape == (2,)


@pytest.mark.parametrize(
    ("task", "names", "endpoints"),
    [
        ("classification", ("a", "b", "c"), {"classify": {"scores": (4, 3), "classes": (4, 3)}}),
        (
            "binary",
            ("no", "yes"),
            {"classify": {"scores": (4, 2), "classes": (4, 2)}, "regress": {"outputs": (4,)}},
        ),
        ("multilabel", ("a", "b", "c"), {}),
        ("regression", ("price",), {"regress": {"outputs": (4,)}}),
        ("regression", ("x", "y"), {}),
    ],
)
def test_tf_example_endpoints_return_what_classify_and_regress_read(
    task: str, names: tuple, endpoints: dict
) -> None:
    t = load_task(task)
    logits = tf.constant(LOGITS[:, : t.output_width(names)], tf.float32)
    got = {
        method: {k: tuple(v.shape) for k, v in t.example_outputs(method, logits, names).items()}
        for method in t.example_methods(names)
    }
    assert got == endpoints


def test_binary_classify_scores_are_negative_then_positive_with_their_names() -> None:
    out = load_task("binary").example_outputs("classify", tf.constant([[0.0]]), ("no", "yes"))
    assert out["classes"].numpy().tolist() == [[b"no", b"yes"]]
    np.testing.assert_allclose(out["scores"].numpy(), [[0.5, 0.5]])


def test_an_export_archive_endpoint_over_tf_example_serves_the_tasks_outputs(
    tmp_path: Any,
) -> None:
    t, names = load_task("binary"), ("no", "yes")
    inputs = keras.Input((2,), name="x")
    model = keras.Model(inputs, t.head(names)(inputs))
    spec = {"x": tf.io.FixedLenFeature([2], tf.float32)}

    def classify(serialized: Any) -> dict[str, Any]:
        features = tf.io.parse_example(serialized, spec)
        return t.example_outputs("classify", model(features["x"]), names)

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "classify", classify, input_signature=[tf.TensorSpec([None], tf.string, name=EXAMPLE_INPUT)]
    )
    archive.write_out(str(tmp_path / "1"), verbose=False)
    signature = tf.saved_model.load(str(tmp_path / "1")).signatures["classify"]
    example = tf.train.Example(
        features=tf.train.Features(
            feature={"x": tf.train.Feature(float_list=tf.train.FloatList(value=[1.0, 2.0]))}
        )
    )
    assert list(signature.structured_input_signature[1]) == [EXAMPLE_INPUT]
    out = signature(**{EXAMPLE_INPUT: tf.constant([example.SerializeToString()])})
    assert set(out) == {"scores", "classes"} and out["scores"].shape == (1, 2)
