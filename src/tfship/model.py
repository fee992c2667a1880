"""The network: the default small CNN, or a user builder named `module:function` in the config.

A builder is called as `builder(input_shape, num_classes, **model.options)` and returns an
uncompiled `keras.Model` that takes raw pixels in [0, 255] and outputs logits (no softmax: the
training loss and the export signature apply it).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Sequence
from typing import Any

import keras

from tfship.config import ModelConfig
from tfship.errors import ConfigError, ModelError


def small_cnn(
    input_shape: Sequence[int],
    num_classes: int,
    *,
    filters: Sequence[int] = (32, 64),
    dense_units: int = 128,
    dropout: float = 0.25,
) -> keras.Model:
    """Two 3x3 conv layers, one max-pool, one dense layer: ≥ 0.95 test accuracy on digits.

    Args:
        input_shape: (height, width, channels) of the raw images.
        num_classes: number of output logits.
        filters: channels of each conv layer (one layer per entry).
        dense_units: width of the hidden dense layer.
        dropout: rate after the pooling and the dense layer (0 disables).
    """
    inputs = keras.Input(shape=tuple(input_shape), name="pixels")
    x = keras.layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)
    for i, f in enumerate(filters):
        x = keras.layers.Conv2D(f, 3, padding="same", activation="relu", name=f"conv{i + 1}")(x)
    if min(input_shape[0], input_shape[1]) >= 4:
        x = keras.layers.MaxPooling2D(2, name="pool")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name="dropout1")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(dense_units, activation="relu", name="dense")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name="dropout2")(x)
    logits = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, logits, name="small_cnn")


def resolve_builder(spec: str) -> Callable[..., Any]:
    """The function named by 'module:function', or a ConfigError saying what is missing."""
    module_name, _, func_name = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ConfigError(
            f"model.builder '{spec}': module '{module_name}' cannot be imported ({exc})",
            hint="install the package that provides it, or put its directory on PYTHONPATH; "
            "expected 'package.module:function'",
        ) from None
    func = getattr(module, func_name, None)
    if func is None or not callable(func):
        raise ConfigError(
            f"model.builder '{spec}': module '{module_name}' has no function '{func_name}'",
            hint=f"define `def {func_name}(input_shape, num_classes, **options) -> keras.Model` "
            f"in {getattr(module, '__file__', module_name)}",
        )
    return func


def build_model(
    model_cfg: ModelConfig, input_shape: Sequence[int], num_classes: int
) -> keras.Model:
    """Call the configured builder and check it returned a keras.Model."""
    func = resolve_builder(model_cfg.builder)
    options = dict(model_cfg.options)
    try:
        inspect.signature(func).bind(tuple(input_shape), num_classes, **options)
    except TypeError as exc:
        raise ConfigError(
            f"model.builder '{model_cfg.builder}' does not accept these arguments: {exc}; "
            f"received model.options={options}",
            hint="the builder is called as builder(input_shape, num_classes, **model.options); "
            "fix model.options or the builder's signature",
        ) from None
    except ValueError:
        pass  # builtins without a signature: let the call itself decide
    try:
        model = func(tuple(input_shape), num_classes, **options)
    except (TypeError, ValueError) as exc:
        raise ModelError(
            f"model.builder '{model_cfg.builder}' failed to build a model for input "
            f"{tuple(input_shape)} and {num_classes} classes: {exc}"
        ) from exc
    if not isinstance(model, keras.Model):
        raise ConfigError(
            f"model.builder '{model_cfg.builder}' returned {type(model).__name__}; "
            "expected a keras.Model",
            hint="return keras.Model(inputs, logits) (or a keras.Sequential) from the builder",
        )
    return model
