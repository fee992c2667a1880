"""Export stage: the trained model as a TF Serving SavedModel, checked before it becomes a version.

`export_savedmodel` writes `export/<version>/` with a `serving_default` signature (raw pixels in,
probabilities and class id out), `assets.extra/tfship-manifest.json` (provenance + golden
requests), `assets.extra/tfship-data-manifest.json` (the data's file list, for `tfship data
changed --since`), `assets.extra/tfship-statistics.json` (the training data's statistics, the
reference the next run's data is compared with) and `assets.extra/tf_serving_warmup_requests`.
Everything is written to a non-numeric temporary directory and verified there (TF's
session-based loader in a fresh process, plus a reload in this one); only then is it renamed to
its numeric version, because TF Serving loads any numeric directory it sees. `verify_export` is
the same offline check, for any tfship export.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import shutil
import time
import uuid
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from tfship import env
from tfship import verify as verify_mod
from tfship.artifacts import MANIFEST, WARMUP
from tfship.config import PipelineConfig
from tfship.data.schema import Kind, Schema
from tfship.data.statistics import embed_statistics
from tfship.datachange import EXPORT_DATA_MANIFEST, MANIFEST_FILE
from tfship.errors import ConfigError, DataError, ModelError
from tfship.export_meta import MAX_VERSION, check_version, git_info, next_version
from tfship.features_io import (
    example_rows,
    json_values,
    parse_spec,
    parsed_features,
    serialize,
    tensor_inputs,
)
from tfship.fsutil import atomic_write_json, read_json
from tfship.model import feed
from tfship.rundir import RunDir
from tfship.serving.golden import golden_inputs
from tfship.serving.repository import tree_digest
from tfship.task import EXAMPLE_INPUT, Task
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

MANIFEST_SCHEMA = "tfship-manifest/2"


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


def signature_function(
    model: Any, schema: Schema, task: Task, label_names: Sequence[str]
) -> tuple[Any, list[Any]]:
    """`serving_default`: one input per feature (named, typed), the task's serving outputs."""
    import tensorflow as tf

    names = schema.names

    def serve(*features: Any) -> dict[str, Any]:
        # float32 even under a mixed-precision policy: the signature promises float32.
        x = dict(zip(names, features, strict=True))
        logits = tf.cast(model(feed(names, x), training=False), tf.float32)
        return task.serving_outputs(logits, label_names)

    return serve, [f.tensor_spec() for f in schema.features]


def example_function(
    model: Any, schema: Schema, task: Task, label_names: Sequence[str], method: str
) -> Any:
    """The `classify` / `regress` endpoint: serialized tf.Example in (one DT_STRING input named
    `inputs`, what TF Serving's handlers feed), the names its handlers read out."""
    import tensorflow as tf

    names, spec = schema.names, parse_spec(schema)

    def endpoint(inputs: Any) -> dict[str, Any]:
        x = parsed_features(schema, tf.io.parse_example(inputs, spec))
        logits = tf.cast(model(feed(names, x), training=False), tf.float32)
        return task.example_outputs(method, logits, label_names)

    return endpoint


def _jsonable(value: Any) -> Any:
    arr = np.asarray(value)
    if arr.dtype.kind in "OSU":
        return np.vectorize(
            lambda v: v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v),
            otypes=[object],
        )(arr).tolist()
    return arr.tolist()


def _write_warmup(
    path: Path,
    schema: Schema,
    warmup_x: Mapping[str, np.ndarray],
    model_name: str,
    methods: Sequence[str],
) -> int:
    """PredictionLog records: one predict per row, then classify/regress ones while the total
    stays within TF Serving's limit (each exported API is warmed up)."""
    import tensorflow as tf
    from tensorflow_serving.apis import (
        classification_pb2,
        input_pb2,
        predict_pb2,
        prediction_log_pb2,
        regression_pb2,
    )

    n = len(next(iter(warmup_x.values()))) if warmup_x else 0
    if not n:
        return 0  # no file at all: TF Serving then skips warmup
    feeds = tensor_inputs(schema, warmup_x)
    serialized = serialize(schema, example_rows(schema, warmup_x)) if methods else []
    per_method = min(n, (MAX_WARMUP_RECORDS - n) // max(len(methods), 1)) if methods else 0
    path.parent.mkdir(parents=True, exist_ok=True)
    records = 0
    with tf.io.TFRecordWriter(str(path)) as writer:
        for i in range(n):
            req = predict_pb2.PredictRequest()
            req.model_spec.name = model_name
            req.model_spec.signature_name = SIGNATURE
            for name, value in feeds.items():
                req.inputs[name].CopyFrom(tf.make_tensor_proto(value[i : i + 1]))
            log_ = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=req)
            )
            writer.write(log_.SerializeToString())
            records += 1
        for method in methods:
            for i in range(per_method):
                example_input = input_pb2.Input()
                example_input.example_list.examples.add().ParseFromString(serialized[i])
                if method == "classify":
                    creq = classification_pb2.ClassificationRequest(input=example_input)
                    creq.model_spec.name, creq.model_spec.signature_name = model_name, method
                    log_ = prediction_log_pb2.PredictionLog(
                        classify_log=prediction_log_pb2.ClassifyLog(request=creq)
                    )
                else:
                    rreq = regression_pb2.RegressionRequest(input=example_input)
                    rreq.model_spec.name, rreq.model_spec.signature_name = model_name, method
                    log_ = prediction_log_pb2.PredictionLog(
                        regress_log=prediction_log_pb2.RegressLog(request=rreq)
                    )
                writer.write(log_.SerializeToString())
                records += 1
    return records


