"""Offline checks of an exported SavedModel, as TF Serving would load it.

`verify_export` works on any SavedModel directory that carries a tfship manifest: export runs it
before a version gets its numeric name; validate and deploy run it on what they are about to
serve. Two loaders must reproduce the manifest's golden requests: `tf.saved_model.load` in this
process and `saved_model_cli run` (TF's session-based loader) in a fresh one, which also proves
the export needs no Python code from the process that wrote it.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tfship.artifacts import MANIFEST, WARMUP, read_manifest
from tfship.cpp_loader import CPP_LOADER_TIMEOUT, run_cpp_loader
from tfship.datachange import EXPORT_DATA_MANIFEST
from tfship.errors import ModelError
from tfship.serving.golden import check_manifest, compare, golden_inputs

log = logging.getLogger(__name__)

SIGNATURE = "serving_default"
# TF Serving refuses to load a model whose warmup file holds more records (WarmupConsts).
MAX_WARMUP_RECORDS = 1000
MAX_TOLERANCE = 1.0  # export.tolerance's bound: a wider one would let any model's outputs pass


@dataclass(frozen=True)
class VerifyResult:
    """An export that loaded in both loaders and reproduced its golden requests."""

    export_dir: Path
    model_name: str
    version: int
    golden_requests: int
    tolerance: float
    max_abs_diff: dict[str, float]  # loader ("cpp", "python") -> worst difference over outputs
    warmup_records: int
    cpp_loader_seconds: float
    data_manifest_files: int | None = None  # None: no assets.extra/tfship-data-manifest.json
    reused: str | None = None  # the verification record this result was read from, if any

    def render_text(self) -> str:
        diffs = ", ".join(f"{k} {v:.2g}" for k, v in self.max_abs_diff.items())
        if self.reused:
            return (
                f"verified {self.export_dir} ({self.model_name} v{self.version}) when it was "
                f"exported: {self.reused} holds its digest, which the files still have "
                f"(max abs diff: {diffs}; not repeated)"
            )
        return (
            f"verified {self.export_dir} ({self.model_name} v{self.version}): "
            f"{self.golden_requests} golden requests reproduce within {self.tolerance:g} "
            f"(max abs diff: {diffs}); {self.warmup_records} warmup records run; "
            f"C++ loader check {self.cpp_loader_seconds:.1f} s"
        )


def describe_signature(sig: Any, name: str = "serving_default") -> dict[str, Any]:
    """A concrete function's inputs and outputs as the manifest records them."""

    def spec(s: Any) -> dict[str, Any]:
        return {"dtype": s.dtype.name, "shape": [-1 if d is None else int(d) for d in s.shape]}

    return {
        "name": name,
        "inputs": {k: spec(s) for k, s in sorted(sig.structured_input_signature[1].items())},
        "outputs": {k: spec(s) for k, s in sorted(sig.structured_outputs.items())},
    }


# --- checks --------------------------------------------------------------------------------


def golden_tolerance(tolerance: float | None, manifest: Mapping[str, Any], where: Path) -> float:
    """The tolerance to replay with: > 0, finite and at most MAX_TOLERANCE, else ModelError."""
    raw = tolerance if tolerance is not None else manifest["golden"].get("tolerance")
    try:
        tol = float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        tol = float("nan")
    if not 0 < tol <= MAX_TOLERANCE:  # NaN fails too
        raise ModelError(
            f"{where}: golden tolerance must be a number in (0, {MAX_TOLERANCE:g}]. "
            f"Received: {str(raw)[:40]}",
            hint="re-export the model (`tfship export`), or pass a tolerance within the range",
        )
    return tol


def _leaves_ok(value: Any) -> bool:
    """Finite numbers, strings and {"b64": str}, nested in lists: what golden JSON may hold."""
    if isinstance(value, list):
        return all(_leaves_ok(v) for v in value)
    if isinstance(value, dict):
        return set(value) == {"b64"} and isinstance(value["b64"], str)
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return bool(np.isfinite(value))
    return isinstance(value, str)


def _ragged(value: list) -> bool:
    """True when nested lists differ in length (a batch must be one rectangular tensor)."""
    try:
        np.array(value, dtype=object if _has_text(value) else np.float64)
    except ValueError:
        return True
    return False


def _has_text(value: Any) -> bool:
    while isinstance(value, list) and value:
        value = value[0]
    return isinstance(value, str | dict)


