"""Model builders named as `tests.unit.user_models:<function>` in model.builder by the tests."""

from __future__ import annotations

import keras


def tiny_mlp(input_shape, num_classes, *, units=8):
    inputs = keras.Input(shape=tuple(input_shape))
    x = keras.layers.Rescaling(1.0 / 255.0)(inputs)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(units, activation="relu")(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes)(x))


def not_a_model(input_shape, num_classes):
    return {"layers": 3}


NOT_CALLABLE = 42
