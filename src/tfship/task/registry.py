"""Tasks by name: the built-ins, and `module:Class` for a task of your own."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import re
from collections.abc import Mapping
from typing import Any

from tfship.errors import ConfigError
from tfship.task.base import Task, TaskType
from tfship.task.binary import BinaryTask
from tfship.task.classification import ClassificationTask
from tfship.task.multilabel import MultilabelTask
from tfship.task.regression import RegressionTask

#: `task.type` name -> Task class. `register_task` adds to it.
TASKS: dict[str, type[Task]] = {
    TaskType.CLASSIFICATION: ClassificationTask,
    TaskType.BINARY: BinaryTask,
    TaskType.MULTILABEL: MultilabelTask,
    TaskType.REGRESSION: RegressionTask,
}
DEFAULT_TASK = TaskType.CLASSIFICATION

_USER_SPEC = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


def register_task(name: str, cls: type[Task]) -> type[Task]:
    """Make `cls` available as `task.type: <name>` (for plugins imported before config)."""
    if not (isinstance(cls, type) and issubclass(cls, Task)):
        raise TypeError(f"{cls!r} is not a subclass of tfship.task.Task")
    TASKS[name] = cls
    return cls


def task_class(spec: str) -> type[Task]:
    """The Task class `spec` names: a registered name or `package.module:Class`."""
    if not isinstance(spec, str):
        raise ConfigError(f"task.type={spec!r}: expected a string")
    if spec in TASKS:
        return TASKS[spec]
    if not _USER_SPEC.fullmatch(spec):
        raise ConfigError(
            f"task.type={spec[:200]!r} is neither a built-in task nor 'module:Class'; "
            f"expected one of {sorted(TASKS)} or e.g. 'my_package.tasks:MyTask'"
        )
    module_name, _, attr = spec.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"task.type={spec!r}: cannot import module {module_name!r}: {exc}",
            hint="the module must be importable from the project (on PYTHONPATH, or installed)",
        ) from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"task.type={spec!r}: module {module_name!r} has no {attr!r}")
        obj = getattr(obj, part)
    if not (isinstance(obj, type) and issubclass(obj, Task)):
        raise ConfigError(
            f"task.type={spec!r} is {type(obj).__name__} {obj!r}, not a Task class",
            hint="subclass tfship.task.Task (or one of its built-ins) and name the class",
        )
    if inspect.isabstract(obj) or obj is Task:
        raise ConfigError(f"task.type={spec!r}: {obj.__qualname__} cannot be instantiated")
    return obj


def load_task(spec: str | None = None, options: Mapping[str, Any] | None = None) -> Task:
    """The task `spec` names (default: classification), configured with `options`.

    Args:
        spec: `task.type`: a built-in name (`classification`, `binary`, `multilabel`,
            `regression`) or `package.module:Class` naming a `Task` subclass.
        options: the other keys of the `task:` section, e.g. `{"threshold": 0.3}`; they must
            be the task's dataclass fields (or keyword arguments of its `__init__`).

    Raises:
        ConfigError: unknown name, module or class; not a Task; an unknown option or a bad
            value (the message names it and lists what the task accepts).
    """
    cls = task_class(DEFAULT_TASK if spec is None else spec)
    options = dict(options or {})
    accepted = _option_names(cls)
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise ConfigError(
            f"task option(s) {unknown} are not options of task.type {spec or DEFAULT_TASK}; "
            f"it accepts {sorted(accepted)}"
        )
    try:
        return cls(**options)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"task.type {spec or DEFAULT_TASK}: bad options {options}: {exc}"
        ) from None


def _option_names(cls: type[Task]) -> set[str]:
    if dataclasses.is_dataclass(cls):
        return {f.name for f in dataclasses.fields(cls) if f.init}
    params = inspect.signature(cls).parameters.values()
    return {p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