def _manifest(**fields: Any) -> dict[str, Any]:
    return {"format": MANIFEST_SCHEMA, **fields}


def _checked_rows(
    name: str, schema: Schema, x: Mapping[str, np.ndarray], min_rows: int
) -> dict[str, np.ndarray]:
    """The features of golden / warmup rows, checked: every feature, enough rows, finite
    pixels (golden and warmup requests come from the validation data)."""
    missing = [n for n in schema.names if n not in x]
    if missing:
        raise ModelError(f"{name} lacks feature(s) {missing}; expected {list(schema.names)}")
    rows = tensor_inputs(schema, x)
    n = len(next(iter(rows.values())))
    if n < min_rows:
        raise ModelError(f"{name} has {n} rows; expected at least {min_rows}")
    for f in schema.of_kind(Kind.IMAGE):
        bad = int(np.sum(~np.isfinite(rows[f.name])))
        if bad:
            raise DataError(
                f"{name} holds {bad} NaN/Inf pixel value(s) in {f.name!r}; expected finite "
                "raw pixels in [0, 255]",
                hint="golden and warmup requests come from the validation data: fix the data",
            )
    return rows


def export_savedmodel(
    model: Any,
    *,
    cfg: PipelineConfig,
    run_dir: RunDir,
    schema: Schema,
    label_names: Sequence[str],
    golden_x: Mapping[str, np.ndarray],
    warmup_x: Mapping[str, np.ndarray],
    training_summary: Mapping[str, Any],
    data_fingerprint: str,
    version: int | None = None,
    data_manifest: Mapping[str, Any] | None = None,
) -> ExportResult:
    """Export `model` (named raw features in, logits out) for TF Serving under
    `export/<version>/`: `serving_default` plus the task's tf.Example endpoints.

    `version` defaults to `cfg.export.version`, else `next_version` by `export.version_scheme`.
    `data_manifest` (a data.manifest.json's content: `fingerprint` and `files`) is copied to
    `assets.extra/tfship-data-manifest.json`; its fingerprint must be `data_fingerprint`.
    The export is verified (`verify_export`) before it gets its numeric name; on any failure
    nothing numeric is left behind and `ModelError` is raised.
    """
    import keras
    import tensorflow as tf

    t0 = time.perf_counter()
    task = cfg.task_obj
    if data_manifest is not None and data_manifest.get("fingerprint") != data_fingerprint:
        raise DataError(
            f"the data manifest is for data fingerprint {data_manifest.get('fingerprint')}; "
            f"expected the exported model's {data_fingerprint}",
            hint="pass the manifest of the data the model was trained on",
        )
    golden = _checked_rows("golden_x", schema, golden_x, 1)
    warmup = _checked_rows("warmup_x", schema, warmup_x, 0)
    methods = task.example_methods(label_names)
    n_warmup = len(next(iter(warmup.values())))
    if n_warmup > MAX_WARMUP_RECORDS:
        raise ModelError(
            f"{n_warmup} warmup samples given; TF Serving loads a model only "
            f"with at most {MAX_WARMUP_RECORDS} warmup records",
            hint="lower export.warmup_requests",
        )
    tol = cfg.export.tolerance
    if not 0 < tol <= MAX_TOLERANCE:  # verify_export would refuse the export after writing it
        raise ConfigError(
            f"export.tolerance must be in (0, {MAX_TOLERANCE:g}]. Received: {tol}",
            hint="golden outputs are probabilities in [0, 1]: e.g. export.tolerance: 1e-4",
        )
    serve, input_signature = signature_function(model, schema, task, label_names)
    endpoints = {m: example_function(model, schema, task, label_names, m) for m in methods}
    rows = example_rows(schema, golden)
    serialized = tf.constant(serialize(schema, rows), dtype=tf.string)
    try:
        reference = {
            k: v.numpy() for k, v in serve(*(tf.constant(golden[n]) for n in schema.names)).items()
        }
        example_reference = {
            m: {k: v.numpy() for k, v in fn(serialized).items()} for m, fn in endpoints.items()
        }
    except Exception as exc:  # Keras/TF raise many types; all mean the model cannot serve this
        shapes = {k: list(v.shape) for k, v in golden.items()}
        raise ModelError(
            f"the model cannot run on the golden rows {shapes}: {exc}",
            hint="the model must take the schema's raw features by name and return logits",
        ) from exc
    require_finite(reference, "the model in memory")
    width = task.output_width(label_names)
    score = np.asarray(reference.get(task.score_output))
    if score.ndim > 1 and score.shape[-1] != width:
        raise ModelError(
            f"the model outputs {score.shape[-1]} values per example; expected {width} "
            f"for the {task.type} task with labels {list(label_names)[:20]}"
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
    cpp_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tfship-cpp-loader")
    try:
        archive = keras.export.ExportArchive()
        archive.track(model)
        _track_each_variable_once(archive)
        archive.add_endpoint(SIGNATURE, serve, input_signature=input_signature)
        for method, fn in endpoints.items():
            archive.add_endpoint(
                method, fn, input_signature=[tf.TensorSpec([None], tf.string, name=EXAMPLE_INPUT)]
            )
        try:
            archive.write_out(str(tmp), verbose=False)
        except Exception as exc:  # tracing/serialisation errors come in many types
            raise ModelError(f"keras.export.ExportArchive cannot write the model: {exc}") from exc

        # TF's C++ loader reads only the SavedModel proper (saved_model.pb, variables/), which
        # is final from here on: start that check now, in its fresh process, so it runs while
        # this one reloads the export and writes the manifest and the warmup records.
        # verify_export takes its answer only if it was fed the manifest's golden inputs.
        early_inputs = golden_inputs(
            {
                "signature": {
                    "inputs": {
                        f.name: {"dtype": f.tensor_spec().dtype.name} for f in schema.features
                    }
                },
                "golden": {
                    "inputs": {f.name: json_values(f, golden[f.name]) for f in schema.features}
                },
            }
        )
        early_cpp = cpp_pool.submit(verify_mod.run_cpp_loader, tmp, early_inputs)
        loaded = tf.saved_model.load(str(tmp))
        sig = loaded.signatures[SIGNATURE]
        exported = {
            k: v.numpy()
            for k, v in sig(**{n: tf.constant(golden[n]) for n in schema.names}).items()
        }
        exported_examples = {
            m: {k: v.numpy() for k, v in loaded.signatures[m](inputs=serialized).items()}
            for m in methods
        }
        # The run's data statistics travel with the model: the next run's data stage compares
        # its data with them (tfship.data.statistics; None when the run has none for this data).
        statistics = embed_statistics(run_dir.root, tmp, data_fingerprint)
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
            **({"statistics": statistics} if statistics else {}),
            task=task.describe(),
            schema=schema.to_json(),
            label_names=list(label_names),
            class_names=list(label_names),
            signature=describe_signature(sig),
            endpoints={m: describe_signature(loaded.signatures[m], m) for m in methods},
            training=dict(training_summary),
            warmup={"records": n_warmup},
            golden={
                "tolerance": tol,
                "inputs": {f.name: json_values(f, golden[f.name]) for f in schema.features},
                "outputs": {k: _jsonable(v) for k, v in sorted(exported.items())},
                **(
                    {
                        "examples": {
                            m: {
                                "examples": rows,
                                "outputs": {
                                    k: _jsonable(v) for k, v in sorted(exported_examples[m].items())
                                },
                            }
                            for m in methods
                        }
                    }
                    if methods
                    else {}
                ),
            },
        )
        # The export must agree with the model it came from before its own outputs become golden.
        check_golden(
            {"golden": {"tolerance": tol, "outputs": reference}},
            exported,
            tol,
            "the exported signature (vs the model in memory)",
        )
        for m in methods:
            check_golden(
                {"golden": {"tolerance": tol, "outputs": example_reference[m]}},
                exported_examples[m],
                tol,
                f"the exported {m!r} endpoint (vs the model in memory)",
            )
        n_warm = _write_warmup(tmp / WARMUP, schema, warmup, cfg.project.model_name, methods)
        if data_manifest is not None:
            atomic_write_json(tmp / EXPORT_DATA_MANIFEST, dict(data_manifest))
        atomic_write_json(tmp / MANIFEST, manifest)
        # The directory is complete and nothing writes to it any more: hash it (for the
        # verification record) while the check waits on the fresh-process loader. The digest
        # is over relative names, so it is the numbered directory's too after the rename.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="tfship-digest") as pool:
            digest = pool.submit(tree_digest, tmp)
            verified = verify_export(tmp, tol, loaded=loaded, started=(early_inputs, early_cpp))
            digest_of_verified = digest.result()
        _claim(tmp, root / str(version), explicit)
    except BaseException:
        cpp_pool.shutdown(wait=True)  # the early loader check reads tmp: let it finish first
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        cpp_pool.shutdown(wait=True)
    final = root / str(version)
    verified = replace(verified, export_dir=final)
    # Bound to these bytes: deploy and validate reuse the check instead of repeating it.
    from tfship.verify_record import write_record

    write_record(final, verified, digest_of_verified)
    log.info("exported %s version %d to %s", cfg.project.model_name, version, final)
    return ExportResult(
        final,
        version,
        cfg.project.model_name,
        final / MANIFEST,
        n_warm,
        len(rows),
        time.perf_counter() - t0,
        verified,
    )


