"""The network: the default small CNN, or a user builder named `module:function` in the config.

A builder is called as `builder(input_shape, num_classes, **model.options)` and returns an
uncompiled `keras.Model` that takes raw pixels in [0, 255] and outputs logits (no softmax: the
training loss and the export signature apply it). `build_model` is the only way tfship calls
a builder: a malformed reference is a ConfigError (exit 3); anything else wrong with the
builder or what it returns is a ModelError (exit 6) naming the builder, never a traceback.
A compiled model is accepted (its compile settings are ignored, with a warning).
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
import re
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np

from tfship.config import ModelConfig
from tfship.errors import ConfigError, ModelError

log = logging.getLogger(__name__)


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


BUILDER_PATTERN = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")
_MAX_DETAIL = 300
_TFSHIP_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
_FIX = "the builder is called as builder(input_shape, num_classes, **model.options)"


def _detail(exc: BaseException) -> str:
    """The exception and where in user code it came from (its traceback is not shown: a
    builder's failure is not a tfship bug; `tfship -v` logs it)."""
    log.debug("model builder failure", exc_info=exc)
    text = f"{type(exc).__name__}: {exc}"
    text = text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 3] + "..."
    frames = [
        f
        for f in traceback.extract_tb(exc.__traceback__)
        if not any(s in f.filename for s in ("site-packages", "dist-packages", "<frozen"))
        and not f.filename.startswith(_TFSHIP_DIR)
    ]
    return f"{text} (at {frames[-1].filename}:{frames[-1].lineno})" if frames else text


def _builder_error(spec: str, what: str, hint: str) -> ModelError:
    return ModelError(f"model.builder '{spec}': {what}", hint=hint)


def resolve_builder(spec: str) -> Callable[..., Any]:
    """The function named by 'module:function'.

    Raises ConfigError for a malformed reference and ModelError (exit 6) when the module cannot
    be imported (missing, or its own code fails: SyntaxError, ImportError, sys.exit, ...) or it
    has no callable of that name.
    """
    if not isinstance(spec, str) or not BUILDER_PATTERN.fullmatch(spec):
        raise ConfigError(
            f"model.builder must be 'package.module:function'. Received: {str(spec)[:120]!r}",
            hint="e.g. model.builder: mypkg.models:build_cnn (one ':' between an importable "
            "module and a function name)",
        )
    module_name, _, func_name = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise _builder_error(
                spec,
                f"module '{module_name}' not found. Received: {_detail(exc)}",
                "install the package that provides it, or put its directory on PYTHONPATH",
            ) from None
        raise _builder_error(
            spec,
            f"importing module '{module_name}' failed: it imports a missing module. "
            f"Received: {_detail(exc)}",
            f"install '{exc.name}' or remove that import from the builder's module",
        ) from None
    except SyntaxError as exc:
        raise _builder_error(
            spec,
            f"module '{module_name}' has a syntax error at {exc.filename}:{exc.lineno}. "
            f"Received: {_detail(exc)}",
            "fix the builder's source file",
        ) from None
    except (Exception, SystemExit) as exc:  # RecursionError and sys.exit() at import included
        raise _builder_error(
            spec,
            f"importing module '{module_name}' failed. Received: {_detail(exc)}",
            "run `python -c 'import " + module_name + "'` to see the error, and fix the module",
        ) from None
    try:
        func = getattr(module, func_name)
    except AttributeError:
        raise _builder_error(
            spec,
            f"module '{module_name}' has no function '{func_name}'",
            f"define `def {func_name}(input_shape, num_classes, **options) -> keras.Model` "
            f"in {getattr(module, '__file__', module_name)}",
        ) from None
    except (Exception, SystemExit) as exc:  # a module-level __getattr__ that fails
        raise _builder_error(
            spec, f"looking up '{func_name}' failed. Received: {_detail(exc)}", "fix the module"
        ) from None
    if not callable(func):
        raise _builder_error(
            spec,
            f"'{func_name}' in module '{module_name}' is not callable; expected a function. "
            f"Received: {type(func).__name__}",
            f"define `def {func_name}(input_shape, num_classes, **options) -> keras.Model`",
        )
    return func


