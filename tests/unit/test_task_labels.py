"""Label encoding per task: what raw labels become, and what each kind of bad label says."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tfship.errors import ConfigError, DataError
from tfship.task import load_task

GOOD = [
    pytest.param(
        "classification",
        {},
        [3, 1, "2", 1.0, 10],
        ("1", "2", "3", "10"),
        [2, 0, 1, 0, 3],
        id="classification_ints_strings_and_floats_of_one_value_are_one_class_in_numeric_order",
    ),
    pytest.param(
        "classification",
        {},
        [2, "b", 10, "a"],
        ("2", "10", "a", "b"),
        [0, 3, 1, 2],
        id="classification_puts_integer_names_before_text_names",
    ),
    pytest.param(
        "classification",
        {},
        [b"yes", b"no", b"yes"],
        ("no", "yes"),
        [1, 0, 1],
        id="classification_decodes_bytes_labels_from_tfrecords",
    ),
    pytest.param(
        "classification",
        {},
        np.array([[0], [1], [0]]),
        ("0", "1"),
        [0, 1, 0],
        id="classification_accepts_a_column_vector",
    ),
    pytest.param(
        "binary",
        {},
        [0, 1, 1],
        ("0", "1"),
        [[0.0], [1.0], [1.0]],
        id="binary_zero_one_labels_make_one_positive",
    ),
    pytest.param(
        "binary",
        {},
        [True, False],
        ("False", "True"),
        [[1.0], [0.0]],
        id="binary_booleans_make_true_positive",
    ),
    pytest.param(
        "binary",
        {},
        ["spam", "ham", "spam"],
        ("ham", "spam"),
        [[1.0], [0.0], [1.0]],
        id="binary_text_labels_make_the_second_alphabetically_positive",
    ),
    pytest.param(
        "binary",
        {"positive_label": "ham"},
        ["spam", "ham"],
        ("spam", "ham"),
        [[0.0], [1.0]],
        id="binary_positive_label_overrides_the_order",
    ),
    pytest.param(
        "multilabel",
        {},
        [["b", "a"], [], ("c",), {"a"}],
        ("a", "b", "c"),
        [[1, 1, 0], [0, 0, 0], [0, 0, 1], [1, 0, 0]],
        id="multilabel_lists_tuples_and_sets_of_labels_become_multi_hot",
    ),
    pytest.param(
        "multilabel",
        {"separator": "|"},
        ["a|b", "c", ""],
        ("a", "b", "c"),
        [[1, 1, 0], [0, 0, 1], [0, 0, 0]],
        id="multilabel_splits_strings_on_the_separator",
    ),
    pytest.param(
        "multilabel",
        {},
        ["a|b", ["c"]],
        ("a|b", "c"),
        [[1, 0], [0, 1]],
        id="multilabel_without_separator_takes_a_string_as_one_label",
    ),
    pytest.param(
        "multilabel",
        {},
        np.array([[1, 0, 1], [0, 1, 0]]),
        ("0", "1", "2"),
        [[1, 0, 1], [0, 1, 0]],
        id="multilabel_takes_a_2d_array_as_multi_hot_named_by_column",
    ),
    pytest.param(
        "multilabel",
        {},
        [[1, 2], [2]],
        ("1", "2"),
        [[1, 1], [0, 1]],
        id="multilabel_reads_a_list_of_lists_as_label_values_not_multi_hot",
    ),
    pytest.param(
        "regression",
        {},
        [1, 2.5, "3"],
        ("target",),
        [[1.0], [2.5], [3.0]],
        id="regression_numbers_and_numeric_strings_are_one_target",
    ),
    pytest.param(
        "regression",
        {},
        [[1, 2], [3, 4]],
        ("target_0", "target_1"),
        [[1.0, 2.0], [3.0, 4.0]],
        id="regression_rows_of_numbers_are_several_targets",
    ),
]


@pytest.mark.parametrize(("task", "options", "raw", "names", "encoded"), GOOD)
def test_labels_encode_to_the_tasks_array(
    task: str, options: dict, raw: Any, names: tuple, encoded: list
) -> None:
    y, inferred = load_task(task, options).encode(raw)
    assert inferred == names
    np.testing.assert_array_equal(y, np.asarray(encoded))


@pytest.mark.parametrize(
    ("task", "dtype", "shape"),
    [
        ("classification", np.int64, (3,)),
        ("binary", np.float32, (3, 1)),
        ("multilabel", np.float32, (3, 2)),
        ("regression", np.float32, (3, 1)),
    ],
)
def test_encoded_labels_have_the_dtype_and_shape_training_feeds(
    task: str, dtype: type, shape: tuple
) -> None:
    raw = {"multilabel": [["a"], ["b"], ["a", "b"]]}.get(task, [0, 1, 1])
    y, _ = load_task(task).encode(raw)
    assert (y.dtype, y.shape) == (dtype, shape)


BAD = [
    pytest.param("classification", {}, [1, None, 2], None, "no label (row 1)", id="c_missing"),
    pytest.param("classification", {}, [1, float("nan")], None, "no label", id="c_nan"),
    pytest.param("classification", {}, [[1, 2], 3], None, "multilabel", id="c_label_list"),
    pytest.param("classification", {}, np.zeros((3, 2)), None, "shape [3, 2]", id="c_one_hot"),
    pytest.param("classification", {}, ["a", "a"], None, "at least 2", id="c_one_class"),
    pytest.param("classification", {}, "abc", None, "sequence", id="c_string_not_rows"),
    pytest.param("classification", {}, ["a", "c"], ("a", "b"), "row 1", id="c_unknown_label"),
    pytest.param("classification", {}, [b"\xff", b"a"], None, "not UTF-8", id="c_bad_bytes"),
    pytest.param("binary", {}, ["a", "b", "c"], None, "exactly 2", id="b_three_classes"),
    pytest.param("binary", {}, ["a", "a"], None, "exactly 2", id="b_one_class"),
    pytest.param("binary", {"positive_label": "x"}, ["a", "b"], None, "not among", id="b_pos"),
    pytest.param("binary", {}, ["a"], ("a", "b", "c"), "2 label names", id="b_three_names"),
    pytest.param("multilabel", {}, [None, ["a"]], None, "give [] for none", id="m_missing"),
    pytest.param("multilabel", {}, [[["a"]], ["b"]], None, "nested", id="m_nested"),
    pytest.param("multilabel", {}, np.array([[2, 0]]), None, "0 or 1", id="m_not_multi_hot"),
    pytest.param("multilabel", {}, [["a"], ["a"]], None, "at least 2", id="m_one_label"),
    pytest.param("multilabel", {}, np.eye(3), ("a", "b"), "3 columns", id="m_width"),
    pytest.param("multilabel", {}, [["a", "z"]], ("a", "b"), "not among", id="m_unknown"),
    pytest.param("regression", {}, ["a", 1], None, "must be numbers; row 0", id="r_text"),
    pytest.param("regression", {}, [[1, 2], [3]], None, "same number", id="r_ragged"),
    pytest.param("regression", {}, [1, None], None, "not finite (row 1)", id="r_missing"),
    pytest.param("regression", {}, [1, float("inf")], None, "not finite", id="r_inf"),
    pytest.param("regression", {}, [1, 2], ("a", "b"), "expected 2", id="r_width"),
    pytest.param("regression", {}, [[], []], None, "no target value", id="r_empty_rows"),
]


@pytest.mark.parametrize(("task", "options", "raw", "names", "fragment"), BAD)
def test_bad_labels_raise_a_data_error_naming_the_problem(
    task: str, options: dict, raw: Any, names: tuple | None, fragment: str
) -> None:
    with pytest.raises(DataError) as err:
        load_task(task, options).encode(raw, names)
    assert fragment in str(err.value)


def test_a_long_list_of_bad_rows_names_five_and_counts_the_rest() -> None:
    with pytest.raises(DataError, match=r"rows 0, 1, 2, 3, 4 and 3 more"):
        load_task("classification").encode([None] * 8 + [1, 2])


@pytest.mark.parametrize(
    ("task", "raw", "expected"),
    [
        ("classification", [2, 0, 1], [2, 0, 1]),
        ("binary", [1, 0, 1], [1, 0, 1]),
        ("multilabel", [["a"], ["b"], ["a"]], None),
        ("regression", [1.0, 2.0, 3.0], None),
    ],
)
def test_stratification_applies_to_one_label_tasks_only(
    task: str, raw: list, expected: list | None
) -> None:
    t = load_task(task)
    key = t.stratify_key(t.encode(raw)[0])
    assert key is None if expected is None else key.tolist() == expected


@pytest.mark.parametrize(
    ("task", "class_weight", "y", "names", "expected"),
    [
        pytest.param(
            "classification",
            "balanced",
            [0, 0, 0, 1],
            ("a", "b", "c"),
            [4 / (2 * 3), 4 / (2 * 1), 1.0],
            id="balanced_is_n_over_classes_times_count_and_an_absent_class_weighs_one",
        ),
        pytest.param(
            "binary",
            {"1": 3.0},
            [[0.0], [1.0]],
            ("0", "1"),
            [1.0, 3.0],
            id="a_mapping_weighs_the_named_labels_and_leaves_the_rest_at_one",
        ),
        pytest.param(
            "classification",
            {1: 2.0},
            [0, 1],
            ("0", "1"),
            [1.0, 2.0],
            id="a_mapping_keyed_by_numbers_names_the_labels_by_their_text",
        ),
        pytest.param(
            "multilabel",
            "balanced",
            [[1, 0], [1, 0], [0, 0], [1, 1]],
            ("a", "b"),
            [1 / 3, 3.0],
            id="multilabel_balanced_weighs_positives_by_negatives_over_positives",
        ),
        pytest.param(
            "classification", None, [0, 1], ("a", "b"), None, id="no_class_weight_is_unweighted"
        ),
    ],
)
def test_class_weights_resolve_to_one_weight_per_label(
    task: str, class_weight: Any, y: list, names: tuple, expected: list | None
) -> None:
    weights = load_task(task, {"class_weight": class_weight}).class_weights(np.asarray(y), names)
    if expected is None:
        assert weights is None
    else:
        np.testing.assert_allclose(weights, expected)


def test_class_weight_naming_an_unknown_label_is_a_config_error() -> None:
    task = load_task("classification", {"class_weight": {"zebra": 2.0}})
    with pytest.raises(ConfigError, match="zebra"):
        task.class_weights(np.asarray([0, 1]), ("cat", "dog"))
