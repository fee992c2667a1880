"""Evaluate stage: score the exported SavedModel (what will be served) on the test split.

The model is loaded with `tf.saved_model.load` and called only through its `serving_default`
signature, one tensor per signature input (names and dtypes read from the signature), so the
figures describe the artifact TF Serving will load, preprocessing included, not the in-memory
Keras model. What is measured comes from the task (`task.measure`, `task.breakdown`,
`task.report_plots`); slices (`gate.slices`) get the task's metrics per feature value. The
champion, when there is one, is scored the same way on the same split and machine, so the gate
compares like with like; a champion that cannot take this data is recorded as incomparable.
"""

from __future__ import annotations

import math
import os
import platform
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tfship.artifacts import latest_export, manifest_if_any
from tfship.champion import ChampionLookup, resolve_champion
from tfship.config import PipelineConfig
from tfship.errors import ModelError
from tfship.evaluation.slicing import check_slice_features, slice_values
from tfship.fsutil import atomic_write_json
from tfship.rundir import RunDir

if TYPE_CHECKING:
    from tfship.data import Splits
    from tfship.data.schema import Schema
    from tfship.task import Task

SIGNATURE = "serving_default"
LATENCY_BATCH_SIZES = (1, 32)
EVAL_BATCH = 256


@dataclass(frozen=True)
class ModelEvaluation:
    """One SavedModel's scores on the test split."""

    path: str
    version: int | None
    metrics: dict[str, float]  # exactly task.metric_directions(): what the gate reads
    notes: dict[str, str]  # metric -> why it is NaN (or a caveat)
    breakdown: dict[str, Any]  # task.breakdown: per_class/confusion, per_output, ...
    latency_ms: dict[str, dict[str, float]]  # batch size -> p50, p95, mean, runs
    slices: dict[str, dict[str, Any]] = field(default_factory=dict)  # SlicedMetrics.to_json
    plots: list[dict[str, Any]] = field(default_factory=list)  # PlotSpec.to_json

    @property
    def per_class(self) -> dict[str, dict[str, float]]:
        return self.breakdown.get("per_class", {})

    @property
    def confusion(self) -> list[list[int]]:
        return self.breakdown.get("confusion", [])

    def to_json(self) -> dict[str, Any]:
        """metrics.json's entry: NaN becomes null (strict JSON; the reason is in `notes`);
        the breakdown's keys sit at the top level, as `per_class`/`confusion` always did."""
        return {
            **self.breakdown,
            "path": self.path,
            "version": self.version,
            "metrics": {k: None if math.isnan(v) else v for k, v in self.metrics.items()},
            "notes": self.notes,
            "breakdown": self.breakdown,
            "latency_ms": self.latency_ms,
            "slices": self.slices,
            "plots": self.plots,
        }


@dataclass(frozen=True)
class EvaluateResult:
    """What `tfship evaluate` measured and where it wrote it."""

    candidate: ModelEvaluation
    champion: ModelEvaluation | None
    champion_note: str
    test_examples: int
    seconds: float
    metrics_json: Path
    incomparable: str | None = None  # why the champion could not be scored on this data

    def render_text(self) -> str:
        m = self.candidate.metrics
        task_metrics = [k for k in m if "latency" not in k]
        lines = [
            f"evaluated {self.candidate.path} on {self.test_examples} test examples "
            f"in {self.seconds:.1f} s",
            "  " + "  ".join(f"{k} {m[k]:.4f}" for k in task_metrics),
            f"  latency p50/p95 ms: batch 1 {m['p50_latency_ms']:.2f}/{m['p95_latency_ms']:.2f}, "
            f"batch 32 {m['p50_latency_ms_batch32']:.2f}/{m['p95_latency_ms_batch32']:.2f}",
            f"  {self.champion_note}",
        ]
        if self.champion is not None and task_metrics:
            first = task_metrics[0]
            lines.append(f"  champion {first} {self.champion.metrics[first]:.4f}")
        if self.incomparable:
            lines.append(f"  champion incomparable: {self.incomparable}")
        lines.append(f"  wrote {self.metrics_json}")
        return "\n".join(lines)


