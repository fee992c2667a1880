"""Worker processes of a MultiWorkerMirroredStrategy cluster on 127.0.0.1, for tests."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def start_python_workers(code: str, n: int = 2) -> list[subprocess.Popen[str]]:
    """`python -c code` as worker 0..n-1 of one cluster (TF_CONFIG), output piped."""
    workers = [f"127.0.0.1:{p}" for p in free_ports(n)]
    procs = []
    for i in range(n):
        env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
        env.update(
            TF_CPP_MIN_LOG_LEVEL="3",
            TF_ENABLE_ONEDNN_OPTS="0",
            TF_CONFIG=json.dumps(
                {"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}}
            ),
        )
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", code],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    return procs
