"""Model-server launchers for `tfship validate`: the pinned image, a binary, or a URL.

Each launcher is a context manager yielding a `Launched` (where the server listens, how to tell
it died, its log) and stopping the server on exit. `choose()` resolves `--launcher auto`;
`wait_listening()` polls until the server answers and diagnoses a server that exited first.
"""

from __future__ import annotations

import contextlib
import logging
import shlex
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tfship.errors import InfraError, ModelError
from tfship.serving.client import ServerAnswered, ServingClient

log = logging.getLogger(__name__)

# Same release as TensorFlow and tensorflow-serving-api (2.21), so the server's TF runtime knows
# every op the export uses. Kept in step with docker/serving/compose.yaml and k8s/ (a unit test
# checks it).
TF_SERVING_IMAGE = "tensorflow/serving:2.21.0"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def docker_engine() -> Any:
    try:
        import docker

        client = docker.from_env(timeout=10)
        client.ping()
        return client
    except Exception as exc:  # no SDK, no socket, engine down: all mean "no Docker here"
        log.debug("no Docker engine: %s", exc)
        return None


@dataclass(frozen=True)
class Launched:
    """A model server this stage started: where it listens, and how to tell it died."""

    rest_url: str
    grpc_target: str
    description: str
    exited: Callable[[], int | None]  # exit code once it stopped, else None
    logs: Callable[[], str]


# A broken export should fail validation at once, not after TF Serving's 5 x 60 s load retries.
SERVER_FLAGS = ("--max_num_load_retries=0",)


@contextlib.contextmanager
def docker_server(client: Any, export_dir: Path, model: str, version: int) -> Iterator[Launched]:
    try:
        client.images.get(TF_SERVING_IMAGE)
    except Exception:
        client.images.pull(TF_SERVING_IMAGE)
    # The export itself is mounted as the one version (the image serves /models/$MODEL_NAME).
    container = client.containers.run(
        TF_SERVING_IMAGE,
        command=list(SERVER_FLAGS),
        detach=True,
        environment={"MODEL_NAME": model},
        ports={"8500/tcp": ("127.0.0.1", None), "8501/tcp": ("127.0.0.1", None)},
        volumes={str(export_dir.resolve()): {"bind": f"/models/{model}/{version}", "mode": "ro"}},
    )

    def exited() -> int | None:
        container.reload()
        return None if container.status in ("created", "running") else 1

    try:
        container.reload()
        ports = container.attrs["NetworkSettings"]["Ports"]
        rest, grpc = ports["8501/tcp"][0]["HostPort"], ports["8500/tcp"][0]["HostPort"]
        yield Launched(
            f"http://127.0.0.1:{rest}",
            f"127.0.0.1:{grpc}",
            f"{TF_SERVING_IMAGE} ({container.short_id})",
            exited,
            lambda: container.logs(tail=50).decode(errors="replace"),
        )
    finally:
        with contextlib.suppress(Exception):
            container.remove(force=True)


@contextlib.contextmanager
def binary_server(command: str, export_dir: Path, model: str, version: int) -> Iterator[Launched]:
    """`command` (TFSHIP_MODEL_SERVER) is a path or a shell-quoted command line; flags appended."""
    with tempfile.TemporaryDirectory(prefix="tfship-validate-") as tmp:
        base = Path(tmp) / model
        base.mkdir()
        (base / str(version)).symlink_to(export_dir.resolve(), target_is_directory=True)
        rest, grpc = free_port(), free_port()
        argv = [
            *shlex.split(command),
            f"--port={grpc}",
            f"--rest_api_port={rest}",
            f"--model_name={model}",
            f"--model_base_path={base}",
            "--file_system_poll_wait_seconds=1",
            *SERVER_FLAGS,
        ]
        logfile = Path(tmp) / "model-server.log"
        with logfile.open("wb") as out:
            try:
                proc = subprocess.Popen(
                    argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
                )
            except OSError as exc:
                raise InfraError(
                    f"cannot start TFSHIP_MODEL_SERVER ({command}): {exc}",
                    hint="set TFSHIP_MODEL_SERVER to a tensorflow_model_server binary "
                    "(a path, or a command line)",
                ) from exc
        try:
            yield Launched(
                f"http://127.0.0.1:{rest}",
                f"127.0.0.1:{grpc}",
                f"{argv[0]} (pid {proc.pid})",
                proc.poll,
                lambda: logfile.read_text(errors="replace")[-4000:],
            )
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def choose(launcher: str, binary: str | None, url: str | None) -> tuple[str, Any]:
    """The launcher to use (resolving `auto`) and the Docker client when it is `docker`."""
    docker_client = docker_engine() if launcher in ("auto", "docker") else None
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
    return launcher, docker_client


def wait_listening(launched: Launched, model: str, deadline: float) -> None:
    """Poll REST until the server answers; a server that exits first is diagnosed from its log.

    TF Serving opens its ports only after the initial models loaded, and exits with
    `Failed to start server. Error: ...` when one cannot be loaded.
    """
    probe = ServingClient(model, rest_url=launched.rest_url, timeout=2.0, retries=0)
    t0 = time.monotonic()
    try:
        while True:
            code = launched.exited()
            if code is not None:
                logs = launched.logs()
                failed_load = "Failed to start server" in logs and not any(
                    s in logs for s in ("BuildAndStart", "HTTP Server", "Address already in use")
                )
                tail = f"(exit code {code}); log tail:\n{logs[-2000:]}"
                if failed_load:
                    raise ModelError(
                        f"the model server {launched.description} could not load the export "
                        + tail,
                        hint="fix the export (re-run `tfship export`)",
                    )
                raise InfraError(
                    f"the model server {launched.description} exited before it was ready " + tail,
                    hint="check TFSHIP_MODEL_SERVER / the Docker engine and the log above",
                )
            try:
                probe.status()
                return
            except ServerAnswered:
                return  # any HTTP answer means it is serving
            except InfraError:
                if time.monotonic() - t0 > deadline:
                    raise InfraError(
                        f"the model server {launched.description} did not answer on "
                        f"{launched.rest_url} within {deadline:.0f}s; log tail:\n"
                        f"{launched.logs()[-2000:]}",
                        hint="raise serving.load_deadline_seconds for big models",
                    ) from None
                time.sleep(0.2)
    finally:
        probe.close()