def build_model(
    model_cfg: ModelConfig, input_shape: Sequence[int], num_classes: int
) -> keras.Model:
    """Call the configured builder and check what it returned, or raise ModelError (exit 6).

    The only way tfship calls a builder. Checked: the call itself (a wrong signature, any
    exception, RecursionError, sys.exit), that the result is a keras.Model with one input that
    takes `input_shape` and one output of shape (None, num_classes), and that a sample batch of
    pixels in [0, 255] gives finite logits.
    """
    spec = model_cfg.builder
    func = resolve_builder(spec)
    shape = tuple(int(d) for d in input_shape)
    options = dict(model_cfg.options)
    try:
        inspect.signature(func).bind(shape, num_classes, **options)
    except TypeError as exc:
        raise _builder_error(
            spec,
            f"does not accept these arguments: {exc}. Received: model.options={str(options)[:200]}",
            f"{_FIX}; fix model.options or the builder's signature",
        ) from None
    except ValueError:
        pass  # builtins without a signature: let the call itself decide
    try:
        model = func(shape, num_classes, **options)
    except (Exception, SystemExit) as exc:  # RecursionError and sys.exit() in the builder too
        raise _builder_error(
            spec,
            f"failed to build a model for input {shape} and {num_classes} classes. "
            f"Received: {_detail(exc)}",
            f"{_FIX}; `tfship -v` logs the traceback",
        ) from None
    if not isinstance(model, keras.Model):
        raise _builder_error(
            spec,
            f"returned {type(model).__name__}; expected a keras.Model",
            "return keras.Model(inputs, logits) (or a keras.Sequential) from the builder",
        )
    check_model(model, spec, shape, num_classes)
    if getattr(model, "compiled", False):
        # Accepted: Keras examples often compile in the builder. tfship's loop owns the loss,
        # optimizer and metrics, so say that those settings have no effect.
        log.warning(
            "model.builder '%s' returned a compiled model; its loss, optimizer and metrics are "
            "ignored (tfship's training loop sets them)",
            spec,
        )
    return model


def check_model(model: keras.Model, spec: str, shape: tuple[int, ...], num_classes: int) -> None:
    """ModelError unless `model` maps a batch of `shape` pixels to finite (batch, num_classes)."""
    try:
        inputs = list(getattr(model, "inputs", None) or [])
    except Exception:  # a subclassed model not built yet: the sample batch below decides
        inputs = []
    if len(inputs) > 1:
        raise _builder_error(
            spec,
            f"the model has {len(inputs)} inputs; expected one image input of shape {shape}",
            "build the model on a single keras.Input(shape=input_shape)",
        )
    if inputs:
        declared = tuple(inputs[0].shape)[1:]
        if len(declared) != len(shape) or any(
            d is not None and int(d) != s for d, s in zip(declared, shape, strict=False)
        ):
            raise _builder_error(
                spec,
                f"the model's input shape (None, {', '.join(map(str, declared))}) does not "
                f"match the data's (None, {', '.join(map(str, shape))})",
                "use keras.Input(shape=input_shape) with the input_shape the builder is given",
            )
    # Two rows: black and a gradient of every pixel value, the extremes served in production.
    sample = np.stack(
        [
            np.zeros(shape, np.float32),
            np.linspace(0.0, 255.0, int(np.prod(shape)), dtype=np.float32).reshape(shape),
        ]
    )
    try:
        out = model(sample, training=False)
    except (Exception, SystemExit) as exc:
        raise _builder_error(
            spec,
            f"the model fails on a batch of input shape {sample.shape}. Received: {_detail(exc)}",
            "the model must accept float32 pixels of shape (batch, *input_shape)",
        ) from None
    if isinstance(out, (list, tuple, dict)):
        raise _builder_error(
            spec,
            f"the model has {len(out)} outputs; expected one tensor of logits "
            f"(None, {num_classes})",
            "return keras.Model(inputs, logits) with a single Dense(num_classes) output",
        )
    try:
        raw = np.asarray(out)
    except (Exception, SystemExit) as exc:
        raise _builder_error(
            spec, f"the model's output is not a tensor. Received: {_detail(exc)}", _FIX
        ) from None
    if raw.dtype.kind != "f":
        raise _builder_error(
            spec,
            f"the model outputs dtype {raw.dtype}; expected floating-point logits",
            "end the model with keras.layers.Dense(num_classes) (no cast, argmax or rounding)",
        )
    values = raw.astype(np.float64)
    if values.shape != (len(sample), num_classes):
        got = "(None, " + ", ".join(map(str, values.shape[1:])) + ")"
        raise _builder_error(
            spec,
            f"the model outputs shape {got}; expected (None, {num_classes}): one logit per class",
            "end the model with keras.layers.Dense(num_classes) using the num_classes argument",
        )
    bad = int(np.size(values) - np.isfinite(values).sum())
    if bad:
        raise _builder_error(
            spec,
            f"the freshly built model outputs {bad} NaN/Inf logit(s) on a sample batch of "
            "pixels in [0, 255]; expected finite logits",
            "check initialisers, divisions and logs in the builder (e.g. log of 0)",
        )
