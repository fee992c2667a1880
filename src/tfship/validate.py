"""Validate stage: serve the export in a real model server before anything is pushed.

The server comes from, in order (`--launcher auto`): the pinned `tensorflow/serving` image via
the Docker SDK when a Docker engine answers; the `tensorflow_model_server` binary named by
TFSHIP_MODEL_SERVER; a server already serving the export (`--server-url` / serving.rest_url).
It waits for AVAILABLE (cold start), replays the export's warmup records over gRPC (Predict, and
Classify/Regress for tf.Example endpoints) and its golden requests over REST (predict, and each
`golden.examples` method via :classify/:regress), and times single-example requests (p50/p95).
With no server at all it falls back to the offline C++ loader check and says so in
`validation.json`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tfship import env
from tfship.config import PipelineConfig
from tfship.errors import InfraError, ModelError
from tfship.fsutil import atomic_write_json
from tfship.redact import redact, redact_url
from tfship.result import to_jsonable
from tfship.rundir import RunDir
from tfship.serving import golden
from tfship.serving.client import ServerAnswered, ServingClient
from tfship.serving.launchers import TF_SERVING_IMAGE as TF_SERVING_IMAGE
from tfship.serving.launchers import binary_server, choose, docker_server, wait_listening


@dataclass(frozen=True)
class ValidationResult:
    """What the model server said about the export (also `validation.json`)."""

    mode: str  # docker | binary | url | offline
    server: str
    model: str
    version: int
    status: str  # passed | failed
    cold_start_seconds: float | None = None
    warmup_requests: int = 0
    golden: golden.GoldenCheck | None = None
    latency_ms: dict[str, float] = field(default_factory=dict)
    offline_check: Any = None
    note: str = ""  # how this was checked; on failure, why it failed

    def render_text(self) -> str:
        lines = [
            f"validate: {self.model} v{self.version} {self.status} ({self.mode}: {self.server})"
        ]
        if self.cold_start_seconds is not None:
            lines.append(
                f"  cold start {self.cold_start_seconds:.2f} s; warmup {self.warmup_requests}"
            )
        if self.golden is not None:
            lines.append(
                f"  golden max |diff| {self.golden.max_abs_diff:.3g} <= {self.golden.tolerance:g}"
            )
        if self.latency_ms:
            lines.append(
                "  latency " + ", ".join(f"{k} {v:.2f}" for k, v in self.latency_ms.items())
            )
        if self.note:
            lines.append(f"  note: {self.note}")
        return "\n".join(lines)


def _replay_warmup(client: ServingClient, export_dir: Path, version: int) -> int:
    path = export_dir / golden.WARMUP
    if not path.exists() or not client.grpc_target:
        return 0
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    n = 0
    for raw in tf.data.TFRecordDataset(str(path)).as_numpy_iterator():
        rec = prediction_log_pb2.PredictionLog.FromString(raw)
        kind = rec.WhichOneof("log_type")
        if kind == "predict_log":
            client.predict_grpc(rec.predict_log.request, version=version)
        else:  # classify_log / regress_log: the tf.Example APIs
            method = kind.removesuffix("_log")
            client.example_method_grpc(method, getattr(rec, kind).request, version=version)
        n += 1
    return n


def _exercise(
    cfg: PipelineConfig,
    client: ServingClient,
    export_dir: Path,
    manifest: dict[str, Any],
    version: int,
    t_start: float,
) -> dict[str, Any]:
    try:
        client.wait_available(
            [version],
            deadline=cfg.serving.load_deadline_seconds,
            poll=min(cfg.serving.poll_interval_seconds, 0.2),
        )
        cold = time.monotonic() - t_start
        warm = _replay_warmup(client, export_dir, version)
        check = golden.replay(client, manifest, cfg.serving.tolerance, version=version)
    except ServerAnswered as exc:
        # The server is up and answered: it cannot load or run this export.
        raise ModelError(
            f"{client.model} v{version} was refused by the model server: {exc.message}",
            hint="the export does not load or does not take its own golden requests; "
            "re-export it (`tfship export`) and check `saved_model_cli show --all`",
        ) from exc
    one = {k: v[:1] for k, v in golden.golden_inputs(manifest).items()}
    times = []
    for _ in range(cfg.serving.latency_requests):
        t = time.perf_counter()
        client.predict(one, version=version)
        times.append((time.perf_counter() - t) * 1000)
    latency = {
        "p50": float(np.percentile(times, 50)),
        "p95": float(np.percentile(times, 95)),
        "requests": float(len(times)),
    }
    return {
        "cold_start_seconds": round(cold, 3),
        "warmup_requests": warm,
        "golden": check,
        "latency_ms": {k: round(v, 3) for k, v in latency.items()},
    }


def run_validate(
    cfg: PipelineConfig, run_dir: RunDir, *, launcher: str = "auto", server_url: str | None = None
) -> ValidationResult:
    """Check the run's export in a model server (or offline); write `validation.json`.

    `launcher`: auto | docker | binary | url | offline (see the module docstring). Raises
    ModelError (exit 6) when the export does not load or answers the golden requests wrongly,
    InfraError (exit 8) when no server could be started or reached; `validation.json` then
    says `failed` / `error` and why.
    """
    export_dir = golden.latest_export(run_dir.export)
    manifest = golden.check_manifest(
        golden.read_manifest(export_dir), version=int(export_dir.name), where=str(export_dir)
    )
    model, version = cfg.project.model_name, int(manifest["version"])
    binary = env.get("TFSHIP_MODEL_SERVER")
    url = server_url or cfg.serving.rest_url
    mode, docker_client = choose(launcher, binary, url)
    server = {"docker": TF_SERVING_IMAGE, "binary": binary, "url": url}.get(mode) or "none"
    server = redact_url(server) if "://" in server else server
    try:
        fields = _validate_with(
            mode, cfg, export_dir, manifest, model, version, docker_client, binary, url
        )
    except (ModelError, InfraError) as exc:
        status = "failed" if isinstance(exc, ModelError) else "error"
        failed = ValidationResult(mode, server, model, version, status, note=str(exc)[:4000])
        atomic_write_json(run_dir.ensure().validation_json, redact(to_jsonable(failed)))
        raise
    check = fields.get("golden")
    status = "failed" if check is not None and not check.ok else "passed"
    result = ValidationResult(
        model=model, version=version, status=status, **{"server": server, **fields}
    )
    atomic_write_json(run_dir.ensure().validation_json, redact(to_jsonable(result)))
    if status == "failed":
        raise ModelError(
            f"{model} v{version} served by {result.server} answered the golden "
            "requests wrongly: " + "; ".join(check.problems),
            hint=f"see {run_dir.validation_json}",
        )
    return result


def _validate_with(
    mode: str,
    cfg: PipelineConfig,
    export_dir: Path,
    manifest: dict[str, Any],
    model: str,
    version: int,
    docker_client: Any,
    binary: str | None,
    url: str | None,
) -> dict[str, Any]:
    s = cfg.serving
    if mode == "offline":
        from tfship.verify import verify_export

        return {
            "mode": "offline",
            "offline_check": verify_export(export_dir, s.tolerance, reuse=True),
            "note": "no model server available (no Docker engine, TFSHIP_MODEL_SERVER or "
            "server URL): ran the offline C++ loader check and golden replay only",
        }
    if mode == "url":
        assert url is not None
        client = ServingClient(
            model,
            rest_url=url,
            grpc_target=s.grpc_target,
            timeout=s.request_timeout_seconds,
            retries=s.connect_retries,
            backoff=s.retry_backoff_seconds,
        )
        try:
            return {
                "mode": "url",
                **_exercise(cfg, client, export_dir, manifest, version, time.monotonic()),
                "note": "existing server: cold start is the time to see the version AVAILABLE",
            }
        finally:
            client.close()
    t0 = time.monotonic()
    ctx = (
        docker_server(docker_client, export_dir, model, version)
        if mode == "docker"
        else binary_server(str(binary), export_dir, model, version)
    )
    with ctx as launched:
        wait_listening(launched, model, s.load_deadline_seconds)
        client = ServingClient(
            model,
            rest_url=launched.rest_url,
            grpc_target=launched.grpc_target,
            timeout=s.request_timeout_seconds,
            retries=s.connect_retries,
            backoff=s.retry_backoff_seconds,
        )
        try:
            return {
                "mode": mode,
                "server": launched.description,
                **_exercise(cfg, client, export_dir, manifest, version, t0),
            }
        finally:
            client.close()
