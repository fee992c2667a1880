"""Verification records: an export checked once is not checked again for the same bytes.

Export runs the full offline check (`verify_export`: both loaders, golden replay, warmup)
before the version gets its number, then writes `export/<version>.verified.json` next to the
version directory (outside it, so the export's own digest is unchanged). The record holds the
sha256 over every file of the export (`tree_digest`, the same digest gate.json binds the
verdict to), the TensorFlow that loaded it (`tf.__version__` and the pip distribution that
ships it, which a later process can read without importing TensorFlow) and the tolerance it
held.

A later stage or job given the same directory (deploy and validate without a server) trusts the
record only when the files still have that digest, the TensorFlow is the same and the record's
tolerance is at least as strict as the one asked for; anything else (no record, an unreadable
one, other bytes) means the full check. The record is as trustworthy as the run directory it
travels in — the same artifact that carries gate.json, which deploy already trusts.
"""

from __future__ import annotations

import datetime as _dt
import functools
import importlib.util
import logging
import sys
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


@functools.cache
def tensorflow_package() -> str | None:
    """The installed TensorFlow as pip knows it ("tensorflow_cpu 2.21.0"), read from the
    metadata of the distribution that ships the `tensorflow` package, without importing it
    (that import is most of a deploy's time when the record is reused). None when it cannot
    be told (no such metadata, or more than one distribution claims the package)."""
    spec = importlib.util.find_spec("tensorflow")
    if spec is None or not spec.submodule_search_locations:
        return None
    site = Path(next(iter(spec.submodule_search_locations))).parent
    owners = []
    for info in sorted(site.glob("*.dist-info")):
        try:
            top = (info / "top_level.txt").read_text(encoding="utf-8").split()
        except OSError:
            continue
        if "tensorflow" in top:
            owners.append(info.name.removesuffix(".dist-info").replace("-", " ", 1))
    return owners[0] if len(owners) == 1 else None


def _other_tensorflow(record: dict[str, Any]) -> str | None:
    """Why the record's TensorFlow is not this one, or None when it is: the same package (and,
    when this process has imported TensorFlow anyway, the same `tf.__version__`)."""
    package = tensorflow_package()
    if package is None or record.get("tensorflow_package") != package:
        return (
            f"it was verified with TensorFlow {record.get('tensorflow')} "
            f"({record.get('tensorflow_package')}), this is {package or 'unknown'}"
        )
    if "tensorflow" in sys.modules and record.get("tensorflow") != _tensorflow():
        return f"it was verified with TensorFlow {record.get('tensorflow')}"
    return None


def write_record(export_dir: Path, result: VerifyResult, digest: str) -> Path:
    """Record that the export with `digest` passed `result` (atomic: a reader sees all or none)."""
    fields = asdict(result)
    fields["export_dir"] = str(export_dir)
    fields.pop("reused", None)
    record = {
        "format": FORMAT,
        "digest": digest,
        "tensorflow": _tensorflow(),
        "tensorflow_package": tensorflow_package(),
        "verified_at": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "result": fields,
    }
    path = record_path(export_dir)
    atomic_write_json(path, record)
    return path


def reusable(
    export_dir: Path, tolerance: float | None, *, digest: str | None = None
) -> VerifyResult | None:
    """The recorded result when it still holds for `export_dir` (see the module docstring).
    `digest`: `tree_digest(export_dir)` as the caller just computed it, else computed here."""
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
    why = _other_tensorflow(record)
    if (
        why is None
        and tolerance is not None
        and not float(result.get("tolerance", 1.0)) <= tolerance
    ):
        why = f"it was verified at tolerance {result.get('tolerance')}, looser than {tolerance}"
    if why is None and record["digest"] != (digest or tree_digest(export_dir)):
        why = "its files changed since it was verified"
    if why:
        log.info("not reusing %s: %s; checking the export again", path, why)
        return None
    result.update(export_dir=export_dir, reused=str(path))
    return VerifyResult(**result)
