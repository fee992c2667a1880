"""Evaluate stage: score the exported SavedModel (what will be served) on the test split.

The model is loaded with `tf.saved_model.load` and called only through its `serving_default`
signature (`pixels` -> `probabilities`, `class_id`), so the figures describe the artifact TF
Serving will load, preprocessing included, not the in-memory Keras model. The champion, when
there is one, is scored the same way on the same split and machine, so the gate compares like
with like (its own recorded metrics may come from other data or hardware).
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tfship.artifacts import latest_export, manifest_if_any
from tfship.champion import ChampionLookup, resolve_champion
from tfship.config import PipelineConfig
from tfship.errors import ModelError
from tfship.fsutil import atomic_write_json
from tfship.rundir import RunDir

if TYPE_CHECKING:
    from tfship.data import Splits

SIGNATURE = "serving_default"
LATENCY_BATCH_SIZES = (1, 32)
EVAL_BATCH = 256
_EPS = 1e-7


@dataclass(frozen=True)
class ModelEvaluation:
    """One SavedModel's scores on the test split."""

    path: str
    version: int | None
    metrics: dict[str, float]  # the flat metrics the gate reads (config.GATE_METRICS)
    per_class: dict[str, dict[str, float]]  # class -> precision, recall, f1, support
    confusion: list[list[int]]  # rows: true class, columns: predicted class
    latency_ms: dict[str, dict[str, float]]  # batch size -> p50, p95, mean, runs


@dataclass(frozen=True)
class EvaluateResult:
    """What `tfship evaluate` measured and where it wrote it."""

    candidate: ModelEvaluation
    champion: ModelEvaluation | None
    champion_note: str
    test_examples: int
    seconds: float
    metrics_json: Path

    def render_text(self) -> str:
        m = self.candidate.metrics
        lines = [
            f"evaluated {self.candidate.path} on {self.test_examples} test examples "
            f"in {self.seconds:.1f} s",
            f"  accuracy {m['accuracy']:.4f}  macro F1 {m['macro_f1']:.4f}  loss {m['loss']:.4f}",
            f"  latency p50/p95 ms: batch 1 {m['p50_latency_ms']:.2f}/{m['p95_latency_ms']:.2f}, "
            f"batch 32 {m['p50_latency_ms_batch32']:.2f}/{m['p95_latency_ms_batch32']:.2f}",
            f"  {self.champion_note}",
        ]
        if self.champion is not None:
            lines.append(f"  champion accuracy {self.champion.metrics['accuracy']:.4f}")
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
    fn = loaded.signatures[SIGNATURE]
    outputs = set(fn.structured_outputs)
    if "probabilities" not in outputs or "pixels" not in fn.structured_input_signature[1]:
        raise ModelError(
            f"{path}: '{SIGNATURE}' must take 'pixels' and return 'probabilities'; "
            f"it takes {sorted(fn.structured_input_signature[1])} and returns {sorted(outputs)}"
        )
    return loaded, fn


def _predict(fn: Any, x: np.ndarray) -> np.ndarray:
    import tensorflow as tf

    parts = [
        fn(pixels=tf.constant(x[i : i + EVAL_BATCH]))["probabilities"].numpy()
        for i in range(0, len(x), EVAL_BATCH)
    ]
    return np.concatenate(parts).astype(np.float64)


