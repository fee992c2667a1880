"""The worked examples' data (examples/*/generate.py) and their pipeline.yaml files.

The generators are the examples' source of truth: they must be deterministic (the committed
CSV is exactly what they write), the data must be learnable but not trivially separable (a
scikit-learn baseline lands between chance and perfect), and each pipeline.yaml must load and
describe the CSV it points at.
"""

from __future__ import annotations

import csv
import importlib.util
import math
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from tfship.config import load_config

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
# example folder -> (committed CSV, project name)
CASES = {
    "fraud": ("transactions.csv", "fraud"),
    "intent": ("utterances.csv", "intent"),
    "regression": ("diabetes.csv", "diabetes"),
}


def _generator(name: str) -> ModuleType:
    path = EXAMPLES / name / "generate.py"
    spec = importlib.util.spec_from_file_location(f"example_{name}_generate", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module", params=sorted(CASES))
def example(request: pytest.FixtureRequest) -> tuple[str, ModuleType]:
    return request.param, _generator(request.param)


def _header(path: Path) -> list[str]:
    with path.open(newline="", encoding="utf-8") as fh:
        return next(csv.reader(fh))


def test_generator_writes_identical_bytes_twice_and_matches_the_committed_csv(
    example: tuple[str, ModuleType], tmp_path: Path
) -> None:
    name, gen = example
    first, second = gen.write(tmp_path / "a.csv"), gen.write(tmp_path / "b.csv")
    committed = EXAMPLES / name / "data" / CASES[name][0]
    assert first.read_bytes() == second.read_bytes()
    assert first.read_bytes() == committed.read_bytes(), (
        f"{committed} differs from what examples/{name}/generate.py writes; rerun the generator"
    )
    assert committed.stat().st_size < 1_000_000  # commit-sized


def test_generator_main_writes_where_told_without_baselines(
    example: tuple[str, ModuleType], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name, gen = example
    out = tmp_path / "nested" / "out.csv"
    assert gen.main(["--out", str(out), "--no-baselines"]) == 0
    assert out.read_bytes() == (EXAMPLES / name / "data" / CASES[name][0]).read_bytes()
    assert str(out) in capsys.readouterr().out


def test_fraud_table_has_rare_positives_missing_cells_and_the_documented_columns() -> None:
    gen = _generator("fraud")
    columns = gen.read()
    label = columns["is_fraud"]
    assert len(label) == gen.ROWS == 6000
    assert set(label.tolist()) == {0, 1}
    assert 0.03 <= label.mean() <= 0.05
    for name in gen.MISSING:
        share = float(sum(math.isnan(v) for v in columns[name]) / len(label))
        assert 0.01 < share < 0.1, f"{name}: {share:.3f} missing"
    assert len(set(columns["country"])) == 6
    assert len(set(columns["merchant_category"])) == 8
    assert set(columns["channel"]) == {"in_store", "online", "mobile"}
    assert _header(EXAMPLES / "fraud/data/transactions.csv") == list(gen.COLUMNS)


def test_fraud_is_learnable_but_not_trivially_separable() -> None:
    scores = _generator("fraud").baselines()
    for name, s in scores.items():
        # Chance: pr_auc = the positive rate (~0.04), roc_auc = 0.5.
        assert 0.1 < s["pr_auc"] < 0.6, (name, s)
        assert 0.65 < s["roc_auc"] < 0.95, (name, s)


def test_intent_classes_are_balanced_and_not_trivially_separable() -> None:
    gen = _generator("intent")
    texts, intents = gen.read()
    assert len(gen.INTENTS) >= 6
    assert 1500 <= len(texts) <= 3000
    assert len(set(texts)) == len(texts)  # no repeated utterance leaks across splits
    counts = [intents.count(i) for i in gen.INTENTS]
    assert min(counts) >= 0.8 * max(counts), counts
    for name, s in gen.baselines().items():
        # Chance is 1/7; label noise keeps every model below 100 %.
        assert 0.5 < s["accuracy"] < 0.99, (name, s)


def test_intent_vocabulary_overlaps_between_intents() -> None:
    gen = _generator("intent")
    texts, intents = gen.read()
    where: dict[str, set[str]] = {}
    for text, intent in zip(texts, intents, strict=True):
        for word in text.replace(",", " ").split():
            where.setdefault(word, set()).add(intent)
    for word in ("card", "account", "money", "balance"):
        assert len(where.get(word, set())) >= 3, (word, where.get(word))


def test_diabetes_csv_is_sklearns_unscaled_data_and_a_model_beats_the_mean() -> None:
    gen = _generator("regression")
    x, y = gen.read()
    assert x.shape == (442, 10) and y.shape == (442,)
    assert set(x[:, gen.FEATURES.index("sex")].tolist()) == {1.0, 2.0}
    assert 19 <= x[:, gen.FEATURES.index("age")].min() < x[:, 0].max() <= 79  # years, unscaled
    scores = gen.baselines()
    assert scores["mean"]["r2"] < 0.05
    assert 0.3 < scores["ridge"]["r2"] < 0.7
    assert scores["ridge"]["rmse"] < scores["mean"]["rmse"] - 10


def test_example_pipeline_loads_and_describes_its_csv(example: tuple[str, ModuleType]) -> None:
    name, _ = example
    cfg = load_config(EXAMPLES / name / "pipeline.yaml", env={})
    csv_name, project = CASES[name]
    assert cfg.project.name == cfg.project.model_name == project
    assert cfg.data.source == "csv"
    assert cfg.data.path == Path(f"examples/{name}/data/{csv_name}")
    header = _header(ROOT / cfg.data.path)
    assert cfg.data.label in header
    assert cfg.data.features and set(cfg.data.features) <= set(header) - {cfg.data.label}
    # Kept apart from the digits demo (runs/, models/) and from each other.
    assert cfg.run.runs_dir == Path(f"runs/examples/{project}")
    assert cfg.serving.model_repository == f"runs/examples/{project}/models"
    assert cfg.gate.absolute, "an example without gate thresholds would fail the gate"
    assert set(cfg.gate.absolute) <= set(cfg.task_obj.metric_directions())


def test_example_tasks_are_the_documented_ones() -> None:
    types = {
        name: load_config(EXAMPLES / name / "pipeline.yaml", env={}).task_obj.type for name in CASES
    }
    assert types == {"fraud": "binary", "intent": "classification", "regression": "regression"}
    fraud = load_config(EXAMPLES / "fraud/pipeline.yaml", env={})
    assert fraud.task_obj.class_weight == "balanced"
    assert [s.feature for s in fraud.gate.slices] == ["country"]
    assert fraud.data.features is not None
    assert str(fraud.data.features["country"]) == "categorical"


def test_fraud_splits_keep_missing_cells_as_nan_and_hold_positives_in_every_split() -> None:
    from tfship.data import load_splits
    from tfship.data.schema import Kind

    cfg = load_config(EXAMPLES / "fraud/pipeline.yaml", env={})
    splits = load_splits(cfg)
    assert splits.label_names == ("0", "1")
    assert {f.name: f.kind for f in splits.schema.features}["country"] == Kind.CATEGORICAL
    train = splits.x_train
    assert train["distance_km"].dtype.name == "float32"
    assert 0 < int(np.isnan(train["distance_km"]).sum()) < len(splits.y_train) // 10
    assert len(splits.y_test) == 1500  # test_fraction 0.25 of 6000
    for y in (splits.y_train, splits.y_val, splits.y_test):
        assert 0.03 <= float(y.mean()) <= 0.05  # stratified: ~4 % fraud everywhere


def test_intent_and_diabetes_splits_have_the_declared_kinds() -> None:
    from tfship.data import load_splits

    intent = load_splits(load_config(EXAMPLES / "intent/pipeline.yaml", env={}))
    assert [(f.name, str(f.kind)) for f in intent.schema.features] == [("text", "text")]
    assert len(intent.label_names) == 7
    diabetes = load_splits(load_config(EXAMPLES / "regression/pipeline.yaml", env={}))
    sex = diabetes.schema["sex"]
    assert (str(sex.kind), sex.dtype) == ("categorical", "int64")
    assert set(diabetes.x_train["sex"].tolist()) == {1, 2}
    assert diabetes.y_train.shape[1] == 1 and float(diabetes.y_train.min()) >= 25.0
