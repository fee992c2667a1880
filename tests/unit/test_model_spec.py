"""The builder contract for any features: ModelSpec, the default model per feature set, and
what a served request with missing or unseen values does to it."""

from __future__ import annotations

import numpy as np
import pytest

from tfship.config import ModelConfig
from tfship.data.schema import Feature, Kind, Schema
from tfship.errors import ModelError
from tfship.model import ModelSpec, build_model, feed
from tfship.task import load_task

UM = "tests.unit.user_models"


def table_spec(task: str = "binary", rows: int = 50) -> ModelSpec:
    rng = np.random.default_rng(0)
    schema = Schema(
        (
            Feature("a", Kind.NUMERIC, "float32"),
            Feature("b", Kind.NUMERIC, "float32"),
            Feature("country", Kind.CATEGORICAL, "string"),
            Feature("shop", Kind.CATEGORICAL, "int64"),
            Feature("note", Kind.TEXT, "string"),
        ),
        "label",
    )
    a = rng.normal(size=rows).astype(np.float32)
    a[::7] = np.nan  # missing values in the sample: the statistics skip them
    sample = {
        "a": a,
        "b": rng.normal(10, 3, size=rows).astype(np.float32),
        "country": rng.choice(["de", "fr", "us"], rows).astype(object),
        "shop": rng.integers(0, 5, rows).astype(np.int64),
        "note": np.array(["Fast delivery, great!", "late again", "ok"] * rows, object)[:rows],
    }
    labels = ("no", "yes") if task == "binary" else ("target",)
    return ModelSpec(schema, load_task(task), labels, sample)


@pytest.mark.parametrize("task", ["binary", "regression"])
def test_default_model_takes_every_feature_by_name_and_returns_the_task_width(task):
    spec = table_spec(task)
    model = build_model(ModelConfig(), spec)
    assert sorted(t.name.split(":")[0] for t in model.inputs) == sorted(spec.schema.names)
    out = np.asarray(model(feed(spec.schema.names, {k: v[:3] for k, v in spec.sample.items()})))
    assert out.shape == (3, 1) and np.isfinite(out).all()


# Served requests the training data never had: each must give finite logits, not crash.
UNSEEN = [
    ("unseen category", {"country": ["zz"]}),
    ("empty string category", {"country": [""]}),
    ("unseen integer category", {"shop": [999]}),
    ("missing integer category", {"shop": [-1]}),
    ("missing number", {"a": [np.nan]}),
    ("empty text", {"note": [""]}),
    ("unseen words", {"note": ["qwxz zzyzx"]}),
    ("all at once", {"a": [np.nan], "country": [""], "shop": [-1], "note": [""]}),
]


@pytest.mark.parametrize(("what", "override"), UNSEEN, ids=[u[0] for u in UNSEEN])
def test_default_model_serves_unseen_and_missing_values(what, override):
    spec = table_spec()
    model = build_model(ModelConfig(), spec)
    row = {k: v[:1].copy() for k, v in spec.sample.items()}
    for k, v in override.items():
        row[k] = np.asarray(v, dtype=row[k].dtype)
    out = np.asarray(model(feed(spec.schema.names, row)))
    assert np.isfinite(out).all(), what


def test_a_rebuild_from_the_same_sample_has_the_same_vocabularies_and_statistics():
    spec = table_spec()
    first, second = build_model(ModelConfig(), spec), build_model(ModelConfig(), spec)
    for name in ("country_lookup", "shop_lookup", "note_vectorize"):
        assert first.get_layer(name).get_vocabulary() == second.get_layer(name).get_vocabulary()
    # Most frequent first, ties by token: independent of the order rows arrive in.
    assert first.get_layer("note_vectorize").get_vocabulary() == [
        "",
        "[UNK]",
        "again",
        "delivery",
        "fast",
        "great",
        "late",
        "ok",
    ]
    norm = first.get_layer("b_norm")
    assert np.allclose(np.asarray(norm.mean).ravel(), np.nanmean(spec.sample["b"]), atol=1e-4)


def test_text_vocabulary_follows_textvectorization_standardisation():
    from tfship.model.defaults import text_vocabulary

    vocab = text_vocabulary(np.array(["Late, again!", "late", "ON time"], object), 100)
    assert vocab == ["late", "again", "on", "time"]


def test_the_default_model_for_one_image_is_the_small_cnn_on_that_input():
    model = build_model(ModelConfig(), ModelSpec.image((8, 8, 1), 3, name="scan"))
    assert model.name == "small_cnn" and model.inputs[0].name.startswith("scan")


def test_a_spec_builder_gets_the_spec_and_its_options():
    spec = table_spec()
    model = build_model(ModelConfig(builder=f"{UM}:spec_mlp", options={"units": 3}), spec)
    assert model.output_shape == (None, 1)


@pytest.mark.parametrize(
    ("builder", "fragment"),
    [
        (f"{UM}:tiny_mlp", "takes (input_shape, num_classes), the form for one image input"),
        (f"{UM}:spec_wrong_names", "the model's inputs ['x1', 'x2'] are not the data's features"),
    ],
)
def test_a_builder_that_does_not_fit_the_features_is_a_model_error(builder, fragment):
    with pytest.raises(ModelError) as err:
        build_model(ModelConfig(builder=builder), table_spec())
    assert fragment in str(err.value) and builder in str(err.value)


def test_from_splits_hands_the_first_training_rows_as_the_sample():
    from types import SimpleNamespace

    spec = table_spec()
    splits = SimpleNamespace(
        schema=spec.schema,
        label_names=("no", "yes"),
        x_train=dict(spec.sample),
        y_train=np.zeros(50),
    )
    got = ModelSpec.from_splits(load_task("binary"), splits, rows=10)
    assert len(got.sample["a"]) == 10 and got.output_width == 1
    assert list(got.sample["country"]) == list(spec.sample["country"][:10])
