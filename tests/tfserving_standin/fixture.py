"""Start a model server for tests: the TF Serving stand-in, or a real ``tensorflow_model_server``.

The binary comes from ``TFSHIP_MODEL_SERVER`` (a path, or a command line split with shlex);
unset, it is this package's stand-in, ``python -m tests.tfserving_standin``. Only flags that
``tensorflow_model_server`` itself accepts are passed, so the same tests run against both.

Usage (session- or module-scoped fixture)::

    from tests.tfserving_standin.fixture import start_model_server

    @pytest.fixture(scope="module")
    def server(tmp_path_factory):
        tmp = tmp_path_factory.mktemp("serving")
        with start_model_server(tmp, model_config_text=CONFIG,
                                extra_flags=["--max_num_load_retries=0"]) as handle:
            yield handle   # handle.rest_url, handle.grpc_target, handle.config_path, ...

``start_model_server`` returns the handle already started and ready; ``with`` (or ``stop()``)
ends it. Readiness is polled on the REST port against a deadline: the model server opens its
ports only after the initial models are loaded, so any HTTP answer means ready.
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import text_format

REPO_ROOT = Path(__file__).resolve().parents[2]
ENV_VAR = "TFSHIP_MODEL_SERVER"
STANDIN_COMMAND = (sys.executable, "-m", "tests.tfserving_standin")


class ModelServerError(RuntimeError):
    """The model server did not start (its log tail is in the message)."""


def model_server_command() -> list[str]:
    """The command that starts a model server, without flags."""
    configured = os.environ.get(ENV_VAR, "").strip()
    return shlex.split(configured) if configured else list(STANDIN_COMMAND)


def is_standin() -> bool:
    return not os.environ.get(ENV_VAR, "").strip()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class ModelServer:
    """A running model server process."""

    process: subprocess.Popen
    rest_port: int
    grpc_port: int
    config_path: Path | None
    stdout_path: Path
    stderr_path: Path
    command: list[str] = field(default_factory=list)

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def logs(self) -> str:
        out = self.stdout_path.read_text(errors="replace") if self.stdout_path.exists() else ""
        err = self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""
        return out + err

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout)
        return self.process.returncode

    def __enter__(self) -> ModelServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _first_model_name(config_text: str) -> str:
    from tensorflow_serving.config import model_server_config_pb2

    config = model_server_config_pb2.ModelServerConfig()
    text_format.Parse(config_text, config)
    models = config.model_config_list.config
    return models[0].name if models else "default"


def wait_until_ready(server: ModelServer, model_name: str, deadline_s: float) -> None:
    deadline = time.monotonic() + deadline_s
    url = f"{server.rest_url}/v1/models/{model_name}"
    while True:
        if server.process.poll() is not None:
            raise ModelServerError(
                f"model server exited with code {server.process.returncode} before it was ready "
                f"(command: {shlex.join(server.command)}).\n"
                f"--- log tail ---\n{server.logs()[-4000:]}"
            )
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # any HTTP answer (404 for a model with no version yet) means it is serving
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise ModelServerError(
                f"model server not ready on {url} after {deadline_s:.0f}s; check the binary "
                f"({ENV_VAR}) and the model paths.\n--- log tail ---\n{server.logs()[-4000:]}"
            )
        time.sleep(0.2)


def start_model_server(
    tmp_path: Path,
    *,
    model_config_text: str | None = None,
    model_name: str | None = None,
    base_path: str | Path | None = None,
    extra_flags: Sequence[str] = (),
    ready_timeout: float = 180.0,
    env: dict[str, str] | None = None,
) -> ModelServer:
    """Start a model server on free 127.0.0.1 ports and wait until it answers on REST.

    Give either ``model_config_text`` (a text-format ModelServerConfig, written to
    ``tmp_path/models.config`` and passed as ``--model_config_file``) or ``model_name`` and
    ``base_path`` (``--model_name`` / ``--model_base_path``).
    """
    tmp_path = Path(tmp_path)
    tmp_path.mkdir(parents=True, exist_ok=True)
    rest_port, grpc_port = free_port(), free_port()
    while grpc_port == rest_port:
        grpc_port = free_port()
    flags = [f"--port={grpc_port}", f"--rest_api_port={rest_port}"]
    config_path = None
    if model_config_text is not None:
        config_path = tmp_path / "models.config"
        config_path.write_text(model_config_text)
        flags.append(f"--model_config_file={config_path}")
        first_model = _first_model_name(model_config_text)
    elif model_name and base_path is not None:
        flags += [f"--model_name={model_name}", f"--model_base_path={base_path}"]
        first_model = model_name
    else:
        raise ValueError("start_model_server needs model_config_text, or model_name and base_path")
    command = [*model_server_command(), *flags, *extra_flags]
    child_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "TF_ENABLE_ONEDNN_OPTS": "0"}
    child_env.update(env or {})
    stdout_path, stderr_path = tmp_path / "model_server.out", tmp_path / "model_server.err"
    with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
        process = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env=child_env,
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
        )
    server = ModelServer(
        process, rest_port, grpc_port, config_path, stdout_path, stderr_path, command
    )
    try:
        wait_until_ready(server, first_model, ready_timeout)
    except BaseException:
        server.stop()
        raise
    return server
