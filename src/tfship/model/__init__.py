"""The network: a user builder named `module:function` in the config, or a default per task.

A builder is called as `builder(spec, **model.options)` with a `ModelSpec` (the schema, the
task, the label names, a training sample for `adapt()`) and returns an uncompiled
`keras.Model` over the named raw features that outputs logits (no softmax/sigmoid: the task's
loss and serving outputs apply it). The older form `builder(input_shape, num_classes,
**options)` still works when the data is one image. `build_model` is the only way tfship calls
a builder: a malformed reference is a ConfigError (exit 3); anything else wrong with the
builder or what it returns is a ModelError (exit 6) naming the builder, never a traceback.
A compiled model is accepted (its compile settings are ignored, with a warning).
"""

from __future__ import annotations

import inspect
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import keras
import numpy as np

from tfship.config import ModelConfig
from tfship.errors import ConfigError, ModelError
from tfship.model.defaults import default_model, small_cnn
from tfship.model.spec import SAMPLE_ROWS, ModelSpec
from tfship.usercode import describe, import_module

__all__ = [
    "SAMPLE_ROWS",
    "ModelSpec",
    "build_model",
    "default_model",
    "feed",
    "resolve_builder",
    "small_cnn",
]

DEFAULT_BUILDER = "tfship.model:default_model"

log = logging.getLogger(__name__)


BUILDER_PATTERN = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")
_FIX = "the builder is called as builder(spec, **model.options) (tfship.model.ModelSpec)"


def _detail(exc: BaseException) -> str:
    return describe(exc, "model builder")


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
    module = import_module(
        module_name, lambda what, hint: _builder_error(spec, what, hint), "the builder's"
    )
    try:
        func = getattr(module, func_name)
    except AttributeError:
        raise _builder_error(
            spec,
            f"module '{module_name}' has no function '{func_name}'",
            f"define `def {func_name}(spec, **options) -> keras.Model` "
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
            f"define `def {func_name}(spec, **options) -> keras.Model`",
        )
    return func


def _legacy_form(func: Callable[..., Any]) -> bool:
    """True for `builder(input_shape, num_classes, ...)`, False for `builder(spec, ...)`."""
    try:
        params = list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError):
        return False
    required = [
        p
        for p in params
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]
    return len(required) >= 2 and required[0].name != "spec"


def feed(names: Sequence[str], x: Mapping[str, Any]) -> Any:
    """What a model is called with: the one feature's tensor, or the dict of named features."""
    return x[names[0]] if len(names) == 1 else {n: x[n] for n in names}


def build_model(model_cfg: ModelConfig, spec: ModelSpec) -> keras.Model:
    """Call the configured builder (default: `default_model`) and check what it returned, or
    raise ModelError (exit 6).

    The only way tfship calls a builder. Checked: the call itself (a wrong signature, any
    exception, RecursionError, sys.exit), that the result is a keras.Model whose inputs are the
    schema's features (by name when there are several) and that two training rows give finite
    logits of shape (2, spec.output_width).
    """
    name = model_cfg.builder or DEFAULT_BUILDER
    func = resolve_builder(name)
    options = dict(model_cfg.options)
    legacy = _legacy_form(func)
    if legacy:
        if spec.input_shape is None:
            raise _builder_error(
                name,
                f"takes (input_shape, num_classes), the form for one image input; the data has "
                f"features {[f'{f.name}:{f.kind}' for f in spec.schema.features][:20]}",
                "write the builder as builder(spec, **options) and use spec.inputs() / "
                "spec.head() (tfship.model.ModelSpec)",
            )
        args: tuple[Any, ...] = (tuple(spec.input_shape), spec.output_width)
    else:
        args = (spec,)
    try:
        inspect.signature(func).bind(*args, **options)
    except TypeError as exc:
        raise _builder_error(
            name,
            f"does not accept these arguments: {exc}. Received: model.options={str(options)[:200]}",
            f"{_FIX}; fix model.options or the builder's signature",
        ) from None
    except ValueError:
        pass  # builtins without a signature: let the call itself decide
    try:
        model = func(*args, **options)
    except (Exception, SystemExit) as exc:  # RecursionError and sys.exit() in the builder too
        what = (
            f"input {args[0]} and {spec.output_width} classes"
            if legacy
            else f"features {list(spec.schema.names)[:20]} and {spec.output_width} output(s)"
        )
        raise _builder_error(
            name,
            f"failed to build a model for {what}. Received: {_detail(exc)}",
            f"{_FIX}; `tfship -v` logs the traceback",
        ) from None
    if not isinstance(model, keras.Model):
        raise _builder_error(
            name,
            f"returned {type(model).__name__}; expected a keras.Model",
            "return keras.Model(inputs, logits) (or a keras.Sequential) from the builder",
        )
    check_model(model, name, spec)
    if getattr(model, "compiled", False):
        # Accepted: Keras examples often compile in the builder. tfship's loop owns the loss,
        # optimizer and metrics, so say that those settings have no effect.
        log.warning(
            "model.builder '%s' returned a compiled model; its loss, optimizer and metrics are "
            "ignored (tfship's training loop sets them)",
            name,
        )
    return model


