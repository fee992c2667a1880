"""JSON Schemas of what deploy reads back: manifests, deploy-log records, lease, journal.

The schemas are package data (`tfship/schemas/serving-*.schema.json`), so `check-jsonschema`
and other tools can use the same files. Python's `json` accepts NaN and Infinity, which JSON
Schema's `number` does not exclude, so `problems()` also rejects non-finite numbers anywhere in
the document: a golden output or tolerance of NaN would make every comparison pass.
"""

from __future__ import annotations

import functools
import json
import math
from importlib import resources
from typing import Any

INT64_MAX = 2**63 - 1
SCHEMAS = {
    "manifest": "serving-manifest.schema.json",
    "log-record": "serving-log-record.schema.json",
    "lease": "serving-lease.schema.json",
    "journal": "serving-journal.schema.json",
    "version-record": "serving-version-record.schema.json",
}


@functools.cache
def _validator(kind: str) -> Any:
    from jsonschema import Draft202012Validator

    text = resources.files("tfship").joinpath("schemas", SCHEMAS[kind]).read_text("utf-8")
    schema = json.loads(text)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def _non_finite(value: Any, path: str = "") -> list[str]:
    if isinstance(value, float) and not math.isfinite(value):
        return [f"{path or '/'}: {value} is not a finite number"]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _non_finite(v, f"{path}/{k}")]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _non_finite(v, f"{path}/{i}")]
    return []


def problems(kind: str, document: Any, *, limit: int = 5) -> list[str]:
    """What is wrong with `document` as a `kind` (see SCHEMAS); [] when it is valid."""
    out = [
        f"/{'/'.join(str(p) for p in err.absolute_path)}: {err.message[:200]}"
        for err in sorted(_validator(kind).iter_errors(document), key=lambda e: e.json_path)
    ]
    out += _non_finite(document)
    return out[:limit]


def loads(kind: str, text: str | bytes) -> tuple[dict[str, Any] | None, list[str]]:
    """Parse and validate; (document, []) or (None, problems). Never raises on bad input."""
    try:
        doc = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        return None, [f"not JSON: {exc}"]
    found = problems(kind, doc)
    return (doc, []) if not found else (None, found)
