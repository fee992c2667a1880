"""Verification records: an export checked once is not checked again for the same bytes.

Export runs the full offline check (`verify_export`: both loaders, golden replay, warmup)
before the version gets its number, then writes `export/<version>.verified.json` next to the
version directory (outside it, so the export's own digest is unchanged). The record holds the
sha256 over every file of the export (`tree_digest`, the same digest gate.json binds the
verdict to), the TensorFlow version that loaded it and the tolerance it held.

A later stage or job given the same directory (deploy and validate without a server) trusts the
record only when the files still have that digest, the TensorFlow is the same and the record's
tolerance is at least as strict as the one asked for; anything else (no record, an unreadable
one, other bytes) means the full check. The record is as trustworthy as the run directory it
travels in — the same artifact that carries gate.json, which deploy already trusts.
"""

from __future__ import annotations

import datetime as _dt
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tfship.fsutil import atomic_write_json, read_json
from tfship.verify import VerifyResult

log = logging.getLogger(__name__)

FORMAT = "tfship-verified/1"


def record_path(export_dir: Path) -> Path:
    return export_dir.parent / f"{export_dir.name}.verified.json"


def _tensorflow() -> str:
    import tensorflow as tf

    return tf.__version__


def write_record(export_dir: Path, result: VerifyResult, digest: str) -> Path:
    """Record that the export with `digest` passed `result` (atomic: a reader sees all or none)."""
    fields = asdict(result)
    fields["export_dir"] = str(export_dir)
    fields.pop("reused", None)
    record = {
        "format": FORMAT,
        "digest": digest,
        "tensorflow": _tensorflow(),
        "verified_at": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "result": fields,
    }
    path = record_path(export_dir)
    atomic_write_json(path, record)
    return path


def reusable(export_dir: Path, tolerance: float | None) -> VerifyResult | None:
    """The recorded result when it still holds for `export_dir` (see the module docstring)."""
    from tfship.serving.repository import tree_digest

    path = record_path(export_dir)
    if not path.is_file():
        return None
    try:
        record: Any = read_json(path)
        result = dict(record["result"])
        ok = record.get("format") == FORMAT and isinstance(record.get("digest"), str)
    except (OSError, ValueError, KeyError, TypeError):
        ok = False
    if not ok:
        log.warning("%s is not a verification record; checking the export again", path)
        return None
    why = None
    if record.get("tensorflow") != _tensorflow():
        why = f"it was verified with TensorFlow {record.get('tensorflow')}"
    elif tolerance is not None and not float(result.get("tolerance", 1.0)) <= tolerance:
        why = f"it was verified at tolerance {result.get('tolerance')}, looser than {tolerance}"
    elif record["digest"] != tree_digest(export_dir):
        why = "its files changed since it was verified"
    if why:
        log.info("not reusing %s: %s; checking the export again", path, why)
        return None
    result.update(export_dir=export_dir, reused=str(path))
    return VerifyResult(**result)
