from __future__ import annotations

import keras
import numpy as np
import pytest

from tfship.config import ModelConfig
from tfship.errors import ModelError
from tfship.model import ModelSpec, build_model, small_cnn


def test_small_cnn_rescales_raw_pixels_first_and_outputs_logits():
    model = small_cnn((8, 8, 1), 10)
    first = next(layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer))
    assert isinstance(first, keras.layers.Rescaling)
    assert first.scale == pytest.approx(1 / 255)
    assert model.output_shape == (None, 10)
    assert model.layers[-1].activation is keras.activations.linear
    # Logits, not probabilities: rows of an untrained net need not sum to one.
    out = model.predict(np.full((4, 8, 8, 1), 255.0, np.float32), verbose=0)
    assert not np.allclose(out.sum(axis=1), 1.0)


def test_small_cnn_options_change_the_architecture():
    model = small_cnn((8, 8, 1), 3, filters=(4,), dense_units=5, dropout=0.0)
    names = [layer.name for layer in model.layers]
    assert "conv2" not in names and "dropout1" not in names
    assert model.get_layer("dense").units == 5
    assert model.output_shape == (None, 3)


def test_build_model_calls_a_user_builder_named_module_colon_function():
    cfg = ModelConfig(builder="tests.unit.user_models:tiny_mlp", options={"units": 3})
    model = build_model(cfg, ModelSpec.image((8, 8, 1), 4))
    assert isinstance(model, keras.Model)
    assert model.output_shape == (None, 4)
    assert model.layers[-2].units == 3


@pytest.mark.parametrize(
    ("builder", "options", "fragment"),
    [
        ("tests.unit.no_such_module:build", {}, "module 'tests.unit.no_such_module' not found"),
        ("tests.unit.user_models:missing", {}, "has no function 'missing'"),
        ("tests.unit.user_models:NOT_CALLABLE", {}, "'NOT_CALLABLE' in module"),
        ("tests.unit.user_models:not_a_model", {}, "returned dict; expected a keras.Model"),
        ("tests.unit.user_models:tiny_mlp", {"widht": 3}, "does not accept these arguments"),
    ],
)
def test_build_model_reports_a_bad_builder_as_model_error(builder, options, fragment):
    with pytest.raises(ModelError) as err:
        build_model(ModelConfig(builder=builder, options=options), ModelSpec.image((8, 8, 1), 10))
    assert fragment in str(err.value)
    assert builder in str(err.value)


@pytest.mark.slow
def test_default_small_cnn_reaches_95_percent_test_accuracy_on_digits(tmp_path):
    from tfship.checkpoints import restore_for_export
    from tfship.config import PipelineConfig
    from tfship.data import load_splits
    from tfship.rundir import RunDir
    from tfship.train import run_train

    cfg = PipelineConfig.model_validate({"train": {"progress": "none"}})  # the demo defaults
    splits = load_splits(cfg)
    run_train(cfg, RunDir(tmp_path), splits=splits)
    model, _ = restore_for_export(cfg, RunDir(tmp_path), which="best", splits=splits)
    predicted = model.predict(splits.x_test["pixels"], verbose=0).argmax(axis=-1)
    assert float((predicted == splits.y_test).mean()) >= 0.95


def test_build_model_accepts_a_subclassed_model_that_builds_on_first_call():
    cfg = ModelConfig(builder="tests.unit.user_models:subclassed")
    model = build_model(cfg, ModelSpec.image((8, 8, 1), 4))
    assert model(np.zeros((1, 8, 8, 1), np.float32)).shape == (1, 4)