def _track_each_variable_once(archive: Any) -> None:
    """Make the SavedModel hold every weight once (keras-team/keras#23553, open in Keras 3.15).

    On the TensorFlow backend `ExportArchive.track(model)` lists the `keras.Variable` wrappers,
    while the endpoints capture the `tf.Variable` inside each: two Python objects per weight,
    which TF's object-identity de-duplication cannot unify, so every weight is written twice
    (measured: a 258 MiB model exported as 517 MiB) and every loader — the C++ check, evaluate,
    TF Serving — restores two buffers per weight. Listing the `tf.Variable`s themselves makes
    the collections and the endpoints share one object per weight. `track` is still called:
    it also tracks the lookup tables of preprocessing layers. Keras versions without the
    private attribute are left as they are (the export is then larger, never wrong).
    """
    import tensorflow as tf

    trackable = getattr(archive, "_tf_trackable", None)
    for name in ("variables", "trainable_variables", "non_trainable_variables"):
        listed = getattr(trackable, name, None)
        if listed is None:
            return
        inner = [getattr(v, "_value", None) for v in listed]
        setattr(
            trackable,
            name,
            [i if isinstance(i, tf.Variable) else v for v, i in zip(listed, inner, strict=True)],
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


def run_export(cfg: PipelineConfig, run_dir: RunDir, *, splits: Any = None) -> ExportResult:
    """Export the best checkpoint of this run (chief only under multi-worker training).
    `splits` (a tfship.data.Splits of this config) skips loading the data again."""
    from tfship.cluster import is_chief

    if not is_chief():
        return ExportResult(
            None,
            None,
            cfg.project.model_name,
            skipped="not the chief task; only the chief writes exports",
        )
    from tfship.checkpoints import restore_for_export
    from tfship.cpp_loader import prestart
    from tfship.data import load_splits, take

    prestart()  # the loader check's interpreter imports TensorFlow while we restore and write

    if not run_dir.train_json.exists():
        raise ModelError(
            f"{run_dir.train_json} is missing; export needs a trained run",
            hint="run `tfship train` with the same --run-dir first",
        )
    splits = load_splits(cfg) if splits is None else splits
    model, info = restore_for_export(cfg, run_dir, which="best", splits=splits)
    n_val = len(splits.y_val)
    warm_idx = np.arange(cfg.export.warmup_requests) % n_val
    # Golden rows: complete ones first (JSON has no NaN, and TF Serving's REST API would need
    # one for a missing number); rows with missing values still get their turn in warmup.
    complete = np.ones(n_val, dtype=bool)
    for f in splits.schema.features:
        if not f.is_string and f.dtype == "float32":
            col = np.asarray(splits.x_val[f.name], dtype=np.float64).reshape(n_val, -1)
            complete &= ~np.isnan(col).any(axis=1)
    order = np.concatenate([np.flatnonzero(complete), np.flatnonzero(~complete)])
    result = export_savedmodel(
        model,
        cfg=cfg,
        run_dir=run_dir,
        schema=splits.schema,
        label_names=splits.label_names,
        golden_x=take(splits.x_val, order[: cfg.export.golden_requests]),
        warmup_x=take(splits.x_val, warm_idx),
        training_summary=_training_summary(read_json(run_dir.train_json), info),
        data_fingerprint=splits.fingerprint,
        data_manifest=_data_manifest(cfg, run_dir, splits),
    )
    return replace(result, checkpoint={k: v for k, v in info.items() if k != "schema"})
