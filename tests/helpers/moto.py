"""moto_server, the S3 stand-in, on 127.0.0.1: started once, with a readiness deadline.

Plain context manager (no pytest) so benchmarks use it too; test modules wrap it in a
module-scoped fixture. Credentials are dummies moto accepts: set `AWS_TEST_ENV` in the
environment of whatever talks to it.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MOTO_SERVER = Path(sys.executable).parent / "moto_server"
AWS_TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def use_test_credentials(monkeypatch: Any) -> None:
    """Set the dummy credentials moto accepts (`AWS_TEST_ENV`) for this test."""
    for k, v in AWS_TEST_ENV.items():
        monkeypatch.setenv(k, v)


@dataclass(frozen=True)
class Moto:
    url: str  # the S3 endpoint, http://127.0.0.1:<port>
    pid: int  # for CPU accounting in benchmarks


class MotoUnavailable(RuntimeError):
    """moto_server is not installed, or did not answer before the deadline."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def moto_server(deadline: float = 30.0) -> Iterator[Moto]:
    """Start moto_server on a free 127.0.0.1 port; yields where it listens; stops it after."""
    if not MOTO_SERVER.exists():
        raise MotoUnavailable(f"{MOTO_SERVER} not installed (pip install 'moto[server]')")
    port = _free_port()
    proc = subprocess.Popen(
        [str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        until = time.monotonic() + deadline
        while True:
            try:
                urllib.request.urlopen(f"{url}/moto-api/", timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > until:
                    raise MotoUnavailable(
                        f"moto_server did not answer on {url} within {deadline:.0f} s "
                        f"(exit code {proc.poll()})"
                    ) from None
                time.sleep(0.1)
        yield Moto(url, proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def moto_fixture() -> Iterator[str]:
    """Body of a module-scoped pytest fixture: skips without moto, fails if it will not start.

    Use as `s3_endpoint = pytest.fixture(scope="module", name="s3_endpoint")(moto_fixture)`.
    """
    import pytest

    if not MOTO_SERVER.exists():
        pytest.skip(f"{MOTO_SERVER} not installed (pip install 'moto[server]')")
    with contextlib.ExitStack() as stack:
        try:
            server = stack.enter_context(moto_server())
        except MotoUnavailable as exc:
            pytest.fail(str(exc))
        yield server.url
