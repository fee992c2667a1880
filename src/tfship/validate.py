"""Validate stage: serve the export in a real model server before anything is pushed.

The server comes from, in order (`--launcher auto`): the pinned `tensorflow/serving` image via
the Docker SDK when a Docker engine answers; the `tensorflow_model_server` binary named by
TFSHIP_MODEL_SERVER; a server already serving the export (`--server-url` / serving.rest_url).
It waits for AVAILABLE (cold start), replays the export's warmup records over gRPC and its golden
requests over REST, and times single-example requests (p50/p95). With no server at all it falls
back to the offline C++ loader check and says so in `validation.json`.
"""

from __future__ import annotations

import contextlib
import logging
import shlex
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tfship import env
from tfship.config import PipelineConfig
from tfship.errors import InfraError, ModelError
from tfship.fsutil import atomic_write_json
from tfship.result import to_jsonable
from tfship.rundir import RunDir
from tfship.serving import golden
from tfship.serving.client import ServingClient

log = logging.getLogger(__name__)

# Same release as TensorFlow and tensorflow-serving-api (2.21), so the server's TF runtime knows
# every op the export uses. Kept in step with docker/serving/compose.yaml and k8s/ (a unit test
# checks it).
TF_SERVING_IMAGE = "tensorflow/serving:2.21.0"


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
    note: str = ""

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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _docker_client() -> Any:
    try:
        import docker

        client = docker.from_env(timeout=10)
        client.ping()
        return client
    except Exception as exc:  # no SDK, no socket, engine down: all mean "no Docker here"
        log.debug("no Docker engine: %s", exc)
        return None


@contextlib.contextmanager
def _docker_server(client: Any, base: Path, model: str) -> Iterator[tuple[str, str, str]]:
    try:
        client.images.get(TF_SERVING_IMAGE)
    except Exception:
        client.images.pull(TF_SERVING_IMAGE)
    container = client.containers.run(
        TF_SERVING_IMAGE,
        detach=True,
        environment={"MODEL_NAME": model},
        ports={"8500/tcp": ("127.0.0.1", None), "8501/tcp": ("127.0.0.1", None)},
        volumes={str(base / model): {"bind": f"/models/{model}", "mode": "ro"}},
    )
    try:
        container.reload()
        ports = container.attrs["NetworkSettings"]["Ports"]
        rest, grpc = ports["8501/tcp"][0]["HostPort"], ports["8500/tcp"][0]["HostPort"]
        yield (
            f"http://127.0.0.1:{rest}",
            f"127.0.0.1:{grpc}",
            f"{TF_SERVING_IMAGE} ({container.short_id})",
        )
    finally:
        with contextlib.suppress(Exception):
            container.remove(force=True)


@contextlib.contextmanager
def _binary_server(command: str, base: Path, model: str) -> Iterator[tuple[str, str, str]]:
    rest, grpc = _free_port(), _free_port()
    argv = [
        *shlex.split(command),
        f"--port={grpc}",
        f"--rest_api_port={rest}",
        f"--model_name={model}",
        f"--model_base_path={base / model}",
        "--file_system_poll_wait_seconds=1",
    ]
    logfile = tempfile.NamedTemporaryFile(
        prefix="tfship-model-server-", suffix=".log", delete=False
    )
    try:
        proc = subprocess.Popen(argv, stdout=logfile, stderr=subprocess.STDOUT)
    except OSError as exc:
        raise InfraError(
            f"cannot start TFSHIP_MODEL_SERVER ({command}): {exc}",
            hint="set TFSHIP_MODEL_SERVER to a tensorflow_model_server binary",
        ) from exc
    try:
        yield (
            f"http://127.0.0.1:{rest}",
            f"127.0.0.1:{grpc}",
            f"{argv[0]} (pid {proc.pid}, log {logfile.name})",
        )
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        logfile.close()