def _sample_rows(spec: ModelSpec) -> dict[str, np.ndarray]:
    """Two rows to call a fresh model on. One image: black and a gradient of every pixel
    value, the extremes served in production; otherwise the first training rows."""
    image = spec.schema.single_image
    if image is not None:
        shape = image.shape
        return {
            image.name: np.stack(
                [
                    np.zeros(shape, np.float32),
                    np.linspace(0.0, 255.0, int(np.prod(shape)), dtype=np.float32).reshape(shape),
                ]
            )
        }
    rows = {}
    for f in spec.schema.features:
        col = np.asarray(spec.sample[f.name])[:2]
        if len(col) == 0:
            col = np.asarray([f.missing_value()] * 2, dtype=f.numpy_dtype)
        rows[f.name] = col.astype(str).astype(object) if f.is_string else col.astype(f.dtype)
    return rows


def check_model(model: keras.Model, spec_name: str, spec: ModelSpec) -> None:
    """ModelError unless `model` maps two rows of the features to finite logits."""
    names = spec.schema.names
    try:
        inputs = list(getattr(model, "inputs", None) or [])
    except Exception:  # a subclassed model not built yet: the sample batch below decides
        inputs = []
    if len(names) > 1 and inputs:
        declared = sorted(str(getattr(t, "name", "")).split(":")[0] for t in inputs)
        if declared != sorted(names):
            raise _builder_error(
                spec_name,
                f"the model's inputs {declared[:20]} are not the data's features "
                f"{sorted(names)[:20]}",
                "build the inputs with spec.inputs() (one keras.Input per feature, named "
                "like it) and use every one of them",
            )
    if len(names) == 1 and len(inputs) > 1:
        raise _builder_error(
            spec_name,
            f"the model has {len(inputs)} inputs; the data has one feature {names[0]!r}",
            "build the model on a single keras.Input",
        )
    image = spec.schema.single_image
    if image is not None and len(inputs) == 1:
        declared_shape = tuple(inputs[0].shape)[1:]
        shape = image.shape
        if len(declared_shape) != len(shape) or any(
            d is not None and int(d) != s for d, s in zip(declared_shape, shape, strict=False)
        ):
            raise _builder_error(
                spec_name,
                f"the model's input shape (None, {', '.join(map(str, declared_shape))}) does "
                f"not match the data's (None, {', '.join(map(str, shape))})",
                "use keras.Input(shape=input_shape) with the input_shape the builder is given",
            )
    rows = _sample_rows(spec)
    width = spec.output_width
    try:
        out = model(feed(names, rows), training=False)
    except (Exception, SystemExit) as exc:
        shapes = {k: list(np.shape(v)) for k, v in rows.items()}
        raise _builder_error(
            spec_name,
            f"the model fails on a batch of two rows {shapes}. Received: {_detail(exc)}",
            "the model must accept the raw features (float32 numbers and images, strings "
            "for text and string categories) by name",
        ) from None
    if isinstance(out, (list, tuple, dict)):
        raise _builder_error(
            spec_name,
            f"the model has {len(out)} outputs; expected one tensor of logits (None, {width})",
            "return keras.Model(inputs, logits) with a single output (spec.head())",
        )
    try:
        raw = np.asarray(out)
    except (Exception, SystemExit) as exc:
        raise _builder_error(
            spec_name, f"the model's output is not a tensor. Received: {_detail(exc)}", _FIX
        ) from None
    if raw.dtype.kind != "f":
        raise _builder_error(
            spec_name,
            f"the model outputs dtype {raw.dtype}; expected floating-point logits",
            "end the model with spec.head() (no cast, argmax or rounding)",
        )
    values = raw.astype(np.float64)
    if values.shape != (2, width):
        got = "(None, " + ", ".join(map(str, values.shape[1:])) + ")"
        raise _builder_error(
            spec_name,
            f"the model outputs shape {got}; expected (None, {width}): the {spec.task.type} "
            f"task's output width for labels {list(spec.label_names)[:20]}",
            "end the model with spec.head() (or keras.layers.Dense(num_classes))",
        )
    bad = int(np.size(values) - np.isfinite(values).sum())
    if bad:
        raise _builder_error(
            spec_name,
            f"the freshly built model outputs {bad} NaN/Inf logit(s) on a sample batch; "
            "expected finite logits",
            "check initialisers, divisions and logs in the builder (e.g. log of 0)",
        )
