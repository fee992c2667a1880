"""The data's statistics, and their comparison with the champion's, before training.

`run_data` writes `statistics.json` (the training split's statistics, tfship.data.stream.stats):
for in-memory data from every training example (one cheap pass over the arrays already in
memory); for streamed data the statistics of the profile's bounded sample, read once with the
fingerprint (`scope: "sample"`, never a second read). The export embeds the file as
`assets.extra/tfship-statistics.json` (`embed_statistics`), so a champion carries the statistics
of the data it was trained on.

`check_drift` compares them with the champion's (tfship.data.stream.drift): a schema violation
(a feature dropped or retyped, or with no value left) raises DataError (exit 4) after writing
`data.drift.json`; drift beyond `gate.data.bounds` is recorded there for the gate
(`gate.data.drift: fail` makes it a failing check, exit 7) and the MR report. No champion, or
one exported before statistics existed, is "no reference", not an error.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from tfship.data.stream.drift import DriftBounds, StatsComparison, compare_statistics
from tfship.data.stream.stats import StatsAccumulator
from tfship.errors import ConfigError, DataError, InfraError
from tfship.fsutil import atomic_write_json

log = logging.getLogger(__name__)

STATISTICS_FILE = "statistics.json"
DRIFT_FILE = "data.drift.json"
DRIFT_FORMAT = "tfship-data-drift/1"
EXPORT_STATISTICS = Path("assets.extra") / "tfship-statistics.json"
_BATCH_VALUES = 1 << 22  # values per batch: the accumulator's float64 copies stay ~100 MB


def in_memory_statistics(schema: Any, x: dict[str, Any], y: Any) -> dict[str, Any]:
    """Statistics of in-memory arrays (every example), batch by batch to bound the float64
    copies the accumulator makes: a batch holds at most _BATCH_VALUES values (4096 examples of
    224x224x3 images would be 600 M values, ~5 GB per copy)."""
    y = np.asarray(y)
    acc = StatsAccumulator(schema, str(y.dtype))
    width = max(int(np.prod(np.shape(x[f.name])[1:], dtype=np.int64)) for f in schema.features)
    batch = max(1, min(4096, _BATCH_VALUES // max(width, 1)))
    for start in range(0, len(y), batch):
        part = slice(start, start + batch)
        acc.update({f.name: np.asarray(x[f.name])[part] for f in schema.features}, y[part])
    return acc.to_json()


def statistics_of(splits: Any) -> dict[str, Any]:
    """The training split's statistics, as `statistics.json` holds them: the splits' own
    `training_statistics()` (`scope` "all": every training example; "sample": streamed data,
    the profile's bounded sample) with the data fingerprint."""
    return {**splits.training_statistics(), "fingerprint": splits.fingerprint}


def write_statistics(root: Path, doc: dict[str, Any]) -> Path:
    path = Path(root) / STATISTICS_FILE
    atomic_write_json(path, doc)
    return path


def embed_statistics(
    run_root: Path, export_dir: Path, data_fingerprint: str | None = None
) -> dict[str, Any] | None:
    """Copy the run's `statistics.json` into `export_dir/assets.extra/tfship-statistics.json`
    and return the export manifest's `statistics` entry (file, sha256, scope, examples), or
    None when the run has no statistics or they describe other data than `data_fingerprint`."""
    src = Path(run_root) / STATISTICS_FILE
    if not src.is_file():
        return None
    raw = src.read_bytes()
    try:
        doc = json.loads(raw)
    except ValueError:
        log.warning("ignoring %s: not JSON", src)
        return None
    if data_fingerprint is not None and doc.get("fingerprint") != data_fingerprint:
        log.warning("not embedding %s: it describes other data than this export's", src)
        return None
    dest = Path(export_dir) / EXPORT_STATISTICS
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(raw)  # the bytes hashed below, not a second read of the run's file
    return {
        "file": EXPORT_STATISTICS.as_posix(),
        "sha256": hashlib.sha256(raw).hexdigest(),
        "scope": doc.get("scope"),
        "examples": doc.get("examples"),
    }


@dataclass(frozen=True)
class Reference:
    """The champion's statistics, or why there are none."""

    statistics: dict[str, Any] | None
    note: str
    version: int | None = None
    error: bool = False  # the repository could not be read (not the same as "no champion")


def _parse_reference(raw: str | None, manifest_raw: str | None, where: str) -> Reference | None:
    """The statistics in `raw`, checked against the manifest's sha256 when it records one."""
    if raw is None:
        return None
    try:
        manifest = json.loads(manifest_raw) if manifest_raw else {}
    except ValueError:
        manifest = {}
    entry = manifest.get("statistics") if isinstance(manifest, dict) else None
    want = entry.get("sha256") if isinstance(entry, dict) else None
    if want and hashlib.sha256(raw.encode("utf-8")).hexdigest() != want:
        raise DataError(
            f"{where}: the champion's statistics do not match the sha256 in its manifest",
            hint="re-publish the champion, or fix the model repository",
        )
    try:
        doc = json.loads(raw)
    except ValueError:
        return Reference(None, f"no reference: {where} is not JSON")
    if not isinstance(doc, dict) or not isinstance(doc.get("features"), dict):
        return Reference(None, f"no reference: {where} holds no feature statistics")
    return Reference(doc, f"champion statistics: {where}")


def champion_statistics(
    cfg: Any, champion: str | Path | None = None, *, environ: Any = None
) -> Reference:
    """The champion's `assets.extra/tfship-statistics.json`: from `champion` (an export
    directory) if given, else from the version labelled `gate.champion_label` in the model
    repository, reading only that file and the manifest (no model download)."""
    if champion is not None:
        d = Path(champion)
        stats, manifest = d / EXPORT_STATISTICS, d / "assets.extra" / "tfship-manifest.json"
        ref = _parse_reference(
            stats.read_text(encoding="utf-8") if stats.is_file() else None,
            manifest.read_text(encoding="utf-8") if manifest.is_file() else None,
            str(stats),
        )
        return ref or Reference(None, f"no champion statistics: {d} has no {EXPORT_STATISTICS}")
    from tfship import env as envvars
    from tfship.artifacts import MODELS_CONFIG
    from tfship.champion import _labelled_version
    from tfship.serving.repository import open_repository

    base = cfg.gate.champion_repository or cfg.serving.model_repository
    label, name = cfg.gate.champion_label, cfg.project.model_name
    if "://" not in base and not Path(base).is_dir():
        ci = " in this CI job" if envvars.ci_context(environ).get("CI") else ""
        return Reference(None, f"no champion statistics: no model repository at {base}{ci}")
    repo = open_repository(base, s3_endpoint_url=cfg.serving.s3_endpoint_url)
    origin = f"{base.rstrip('/')}/{MODELS_CONFIG}"
    text = repo.read_text(MODELS_CONFIG)
    version = None if text is None else _labelled_version(text, origin, name, label)
    if version is None:
        return Reference(None, f"no champion statistics: no `{label}` version of '{name}'")
    rel = f"{name}/{version}/{EXPORT_STATISTICS.as_posix()}"
    ref = _parse_reference(
        repo.read_text(rel),
        repo.read_text(f"{name}/{version}/assets.extra/tfship-manifest.json"),
        f"{base.rstrip('/')}/{rel}",
    )
    if ref is None:
        return Reference(
            None, f"no champion statistics: version {version} was exported without them", version
        )
    return Reference(ref.statistics, ref.note, version)


def bounds_of(cfg: Any) -> DriftBounds:
    return DriftBounds(**cfg.gate.data.bounds.model_dump())


def check_drift(
    cfg: Any,
    root: Path,
    current: dict[str, Any],
    *,
    champion: str | Path | None = None,
    environ: Any = None,
) -> StatsComparison | None:
    """Compare `current` with the champion's statistics; write `data.drift.json`; raise
    DataError (exit 4) on a schema violation. None when there is no reference.

    A repository that cannot be read (no credentials in this job, store down) does not stop
    training: it is recorded (`reference.error`), and `gate.data.drift: fail` fails on it."""
    try:
        ref = champion_statistics(cfg, champion, environ=environ)
    except (InfraError, ConfigError, UnicodeDecodeError, OSError) as exc:
        # The store is down, this job has no credentials, models.config or the file does not
        # parse: recorded (gate.data.drift: fail fails on it), not a stop before training. A
        # file that does not match its manifest's sha256 (DataError) still stops.
        log.warning("could not read the champion's statistics: %s", exc)
        ref = Reference(None, f"could not read the champion's statistics: {exc}", error=True)
    bounds = bounds_of(cfg)
    doc: dict[str, Any] = {
        "format": DRIFT_FORMAT,
        "reference": {
            "available": ref.statistics is not None,
            "error": ref.error,
            "note": ref.note,
            "version": ref.version,
            "scope": (ref.statistics or {}).get("scope"),
        },
        "scope": current.get("scope"),
        "mode": cfg.gate.data.drift,
        "bounds": bounds.__dict__,
    }
    comparison = None
    if ref.statistics is not None:
        try:
            comparison = compare_statistics(current, ref.statistics, bounds)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            # Another format, or edited by hand: no comparison, recorded like an unreadable one.
            note = f"the champion's statistics are malformed ({type(exc).__name__}: {exc})"
            log.warning("%s", note)
            ref = Reference(None, note, ref.version, error=True)
            doc["reference"].update(available=False, error=True, note=note)
    if ref.statistics is not None and comparison is not None:
        # Intended schema changes (committed in gate.data.schema_changes) are recorded, not
        # violations: otherwise a removed feature could never reach production.
        intended = set(cfg.gate.data.schema_changes)
        expected = [f for f in comparison.violations if f.feature in intended]
        comparison = replace(
            comparison, violations=tuple(f for f in comparison.violations if f not in expected)
        )
        doc.update(comparison.to_json())
        doc["expected_schema_changes"] = [asdict(f) for f in expected]
        for f in expected:
            log.warning("intended schema change (gate.data.schema_changes): %s", f.message)
        doc["drifted_features"] = sorted({f.feature for f in comparison.drift})
        if comparison.drift:
            log.warning("data drift beyond bounds:\n%s", comparison.render_text())
    else:
        doc.update(violations=[], drift=[], measured=[], drifted_features=[])
        log.info("%s", ref.note)
    atomic_write_json(Path(root) / DRIFT_FILE, doc)
    if comparison is not None:
        comparison.raise_for_violations()
    return comparison