def _load_signature(path: Path) -> Any:
    import tensorflow as tf

    try:
        loaded = tf.saved_model.load(str(path))
    except (OSError, ValueError, RuntimeError) as exc:
        raise ModelError(f"cannot load SavedModel {path}: {exc}") from None
    if SIGNATURE not in loaded.signatures:
        raise ModelError(
            f"{path} has no '{SIGNATURE}' signature; found {sorted(loaded.signatures)}",
            hint="export with tfship export (see docs/run-directory.md, 'The serving signature')",
        )
    return loaded, loaded.signatures[SIGNATURE]


def _inputs(path: Path, fn: Any, x: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """The test arrays the signature takes, cast to its dtypes; ModelError names a missing one."""
    import tensorflow as tf

    spec = fn.structured_input_signature[1]
    missing = sorted(set(spec) - set(x))
    if missing:
        raise ModelError(
            f"{path}: '{SIGNATURE}' takes input(s) {missing} that the data does not have; "
            f"the data has {sorted(x)}",
            hint="evaluate with the data (and data.features) the model was trained on",
        )
    out = {}
    for name, s in spec.items():
        arr = np.asarray(x[name])
        if s.dtype == tf.string:
            # tf.constant takes str and bytes alike; None (missing) becomes "" as in the data.
            arr = np.asarray(["" if v is None else v for v in arr.reshape(-1)], dtype=object)
            out[name] = arr.reshape(np.asarray(x[name]).shape)
        else:
            out[name] = arr.astype(s.dtype.as_numpy_dtype)
    return out


def _take(x: Mapping[str, np.ndarray], idx: Any) -> dict[str, np.ndarray]:
    return {k: v[idx] for k, v in x.items()}


def _predict(path: Path, fn: Any, x: Mapping[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
    import tensorflow as tf

    parts: dict[str, list[np.ndarray]] = {}
    try:
        for i in range(0, n, EVAL_BATCH):
            batch = _take(x, slice(i, i + EVAL_BATCH))
            result = fn(**{k: tf.constant(v) for k, v in batch.items()})
            for k, v in result.items():
                parts.setdefault(k, []).append(v.numpy())
    except Exception as exc:  # TF raises many types for shape/dtype mismatches
        shapes = {k: [*v.shape[1:]] for k, v in x.items()}
        raise ModelError(
            f"{path} failed on the test split (inputs {shapes}): {str(exc).splitlines()[0]}",
            hint="the model's input contract must match the data's schema (data.features)",
        ) from None
    return {k: np.concatenate(v) for k, v in parts.items()}


def _latency(
    models: Sequence[tuple[Any, Mapping[str, np.ndarray]]], n: int, runs: int
) -> list[dict[str, dict[str, float]]]:
    """Per model (signature, inputs): batch size -> p50/p95/mean ms over `runs` timed calls.

    With a champion, the timed calls alternate between candidate and champion, call by call:
    whatever else loads a shared CI runner (another job, a noisy neighbour, frequency scaling)
    then falls on both alike, and the gate's latency change compares the models, not the
    moments they happened to be measured in."""
    import tensorflow as tf

    out: list[dict[str, dict[str, float]]] = [{} for _ in models]
    for bs in LATENCY_BATCH_SIZES:
        # Real test rows, repeated when the test set is smaller than the batch.
        idx = np.arange(bs) % n
        batches = [{k: tf.constant(v) for k, v in _take(x, idx).items()} for _, x in models]
        for (fn, _), batch in zip(models, batches, strict=True):
            for _ in range(3):  # warm-up: first calls trace and allocate
                fn(**batch)
        samples: list[list[float]] = [[] for _ in models]
        for _ in range(runs):
            for (fn, _), batch, times in zip(models, batches, samples, strict=True):
                t0 = time.perf_counter()
                [v.numpy() for v in fn(**batch).values()]
                times.append((time.perf_counter() - t0) * 1000.0)
        for result, times in zip(out, samples, strict=True):
            arr = np.asarray(times)
            result[str(bs)] = {
                "p50": float(np.percentile(arr, 50)),
                "p95": float(np.percentile(arr, 95)),
                "mean": float(arr.mean()),
                "runs": runs,
            }
    return out


@dataclass(frozen=True)
class _Scored:
    """A model scored on the test split, before its latency is measured."""

    evaluation: ModelEvaluation
    fn: Any
    inputs: dict[str, Any]

    def with_latency(self, latency: dict[str, dict[str, float]]) -> ModelEvaluation:
        metrics = dict(self.evaluation.metrics)
        metrics.update(
            {
                "p50_latency_ms": latency["1"]["p50"],
                "p95_latency_ms": latency["1"]["p95"],
                "p50_latency_ms_batch32": latency["32"]["p50"],
                "p95_latency_ms_batch32": latency["32"]["p95"],
            }
        )
        return replace(self.evaluation, metrics=metrics, latency_ms=latency)


def evaluate_saved_model(
    path: str | Path,
    x_test: Mapping[str, np.ndarray],
    y_test: np.ndarray,
    *,
    task: Task,
    label_names: Sequence[str],
    schema: Schema | None = None,
    latency_runs: int = 50,
    slice_features: Mapping[str, int] | None = None,
    version: int | None = None,
) -> ModelEvaluation:
    """Score one SavedModel through its `serving_default` signature. Lower than `run_evaluate`.

    Args:
        x_test: feature name -> array (first axis: examples); the signature's inputs are taken
            from it by name. y_test: labels as `task.encode` returned them.
        slice_features: feature -> minimum examples for a slice to be gated.
    """
    scored = _score(
        path,
        x_test,
        y_test,
        task=task,
        label_names=label_names,
        schema=schema,
        slice_features=slice_features,
        version=version,
    )
    [latency] = _latency([(scored.fn, scored.inputs)], len(y_test), latency_runs)
    return scored.with_latency(latency)


def _score(
    path: str | Path,
    x_test: Mapping[str, np.ndarray],
    y_test: np.ndarray,
    *,
    task: Task,
    label_names: Sequence[str],
    schema: Schema | None,
    slice_features: Mapping[str, int] | None,
    version: int | None,
) -> _Scored:
    from tfship.task import sliced_metrics

    path = Path(path)
    slice_features = dict(slice_features or {})
    check_slice_features(list(slice_features), x_test, schema)
    n = len(y_test)
    _, fn = _load_signature(path)
    x = _inputs(path, fn, x_test)
    outputs = _predict(path, fn, x, n)
    measured = task.measure(y_test, outputs, label_names)
    breakdown = task.breakdown(y_test, outputs, label_names)
    plots = [p.to_json() for p in task.report_plots(y_test, outputs, label_names)]
    slices = {
        feature: sliced_metrics(
            task,
            y_test,
            outputs,
            slice_values(np.asarray(x_test[feature]), schema, feature),
            feature=feature,
            min_size=min_size,
            label_names=label_names,
        ).to_json()
        for feature, min_size in slice_features.items()
    }
    if version is None and path.name.isascii() and path.name.isdigit():
        version = int(path.name)
    evaluation = ModelEvaluation(
        str(path), version, dict(measured.values), dict(measured.notes), breakdown, {}, slices,
        plots,
    )  # fmt: skip
    return _Scored(evaluation, fn, x)


def _as_features(x: Any) -> dict[str, np.ndarray]:
    # Splits written before the schema held one image array; its feature is `pixels`.
    return dict(x) if isinstance(x, Mapping) else {"pixels": np.asarray(x)}


def run_evaluate(
    cfg: PipelineConfig,
    run_dir: RunDir,
    *,
    champion: str | Path | None = None,
    model: str | Path | None = None,
    splits: Splits | None = None,
) -> EvaluateResult:
    """Evaluate the exported candidate (and the champion) on the test split.

    Args:
        champion: a champion SavedModel directory; default: the version labelled
            `gate.champion_label` in `gate.champion_repository` (none on a first run).
        model: the candidate SavedModel; default: the highest version in run_dir/export.
        splits: already-loaded data (saves reloading inside `tfship run`).

    Writes `evaluation/metrics.json`.
    """
    from tfship.serving.repository import tree_digest

    t0 = time.perf_counter()
    candidate_path = (
        Path(model)
        if model
        else latest_export(
            run_dir.export, hint="run `tfship export` first, or pass --model <SavedModel dir>"
        )
    )
    if splits is None:
        from tfship.data import load_splits

        splits = load_splits(cfg)
    x, y = _as_features(splits.x_test), splits.y_test
    names = tuple(getattr(splits, "label_names", None) or splits.class_names)
    schema = getattr(splits, "schema", None)
    task = cfg.task_obj
    slice_features: dict[str, int] = {}
    for sl in cfg.gate.slices:  # the first declaration of a feature sets its reported size
        slice_features.setdefault(sl.feature, sl.min_examples)
    # A slice on a feature the data lacks is a configuration error: say so before loading.
    check_slice_features(list(slice_features), x, schema)
    kw = {"task": task, "label_names": names, "schema": schema, "slice_features": slice_features}
    incomparable = None
    # A champion from an object store is downloaded here and removed once scored.
    with tempfile.TemporaryDirectory(prefix="tfship-champion-") as scratch:
        lookup: ChampionLookup = resolve_champion(cfg, champion, scratch=Path(scratch))
        scored = [_score(candidate_path, x, y, version=None, **kw)]
        if lookup.champion is not None:
            try:
                scored.append(
                    _score(lookup.champion.path, x, y, version=lookup.champion.version, **kw)
                )
            except ModelError as exc:
                # Another input contract or task: no like-for-like comparison exists, and the
                # gate's change thresholds fail on it instead of being skipped.
                incomparable = str(exc)
        latencies = _latency([(s.fn, s.inputs) for s in scored], len(y), cfg.gate.latency_runs)
        cand, *rest = [s.with_latency(lat) for s, lat in zip(scored, latencies, strict=True)]
        champ = rest[0] if rest else None
    seconds = time.perf_counter() - t0
    champ_doc = None
    if lookup.champion is not None:
        c = lookup.champion
        base = champ.to_json() if champ is not None else {"path": c.path, "version": c.version}
        champ_doc = {
            **base,
            "source": c.source,
            "label": c.label,
            "manifest": c.manifest,
            "incomparable": incomparable,
        }
    out = run_dir.evaluation / "metrics.json"
    atomic_write_json(
        out,
        {
            "schema": "tfship-metrics/1",
            "task": task.describe(),
            "test_examples": len(y),
            "data_fingerprint": splits.fingerprint,
            "class_names": list(names),
            "label_names": list(names),
            "notes": cand.notes,
            "slices": cand.slices,
            "candidate": {
                **cand.to_json(),
                "manifest": manifest_if_any(candidate_path),
                # What deploy checks gate.json against: the export it deploys must be this one.
                "digest": tree_digest(candidate_path),
            },
            "champion": champ_doc,
            "champion_note": lookup.note,
            "no_repository": lookup.no_repository,
            "machine": {
                "cpus": os.cpu_count(),
                "platform": platform.platform(),
                "python": platform.python_version(),
            },
            "seconds": round(seconds, 3),
        },
    )
    return EvaluateResult(cand, champ, lookup.note, len(y), seconds, out, incomparable)