def check_golden_arrays(manifest: Mapping[str, Any], export_dir: Path) -> None:
    """Golden inputs, outputs and examples: finite numbers or strings, one row per request."""
    golden = manifest["golden"]
    sides = [("inputs", golden["inputs"]), ("outputs", golden["outputs"])]
    for method, block in (golden.get("examples") or {}).items():
        examples = block.get("examples")
        if not isinstance(examples, list) or not all(
            isinstance(row, dict) and all(_leaves_ok(v) for v in row.values()) for row in examples
        ):
            raise ModelError(
                f"{export_dir / MANIFEST}: golden {method} examples are not a list of "
                "feature -> value objects",
                hint="re-export (never edit an export)",
            )
        sides.append((f"{method} examples", {"examples": [0] * len(examples)}))
        sides.append((f"{method} outputs", block.get("outputs") or {}))
    rows = set()
    for side, values in sides:
        for name, value in values.items():
            if not isinstance(value, list) or not value or not _leaves_ok(value) or _ragged(value):
                raise ModelError(
                    f"{export_dir / MANIFEST}: golden {side} '{name}' is not a non-empty "
                    "rectangular array of finite numbers or strings",
                    hint="re-export (never edit an export)",
                )
            rows.add(len(value))
    if len(rows) != 1:
        raise ModelError(
            f"{export_dir / MANIFEST}: golden inputs and outputs disagree on the number of "
            f"requests ({sorted(rows)})",
            hint="re-export (never edit an export)",
        )


def require_finite(outputs: Mapping[str, np.ndarray], where: str) -> None:
    for name, value in outputs.items():
        arr = np.asarray(value)
        if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
            bad = int(np.sum(~np.isfinite(arr)))
            raise ModelError(
                f"{where}: output '{name}' has {bad} NaN/Inf value(s); expected finite values",
                hint="weights corrupt or training diverged; export a good checkpoint",
            )


def check_golden(
    manifest: Mapping[str, Any], outputs: Mapping[str, Any], tol: float, where: str
) -> float:
    """Worst difference from the manifest's golden outputs; ModelError when out of tolerance."""
    result = compare(manifest, outputs, tol)
    if not result.ok:
        raise ModelError(
            f"{where} does not reproduce the golden requests: {'; '.join(result.problems)}",
            hint="the SavedModel and its manifest disagree; re-export (never edit an export)",
        )
    return result.max_abs_diff


def check_data_manifest(export_dir: Path, manifest: Mapping[str, Any]) -> int | None:
    """Files listed in the export's data manifest (None when it has none, as older exports).

    The data manifest only feeds `tfship data changed`; no loader reads it. It must still be
    the one for the data the model was trained on, or a later diff would be against other data.
    """
    path = export_dir / EXPORT_DATA_MANIFEST
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(
            f"{path} is not readable JSON ({exc})", hint="re-export (never edit an export)"
        ) from exc
    files = data.get("files") if isinstance(data, dict) else None
    fingerprint = data.get("fingerprint") if isinstance(data, dict) else None
    if not isinstance(files, list) or fingerprint != manifest.get("data_fingerprint"):
        raise ModelError(
            f"{path} does not match {export_dir / MANIFEST}: data fingerprint {fingerprint} "
            f"with {'a' if isinstance(files, list) else 'no'} file list; expected fingerprint "
            f"{manifest.get('data_fingerprint')} and a file list",
            hint="re-export (never edit an export)",
        )
    return len(files)


