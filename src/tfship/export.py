"""Export stage: the trained model as a TF Serving SavedModel, checked before it becomes a version.

`export_savedmodel` writes `export/<version>/` with a `serving_default` signature (raw pixels in,
probabilities and class id out), `assets.extra/tfship-manifest.json` (provenance + golden
requests), `assets.extra/tfship-data-manifest.json` (the data's file list, for `tfship data
changed --since`) and `assets.extra/tf_serving_warmup_requests`. Everything is written to a
non-numeric temporary directory and verified there (TF's session-based loader in a fresh
process, plus a reload in this one); only then is it renamed to its numeric version, because TF
Serving loads any numeric directory it sees. `verify_export` is the same offline check, for any
tfship export.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import shutil
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from tfship import env
from tfship.artifacts import MANIFEST, WARMUP
from tfship.config import PipelineConfig
from tfship.datachange import EXPORT_DATA_MANIFEST, MANIFEST_FILE
from tfship.errors import ConfigError, DataError, ModelError
from tfship.export_meta import MAX_VERSION, check_version, git_info, next_version
from tfship.fsutil import atomic_write_json, read_json
from tfship.rundir import RunDir
from tfship.verify import (  # verify_export is part of this stage's API too
    MAX_TOLERANCE,
    MAX_WARMUP_RECORDS,
    SIGNATURE,
    VerifyResult,
    check_golden,
    describe_signature,
    require_finite,
    verify_export,
)

__all__ = [
    "MAX_VERSION",
    "ExportResult",
    "VerifyResult",
    "check_version",
    "export_savedmodel",
    "next_version",
    "run_export",
    "verify_export",
]

log = logging.getLogger(__name__)

INPUT = "pixels"
MANIFEST_SCHEMA = "tfship-manifest/1"


@dataclass(frozen=True)
class ExportResult:
    """What `tfship export` wrote (or why it wrote nothing: `skipped`)."""

    export_dir: Path | None
    version: int | None
    model_name: str
    manifest: Path | None = None
    warmup_records: int = 0
    golden_requests: int = 0
    seconds: float = 0.0
    verify: VerifyResult | None = None
    skipped: str | None = None
    checkpoint: dict[str, Any] = field(default_factory=dict)

    def render_text(self) -> str:
        if self.skipped:
            return f"export: skipped ({self.skipped})"
        lines = [
            f"export: {self.model_name} version {self.version} -> {self.export_dir}",
            f"  manifest: {self.manifest}",
            f"  golden requests: {self.golden_requests}, warmup records: {self.warmup_records}",
        ]
        if self.verify is not None:
            lines.append(f"  {self.verify.render_text()}")
        lines.append(f"  took {self.seconds:.1f} s")
        return "\n".join(lines)


# --- export --------------------------------------------------------------------------------


def _signature_function(model: Any) -> Any:
    import tensorflow as tf

    def serve(pixels: Any) -> dict[str, Any]:
        # float32 even under a mixed-precision policy: the signature promises float32.
        logits = tf.cast(model(pixels, training=False), tf.float32)
        return {
            "probabilities": tf.nn.softmax(logits, axis=-1),
            "class_id": tf.argmax(logits, axis=-1, output_type=tf.int64),
        }

    return serve


def _write_warmup(path: Path, warmup_x: np.ndarray, model_name: str) -> int:
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    if not len(warmup_x):
        return 0  # no file at all: TF Serving then skips warmup
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for i in range(len(warmup_x)):
            req = predict_pb2.PredictRequest()
            req.model_spec.name = model_name
            req.model_spec.signature_name = SIGNATURE
            req.inputs[INPUT].CopyFrom(tf.make_tensor_proto(warmup_x[i : i + 1]))
            entry = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=req)
            )
            writer.write(entry.SerializeToString())
    return len(warmup_x)


def _manifest(**fields: Any) -> dict[str, Any]:
    return {"schema": MANIFEST_SCHEMA, **fields}


def _pixels(name: str, x: np.ndarray, min_rows: int) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 4 or len(x) < min_rows:
        raise ModelError(
            f"{name} must be float32 [n, height, width, channels] with n >= "
            f"{min_rows}; received shape {list(x.shape)}"
        )
    if not np.all(np.isfinite(x)):
        raise DataError(
            f"{name} holds {int(np.sum(~np.isfinite(x)))} NaN/Inf pixel value(s); expected "
            "finite raw pixels in [0, 255]",
            hint="golden and warmup requests come from the validation data: fix the data",
        )
    return x


def export_savedmodel(
    model: Any,
    *,
    cfg: PipelineConfig,
    run_dir: RunDir,
    class_names: Sequence[str],
    golden_x: np.ndarray,
    warmup_x: np.ndarray,
    training_summary: Mapping[str, Any],
    data_fingerprint: str,
    version: int | None = None,
    data_manifest: Mapping[str, Any] | None = None,
) -> ExportResult:
    """Export `model` (raw pixels in, logits out) for TF Serving under `export/<version>/`.

    `version` defaults to `cfg.export.version`, else `next_version` by `export.version_scheme`.
    `data_manifest` (a data.manifest.json's content: `fingerprint` and `files`) is copied to
    `assets.extra/tfship-data-manifest.json`; its fingerprint must be `data_fingerprint`.
    The export is verified (`verify_export`) before it gets its numeric name; on any failure
    nothing numeric is left behind and `ModelError` is raised.
    """
    import keras
    import tensorflow as tf

    t0 = time.perf_counter()
    if data_manifest is not None and data_manifest.get("fingerprint") != data_fingerprint:
        raise DataError(
            f"the data manifest is for data fingerprint {data_manifest.get('fingerprint')}; "
            f"expected the exported model's {data_fingerprint}",
            hint="pass the manifest of the data the model was trained on",
        )
    golden_x = _pixels("golden_x", golden_x, 1)
    warmup_x = _pixels("warmup_x", warmup_x, 0)
    if len(warmup_x) > MAX_WARMUP_RECORDS:
        raise ModelError(
            f"{len(warmup_x)} warmup samples given; TF Serving loads a model only "
            f"with at most {MAX_WARMUP_RECORDS} warmup records",
            hint="lower export.warmup_requests",
        )
    tol = cfg.export.tolerance
    if not 0 < tol <= MAX_TOLERANCE:  # verify_export would refuse the export after writing it
        raise ConfigError(
            f"export.tolerance must be in (0, {MAX_TOLERANCE:g}]. Received: {tol}",
            hint="golden outputs are probabilities in [0, 1]: e.g. export.tolerance: 1e-4",
        )
    serve = _signature_function(model)
    try:
        reference = {k: v.numpy() for k, v in serve(tf.constant(golden_x)).items()}
    except Exception as exc:  # Keras/TF raise many types; all mean the model cannot serve this
        raise ModelError(
            f"the model cannot run on inputs of shape {list(golden_x.shape)}: {exc}",
            hint="the model must take raw pixels [n, H, W, C] and return logits",
        ) from exc
    require_finite(reference, "the model in memory")
    if reference["probabilities"].shape[-1] != len(class_names):
        raise ModelError(
            f"the model outputs {reference['probabilities'].shape[-1]} logits per "
            f"example; expected one per class ({len(class_names)})"
        )

    root = run_dir.export
    root.mkdir(parents=True, exist_ok=True)
    version = cfg.export.version if version is None else version
    explicit = version is not None
    version = check_version(version) if explicit else next_version(root, cfg.export.version_scheme)
    if (root / str(version)).exists():
        raise ModelError(
            f"{root / str(version)} already exists; an exported version is never overwritten",
            hint="unset export.version to take the next free number",
        )
    # Not numeric, so neither TF Serving nor `numeric_versions` ever takes it for a version.
    tmp = root / f".tmp-{version}-{uuid.uuid4().hex[:8]}"
    try:
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint(
            SIGNATURE,
            serve,
            input_signature=[tf.TensorSpec([None, *golden_x.shape[1:]], tf.float32, name=INPUT)],
        )
        try:
            archive.write_out(str(tmp), verbose=False)
        except Exception as exc:  # tracing/serialisation errors come in many types
            raise ModelError(f"keras.export.ExportArchive cannot write the model: {exc}") from exc

        sig = tf.saved_model.load(str(tmp)).signatures[SIGNATURE]
        exported = {k: v.numpy() for k, v in sig(**{INPUT: tf.constant(golden_x)}).items()}
        manifest = _manifest(
            model_name=cfg.project.model_name,
            version=version,
            created_at=_dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            git=git_info(),
            ci=env.ci_context(),
            image_digest=cfg.export.image_digest,
            tensorflow=tf.__version__,
            keras=keras.__version__,
            config_sha256=cfg.fingerprint(),
            data_fingerprint=data_fingerprint,
            class_names=list(class_names),
            signature=describe_signature(sig),
            training=dict(training_summary),
            warmup={"records": len(warmup_x)},
            golden={
                "tolerance": tol,
                "inputs": {INPUT: golden_x.tolist()},
                "outputs": {k: v.tolist() for k, v in sorted(exported.items())},
            },
        )
        # The export must agree with the model it came from before its own outputs become golden.
        in_memory = manifest | {"golden": {**manifest["golden"], "outputs": reference}}
        check_golden(in_memory, exported, tol, "the exported signature (vs the model in memory)")
        n_warm = _write_warmup(tmp / WARMUP, warmup_x, cfg.project.model_name)
        if data_manifest is not None:
            atomic_write_json(tmp / EXPORT_DATA_MANIFEST, dict(data_manifest))
        atomic_write_json(tmp / MANIFEST, manifest)
        verified = verify_export(tmp, tol)
        _claim(tmp, root / str(version), explicit)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    final = root / str(version)
    verified = replace(verified, export_dir=final)
    log.info("exported %s version %d to %s", cfg.project.model_name, version, final)
    return ExportResult(
        final,
        version,
        cfg.project.model_name,
        final / MANIFEST,
        n_warm,
        len(golden_x),
        time.perf_counter() - t0,
        verified,
    )


def _claim(tmp: Path, final: Path, explicit: bool) -> None:
    # rename(2) is atomic and fails on an existing non-empty directory, so two exporters racing
    # for one number cannot both win; the manifest inside names the number it was verified as.
    try:
        os.rename(tmp, final)
    except OSError as exc:
        raise ModelError(
            f"cannot rename the verified export to {final}: {exc}",
            hint="another export took this version; run the export again"
            + ("" if not explicit else " with another export.version"),
        ) from exc


# --- stage ---------------------------------------------------------------------------------


_TRAIN_KEYS = (
    "status",
    "strategy",
    "replicas",
    "workers",
    "global_batch_size",
    "steps",
    "epochs_completed",
    "steps_per_second",
)


def _training_summary(train: Mapping[str, Any], restored: Mapping[str, Any]) -> dict[str, Any]:
    """train.json's run facts plus the metrics of the checkpoint actually exported."""
    summary: dict[str, Any] = {k: train[k] for k in _TRAIN_KEYS if k in train}
    summary["checkpoint"] = restored.get("which")
    summary["checkpoint_step"] = restored.get("step")
    if isinstance(restored.get("metrics"), Mapping):
        summary.update(restored["metrics"])
    elif restored.get("metric") is not None:
        summary[restored["metric"]] = restored.get("value")
    return summary


def _data_manifest(cfg: PipelineConfig, run_dir: RunDir, splits: Any) -> dict[str, Any]:
    """The run's data.manifest.json when it describes `splits`, else one built from them."""
    path = run_dir.root / MANIFEST_FILE
    if path.is_file():
        try:
            recorded = read_json(path)
        except (OSError, ValueError) as exc:
            log.warning("ignoring %s (%s); rebuilding it from the data", path, exc)
        else:
            if (
                isinstance(recorded, dict)
                and recorded.get("fingerprint") == splits.fingerprint
                and isinstance(recorded.get("files"), list)
            ):
                return recorded
            log.warning("%s describes other data; rebuilding it from the data", path)
    return {
        "fingerprint": splits.fingerprint,
        "files": [e.__dict__ for e in splits.files],
        "source": cfg.data.source.value,
        "path": str(cfg.data.path) if cfg.data.path else None,
    }


def run_export(cfg: PipelineConfig, run_dir: RunDir) -> ExportResult:
    """Export the best checkpoint of this run (chief only under multi-worker training)."""
    from tfship.cluster import is_chief

    if not is_chief():
        return ExportResult(
            None,
            None,
            cfg.project.model_name,
            skipped="not the chief task; only the chief writes exports",
        )
    from tfship.checkpoints import restore_for_export
    from tfship.data import load_splits

    if not run_dir.train_json.exists():
        raise ModelError(
            f"{run_dir.train_json} is missing; export needs a trained run",
            hint="run `tfship train` with the same --run-dir first",
        )
    model, info = restore_for_export(cfg, run_dir, which="best")
    splits = load_splits(cfg)
    trained_on = (info.get("data_fingerprint"), list(info.get("class_names") or ()))
    if trained_on != (splits.fingerprint, list(splits.class_names)):
        raise DataError(
            f"the data changed since training: checkpoint fingerprint {trained_on[0]} "
            f"(classes {trained_on[1]}), data now {splits.fingerprint} "
            f"(classes {list(splits.class_names)}); golden requests must come from the same data",
            hint="export with the data the model was trained on, or retrain",
        )
    n_val = len(splits.x_val)
    warm_idx = np.arange(cfg.export.warmup_requests) % n_val
    result = export_savedmodel(
        model,
        cfg=cfg,
        run_dir=run_dir,
        class_names=splits.class_names,
        golden_x=splits.x_val[: cfg.export.golden_requests],
        warmup_x=splits.x_val[warm_idx],
        training_summary=_training_summary(read_json(run_dir.train_json), info),
        data_fingerprint=splits.fingerprint,
        data_manifest=_data_manifest(cfg, run_dir, splits),
    )
    return replace(result, checkpoint={k: v for k, v in info.items() if k != "class_names"})
