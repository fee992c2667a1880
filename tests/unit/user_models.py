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


# -- broken builders: each must end in a ModelError naming the builder (tests/security) --


def takes_no_arguments():
    return tiny_mlp((8, 8, 1), 10)


def raises(input_shape, num_classes):
    raise RuntimeError("builder exploded")


def recurses(input_shape, num_classes):
    return recurses(input_shape, num_classes)


def calls_exit(input_shape, num_classes):
    import sys

    sys.exit(0)


def returns_none(input_shape, num_classes):
    return None


def wrong_class_count(input_shape, num_classes):
    return tiny_mlp(input_shape, num_classes + 1)


def fixed_input_shape(input_shape, num_classes):
    return tiny_mlp((28, 28, 1), num_classes)


def two_outputs(input_shape, num_classes):
    inputs = keras.Input(shape=tuple(input_shape))
    x = keras.layers.Flatten()(inputs)
    return keras.Model(inputs, [keras.layers.Dense(num_classes)(x), keras.layers.Dense(1)(x)])


def nan_logits(input_shape, num_classes):
    inputs = keras.Input(shape=tuple(input_shape))
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Dense(num_classes)(x)
    return keras.Model(inputs, keras.layers.Lambda(lambda t: t * float("nan"))(x))


def image_logits(input_shape, num_classes):
    inputs = keras.Input(shape=tuple(input_shape))
    return keras.Model(inputs, keras.layers.Dense(num_classes)(inputs))


class _Subclassed(keras.Model):
    def __init__(self, num_classes):
        super().__init__()
        self.flat = keras.layers.Flatten()
        self.out = keras.layers.Dense(num_classes)

    def call(self, x):
        return self.out(self.flat(x / 255.0))


def subclassed(input_shape, num_classes):
    return _Subclassed(num_classes)


def int_logits(input_shape, num_classes):
    inputs = keras.Input(shape=tuple(input_shape))
    x = keras.layers.Dense(num_classes)(keras.layers.Flatten()(inputs))
    return keras.Model(inputs, keras.layers.Lambda(lambda t: keras.ops.cast(t, "int32"))(x))


def returns_layer(input_shape, num_classes):
    return keras.layers.Dense(num_classes)


def generator(input_shape, num_classes):
    yield tiny_mlp(input_shape, num_classes)


def two_inputs(input_shape, num_classes):
    a, b = keras.Input(shape=tuple(input_shape)), keras.Input(shape=tuple(input_shape))
    x = keras.layers.Flatten()(keras.layers.Add()([a, b]))
    return keras.Model([a, b], keras.layers.Dense(num_classes)(x))


class _FailsOnCall(keras.Model):
    def call(self, x):
        raise ValueError("forward pass broke")


def fails_on_call(input_shape, num_classes):
    return _FailsOnCall()


def compiled(input_shape, num_classes):
    model = tiny_mlp(input_shape, num_classes)
    model.compile(optimizer="sgd", loss="mse")
    return model


def spec_mlp(spec, *, units=8):
    """The builder form for any features: named inputs, the task's head."""
    inputs = spec.inputs()
    x = keras.layers.Dense(units, activation="relu")(keras.ops.expand_dims(inputs["b"], -1))
    return keras.Model(inputs, spec.head()(x))


def spec_wrong_names(spec):
    a, b = keras.Input((), name="x1"), keras.Input((), name="x2")
    x = keras.layers.Concatenate()([keras.ops.expand_dims(a, -1), keras.ops.expand_dims(b, -1)])
    return keras.Model({"x1": a, "x2": b}, spec.head()(x))