def _python_replay(
    export_dir: Path, manifest: Mapping[str, Any], tol: float, loaded: Any = None
) -> tuple[float, int]:
    """Reload with tf.saved_model.load (unless the caller loaded it already), replay the golden
    requests and run the warmup records."""
    import tensorflow as tf

    try:
        loaded = loaded if loaded is not None else tf.saved_model.load(str(export_dir))
    except Exception as exc:  # TF raises many types here; all mean "cannot be served"
        raise ModelError(f"tf.saved_model.load failed on {export_dir}: {exc}") from exc
    sig = loaded.signatures.get(SIGNATURE)
    if sig is None:
        raise ModelError(
            f"{export_dir} has no '{SIGNATURE}' signature (has {sorted(loaded.signatures)})",
            hint="TF Serving's REST/gRPC predict uses serving_default unless told otherwise",
        )
    described = describe_signature(sig)
    if described != manifest["signature"]:
        raise ModelError(
            f"{export_dir}: signature {described} differs from the manifest's "
            f"{manifest['signature']}"
        )
    try:
        feeds = {k: tf.constant(v) for k, v in golden_inputs(manifest).items()}
        outputs = {k: v.numpy() for k, v in sig(**feeds).items()}
    except Exception as exc:  # names, dtypes or shapes the signature does not take
        raise ModelError(
            f"{export_dir}: the manifest's golden inputs do not fit '{SIGNATURE}': "
            f"{type(exc).__name__}: {str(exc)[:300]}",
            hint="the SavedModel and its manifest disagree; re-export (never edit an export)",
        ) from None
    diff = check_golden(manifest, outputs, tol, "tf.saved_model.load")
    diff = max(diff, _replay_examples(loaded, manifest, tol, export_dir))
    try:
        records = read_warmup_logs(export_dir / WARMUP)
    except ModelError:
        raise
    except Exception as exc:  # a damaged file: TF's DataLossError, protobuf's DecodeError, ...
        raise ModelError(
            f"{export_dir / WARMUP} cannot be read as PredictionLog records: "
            f"{type(exc).__name__}: {str(exc)[:300]}",
            hint="TF Serving would fail to load this version; re-export",
        ) from None
    if len(records) > MAX_WARMUP_RECORDS:
        raise ModelError(
            f"{export_dir / WARMUP} has {len(records)} records; TF Serving refuses "
            f"to load a model with more than {MAX_WARMUP_RECORDS}"
        )
    predict = [payload for kind, payload in records if kind == "predict"]
    try:
        if predict:
            batch = {name: np.concatenate([r[name] for r in predict]) for name in predict[0]}
            warm = sig(**{k: tf.constant(v) for k, v in batch.items()})
            require_finite({k: v.numpy() for k, v in warm.items()}, "warmup requests")
        for method in sorted({kind for kind, _ in records} - {"predict"}):
            fn = loaded.signatures.get(method)
            if fn is None:
                raise ModelError(f"{export_dir / WARMUP}: {method} records but no such signature")
            examples = [e for kind, payload in records if kind == method for e in payload]
            warm = fn(inputs=tf.constant(examples, dtype=tf.string))
            require_finite({k: v.numpy() for k, v in warm.items()}, f"{method} warmup requests")
    except ModelError:
        raise
    except Exception as exc:  # a failing warmup record makes TF Serving fail the load
        raise ModelError(f"{export_dir / WARMUP}: warmup requests fail: {exc}") from exc
    return diff, len(records)


def _replay_examples(loaded: Any, manifest: Mapping[str, Any], tol: float, where: Path) -> float:
    """The tf.Example endpoints (classify / regress) reproduce their golden outputs."""
    import tensorflow as tf

    from tfship.data.schema import Schema
    from tfship.features_io import serialize

    worst = 0.0
    blocks = manifest["golden"].get("examples") or {}
    if not blocks:
        return worst
    schema = Schema.from_json(manifest["schema"])
    for method, block in blocks.items():
        fn = loaded.signatures.get(method)
        if fn is None:
            raise ModelError(
                f"{where}: the manifest has golden {method!r} examples but the SavedModel has "
                f"no {method!r} signature (has {sorted(loaded.signatures)})",
                hint="re-export (never edit an export)",
            )
        try:
            batch = tf.constant(serialize(schema, block["examples"]), dtype=tf.string)
            outputs = {k: v.numpy() for k, v in fn(inputs=batch).items()}
        except Exception as exc:  # examples the endpoint cannot parse
            raise ModelError(
                f"{where}: the golden {method!r} examples fail: {type(exc).__name__}: "
                f"{str(exc)[:300]}",
                hint="the SavedModel and its manifest disagree; re-export",
            ) from None
        sub = {"golden": {"tolerance": tol, "outputs": block["outputs"]}}
        worst = max(worst, check_golden(sub, outputs, tol, f"tf.saved_model.load {method!r}"))
    return worst


def read_warmup(path: Path) -> list[dict[str, np.ndarray]]:
    """Inputs of every predict record in a warmup file ([] when there is none); classify and
    regress records (tf.Example warmups of those endpoints) are checked by `read_warmup_logs`."""
    return [payload for kind, payload in read_warmup_logs(path) if kind == "predict"]


def read_warmup_logs(path: Path) -> list[tuple[str, Any]]:
    """(kind, payload) per record: ("predict", inputs) or ("classify"/"regress", examples as
    serialized bytes). ModelError for a record of another kind or signature."""
    if not path.exists():
        return []
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    out: list[tuple[str, Any]] = []
    for i, raw in enumerate(tf.data.TFRecordDataset(str(path)).as_numpy_iterator()):
        rec = prediction_log_pb2.PredictionLog.FromString(raw)
        kind = rec.WhichOneof("log_type")
        if kind == "predict_log":
            req = rec.predict_log.request
            if req.model_spec.signature_name not in ("", SIGNATURE):
                raise ModelError(f"{path}: record {i} is not a PredictLog for '{SIGNATURE}'")
            out.append(("predict", {k: tf.make_ndarray(v) for k, v in req.inputs.items()}))
        elif kind in ("classify_log", "regress_log"):
            method = kind.removesuffix("_log")
            req = getattr(rec, kind).request
            if req.model_spec.signature_name != method:
                raise ModelError(f"{path}: record {i} is a {method} log for another signature")
            examples = [e.SerializeToString() for e in req.input.example_list.examples]
            out.append((method, examples))
        else:
            raise ModelError(f"{path}: record {i} is a {kind}; expected predict/classify/regress")
    return out


