"""Rendering of stage results: stage functions return frozen dataclasses and never print."""

from __future__ import annotations

import dataclasses
import enum
import json
from pathlib import Path
from typing import Any


def to_jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, enum.Enum):
        return obj.value
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
        return obj.item()
    return obj


def render(result: Any, fmt: str) -> str:
    """`json`: the dataclass as JSON. `text`: the result's own `render_text()` when it has one."""
    if fmt == "json":
        return json.dumps(to_jsonable(result), indent=2, sort_keys=True)
    if hasattr(result, "render_text"):
        return result.render_text()
    data = to_jsonable(result)
    if not isinstance(data, dict):
        return str(data)
    return "\n".join(f"{k}: {v}" for k, v in data.items())