def _replay_warmup(client: ServingClient, export_dir: Path, version: int) -> int:
    path = export_dir / golden.WARMUP
    if not path.exists() or not client.grpc_target:
        return 0
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    n = 0
    for raw in tf.data.TFRecordDataset(str(path)).as_numpy_iterator():
        rec = prediction_log_pb2.PredictionLog.FromString(raw)
        client.predict_grpc(rec.predict_log.request, version=version)
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
    client.wait_available(
        [version],
        deadline=cfg.serving.load_deadline_seconds,
        poll=min(cfg.serving.poll_interval_seconds, 0.2),
    )
    cold = time.monotonic() - t_start
    warm = _replay_warmup(client, export_dir, version)
    outputs = client.predict(golden.golden_inputs(manifest), version=version)
    check = golden.compare(manifest, outputs, cfg.serving.tolerance)
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

    Raises ModelError (exit 6) when the served answers disagree with the golden outputs.
    """
    export_dir = golden.latest_export(run_dir.export)
    manifest = golden.read_manifest(export_dir)
    model, version = cfg.project.model_name, int(manifest["version"])
    binary = env.get("TFSHIP_MODEL_SERVER")
    url = server_url or cfg.serving.rest_url
    docker_client = _docker_client() if launcher in ("auto", "docker") else None
    if launcher == "auto":
        launcher = (
            "docker" if docker_client else "binary" if binary else "url" if url else "offline"
        )
    missing = {
        "docker": docker_client is None and "no Docker engine answered (DOCKER_HOST?)",
        "binary": not binary and "TFSHIP_MODEL_SERVER is not set",
        "url": not url and "no --server-url / serving.rest_url",
    }.get(launcher)
    if missing:
        raise InfraError(
            f"--launcher {launcher}: {missing}",
            hint="use --launcher auto to take whatever is available",
        )

    fields: dict[str, Any]
    if launcher == "offline":
        from tfship.export import verify_export

        check = verify_export(export_dir, cfg.serving.tolerance)
        fields = {
            "mode": "offline",
            "server": "none",
            "offline_check": check,
            "note": "no model server available (no Docker engine, TFSHIP_MODEL_SERVER or "
            "server URL): ran the offline C++ loader check and golden replay only",
        }
    elif launcher == "url":
        assert url is not None
        client = ServingClient(
            model,
            rest_url=url,
            grpc_target=cfg.serving.grpc_target,
            timeout=cfg.serving.request_timeout_seconds,
            retries=cfg.serving.connect_retries,
        )
        fields = {
            "mode": "url",
            "server": url,
            **_exercise(cfg, client, export_dir, manifest, version, time.monotonic()),
            "note": "existing server: cold start is the time to see the version AVAILABLE",
        }
        client.close()
    else:
        with tempfile.TemporaryDirectory(prefix="tfship-validate-") as tmp:
            base = Path(tmp)
            (base / model).mkdir()
            (base / model / str(version)).symlink_to(export_dir.resolve(), target_is_directory=True)
            t0 = time.monotonic()
            ctx = (
                _docker_server(docker_client, base, model)
                if launcher == "docker"
                else _binary_server(str(binary), base, model)
            )
            with ctx as (rest, grpc_target, desc):
                client = ServingClient(
                    model,
                    rest_url=rest,
                    grpc_target=grpc_target,
                    timeout=cfg.serving.request_timeout_seconds,
                    retries=cfg.serving.connect_retries,
                )
                try:
                    # A fresh server refuses connections until it listens: ride that out.
                    _wait_listening(client, cfg.serving.load_deadline_seconds)
                    fields = {
                        "mode": launcher,
                        "server": desc,
                        **_exercise(cfg, client, export_dir, manifest, version, t0),
                    }
                finally:
                    client.close()
    check = fields.get("golden")
    status = "failed" if check is not None and not check.ok else "passed"
    result = ValidationResult(model=model, version=version, status=status, **fields)
    atomic_write_json(run_dir.ensure().validation_json, to_jsonable(result))
    if status == "failed":
        raise ModelError(
            f"{model} v{version} served by {result.server} answered the golden "
            "requests wrongly: " + "; ".join(check.problems),
            hint=f"see {run_dir.validation_json}",
        )
    return result


def _wait_listening(client: ServingClient, deadline: float) -> None:
    t0 = time.monotonic()
    while True:
        try:
            client.status()
            return
        except InfraError:
            if time.monotonic() - t0 > deadline:
                raise
            time.sleep(0.2)