# A C++ loader check already running: the inputs it was fed, and its `run_cpp_loader` result.
StartedCheck = tuple[Mapping[str, np.ndarray], Future[tuple[dict[str, np.ndarray], float]]]


def _same_arrays(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> bool:
    """Same names, dtypes, shapes and values (NaN equal to NaN)."""
    if set(a) != set(b):
        return False
    for name, x in a.items():
        x, y = np.asarray(x), np.asarray(b[name])
        if x.dtype != y.dtype or x.shape != y.shape:
            return False
        nan = x.dtype.kind in "fc"
        if not np.array_equal(x, y, equal_nan=nan):
            return False
    return True


def verify_export(
    export_dir: str | os.PathLike[str],
    tolerance: float | None = None,
    *,
    timeout: float = CPP_LOADER_TIMEOUT,
    reuse: bool = False,
    loaded: Any = None,
    digest: str | None = None,
    started: StartedCheck | None = None,
) -> VerifyResult:
    """Offline check of a SavedModel with a tfship manifest, as TF Serving would load it.

    Reloads it in this process (signature matches the manifest, golden requests reproduce,
    warmup records run) and, at the same time, through `saved_model_cli run` in a fresh
    process. Raises `ModelError` naming the loader, the output and the difference on any
    disagreement. `tolerance` defaults to the manifest's `golden.tolerance`.

    With `reuse`, a verification record written when the export was made
    (`tfship.verify_record`) stands in for the check when it names these exact bytes (sha256
    over every file), this TensorFlow and a tolerance at least as strict; otherwise (no
    record, other bytes) the full check runs. `loaded`: the directory already loaded with
    `tf.saved_model.load` in this process (export has it), so it is not loaded twice.
    `digest`: with `reuse`, the export's `tree_digest` as the caller just computed it (deploy
    hashes the files once and checks its copy against that reading), else computed here.
    Deciding to reuse a record imports no TensorFlow; only the full check does.
    `started`: (inputs, future of `run_cpp_loader(export_dir, inputs)`) already running (export
    starts it as soon as the SavedModel proper is written, which that loader reads, before the
    manifest is); it stands for the C++ loader check only when `inputs` are exactly the
    manifest's golden inputs, else the check runs again here.
    """
    export_dir = Path(export_dir)
    if reuse:
        from tfship.verify_record import reusable

        recorded = reusable(export_dir, tolerance, digest=digest)
        if recorded is not None:
            return recorded
    try:
        raw = read_manifest(export_dir)
    except RecursionError:  # json's answer to a nesting bomb
        raise ModelError(f"{export_dir / MANIFEST} is nested too deeply to be a manifest") from None
    # A numeric directory is the version TF Serving would load it as: the manifest must agree.
    named = (
        int(export_dir.name) if export_dir.name.isascii() and export_dir.name.isdigit() else None
    )
    manifest = check_manifest(raw, version=named, where=str(export_dir))
    check_golden_arrays(manifest, export_dir)
    tol = golden_tolerance(tolerance, manifest, export_dir)
    data_files = check_data_manifest(export_dir, manifest)
    # The fresh-process loader spends most of its time importing TensorFlow: run it while this
    # process replays the golden requests. Its failure is raised by .result(), never lost.
    inputs = golden_inputs(manifest)
    early = started is not None and _same_arrays(started[0], inputs)
    if started is not None and not early:
        log.info("the loader check started early fed other inputs; running it again")
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="tfship-cpp-loader") as pool:
        if early:
            assert started is not None
            cpp = started[1]
        else:
            cpp = pool.submit(run_cpp_loader, export_dir, inputs, timeout=timeout)
        # A replay failure is raised once the loader has finished (bounded by its timeout).
        py_diff, warmup = _python_replay(export_dir, manifest, tol, loaded)
        outputs, seconds = cpp.result()
    cpp_diff = check_golden(manifest, outputs, tol, "TF's C++ loader (saved_model_cli)")
    log.info("verified %s: C++ loader %.1f s", export_dir, seconds)
    return VerifyResult(
        export_dir,
        str(manifest.get("model_name", "")),
        int(manifest["version"]),
        len(next(iter(golden_inputs(manifest).values()))),
        tol,
        {"python": py_diff, "cpp": cpp_diff},
        warmup,
        seconds,
        data_files,
    )
