"""TF's session-based loader (`saved_model_cli run`, the path TF Serving's loader mirrors) in a
fresh interpreter: the export must load and answer without any Python state of the process
that wrote it.

Most of that check's time is the fresh interpreter importing TensorFlow (about 3 s of 4 on a
2-core runner), not the load. `prestart()` starts the interpreter early — it imports TensorFlow
and then waits on stdin for the one `saved_model_cli` command it will run — so the import
overlaps the work before the check (restoring the checkpoint, writing the export; under
`tfship run`, training). The process never imports tfship or user code, so isolation is the
same as a process started at check time. It runs one command and exits; an unused one exits
when its stdin closes (a stage that failed) and is killed at interpreter exit.
"""

from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from tfship.errors import ModelError

SIGNATURE = "serving_default"
CPP_LOADER_TIMEOUT = 300.0

# Import TensorFlow first (the slow part), then wait for the arguments of one saved_model_cli
# command; an empty line or EOF means "not needed" and exits quietly.
_WORKER = """
import json, sys
import tensorflow
from tensorflow.python.tools import saved_model_cli
line = sys.stdin.readline()
if not line.strip():
    sys.exit(0)
sys.argv = ["saved_model_cli", *json.loads(line)]
saved_model_cli.main()
"""

_lock = threading.Lock()
_ready: list[subprocess.Popen[str]] = []


def _env() -> dict[str, str]:
    # CPU only: the exporting process may still hold the GPU, and TF Serving's CPU image is
    # the reference the golden outputs must hold against.
    return {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "2"}


def _spawn() -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _WORKER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )


def prestart() -> None:
    """Start the next check's interpreter now, so its TensorFlow import overlaps other work."""
    with _lock:
        if not _ready:
            _ready.append(_spawn())


def discard() -> None:
    """Stop a prestarted interpreter that will not be used (EOF on stdin, then kill)."""
    with _lock:
        procs, _ready[:] = list(_ready), []
    for proc in procs:
        try:
            proc.communicate(input="", timeout=5)
        except (subprocess.TimeoutExpired, OSError, ValueError):
            proc.kill()
            proc.wait()


atexit.register(discard)


def _take() -> subprocess.Popen[str]:
    with _lock:
        proc = _ready.pop() if _ready else None
    return proc if proc is not None and proc.poll() is None else _spawn()


def run_cpp_loader(
    export_dir: Path, inputs: Mapping[str, np.ndarray], *, timeout: float = CPP_LOADER_TIMEOUT
) -> tuple[dict[str, np.ndarray], float]:
    """Run `serving_default` through `saved_model_cli run` in a fresh process (prestarted or
    started now); return its outputs and the wall time the check took from here."""
    with tempfile.TemporaryDirectory(prefix="tfship-cpp-loader-") as tmp:
        feeds = []
        for name, value in inputs.items():
            path = Path(tmp) / f"in_{name}.npy"
            arr = np.asarray(value)
            if arr.dtype == object:  # strings: a bytes array loads without pickle
                arr = np.asarray([bytes(v) for v in arr.ravel()], dtype=np.bytes_).reshape(
                    arr.shape
                )
            np.save(path, arr, allow_pickle=False)
            feeds.append(f"{name}={path}")
        outdir = Path(tmp) / "out"
        args = ["run", "--dir", str(export_dir), "--tag_set", "serve"]
        args += ["--signature_def", SIGNATURE, "--inputs", ";".join(feeds)]
        args += ["--outdir", str(outdir), "--overwrite"]
        t0 = time.perf_counter()
        proc = _take()
        try:
            stdout, stderr = proc.communicate(json.dumps(args) + "\n", timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise ModelError(
                f"saved_model_cli did not finish loading {export_dir} within {timeout:.0f} s",
                hint="the machine may be overloaded; retry, or check the model for huge constants",
            ) from None
        seconds = time.perf_counter() - t0
        if proc.returncode != 0:
            tail = "\n    ".join((stderr or stdout).strip().splitlines()[-15:])
            raise ModelError(
                f"TF's C++ loader (saved_model_cli run) failed on {export_dir} with exit code "
                f"{proc.returncode}; expected it to load and run '{SIGNATURE}':\n    {tail}",
                hint="TF Serving would fail the same way; export with keras.export.ExportArchive",
            )
        # String outputs come back as object arrays (pickled by saved_model_cli, which ran in
        # our own child process on a directory it created).
        outputs = {p.stem: np.load(p, allow_pickle=True) for p in outdir.glob("*.npy")}
    return outputs, seconds
