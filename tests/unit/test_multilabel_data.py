"""Multilabel labels in a table: "a|b" cells with task.separator; an empty cell is an example
with no labels (a tagger's most common answer), not a missing label."""

from __future__ import annotations

import numpy as np
import pytest

from tfship.config import PipelineConfig
from tfship.data import load_splits
from tfship.errors import DataError


def table(path, rows: int = 60):
    cells = ["a|b", "", "b", "a"]
    lines = ["x,tags"] + [f"{i}.5,{cells[i % 4]}" for i in range(rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


def cfg(path, separator="|"):
    task = {"type": "multilabel", **({"separator": separator} if separator else {})}
    return PipelineConfig.model_validate(
        {"task": task, "data": {"source": "csv", "path": str(path), "label": "tags"}}
    )


def test_an_empty_cell_is_an_example_without_labels(tmp_path):
    splits = load_splits(cfg(table(tmp_path / "t.csv")))
    assert splits.label_names == ("a", "b")
    y = np.concatenate([splits.y_train, splits.y_val, splits.y_test])
    assert len(y) == 60
    counts = {tuple(r) for r in y.astype(int).tolist()}
    assert counts == {(1, 1), (0, 0), (0, 1), (1, 0)}


def test_without_a_separator_an_empty_label_is_still_missing(tmp_path):
    with pytest.raises(DataError, match="have no label"):
        load_splits(cfg(table(tmp_path / "t.csv"), separator=None))