def _latency(fn: Any, x: np.ndarray, runs: int) -> dict[str, dict[str, float]]:
    import tensorflow as tf

    out: dict[str, dict[str, float]] = {}
    for bs in LATENCY_BATCH_SIZES:
        # Tile the test set when it is smaller than the batch, so every size is measurable.
        reps = -(-bs // len(x))
        batch = tf.constant(np.concatenate([x] * reps)[:bs] if reps > 1 else x[:bs])
        for _ in range(3):  # warm-up: first calls trace and allocate
            fn(pixels=batch)
        samples = []
        for _ in range(runs):
            t0 = time.perf_counter()
            fn(pixels=batch)["probabilities"].numpy()
            samples.append((time.perf_counter() - t0) * 1000.0)
        arr = np.asarray(samples)
        out[str(bs)] = {
            "p50": float(np.percentile(arr, 50)),
            "p95": float(np.percentile(arr, 95)),
            "mean": float(arr.mean()),
            "runs": runs,
        }
    return out


def evaluate_saved_model(
    path: str | Path,
    x: np.ndarray,
    y: np.ndarray,
    class_names: tuple[str, ...] | list[str],
    *,
    latency_runs: int = 50,
    version: int | None = None,
) -> ModelEvaluation:
    """Score one SavedModel through its serving signature. Lower-level than `run_evaluate`."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    path = Path(path)
    _, fn = _load_signature(path)
    try:
        probs = _predict(fn, x.astype(np.float32))
    except Exception as exc:  # TF raises many types for shape/dtype mismatches
        raise ModelError(
            f"{path} failed on the test split (inputs {list(x.shape[1:])}): "
            f"{str(exc).splitlines()[0]}",
            hint="the model's input contract must match data.image_size/data.channels",
        ) from None
    n = len(class_names)
    if probs.shape[1] != n:
        raise ModelError(
            f"{path} returns {probs.shape[1]} class probabilities; the data has {n} classes"
        )
    pred = probs.argmax(axis=1)
    labels = list(range(n))
    prec, rec, f1, support = precision_recall_fscore_support(
        y, pred, labels=labels, zero_division=0
    )
    picked = np.clip(probs[np.arange(len(y)), y], _EPS, 1.0)
    latency = _latency(fn, x.astype(np.float32), latency_runs)
    present = support > 0  # a class absent from the test split says nothing about the model
    metrics = {
        "accuracy": float((pred == y).mean()),
        "macro_f1": float(f1.mean()),
        "min_class_f1": float(f1[present].min()),
        "min_class_recall": float(rec[present].min()),
        "loss": float(-np.log(picked).mean()),
        "p50_latency_ms": latency["1"]["p50"],
        "p95_latency_ms": latency["1"]["p95"],
        "p50_latency_ms_batch32": latency["32"]["p50"],
        "p95_latency_ms_batch32": latency["32"]["p95"],
    }
    per_class = {
        name: {
            "precision": float(prec[i]),
            "recall": float(rec[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(class_names)
    }
    cm = confusion_matrix(y, pred, labels=labels).tolist()
    if version is None and path.name.isascii() and path.name.isdigit():
        version = int(path.name)
    return ModelEvaluation(str(path), version, metrics, per_class, cm, latency)


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
    # A champion from an object store is downloaded here and removed once scored.
    with tempfile.TemporaryDirectory(prefix="tfship-champion-") as scratch:
        lookup: ChampionLookup = resolve_champion(cfg, champion, scratch=Path(scratch))
        if splits is None:
            from tfship.data import load_splits

            splits = load_splits(cfg)
        x, y, names = splits.x_test, splits.y_test, splits.class_names
        runs = cfg.gate.latency_runs
        cand = evaluate_saved_model(candidate_path, x, y, names, latency_runs=runs)
        champ = None
        if lookup.champion is not None:
            champ = evaluate_saved_model(
                lookup.champion.path,
                x,
                y,
                names,
                latency_runs=runs,
                version=lookup.champion.version,
            )
    seconds = time.perf_counter() - t0
    out = run_dir.evaluation / "metrics.json"
    atomic_write_json(
        out,
        {
            "schema": "tfship-metrics/1",
            "test_examples": len(y),
            "data_fingerprint": splits.fingerprint,
            "class_names": list(names),
            "candidate": {
                **cand.__dict__,
                "manifest": manifest_if_any(candidate_path),
                # What deploy checks gate.json against: the export it deploys must be this one.
                "digest": tree_digest(candidate_path),
            },
            "champion": None
            if champ is None
            else {
                **champ.__dict__,
                "source": lookup.champion.source,
                "label": lookup.champion.label,
                "manifest": lookup.champion.manifest,
            },
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
    return EvaluateResult(cand, champ, lookup.note, len(y), seconds, out)
